//! `/openapi.json`, generated from the same endpoint list the router is built from, so the
//! document cannot list a route the server lacks or miss one it has. A test compares it with
//! the committed `docs/openapi.json`, so any change to the API surface shows up in review.

use serde_json::{json, Map, Value};

use crate::routes::{endpoints, Access};

/// The OpenAPI 3.0 document of the server.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for endpoint in endpoints() {
        let parameters: Vec<Value> = endpoint
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let security = match endpoint.access {
            Access::Account => json!([{ "basicAuth": [] }]),
            Access::Admin => json!([{ "adminBearer": [] }]),
            Access::Open => json!([]),
        };
        let operation = json!({
            "summary": endpoint.summary,
            "parameters": parameters,
            "security": security,
            "responses": {
                "2XX": { "description": "Success (JSON; see the summary)" },
                "default": {
                    "description": "A problem",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
            },
        });
        let entry = paths
            .entry(endpoint.path.to_string())
            .or_insert_with(|| json!({}));
        if let Value::Object(methods) = entry {
            methods.insert(endpoint.method.to_string(), operation);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "subledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Subaccounts, credit and balance transfers, secrets (compatible with the public Vonage Subaccounts API), and subledger's own reports, streams and admin API.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basicAuth": { "type": "http", "scheme": "basic" },
                "adminBearer": { "type": "http", "scheme": "bearer" },
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "detail", "instance"],
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "detail": { "type": "string" },
                        "instance": { "type": "string" },
                        "invalid_parameters": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": { "name": { "type": "string" }, "reason": { "type": "string" } },
                            },
                        },
                    },
                },
            },
        },
    })
}

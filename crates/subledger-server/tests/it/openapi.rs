//! `/openapi.json` is generated from the router's own endpoint list; the committed copy in
//! `docs/openapi.json` must match it (`SUBLEDGER_BLESS=1` rewrites it), and every documented
//! operation must be routed.

use std::path::PathBuf;

use crate::support::*;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_code() {
    let generated = subledger_server::openapi::document();
    let text = serde_json::to_string_pretty(&generated).expect("json") + "\n";
    if std::env::var_os("SUBLEDGER_BLESS").is_some() {
        std::fs::write(committed(), &text).expect("write docs/openapi.json");
    }
    let stored = std::fs::read_to_string(committed()).expect("docs/openapi.json exists");
    assert_eq!(stored, text, "the API changed: run SUBLEDGER_BLESS=1 cargo test -p subledger-server openapi and review docs/openapi.json");
    let server = Server::new();
    let served = server.req("GET", "/openapi.json").send().await.ok(200);
    assert_eq!(served, generated);
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let server = Server::new();
    let document = subledger_server::openapi::document();
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, methods) in paths {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "abcd1234"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods.as_object().expect("methods").keys() {
            let response = server.req(&method.to_uppercase(), &concrete).send().await;
            let body = response.text.clone();
            assert!(
                response.status != 405 && !body.contains("no such resource"),
                "{method} {path} is documented but not routed: {} {body}",
                response.status
            );
        }
    }
}

//! `POST /admin/import`: accounts brought over from another system with the api keys and the
//! argon2id secret hashes they already have, so their owners' credentials keep working. Up to
//! [`IMPORT_ACCOUNTS_MAX`] accounts per request, decided in order in one group commit (a
//! primary earlier in a request may own subaccounts later in it), one outcome each. Nothing is
//! hashed here, which also makes it how the benchmark harness sets up large HTTP runs quickly.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Map, Value};
use subledger_core::{Amount, ApiKey, Command, CreateSubaccount, Currency, NewSecret, OpenPrimary};

use crate::json::{read_object_limited, Fields, BATCH_BODY_BYTES_MAX};
use crate::problem::Problem;
use crate::routes::{json_response, Access, Answer, Endpoint, Shared};
use crate::AppState;

/// Most accounts in one import request.
pub const IMPORT_ACCOUNTS_MAX: usize = 1_000;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint {
        method: "post",
        path: "/admin/import",
        summary: "Import up to 1,000 accounts with their api keys and argon2id secret hashes, \
                  one outcome each",
        access: Access::Admin,
        handler: post(import),
    }]
}

/// One account of the request as a command, or the reasons it is invalid.
fn command(
    state: &AppState,
    item: &Map<String, Value>,
) -> Result<Command, Vec<crate::problem::InvalidParameter>> {
    let mut fields = Fields::default();
    fields.only(
        item,
        &[
            "api_key",
            "primary_account_api_key",
            "name",
            "currency",
            "credit_limit",
            "use_primary_account_balance",
            "secret_hash",
        ],
    );
    let key = |fields: &mut Fields, name: &str, required: bool| {
        let text = if required {
            fields.required_string(item, name)
        } else {
            fields.string(item, name)
        };
        match text.map(|text| text.parse::<ApiKey>()) {
            Some(Ok(key)) => Some(key),
            Some(Err(_)) => {
                fields.fail(name, "must be an api key (8 lower-case letters or digits)");
                None
            }
            None => None,
        }
    };
    let api_key = key(&mut fields, "api_key", true);
    let primary = key(&mut fields, "primary_account_api_key", false);
    let name = fields.string(item, "name").unwrap_or_default();
    let hash = fields
        .required_string(item, "secret_hash")
        .and_then(|text| match state.auth.imported_hash(&text) {
            Ok(hash) => Some(hash),
            Err(reason) => {
                fields.fail("secret_hash", reason);
                None
            }
        });
    let currency = fields.string(item, "currency");
    let credit_line = fields.amount(item, "credit_limit", false);
    let shared = fields.boolean(item, "use_primary_account_balance");
    if primary.is_some() {
        for name in ["currency", "credit_limit"] {
            if item.contains_key(name) {
                fields.fail(name, "applies to primaries only");
            }
        }
    } else if shared.is_some() {
        fields.fail("use_primary_account_balance", "applies to subaccounts only");
    }
    let currency = match currency.map(|text| text.parse::<Currency>()) {
        None => Some(Currency::EUR),
        Some(Ok(currency)) => Some(currency),
        Some(Err(_)) => {
            fields.fail("currency", "must be an ISO 4217 code such as EUR");
            None
        }
    };
    if !fields.invalid.is_empty() {
        return Err(fields.invalid);
    }
    let (Some(key), Some(hash), Some(currency)) = (api_key, hash, currency) else {
        return Err(Vec::new());
    };
    let secret = NewSecret {
        id: state.ledger.new_secret_id(),
        hash,
    };
    Ok(match primary {
        None => Command::OpenPrimary(OpenPrimary {
            key,
            name,
            currency,
            credit_line: credit_line.unwrap_or(Amount::ZERO),
            secret,
        }),
        Some(primary) => Command::CreateSubaccount(CreateSubaccount {
            primary,
            key,
            name,
            use_primary_account_balance: shared.unwrap_or(true),
            secret,
        }),
    })
}

/// `POST /admin/import` `{"accounts":[{"api_key", "primary_account_api_key"?, "name"?,
/// "currency"?, "credit_limit"?, "use_primary_account_balance"?, "secret_hash"}, …]}`: an item
/// without `primary_account_api_key` opens a primary. Invalid items fail the whole request
/// (422, naming `accounts[i].field`) before anything is submitted; the rules then decide each
/// account, and the answer lists `{"status":200,"api_key"}` or `{"status":4xx,"problem"}` per
/// item, in order.
async fn import(State(state): Shared, headers: HeaderMap, body: Body) -> Answer {
    state.auth.admin(&headers)?;
    let body = read_object_limited(body, BATCH_BODY_BYTES_MAX).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["accounts"]);
    let items = fields.items(&body, "accounts", IMPORT_ACCOUNTS_MAX, "accounts");
    fields.finish(false)?;
    let mut commands = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            invalid.push(crate::problem::InvalidParameter {
                name: format!("accounts[{index}]"),
                reason: "must be an object".into(),
            });
            continue;
        };
        match command(&state, item) {
            Ok(command) => commands.push(command),
            Err(reasons) => invalid.extend(reasons.into_iter().map(|mut field| {
                field.name = format!("accounts[{index}].{}", field.name);
                field
            })),
        }
    }
    if !invalid.is_empty() {
        return Err(Problem::validation(invalid, false));
    }
    let outcomes = state
        .ledger
        .submit_batch_async(commands.clone())
        .await
        .map_err(|error| Problem::from_engine(&error))?;
    let results: Vec<Value> = outcomes
        .iter()
        .zip(&commands)
        .map(|(outcome, command)| {
            let key = match command {
                Command::OpenPrimary(open) => open.key,
                Command::CreateSubaccount(create) => create.key,
                _ => return json!({ "status": 500 }),
            };
            match outcome {
                Ok(_) => json!({ "status": 200, "api_key": key.as_str() }),
                Err(rejection) => {
                    let mut answer = crate::routes::batch_problem(&state, rejection);
                    if let Value::Object(map) = &mut answer {
                        map.insert("api_key".into(), json!(key.as_str()));
                    }
                    answer
                }
            }
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "results": results }),
    ))
}

//! Events as JSON for people and programs (exports, the live event stream): accounts by api
//! key, amounts as decimal text, and never a secret — events that carry one show its id only.

use serde_json::{Map, Value};
use subledger_core::{AccountId, Amount, Event};

use crate::Views;

fn key(views: &Views, id: AccountId) -> String {
    views
        .key_of(id)
        .map_or_else(|| format!("#{}", id.0), |key| key.to_string())
}

/// The fields of an event, with account ids resolved through `views`.
pub fn event_fields(views: &Views, event: &Event) -> Map<String, Value> {
    let mut fields = Map::new();
    let mut put = |name: &str, value: Value| {
        fields.insert(name.to_string(), value);
    };
    let account = |id: &AccountId| Value::String(key(views, *id));
    let money = |amount: &Amount| Value::String(amount.to_string());
    match event {
        Event::PrimaryOpened {
            account: id,
            name,
            currency,
            credit_limit,
            secret,
            ..
        } => {
            put("api_key", account(id));
            put("name", Value::String(name.clone()));
            put("currency", Value::String(currency.to_string()));
            put("credit_limit", money(credit_limit));
            put("secret_id", Value::String(secret.id.to_string()));
        }
        Event::SubaccountCreated {
            account: id,
            primary,
            name,
            use_primary_account_balance,
            secret,
            ..
        } => {
            put("api_key", account(id));
            put("primary_account_api_key", account(primary));
            put("name", Value::String(name.clone()));
            put(
                "use_primary_account_balance",
                Value::Bool(*use_primary_account_balance),
            );
            put("secret_id", Value::String(secret.id.to_string()));
        }
        Event::SubaccountRenamed { account: id, name } => {
            put("api_key", account(id));
            put("name", Value::String(name.clone()));
        }
        Event::AccountSuspended { account: id }
        | Event::AccountReactivated { account: id }
        | Event::SubaccountSwitchedToOwnBalance { account: id }
        | Event::SubaccountClosed { account: id } => put("api_key", account(id)),
        Event::BalanceTransferred {
            command,
            source,
            target,
            amount,
            reference,
        }
        | Event::CreditTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => {
            put("id", Value::String(command.to_string()));
            put("from", account(source));
            put("to", account(target));
            put("amount", money(amount));
            put("reference", Value::String(reference.clone()));
        }
        Event::Charged {
            command,
            account: id,
            payer,
            amount,
            reference,
        } => {
            put("id", Value::String(command.to_string()));
            put("api_key", account(id));
            put("payer", account(payer));
            put("amount", money(amount));
            put("reference", Value::String(reference.clone()));
        }
        Event::ToppedUp {
            command,
            account: id,
            amount,
            reference,
        } => {
            put("id", Value::String(command.to_string()));
            put("api_key", account(id));
            put("amount", money(amount));
            put("reference", Value::String(reference.clone()));
        }
        Event::CreditLineSet {
            account: id,
            credit_line,
            credit_limit,
        } => {
            put("api_key", account(id));
            put("credit_line", money(credit_line));
            put("credit_limit", money(credit_limit));
        }
        Event::SecretCreated {
            account: id,
            secret,
        } => {
            put("api_key", account(id));
            put("secret_id", Value::String(secret.id.to_string()));
        }
        Event::SecretRevoked {
            account: id,
            secret,
        } => {
            put("api_key", account(id));
            put("secret_id", Value::String(secret.to_string()));
        }
        Event::LowBalanceThresholdSet {
            account: id,
            threshold,
        } => {
            put("api_key", account(id));
            put("threshold", threshold.as_ref().map_or(Value::Null, money));
        }
        Event::LowBalanceAlert {
            account: id,
            available,
            threshold,
        } => {
            put("api_key", account(id));
            put("available", money(available));
            put("threshold", money(threshold));
        }
        _ => {}
    }
    fields
}

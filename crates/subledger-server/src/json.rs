//! JSON in and out. Request bodies are read with a size limit and parsed field by field so that
//! every bad field is named. serde_json runs with `arbitrary_precision`: a number keeps its
//! own text, so amounts are parsed from exactly what the client sent (never through `f64`) and
//! written back as exact JSON numbers.

use axum::body::Body;
use std::str::FromStr;

use serde_json::{Map, Value};
use subledger_core::{Amount, AmountError};

use crate::problem::{InvalidParameter, Problem};

/// Largest accepted request body, in bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Deepest accepted JSON nesting (objects and arrays).
pub const JSON_DEPTH_MAX: usize = 16;

/// Largest accepted batch request body, in bytes (1,000 transfers fit).
pub const BATCH_BODY_BYTES_MAX: usize = 256 * 1024;

/// Reads a body (at most [`REQUEST_BODY_BYTES_MAX`]) and parses a JSON object; an empty body is
/// an empty object.
pub async fn read_object(body: Body) -> Result<Map<String, Value>, Problem> {
    read_object_limited(body, REQUEST_BODY_BYTES_MAX).await
}

/// [`read_object`] with another size limit.
pub async fn read_object_limited(
    body: Body,
    bytes_max: usize,
) -> Result<Map<String, Value>, Problem> {
    parse_object(&read_bytes(body, bytes_max).await?)
}

/// The body's bytes, at most `bytes_max` (`413` beyond).
pub async fn read_bytes(body: Body, bytes_max: usize) -> Result<axum::body::Bytes, Problem> {
    axum::body::to_bytes(body, bytes_max).await.map_err(|_| {
        Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload Too Large",
            format!("request bodies are limited to {bytes_max} bytes"),
        )
    })
}

/// A JSON object from request bytes (empty: an empty object). Malformed JSON is `400`.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if depth(bytes) > JSON_DEPTH_MAX {
        return Err(Problem::bad_request(format!(
            "JSON nested deeper than {JSON_DEPTH_MAX} levels"
        )));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| Problem::bad_request(format!("malformed JSON: {error}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::bad_request("the body must be a JSON object")),
    }
}

/// Nesting depth of JSON text, counted without parsing (brackets outside strings).
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0_usize, 0_usize, false, false);
    for &byte in bytes {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Collects field errors, so one response names every bad field.
#[derive(Debug, Default)]
pub struct Fields {
    pub invalid: Vec<InvalidParameter>,
}

impl Fields {
    pub fn fail(&mut self, name: &str, reason: impl Into<String>) {
        self.invalid.push(InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        });
    }

    /// `Err` with every collected field, if any.
    pub fn finish(self, secrets: bool) -> Result<(), Problem> {
        if self.invalid.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.invalid, secrets))
        }
    }

    /// Rejects fields not in `known`.
    pub fn only(&mut self, body: &Map<String, Value>, known: &[&str]) {
        for name in body.keys() {
            if !known.contains(&name.as_str()) {
                self.fail(name, "is not a recognised field");
            }
        }
    }

    pub fn string(&mut self, body: &Map<String, Value>, name: &str) -> Option<String> {
        match body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.fail(name, "must be a string");
                None
            }
        }
    }

    /// A string that must be present: one error for a missing field, one for a wrong type.
    /// The array under `name`, of 1 to `max` items (named `what` in the reason otherwise).
    pub fn items<'a>(
        &mut self,
        body: &'a Map<String, Value>,
        name: &str,
        max: usize,
        what: &str,
    ) -> &'a [Value] {
        match body.get(name) {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= max => items,
            _ => {
                self.fail(name, format!("must be an array of 1 to {max} {what}"));
                &[]
            }
        }
    }

    pub fn required_string(&mut self, body: &Map<String, Value>, name: &str) -> Option<String> {
        match body.get(name) {
            None | Some(Value::Null) => {
                self.fail(name, "is required");
                None
            }
            Some(_) => self.string(body, name),
        }
    }

    pub fn boolean(&mut self, body: &Map<String, Value>, name: &str) -> Option<bool> {
        match body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(flag)) => Some(*flag),
            Some(_) => {
                self.fail(name, "must be true or false");
                None
            }
        }
    }

    /// A positive amount given as a JSON number (a string is refused), at most 8 decimals.
    pub fn amount(
        &mut self,
        body: &Map<String, Value>,
        name: &str,
        required: bool,
    ) -> Option<Amount> {
        match body.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(name, "is required");
                }
                None
            }
            Some(Value::Number(number)) => match number.to_string().parse::<Amount>() {
                Ok(amount) => Some(amount),
                Err(error) => {
                    self.fail(name, amount_reason(error));
                    None
                }
            },
            Some(_) => {
                self.fail(name, "must be a number");
                None
            }
        }
    }
}

fn amount_reason(error: AmountError) -> &'static str {
    match error {
        AmountError::TooManyFractionDigits => "must have at most 8 decimal places",
        AmountError::OutOfRange => "is out of range",
        _ => "must be a decimal number",
    }
}

/// An amount as an exact JSON number.
pub fn number(amount: Amount) -> Value {
    raw_number(&amount.to_string())
}

/// A decimal text as an exact JSON number (its digits kept as they are).
pub fn raw_number(text: &str) -> Value {
    serde_json::Number::from_str(text).map_or(Value::Null, Value::Number)
}

//! Errors as `application/problem+json` (SPEC §8): `{type, title, detail, instance,
//! invalid_parameters?}` with `type` = `<base>#<code>`. Every failure of a request becomes one of
//! these — never a bare 500, never a panic.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subledger_core::{Field, Rejection};
use subledger_engine::EngineError;

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParameter {
    pub name: String,
    pub reason: String,
}

/// A problem response, before the request path (`instance`) and type base are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub invalid_parameters: Vec<InvalidParameter>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            invalid_parameters: Vec::new(),
        }
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials supplied",
            "You did not provide correct credentials.",
        )
    }

    pub fn invalid_api_key(key: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "invalid-api-key",
            "Invalid API Key",
            format!("API key '{key}' does not exist, or you do not have access"),
        )
    }

    /// A validation problem; `secrets` endpoints answer 400 instead of 422 (SPEC §8).
    pub fn validation(fields: Vec<InvalidParameter>, secrets: bool) -> Problem {
        let status = if secrets {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let detail = fields
            .iter()
            .map(|field| format!("{}: {}", field.name, field.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Problem {
            status,
            code: "validation",
            title: "Bad Request",
            detail: format!("The request failed validation: {detail}"),
            invalid_parameters: fields,
        }
    }

    pub fn field(name: &str, reason: impl Into<String>, secrets: bool) -> Problem {
        Problem::validation(
            vec![InvalidParameter {
                name: name.into(),
                reason: reason.into(),
            }],
            secrets,
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad Request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not Found", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
            detail,
        )
    }

    /// A rule's rejection, mapped to the status, code and title of SPEC §8.
    pub fn from_rejection(rejection: &Rejection, secrets: bool) -> Problem {
        use Rejection as R;
        let detail = rejection.to_string();
        match rejection {
            R::Validation { field, reason } => {
                Problem::field(field_name(*field), reason.to_string(), secrets)
            }
            R::UnknownAccount { key } | R::WrongAccountKind { key } => {
                Problem::invalid_api_key(key.as_str())
            }
            R::InvalidTransfer { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "valid-transfers",
                "Invalid Transfer",
                detail,
            ),
            R::InsufficientFunds { .. } | R::InsufficientCredit { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "valid-transfers",
                "Transfer amount is invalid",
                detail,
            ),
            R::SubaccountLimitReached { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "provisioning",
                "Maximum number of sub-accounts reached",
                detail,
            ),
            R::ExcessSecret => Problem::new(
                StatusCode::FORBIDDEN,
                "add-excess-secret",
                "Secret Addition Forbidden",
                "Account already has two secrets; revoke one first",
            ),
            R::LastSecret => Problem::new(
                StatusCode::FORBIDDEN,
                "delete-last-secret",
                "Secret Deletion Forbidden",
                "Cannot delete the last secret of an account",
            ),
            R::UnknownSecret { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "invalid-id", "Invalid ID", detail)
            }
            R::IdempotencyConflict { .. } => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                "Conflict",
                "This idempotency key was used before with a different request",
            ),
            R::Suspended { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "account-suspended",
                "Account Suspended",
                detail,
            ),
            R::Closed { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "account-closed",
                "Account Closed",
                detail,
            ),
            R::NotSettled { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "not-settled",
                "Account Not Settled",
                detail,
            ),
            R::CreditLineNotAllowed { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "credit-line",
                "Credit Line Not Allowed",
                detail,
            ),
            R::KeyTaken { .. } | R::SecretIdTaken { .. } => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            _ => Problem::new(StatusCode::FORBIDDEN, rejection.code(), "Forbidden", detail),
        }
    }

    pub fn from_engine(error: &EngineError) -> Problem {
        match error {
            EngineError::Busy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Service Unavailable",
                "The ledger is busy; retry shortly",
            ),
            other => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service Unavailable",
                other.to_string(),
            ),
        }
    }
}

/// The API's name for a core field.
fn field_name(field: Field) -> &'static str {
    field.as_str()
}

/// The wire form.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    detail: &'a str,
    instance: &'a str,
    #[serde(skip_serializing_if = "<[InvalidParameter]>::is_empty")]
    invalid_parameters: &'a [InvalidParameter],
}

/// A problem ready to send: with the type base and the request path.
#[derive(Debug)]
pub struct ProblemResponse {
    pub problem: Problem,
    pub base: String,
    pub instance: String,
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("{}#{}", self.base, self.problem.code),
            title: self.problem.title,
            detail: &self.problem.detail,
            instance: &self.instance,
            invalid_parameters: &self.problem.invalid_parameters,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.problem.status, bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if self.problem.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"subledger\""),
            );
        }
        response
    }
}

//! Rejections: a command the rules refuse. They are values, not failures — the ledger is
//! unchanged and healthy — and they carry what an API needs to say: which field or which rule.

use std::fmt;

use crate::ids::{ApiKey, CommandId, SecretId};
use crate::money::Amount;

/// A request field, named as the public API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    Name,
    Amount,
    Reference,
    Secret,
    Currency,
    CreditLimit,
    UsePrimaryAccountBalance,
    Suspended,
    Key,
    Threshold,
}

impl Field {
    /// The field's name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Amount => "amount",
            Field::Reference => "reference",
            Field::Secret => "secret",
            Field::Currency => "currency",
            Field::CreditLimit => "credit_limit",
            Field::UsePrimaryAccountBalance => "use_primary_account_balance",
            Field::Suspended => "suspended",
            Field::Key => "api_key",
            Field::Threshold => "threshold",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a field's value is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// Must be greater than zero.
    NotPositive,
    /// Must be zero or less (credit limits and lines).
    Positive,
    /// The result would leave the ±10¹² bound.
    OutOfRange,
    /// Empty where a value is required.
    Empty,
    /// Longer than the named limit, in characters.
    TooLong { chars_max: usize },
    /// Contains control characters.
    ControlCharacters,
    /// `use_primary_account_balance` may only change from `true` to `false`.
    Irreversible,
    /// The secret hash text is malformed (a caller bug, not a user error).
    Malformed,
}

impl fmt::Display for Invalid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NotPositive => formatter.write_str("must be greater than zero"),
            Invalid::Positive => formatter.write_str("must be zero or negative"),
            Invalid::OutOfRange => formatter.write_str("is out of range"),
            Invalid::Empty => formatter.write_str("must not be empty"),
            Invalid::TooLong { chars_max } => {
                write!(formatter, "must be at most {chars_max} characters")
            }
            Invalid::ControlCharacters => {
                formatter.write_str("must not contain control characters")
            }
            Invalid::Irreversible => formatter.write_str("can only change from true to false"),
            Invalid::Malformed => formatter.write_str("is malformed"),
        }
    }
}

/// Which pairing rule a transfer breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferRule {
    /// `from` and `to` are the same account.
    SameAccount,
    /// Both ends are subaccounts.
    SubaccountToSubaccount,
    /// An end is unknown or belongs to another family (not told apart: no key probing).
    NotInFamily,
    /// An end uses its primary's balance and so has no balance or credit of its own.
    SharedBalance,
    /// An end is closed.
    Closed,
    /// The acting primary is suspended.
    PrimarySuspended,
    /// The receiving end would exceed the ±10¹² bound.
    OutOfRange,
}

/// A command the rules refuse; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("{field} {reason}")]
    Validation { field: Field, reason: Invalid },
    /// The account is unknown, or not the caller's to act on.
    #[error("unknown api key {key}")]
    UnknownAccount { key: ApiKey },
    #[error("invalid transfer: {rule:?}")]
    InvalidTransfer { rule: TransferRule },
    #[error("amount {requested} exceeds the available {available}")]
    InsufficientFunds {
        available: Amount,
        requested: Amount,
    },
    #[error("amount {requested} exceeds the unused credit {unused}")]
    InsufficientCredit { unused: Amount, requested: Amount },
    /// The charged account or its primary is suspended.
    #[error("account {key} is suspended")]
    Suspended { key: ApiKey },
    #[error("account {key} is closed")]
    Closed { key: ApiKey },
    #[error("the primary already has the maximum of {limit} subaccounts")]
    SubaccountLimitReached { limit: u32 },
    #[error("an account has at most two secrets")]
    ExcessSecret,
    #[error("the last secret of an account cannot be revoked")]
    LastSecret,
    #[error("unknown secret {id}")]
    UnknownSecret { id: SecretId },
    #[error("command id {id} was used before with other content")]
    IdempotencyConflict { id: CommandId },
    /// A generated key or id collided with an existing one; the caller retries with a new one.
    #[error("api key {key} is taken")]
    KeyTaken { key: ApiKey },
    #[error("secret id {id} is taken")]
    SecretIdTaken { id: SecretId },
    /// Closing needs balance 0 and credit limit 0.
    #[error("a subaccount closes only at balance 0 and credit limit 0 (balance {balance}, credit limit {credit_limit})")]
    NotSettled {
        balance: Amount,
        credit_limit: Amount,
    },
    /// The credit line cannot be below what is lent to subaccounts, nor above what the
    /// primary's balance already uses.
    #[error(
        "credit line {requested} is not allowed: lent to subaccounts {lent}, balance {balance}"
    )]
    CreditLineNotAllowed {
        requested: Amount,
        lent: Amount,
        balance: Amount,
    },
    /// The operation applies to a primary account only, or to a subaccount only.
    #[error("account {key} is not of the kind this command needs")]
    WrongAccountKind { key: ApiKey },
}

impl Rejection {
    /// The stable problem code the APIs report (SPEC §8), e.g. `valid-transfers`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Validation { .. } => "validation",
            Rejection::UnknownAccount { .. } | Rejection::WrongAccountKind { .. } => {
                "invalid-api-key"
            }
            Rejection::InvalidTransfer { .. }
            | Rejection::InsufficientFunds { .. }
            | Rejection::InsufficientCredit { .. } => "valid-transfers",
            Rejection::Suspended { .. } => "account-suspended",
            Rejection::Closed { .. } => "account-closed",
            Rejection::SubaccountLimitReached { .. } => "provisioning",
            Rejection::ExcessSecret => "add-excess-secret",
            Rejection::LastSecret => "delete-last-secret",
            Rejection::UnknownSecret { .. } => "invalid-id",
            Rejection::IdempotencyConflict { .. } => "idempotency-conflict",
            Rejection::KeyTaken { .. } | Rejection::SecretIdTaken { .. } => "conflict",
            Rejection::NotSettled { .. } => "not-settled",
            Rejection::CreditLineNotAllowed { .. } => "credit-line",
        }
    }
}

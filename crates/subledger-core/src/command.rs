//! Commands: what a caller asks the ledger to do. Every non-deterministic input (new keys,
//! command and secret ids, secret hashes) is already fixed inside the command, so deciding it
//! needs nothing but the state.

use crate::ids::{ApiKey, CommandId, Currency, SecretId};
use crate::money::Amount;
use crate::secret::SecretHash;

/// A request to change the ledger. Decided by [`crate::decide()`] into events or a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    OpenPrimary(OpenPrimary),
    CreateSubaccount(CreateSubaccount),
    UpdateSubaccount(UpdateSubaccount),
    CloseSubaccount(CloseSubaccount),
    /// Suspend or reactivate any account (admin): primaries as well as subaccounts.
    SetSuspended(SetSuspended),
    TransferBalance(Transfer),
    TransferCredit(Transfer),
    Charge(Charge),
    TopUp(TopUp),
    SetCreditLine(SetCreditLine),
    CreateSecret(CreateSecret),
    RevokeSecret(RevokeSecret),
    SetLowBalanceThreshold(SetLowBalanceThreshold),
}

impl Command {
    /// The idempotency id of a money command; `None` for the others.
    pub fn command_id(&self) -> Option<CommandId> {
        match self {
            Command::TransferBalance(transfer) | Command::TransferCredit(transfer) => {
                Some(transfer.id)
            }
            Command::Charge(charge) => Some(charge.id),
            Command::TopUp(top_up) => Some(top_up.id),
            _ => None,
        }
    }
}

/// A new secret as the state machine sees it: an id and an already computed slow hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecret {
    pub id: SecretId,
    pub hash: SecretHash,
}

/// Open a primary account (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPrimary {
    pub key: ApiKey,
    /// At most 80 characters; may be empty.
    pub name: String,
    pub currency: Currency,
    /// The family's credit line (≤ 0; 0 = prepaid).
    pub credit_line: Amount,
    pub secret: NewSecret,
}

/// Create a subaccount under `primary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSubaccount {
    pub primary: ApiKey,
    pub key: ApiKey,
    /// 1–80 characters.
    pub name: String,
    pub use_primary_account_balance: bool,
    pub secret: NewSecret,
}

/// Change any of a subaccount's name, suspension and balance mode, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSubaccount {
    pub primary: ApiKey,
    pub subaccount: ApiKey,
    pub name: Option<String>,
    pub suspended: Option<bool>,
    pub use_primary_account_balance: Option<bool>,
}

/// Close a subaccount for good (balance and credit limit must be 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSubaccount {
    pub primary: ApiKey,
    pub subaccount: ApiKey,
}

/// Suspend (`true`) or reactivate (`false`) an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSuspended {
    pub account: ApiKey,
    pub suspended: bool,
}

/// Move balance or credit between `primary` and one of its own subaccounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: CommandId,
    /// The primary on whose behalf the transfer is made (the API path's account).
    pub primary: ApiKey,
    pub from: ApiKey,
    pub to: ApiKey,
    pub amount: Amount,
    pub reference: String,
}

/// Charge usage to an account (its own balance, or its primary's when shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: CommandId,
    pub account: ApiKey,
    pub amount: Amount,
    pub reference: String,
}

/// Credit a payment to a primary's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub id: CommandId,
    pub primary: ApiKey,
    pub amount: Amount,
    pub reference: String,
}

/// Set a primary family's credit line (≤ 0). The primary's own credit limit becomes the line
/// minus what it has already lent to its subaccounts, so the family's total credit limit equals
/// the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCreditLine {
    pub primary: ApiKey,
    pub credit_line: Amount,
}

/// Add a secret to an account (at most two are active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSecret {
    pub account: ApiKey,
    pub secret: NewSecret,
}

/// Revoke one of an account's secrets (never the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeSecret {
    pub account: ApiKey,
    pub secret: SecretId,
}

/// Set (`Some`) or remove (`None`) the low-balance threshold of an
/// own-balance account: an alert event is recorded when its available funds fall below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetLowBalanceThreshold {
    pub account: ApiKey,
    pub threshold: Option<Amount>,
}

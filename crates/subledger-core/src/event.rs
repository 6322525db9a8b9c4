//! Events: the facts the log records. `apply` folds them into state and never reads anything
//! else. The enum is append-only: a variant's fields never change once released; a change in
//! meaning is a new variant, and old variants stay decodable and appliable forever (see
//! `docs/event-format.md`). Golden-bytes tests pin the encoding.

use bincode::{Decode, Encode};

use crate::fields::Fields;
use crate::ids::{AccountId, ApiKey, CommandId, Currency, SecretId, Sequence, Timestamp};
use crate::money::Amount;
use crate::secret::SecretHash;

/// A secret as recorded: its id and slow hash. Its creation time is the event's timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SecretRecord {
    pub id: SecretId,
    pub hash: SecretHash,
}

/// One recorded fact. Variant order is part of the on-disk format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[non_exhaustive]
pub enum Event {
    PrimaryOpened {
        account: AccountId,
        key: ApiKey,
        name: String,
        currency: Currency,
        credit_limit: Amount,
        secret: SecretRecord,
    },
    SubaccountCreated {
        account: AccountId,
        primary: AccountId,
        key: ApiKey,
        name: String,
        use_primary_account_balance: bool,
        secret: SecretRecord,
    },
    SubaccountRenamed {
        account: AccountId,
        name: String,
    },
    AccountSuspended {
        account: AccountId,
    },
    AccountReactivated {
        account: AccountId,
    },
    /// The subaccount now has its own balance, starting at balance 0 and credit limit 0.
    SubaccountSwitchedToOwnBalance {
        account: AccountId,
    },
    SubaccountClosed {
        account: AccountId,
    },
    BalanceTransferred {
        command: CommandId,
        source: AccountId,
        target: AccountId,
        amount: Amount,
        reference: String,
    },
    CreditTransferred {
        command: CommandId,
        source: AccountId,
        target: AccountId,
        amount: Amount,
        reference: String,
    },
    /// Usage charged to `account`, debited from `payer` (the account itself, or its primary
    /// when the account uses the primary's balance).
    Charged {
        command: CommandId,
        account: AccountId,
        payer: AccountId,
        amount: Amount,
        reference: String,
    },
    ToppedUp {
        command: CommandId,
        account: AccountId,
        amount: Amount,
        reference: String,
    },
    /// The family's credit line changed; the primary's own credit limit is now `credit_limit`.
    CreditLineSet {
        account: AccountId,
        credit_line: Amount,
        credit_limit: Amount,
    },
    SecretCreated {
        account: AccountId,
        secret: SecretRecord,
    },
    SecretRevoked {
        account: AccountId,
        secret: SecretId,
    },
    /// A low-balance threshold was set (`Some`) or removed (`None`) for an own-balance account.
    LowBalanceThresholdSet {
        account: AccountId,
        threshold: Option<Amount>,
    },
    /// The account's available funds fell below its threshold (once per crossing; re-armed
    /// when they are back at or above it).
    LowBalanceAlert {
        account: AccountId,
        available: Amount,
        threshold: Amount,
    },
}

impl Event {
    /// Reads one money event (a balance or credit transfer, a charge, a top-up: almost every
    /// event of a busy log) from bincode's standard layout: the fast path of the log's record
    /// decoding. `None` for any other variant or anything bincode would not decode
    /// to the same value; the caller then decodes the event with bincode.
    pub fn parse_money(fields: &mut Fields<'_>) -> Option<Event> {
        // Variant indices: the enum's order, which is part of the format (append only).
        const BALANCE_TRANSFERRED: u32 = 7;
        const CREDIT_TRANSFERRED: u32 = 8;
        const CHARGED: u32 = 9;
        const TOPPED_UP: u32 = 10;
        let tag = fields.u32()?;
        if !(BALANCE_TRANSFERRED..=TOPPED_UP).contains(&tag) {
            return None;
        }
        let command = CommandId::from_bytes(fields.bytes16()?);
        let account = AccountId(fields.u32()?);
        let other = match tag {
            BALANCE_TRANSFERRED | CREDIT_TRANSFERRED | CHARGED => Some(AccountId(fields.u32()?)),
            _ => None,
        };
        let amount = Amount::from_units(fields.i128()?).ok()?;
        let reference = fields.string()?;
        Some(match (tag, other) {
            (BALANCE_TRANSFERRED, Some(target)) => Event::BalanceTransferred {
                command,
                source: account,
                target,
                amount,
                reference,
            },
            (CREDIT_TRANSFERRED, Some(target)) => Event::CreditTransferred {
                command,
                source: account,
                target,
                amount,
                reference,
            },
            (CHARGED, Some(payer)) => Event::Charged {
                command,
                account,
                payer,
                amount,
                reference,
            },
            _ => Event::ToppedUp {
                command,
                account,
                amount,
                reference,
            },
        })
    }

    /// The stable name of the variant, for exports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::PrimaryOpened { .. } => "primary_opened",
            Event::SubaccountCreated { .. } => "subaccount_created",
            Event::SubaccountRenamed { .. } => "subaccount_renamed",
            Event::AccountSuspended { .. } => "account_suspended",
            Event::AccountReactivated { .. } => "account_reactivated",
            Event::SubaccountSwitchedToOwnBalance { .. } => "subaccount_switched_to_own_balance",
            Event::SubaccountClosed { .. } => "subaccount_closed",
            Event::BalanceTransferred { .. } => "balance_transferred",
            Event::CreditTransferred { .. } => "credit_transferred",
            Event::Charged { .. } => "charged",
            Event::ToppedUp { .. } => "topped_up",
            Event::CreditLineSet { .. } => "credit_line_set",
            Event::SecretCreated { .. } => "secret_created",
            Event::SecretRevoked { .. } => "secret_revoked",
            Event::LowBalanceThresholdSet { .. } => "low_balance_threshold_set",
            Event::LowBalanceAlert { .. } => "low_balance_alert",
        }
    }

    /// Every account the event touches (at most two).
    pub fn accounts(&self) -> [Option<AccountId>; 2] {
        match *self {
            Event::PrimaryOpened { account, .. }
            | Event::SubaccountRenamed { account, .. }
            | Event::AccountSuspended { account }
            | Event::AccountReactivated { account }
            | Event::SubaccountSwitchedToOwnBalance { account }
            | Event::SubaccountClosed { account }
            | Event::ToppedUp { account, .. }
            | Event::CreditLineSet { account, .. }
            | Event::SecretCreated { account, .. }
            | Event::SecretRevoked { account, .. }
            | Event::LowBalanceThresholdSet { account, .. }
            | Event::LowBalanceAlert { account, .. } => [Some(account), None],
            Event::SubaccountCreated {
                account, primary, ..
            } => [Some(account), Some(primary)],
            Event::BalanceTransferred { source, target, .. }
            | Event::CreditTransferred { source, target, .. } => [Some(source), Some(target)],
            Event::Charged { account, payer, .. } => {
                [Some(account), (payer != account).then_some(payer)]
            }
        }
    }
}

/// Events committed together: consecutive sequence numbers from `first`, one commit instant.
/// This is the unit the writer makes durable and the unit subscribers receive.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Batch {
    pub first: Sequence,
    pub at: Timestamp,
    pub events: Vec<Event>,
}

impl Batch {
    /// The sequence number of the last event, or `first - 1` for an empty batch.
    pub fn last(&self) -> Sequence {
        let count = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
        Sequence((self.first.0 + count).saturating_sub(1))
    }

    /// Each event with its sequence number.
    pub fn iter(&self) -> impl Iterator<Item = (Sequence, &Event)> + '_ {
        (self.first.0..).map(Sequence).zip(self.events.iter())
    }
}

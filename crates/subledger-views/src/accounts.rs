//! Per-account history: every event that changed an account, with its balance, credit limit
//! and status *after* it. This one index answers statements (the entries that moved money or
//! credit, with running values) and point-in-time queries (the last entry at or before a
//! point: a binary search, never a replay). Cost: one 64-byte entry per account an event
//! touches (two per transfer), plus each rename.

use bincode::{Decode, Encode};
use subledger_core::{AccountId, Amount, Event, Funding, Sequence, State, Timestamp};

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntryKind {
    Opened,
    TopUp,
    Charge,
    TransferIn,
    TransferOut,
    CreditIn,
    CreditOut,
    CreditLine,
    SwitchedToOwnBalance,
    Suspended,
    Reactivated,
    Closed,
    ThresholdSet,
    LowBalanceAlert,
}

impl EntryKind {
    /// The name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Opened => "opened",
            EntryKind::TopUp => "top_up",
            EntryKind::Charge => "charge",
            EntryKind::TransferIn => "transfer_in",
            EntryKind::TransferOut => "transfer_out",
            EntryKind::CreditIn => "credit_in",
            EntryKind::CreditOut => "credit_out",
            EntryKind::CreditLine => "credit_line",
            EntryKind::SwitchedToOwnBalance => "own_balance",
            EntryKind::Suspended => "suspended",
            EntryKind::Reactivated => "reactivated",
            EntryKind::Closed => "closed",
            EntryKind::ThresholdSet => "low_balance_threshold",
            EntryKind::LowBalanceAlert => "low_balance_alert",
        }
    }

    /// Entries that can change the balance or the credit limit (statement lines).
    pub fn moves_money(self) -> bool {
        matches!(
            self,
            EntryKind::TopUp
                | EntryKind::Charge
                | EntryKind::TransferIn
                | EntryKind::TransferOut
                | EntryKind::CreditIn
                | EntryKind::CreditOut
                | EntryKind::CreditLine
                | EntryKind::SwitchedToOwnBalance
        )
    }
}

/// One change to an account, with the values after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    pub seq: Sequence,
    pub at: Timestamp,
    pub kind: EntryKind,
    /// `None` while the account uses its primary's balance.
    pub balance: Option<Amount>,
    pub credit_limit: Option<Amount>,
    pub suspended: bool,
    pub closed: bool,
    /// The other account of a transfer, or the other side of a charge made for a shared
    /// subaccount.
    pub counterparty: Option<AccountId>,
}

/// One account's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct AccountHistory {
    pub entries: Vec<Entry>,
    /// Names and the sequence number from which each applies (the first at creation).
    pub names: Vec<(Sequence, String)>,
}

impl AccountHistory {
    /// The index of the last entry at or before a point, if any.
    pub fn last_at_or_before(&self, point: AsOf) -> Option<&Entry> {
        let count = match point {
            AsOf::Seq(seq) => self.entries.partition_point(|entry| entry.seq <= seq),
            AsOf::At(at) => self.entries.partition_point(|entry| entry.at <= at),
        };
        count
            .checked_sub(1)
            .and_then(|index| self.entries.get(index))
    }

    /// The name in force at `seq`.
    pub fn name_at(&self, seq: Sequence) -> Option<&str> {
        let count = self.names.partition_point(|(from, _)| *from <= seq);
        count
            .checked_sub(1)
            .and_then(|index| self.names.get(index))
            .map(|(_, name)| name.as_str())
    }
}

/// A point in the past: after a sequence number, or after every event committed at or before
/// an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Seq(Sequence),
    At(Timestamp),
}

/// One entry an event adds: (account, kind, counterparty).
pub(crate) type Touch = (AccountId, EntryKind, Option<AccountId>);

/// The entries one event adds (at most two; no allocation: this runs for every event).
pub(crate) fn touched(event: &Event) -> [Option<Touch>; 2] {
    let one = |touch: Touch| [Some(touch), None];
    match *event {
        Event::PrimaryOpened { account, .. } | Event::SubaccountCreated { account, .. } => {
            one((account, EntryKind::Opened, None))
        }
        Event::AccountSuspended { account } => one((account, EntryKind::Suspended, None)),
        Event::AccountReactivated { account } => one((account, EntryKind::Reactivated, None)),
        Event::SubaccountClosed { account } => one((account, EntryKind::Closed, None)),
        Event::SubaccountSwitchedToOwnBalance { account } => {
            one((account, EntryKind::SwitchedToOwnBalance, None))
        }
        Event::BalanceTransferred { source, target, .. } => [
            Some((source, EntryKind::TransferOut, Some(target))),
            Some((target, EntryKind::TransferIn, Some(source))),
        ],
        Event::CreditTransferred { source, target, .. } => [
            Some((source, EntryKind::CreditOut, Some(target))),
            Some((target, EntryKind::CreditIn, Some(source))),
        ],
        Event::Charged { account, payer, .. } if account == payer => {
            one((account, EntryKind::Charge, None))
        }
        Event::Charged { account, payer, .. } => [
            Some((account, EntryKind::Charge, Some(payer))),
            Some((payer, EntryKind::Charge, Some(account))),
        ],
        Event::ToppedUp { account, .. } => one((account, EntryKind::TopUp, None)),
        Event::CreditLineSet { account, .. } => one((account, EntryKind::CreditLine, None)),
        Event::LowBalanceThresholdSet { account, .. } => {
            one((account, EntryKind::ThresholdSet, None))
        }
        Event::LowBalanceAlert { account, .. } => one((account, EntryKind::LowBalanceAlert, None)),
        _ => [None, None],
    }
}

/// The entry for `id` after an event applied to `state`.
pub(crate) fn entry_after(
    state: &State,
    seq: Sequence,
    at: Timestamp,
    id: AccountId,
    kind: EntryKind,
    counterparty: Option<AccountId>,
) -> Option<Entry> {
    let account = state.account(id)?;
    let (balance, credit_limit) = match account.funding {
        Funding::Own {
            balance,
            credit_limit,
        } => (Some(balance), Some(credit_limit)),
        Funding::Shared => (None, None),
    };
    Some(Entry {
        seq,
        at,
        kind,
        balance,
        credit_limit,
        suspended: account.suspended,
        closed: account.closed,
        counterparty,
    })
}

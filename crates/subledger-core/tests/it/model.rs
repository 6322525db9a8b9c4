//! A proptest state machine: random command sequences are decided and applied by the core and,
//! independently, by a small reference model of SPEC §4 written here from the spec and the
//! order of checks documented in `decide.rs` (accounts keyed by their api key text, money as
//! `rust_decimal::Decimal`; the model never calls `decide` or `apply`).
//!
//! After every step the outcome must agree exactly (accepted / already applied with the same
//! sequence and instant / the same `Rejection`), invariant 1 must hold (`check_invariants`),
//! invariants 2 and 3 are checked per family against sums tracked here, and every account of
//! the model must equal the core's. At the end the log is replayed into a fresh state whose
//! hash must equal the live one (invariant 4).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;
use subledger_core::{
    decide, AccountId, Amount, ApiKey, Charge, CloseSubaccount, Command, CommandId, CreateSecret,
    CreateSubaccount, Currency, Decision, Event, Field, Funding, Invalid, NewSecret, OpenPrimary,
    Policy, Rejection, RevokeSecret, SecretHash, SecretId, Sequence, SetCreditLine, SetSuspended,
    State, Timestamp, TopUp, Transfer, TransferRule, UpdateSubaccount,
};

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

const NAME_MAX: usize = 80;
const REFERENCE_MAX: usize = 255;
const SECRETS_MAX: usize = 2;

/// ±10¹² whole units: the bound on every amount, balance and limit.
fn bound() -> Decimal {
    Decimal::from(1_000_000_000_000_i64)
}

fn dec(amount: Amount) -> Decimal {
    Decimal::from_i128_with_scale(amount.units(), 8)
}

fn amount(value: Decimal) -> Amount {
    let mut value = value;
    value.rescale(8);
    Amount::from_units(value.mantissa()).expect("model amounts stay within the bound")
}

#[derive(Debug, Clone, PartialEq)]
struct ModelAccount {
    primary: Option<String>,
    /// `(balance, credit_limit)`, or `None` while spending the primary's balance.
    own: Option<(Decimal, Decimal)>,
    suspended: bool,
    closed: bool,
    secrets: Vec<SecretId>,
    subaccounts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Balance,
    Credit,
    Charge,
    TopUp,
}

/// What a money command asked for, compared on a retry.
#[derive(Debug, Clone, PartialEq)]
struct Content {
    kind: Kind,
    source: String,
    target: String,
    amount: Decimal,
    reference: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Accepted,
    AlreadyApplied(Sequence, Timestamp),
    Rejected(Rejection),
}

#[derive(Debug)]
struct Model {
    subaccounts_max: usize,
    accounts: BTreeMap<String, ModelAccount>,
    applied: BTreeMap<CommandId, (Content, Sequence, Timestamp)>,
}

fn invalid(field: Field, reason: Invalid) -> Rejection {
    Rejection::Validation { field, reason }
}

fn text_ok(field: Field, text: &str, chars_max: usize) -> Result<(), Rejection> {
    if text.chars().count() > chars_max {
        return Err(invalid(field, Invalid::TooLong { chars_max }));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(field, Invalid::ControlCharacters));
    }
    Ok(())
}

fn name_ok(name: &str, required: bool) -> Result<(), Rejection> {
    if required && name.is_empty() {
        return Err(invalid(Field::Name, Invalid::Empty));
    }
    text_ok(Field::Name, name, NAME_MAX)
}

fn positive(value: Amount) -> Result<Decimal, Rejection> {
    let value = dec(value);
    if value > Decimal::ZERO {
        Ok(value)
    } else {
        Err(invalid(Field::Amount, Invalid::NotPositive))
    }
}

fn transfer_rule(rule: TransferRule) -> Rejection {
    Rejection::InvalidTransfer { rule }
}

impl Model {
    fn new(subaccounts_max: usize) -> Model {
        Model {
            subaccounts_max,
            accounts: BTreeMap::new(),
            applied: BTreeMap::new(),
        }
    }

    /// Decides and (when accepted) applies `command`; money commands are recorded at `seq`.
    fn step(&mut self, command: &Command, seq: Sequence, at: Timestamp) -> Outcome {
        let result = match command {
            Command::OpenPrimary(open) => self.open_primary(open),
            Command::CreateSubaccount(create) => self.create_subaccount(create),
            Command::UpdateSubaccount(update) => self.update_subaccount(update),
            Command::CloseSubaccount(close) => self.close_subaccount(close),
            Command::SetSuspended(set) => self.set_suspended(set),
            Command::TransferBalance(transfer) => self.transfer(transfer, Kind::Balance, seq, at),
            Command::TransferCredit(transfer) => self.transfer(transfer, Kind::Credit, seq, at),
            Command::Charge(charge) => self.charge(charge, seq, at),
            Command::TopUp(top_up) => self.top_up(top_up, seq, at),
            Command::SetCreditLine(set) => self.set_credit_line(set),
            Command::CreateSecret(create) => self.create_secret(create),
            Command::RevokeSecret(revoke) => self.revoke_secret(revoke),
            other => panic!("the model does not know {other:?}"),
        };
        result.unwrap_or_else(Outcome::Rejected)
    }

    fn get(&self, key: &ApiKey) -> Option<&ModelAccount> {
        self.accounts.get(key.as_str())
    }

    fn get_mut(&mut self, key: &str) -> &mut ModelAccount {
        self.accounts.get_mut(key).expect("a known account")
    }

    /// The acting primary: known and a primary, else `UnknownAccount`.
    fn acting(&self, key: &ApiKey) -> Result<ModelAccount, Rejection> {
        match self.get(key) {
            Some(account) if account.primary.is_none() => Ok(account.clone()),
            _ => Err(Rejection::UnknownAccount { key: *key }),
        }
    }

    /// A subaccount of `primary`, else `UnknownAccount`.
    fn own_subaccount(
        &self,
        primary: &ApiKey,
        subaccount: &ApiKey,
    ) -> Result<ModelAccount, Rejection> {
        match self.get(subaccount) {
            Some(account) if account.primary.as_deref() == Some(primary.as_str()) => {
                Ok(account.clone())
            }
            _ => Err(Rejection::UnknownAccount { key: *subaccount }),
        }
    }

    /// A known, open account (secrets and admin suspension).
    fn open(&self, key: &ApiKey) -> Result<ModelAccount, Rejection> {
        let account = self
            .get(key)
            .ok_or(Rejection::UnknownAccount { key: *key })?;
        if account.closed {
            return Err(Rejection::Closed { key: *key });
        }
        Ok(account.clone())
    }

    /// Idempotency: `Some` ends deciding with the original result, or a conflict.
    fn retry(
        &self,
        id: CommandId,
        content: Option<&Content>,
    ) -> Result<Option<Outcome>, Rejection> {
        match self.applied.get(&id) {
            None => Ok(None),
            Some((recorded, seq, at)) if Some(recorded) == content => {
                Ok(Some(Outcome::AlreadyApplied(*seq, *at)))
            }
            Some(_) => Err(Rejection::IdempotencyConflict { id }),
        }
    }

    fn record(&mut self, id: CommandId, content: Option<Content>, seq: Sequence, at: Timestamp) {
        let content = content.expect("an accepted money command names known accounts");
        self.applied.insert(id, (content, seq, at));
    }

    fn open_primary(&mut self, open: &OpenPrimary) -> Result<Outcome, Rejection> {
        name_ok(&open.name, false)?;
        let line = dec(open.credit_line);
        if line > Decimal::ZERO {
            return Err(invalid(Field::CreditLimit, Invalid::Positive));
        }
        if self.get(&open.key).is_some() {
            return Err(Rejection::KeyTaken { key: open.key });
        }
        self.accounts.insert(
            open.key.to_string(),
            ModelAccount {
                primary: None,
                own: Some((Decimal::ZERO, line)),
                suspended: false,
                closed: false,
                secrets: vec![open.secret.id],
                subaccounts: Vec::new(),
            },
        );
        Ok(Outcome::Accepted)
    }

    fn create_subaccount(&mut self, create: &CreateSubaccount) -> Result<Outcome, Rejection> {
        name_ok(&create.name, true)?;
        let primary = self.acting(&create.primary)?;
        if primary.suspended {
            return Err(Rejection::Suspended {
                key: create.primary,
            });
        }
        let open_subaccounts = primary
            .subaccounts
            .iter()
            .filter(|key| !self.accounts[key.as_str()].closed)
            .count();
        if open_subaccounts >= self.subaccounts_max {
            let limit = u32::try_from(self.subaccounts_max).expect("small limit");
            return Err(Rejection::SubaccountLimitReached { limit });
        }
        if self.get(&create.key).is_some() {
            return Err(Rejection::KeyTaken { key: create.key });
        }
        let own = (!create.use_primary_account_balance).then_some((Decimal::ZERO, Decimal::ZERO));
        self.accounts.insert(
            create.key.to_string(),
            ModelAccount {
                primary: Some(create.primary.to_string()),
                own,
                suspended: false,
                closed: false,
                secrets: vec![create.secret.id],
                subaccounts: Vec::new(),
            },
        );
        self.get_mut(create.primary.as_str())
            .subaccounts
            .push(create.key.to_string());
        Ok(Outcome::Accepted)
    }

    fn update_subaccount(&mut self, update: &UpdateSubaccount) -> Result<Outcome, Rejection> {
        if let Some(name) = &update.name {
            name_ok(name, true)?;
        }
        self.acting(&update.primary)?;
        let subaccount = self.own_subaccount(&update.primary, &update.subaccount)?;
        if subaccount.closed {
            return Err(Rejection::Closed {
                key: update.subaccount,
            });
        }
        if update.use_primary_account_balance == Some(true) && subaccount.own.is_some() {
            return Err(invalid(
                Field::UsePrimaryAccountBalance,
                Invalid::Irreversible,
            ));
        }
        let account = self.get_mut(update.subaccount.as_str());
        if update.use_primary_account_balance == Some(false) && account.own.is_none() {
            account.own = Some((Decimal::ZERO, Decimal::ZERO));
        }
        if let Some(suspended) = update.suspended {
            account.suspended = suspended;
        }
        Ok(Outcome::Accepted)
    }

    fn close_subaccount(&mut self, close: &CloseSubaccount) -> Result<Outcome, Rejection> {
        self.acting(&close.primary)?;
        let subaccount = self.own_subaccount(&close.primary, &close.subaccount)?;
        if subaccount.closed {
            return Err(Rejection::Closed {
                key: close.subaccount,
            });
        }
        if let Some((balance, credit_limit)) = subaccount.own {
            if !balance.is_zero() || !credit_limit.is_zero() {
                return Err(Rejection::NotSettled {
                    balance: amount(balance),
                    credit_limit: amount(credit_limit),
                });
            }
        }
        self.get_mut(close.subaccount.as_str()).closed = true;
        Ok(Outcome::Accepted)
    }

    fn set_suspended(&mut self, set: &SetSuspended) -> Result<Outcome, Rejection> {
        self.open(&set.account)?;
        self.get_mut(set.account.as_str()).suspended = set.suspended;
        Ok(Outcome::Accepted)
    }

    fn transfer(
        &mut self,
        transfer: &Transfer,
        kind: Kind,
        seq: Sequence,
        at: Timestamp,
    ) -> Result<Outcome, Rejection> {
        let (from, to) = (transfer.from.to_string(), transfer.to.to_string());
        let content =
            (self.accounts.contains_key(&from) && self.accounts.contains_key(&to)).then(|| {
                Content {
                    kind,
                    source: from.clone(),
                    target: to.clone(),
                    amount: dec(transfer.amount),
                    reference: transfer.reference.clone(),
                }
            });
        if let Some(outcome) = self.retry(transfer.id, content.as_ref())? {
            return Ok(outcome);
        }
        let requested = positive(transfer.amount)?;
        text_ok(Field::Reference, &transfer.reference, REFERENCE_MAX)?;
        let primary = self.acting(&transfer.primary)?;
        if from == to {
            return Err(transfer_rule(TransferRule::SameAccount));
        }
        let acting = transfer.primary.as_str();
        let in_family = |key: &str| {
            self.accounts
                .get(key)
                .filter(|account| key == acting || account.primary.as_deref() == Some(acting))
                .cloned()
        };
        let (Some(source), Some(target)) = (in_family(&from), in_family(&to)) else {
            return Err(transfer_rule(TransferRule::NotInFamily));
        };
        if source.primary.is_some() && target.primary.is_some() {
            return Err(transfer_rule(TransferRule::SubaccountToSubaccount));
        }
        if source.closed || target.closed {
            return Err(transfer_rule(TransferRule::Closed));
        }
        if primary.suspended {
            return Err(transfer_rule(TransferRule::PrimarySuspended));
        }
        let (Some((source_balance, source_limit)), Some((target_balance, target_limit))) =
            (source.own, target.own)
        else {
            return Err(transfer_rule(TransferRule::SharedBalance));
        };
        let (source_after, target_after) = if kind == Kind::Credit {
            // unused_credit = |credit_limit| - max(0, -balance)
            let drawn = (-source_balance).max(Decimal::ZERO);
            let unused = -source_limit - drawn;
            if requested > unused {
                return Err(Rejection::InsufficientCredit {
                    unused: amount(unused),
                    requested: transfer.amount,
                });
            }
            if target_limit - requested < -bound() {
                return Err(transfer_rule(TransferRule::OutOfRange));
            }
            (
                (source_balance, source_limit + requested),
                (target_balance, target_limit - requested),
            )
        } else {
            // available = balance - credit_limit
            let available = source_balance - source_limit;
            if requested > available {
                return Err(Rejection::InsufficientFunds {
                    available: amount(available),
                    requested: transfer.amount,
                });
            }
            if target_balance + requested > bound() {
                return Err(transfer_rule(TransferRule::OutOfRange));
            }
            (
                (source_balance - requested, source_limit),
                (target_balance + requested, target_limit),
            )
        };
        self.get_mut(&from).own = Some(source_after);
        self.get_mut(&to).own = Some(target_after);
        self.record(transfer.id, content, seq, at);
        Ok(Outcome::Accepted)
    }

    /// Who pays a charge of `account`: itself, or its primary while it is shared.
    fn payer_of(key: &str, account: &ModelAccount) -> String {
        match (&account.own, &account.primary) {
            (None, Some(primary)) => primary.clone(),
            _ => key.to_owned(),
        }
    }

    fn charge(
        &mut self,
        charge: &Charge,
        seq: Sequence,
        at: Timestamp,
    ) -> Result<Outcome, Rejection> {
        let key = charge.account.to_string();
        let found = self.accounts.get(&key).cloned();
        let content = found.as_ref().map(|_| Content {
            kind: Kind::Charge,
            source: key.clone(),
            // What the caller sent: the payer may change between the original and a retry.
            target: String::new(),
            amount: dec(charge.amount),
            reference: charge.reference.clone(),
        });
        if let Some(outcome) = self.retry(charge.id, content.as_ref())? {
            return Ok(outcome);
        }
        let requested = positive(charge.amount)?;
        text_ok(Field::Reference, &charge.reference, REFERENCE_MAX)?;
        let account = found.ok_or(Rejection::UnknownAccount {
            key: charge.account,
        })?;
        if account.closed {
            return Err(Rejection::Closed {
                key: charge.account,
            });
        }
        if account.suspended {
            return Err(Rejection::Suspended {
                key: charge.account,
            });
        }
        let payer_key = Model::payer_of(&key, &account);
        let payer = self.accounts[&payer_key].clone();
        if payer.suspended {
            return Err(Rejection::Suspended {
                key: payer_key.parse().expect("a model key is an api key"),
            });
        }
        // SPEC §4: rejected if the charged account *or its primary* is suspended, also for an
        // own-balance subaccount.
        if let Some(primary) = &account.primary {
            if self.accounts[primary].suspended {
                return Err(Rejection::Suspended {
                    key: primary.parse().expect("a model key is an api key"),
                });
            }
        }
        let (balance, credit_limit) = payer.own.expect("a payer has its own balance");
        let available = balance - credit_limit;
        if requested > available {
            return Err(Rejection::InsufficientFunds {
                available: amount(available),
                requested: charge.amount,
            });
        }
        self.get_mut(&payer_key).own = Some((balance - requested, credit_limit));
        self.record(charge.id, content, seq, at);
        Ok(Outcome::Accepted)
    }

    fn top_up(
        &mut self,
        top_up: &TopUp,
        seq: Sequence,
        at: Timestamp,
    ) -> Result<Outcome, Rejection> {
        let key = top_up.primary.to_string();
        let content = self.accounts.contains_key(&key).then(|| Content {
            kind: Kind::TopUp,
            source: key.clone(),
            target: key.clone(),
            amount: dec(top_up.amount),
            reference: top_up.reference.clone(),
        });
        if let Some(outcome) = self.retry(top_up.id, content.as_ref())? {
            return Ok(outcome);
        }
        let requested = positive(top_up.amount)?;
        text_ok(Field::Reference, &top_up.reference, REFERENCE_MAX)?;
        let primary = self.acting(&top_up.primary)?;
        let (balance, credit_limit) = primary.own.expect("a primary has its own balance");
        if balance + requested > bound() {
            return Err(invalid(Field::Amount, Invalid::OutOfRange));
        }
        self.get_mut(&key).own = Some((balance + requested, credit_limit));
        self.record(top_up.id, content, seq, at);
        Ok(Outcome::Accepted)
    }

    fn set_credit_line(&mut self, set: &SetCreditLine) -> Result<Outcome, Rejection> {
        let line = dec(set.credit_line);
        if line > Decimal::ZERO {
            return Err(invalid(Field::CreditLimit, Invalid::Positive));
        }
        let primary = self.acting(&set.primary)?;
        let (balance, _) = primary.own.expect("a primary has its own balance");
        // Credit lent to own-balance subaccounts stays lent: the primary keeps line + lent.
        let lent: Decimal = primary
            .subaccounts
            .iter()
            .filter_map(|key| self.accounts[key].own)
            .map(|(_, credit_limit)| -credit_limit)
            .sum();
        let credit_limit = line + lent;
        if credit_limit > Decimal::ZERO || balance < credit_limit {
            return Err(Rejection::CreditLineNotAllowed {
                requested: set.credit_line,
                lent: amount(lent),
                balance: amount(balance),
            });
        }
        self.get_mut(set.primary.as_str()).own = Some((balance, credit_limit));
        Ok(Outcome::Accepted)
    }

    fn create_secret(&mut self, create: &CreateSecret) -> Result<Outcome, Rejection> {
        let account = self.open(&create.account)?;
        if account.secrets.len() >= SECRETS_MAX {
            return Err(Rejection::ExcessSecret);
        }
        if account.secrets.contains(&create.secret.id) {
            return Err(Rejection::SecretIdTaken {
                id: create.secret.id,
            });
        }
        self.get_mut(create.account.as_str())
            .secrets
            .push(create.secret.id);
        Ok(Outcome::Accepted)
    }

    fn revoke_secret(&mut self, revoke: &RevokeSecret) -> Result<Outcome, Rejection> {
        let account = self.open(&revoke.account)?;
        if !account.secrets.contains(&revoke.secret) {
            return Err(Rejection::UnknownSecret { id: revoke.secret });
        }
        if account.secrets.len() <= 1 {
            return Err(Rejection::LastSecret);
        }
        self.get_mut(revoke.account.as_str())
            .secrets
            .retain(|id| *id != revoke.secret);
        Ok(Outcome::Accepted)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated scenarios
// ---------------------------------------------------------------------------------------------

const PRIMARIES: usize = 3;
const SUBACCOUNTS: usize = 8;
const UNKNOWN: usize = 2;
const KEYS: usize = PRIMARIES + SUBACCOUNTS + UNKNOWN;
const REUSED_COMMAND_IDS: u8 = 8;

fn key_text(index: usize) -> String {
    let index = index % KEYS;
    if index < PRIMARIES {
        format!("prima{index:03}")
    } else if index < PRIMARIES + SUBACCOUNTS {
        format!("subac{:03}", index - PRIMARIES)
    } else {
        format!("unkno{:03}", index - PRIMARIES - SUBACCOUNTS)
    }
}

fn key_of(index: usize) -> ApiKey {
    key_text(index).parse().expect("generated keys are valid")
}

fn name_of(index: usize) -> String {
    match index {
        0 => "Team".into(),
        1 => String::new(),
        2 => "x".repeat(81),
        3 => "bad\u{0}name".into(),
        _ => "é".repeat(80),
    }
}

fn reference_of(index: usize) -> String {
    match index {
        0 => String::new(),
        1 => "inv-1".into(),
        2 => "r".repeat(256),
        3 => "a\tb".into(),
        _ => "r".repeat(255),
    }
}

fn secret_of(n: u8) -> NewSecret {
    NewSecret {
        id: SecretId::from_bytes([n; 16]),
        hash: SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())
            .expect("valid hash"),
    }
}

fn command_id_of(n: u8) -> CommandId {
    let mut bytes = [0xAB; 16];
    bytes[15] = n;
    CommandId::from_bytes(bytes)
}

/// An account a command names.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// The n-th (cyclically) subaccount the model knows, open or closed; a subaccount key from
    /// the pool while there is none.
    Existing(usize),
    /// A key from the pool: primaries, subaccount keys (created or not) and unknown keys.
    Key(usize),
}

/// The acting primary of a subaccount command.
#[derive(Debug, Clone, Copy)]
enum Acting {
    /// The subaccount's own primary (primary 0 while the subaccount does not exist).
    Owner,
    /// Any key (strangers, subaccounts, unknown keys).
    Key(usize),
}

/// The ends of a transfer.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// From the subaccount's primary to the subaccount, on the primary's behalf.
    ToSubaccount(Who),
    /// From the subaccount to its primary, on the primary's behalf.
    FromSubaccount(Who),
    /// From one subaccount to another, on the first one's primary's behalf.
    Between(Who, Who),
    /// Arbitrary keys.
    Keys {
        acting: usize,
        from: usize,
        to: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Alter {
    Nothing,
    Amount,
    Reference,
}

#[derive(Debug, Clone)]
enum Op {
    OpenPrimary {
        key: usize,
        line: Amount,
        name: usize,
        secret: u8,
    },
    CreateSubaccount {
        primary: usize,
        subaccount: usize,
        shared: bool,
        name: usize,
        secret: u8,
    },
    Update {
        acting: Acting,
        subaccount: Who,
        name: Option<usize>,
        suspended: Option<bool>,
        shared: Option<bool>,
    },
    Close {
        acting: Acting,
        subaccount: Who,
    },
    Suspend {
        account: Who,
        suspended: bool,
    },
    Transfer {
        credit: bool,
        id: u8,
        route: Route,
        amount: Amount,
        reference: usize,
    },
    Charge {
        id: u8,
        account: Who,
        amount: Amount,
        reference: usize,
    },
    TopUp {
        id: u8,
        account: usize,
        amount: Amount,
        reference: usize,
    },
    SetCreditLine {
        account: usize,
        line: Amount,
    },
    CreateSecret {
        account: Who,
        secret: u8,
    },
    RevokeSecret {
        account: Who,
        secret: u8,
    },
    /// Resubmit an earlier money command (`back` steps back in the history), maybe altered.
    Retry {
        back: usize,
        alter: Alter,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    subaccounts_max: u32,
    /// Credit lines of the three primaries opened first.
    lines: [Amount; PRIMARIES],
    /// Subaccounts created next, in pool order: (primary, shared).
    subaccounts: Vec<(usize, bool)>,
    ops: Vec<Op>,
}

fn cents(cents: i64) -> Amount {
    Amount::from_units(i128::from(cents) * 1_000_000).expect("small amount")
}

fn units(units: i128) -> Amount {
    Amount::from_units(units).expect("small amount")
}

/// Mostly ordinary positive amounts; sometimes tiny, zero, negative or at the bound.
fn money() -> impl Strategy<Value = Amount> {
    prop_oneof![
        12 => (1_i64..=20_000).prop_map(cents),
        2 => (1_i128..=1_000).prop_map(units),
        1 => Just(Amount::ZERO),
        1 => (-20_000_i64..=-1).prop_map(cents),
        1 => prop_oneof![
            Just(Amount::MAX),
            Just(units(Amount::MAX.units() - 1)),
            Just(units(Amount::MAX.units() / 2)),
        ],
    ]
}

/// Credit lines: mostly ≤ 0 (0 = prepaid), sometimes the bound, sometimes (invalid) positive.
fn credit_line() -> impl Strategy<Value = Amount> {
    prop_oneof![
        2 => Just(Amount::ZERO),
        6 => (-50_000_i64..=-1).prop_map(cents),
        1 => Just(Amount::MIN),
        1 => (1_i64..=100).prop_map(cents),
    ]
}

fn any_key() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..PRIMARIES,
        5 => PRIMARIES..PRIMARIES + SUBACCOUNTS,
        1 => PRIMARIES + SUBACCOUNTS..KEYS,
    ]
}

fn primary_key() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..PRIMARIES, 1 => 0..KEYS]
}

fn subaccount_key() -> impl Strategy<Value = usize> {
    prop_oneof![8 => PRIMARIES..PRIMARIES + SUBACCOUNTS, 1 => 0..KEYS]
}

/// Mostly an existing subaccount, sometimes any key.
fn subaccount() -> impl Strategy<Value = Who> {
    prop_oneof![8 => (0_usize..16).prop_map(Who::Existing), 1 => (0..KEYS).prop_map(Who::Key)]
}

/// Primaries and existing subaccounts alike, sometimes unknown keys.
fn account() -> impl Strategy<Value = Who> {
    prop_oneof![
        3 => (0..PRIMARIES).prop_map(Who::Key),
        5 => (0_usize..16).prop_map(Who::Existing),
        1 => (0..KEYS).prop_map(Who::Key),
    ]
}

fn name() -> impl Strategy<Value = usize> {
    prop_oneof![8 => Just(0_usize), 1 => 1_usize..5]
}

fn reference() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0_usize..2, 1 => 2_usize..5]
}

fn acting() -> impl Strategy<Value = Acting> {
    prop_oneof![8 => Just(Acting::Owner), 1 => (0..KEYS).prop_map(Acting::Key)]
}

/// A few ids used again and again (retries and conflicts), most rarely repeated.
fn command_number() -> impl Strategy<Value = u8> {
    prop_oneof![1 => 0..REUSED_COMMAND_IDS, 3 => REUSED_COMMAND_IDS..=u8::MAX]
}

fn secret_number() -> impl Strategy<Value = u8> {
    1_u8..=3
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        5 => subaccount().prop_map(Route::ToSubaccount),
        4 => subaccount().prop_map(Route::FromSubaccount),
        1 => (subaccount(), subaccount()).prop_map(|(from, to)| Route::Between(from, to)),
        1 => (primary_key(), any_key(), any_key())
            .prop_map(|(acting, from, to)| Route::Keys { acting, from, to }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..KEYS, credit_line(), name(), secret_number())
            .prop_map(|(key, line, name, secret)| Op::OpenPrimary { key, line, name, secret }),
        4 => (primary_key(), subaccount_key(), any::<bool>(), name(), secret_number()).prop_map(
            |(primary, subaccount, shared, name, secret)| Op::CreateSubaccount {
                primary,
                subaccount,
                shared,
                name,
                secret,
            }
        ),
        4 => (
            acting(),
            subaccount(),
            proptest::option::weighted(0.3, name()),
            proptest::option::weighted(0.4, any::<bool>()),
            proptest::option::weighted(0.4, any::<bool>()),
        )
            .prop_map(|(acting, subaccount, name, suspended, shared)| Op::Update {
                acting,
                subaccount,
                name,
                suspended,
                shared,
            }),
        2 => (acting(), subaccount())
            .prop_map(|(acting, subaccount)| Op::Close { acting, subaccount }),
        2 => (account(), proptest::bool::weighted(0.6))
            .prop_map(|(account, suspended)| Op::Suspend { account, suspended }),
        16 => (any::<bool>(), command_number(), route(), money(), reference()).prop_map(
            |(credit, id, route, amount, reference)| Op::Transfer {
                credit,
                id,
                route,
                amount,
                reference,
            }
        ),
        8 => (command_number(), account(), money(), reference()).prop_map(
            |(id, account, amount, reference)| Op::Charge { id, account, amount, reference }
        ),
        5 => (command_number(), primary_key(), money(), reference()).prop_map(
            |(id, account, amount, reference)| Op::TopUp { id, account, amount, reference }
        ),
        2 => (primary_key(), credit_line())
            .prop_map(|(account, line)| Op::SetCreditLine { account, line }),
        2 => (account(), secret_number())
            .prop_map(|(account, secret)| Op::CreateSecret { account, secret }),
        2 => (account(), secret_number())
            .prop_map(|(account, secret)| Op::RevokeSecret { account, secret }),
        4 => (
            0_usize..8,
            prop_oneof![
                4 => Just(Alter::Nothing),
                1 => Just(Alter::Amount),
                1 => Just(Alter::Reference),
            ]
        )
            .prop_map(|(back, alter)| Op::Retry { back, alter }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1_u32..=4,
        [credit_line(), credit_line(), credit_line()],
        proptest::collection::vec((0..PRIMARIES, any::<bool>()), 0..=SUBACCOUNTS),
        proptest::collection::vec(op(), 1..100),
    )
        .prop_map(|(subaccounts_max, lines, subaccounts, ops)| Scenario {
            subaccounts_max,
            lines,
            subaccounts,
            ops,
        })
}

/// The key a `Who` names in the current model.
fn who(model: &Model, who: Who) -> ApiKey {
    match who {
        Who::Existing(n) => {
            let existing: Vec<&String> = model
                .accounts
                .iter()
                .filter(|(_, account)| account.primary.is_some())
                .map(|(key, _)| key)
                .collect();
            match existing.get(n % existing.len().max(1)) {
                Some(key) => key.parse().expect("valid key"),
                None => key_of(PRIMARIES + n % SUBACCOUNTS),
            }
        }
        Who::Key(index) => key_of(index),
    }
}

/// The primary owning `subaccount` in the model, or primary 0 if there is none.
fn owner(model: &Model, subaccount: ApiKey) -> ApiKey {
    model
        .get(&subaccount)
        .and_then(|account| account.primary.as_deref())
        .map_or_else(|| key_of(0), |key| key.parse().expect("valid key"))
}

/// Turns an abstract operation into a command, naming accounts through the model's state.
fn resolve(op: &Op, model: &Model, history: &[Command]) -> Option<Command> {
    let subaccount_and_acting = |acting: Acting, subaccount: Who| {
        let subaccount = who(model, subaccount);
        let primary = match acting {
            Acting::Owner => owner(model, subaccount),
            Acting::Key(index) => key_of(index),
        };
        (primary, subaccount)
    };
    Some(match op {
        Op::OpenPrimary {
            key,
            line,
            name,
            secret,
        } => Command::OpenPrimary(OpenPrimary {
            key: key_of(*key),
            name: name_of(*name),
            currency: Currency::EUR,
            credit_line: *line,
            secret: secret_of(*secret),
        }),
        Op::CreateSubaccount {
            primary,
            subaccount,
            shared,
            name,
            secret,
        } => Command::CreateSubaccount(CreateSubaccount {
            primary: key_of(*primary),
            key: key_of(*subaccount),
            name: name_of(*name),
            use_primary_account_balance: *shared,
            secret: secret_of(*secret),
        }),
        Op::Update {
            acting,
            subaccount,
            name,
            suspended,
            shared,
        } => {
            let (primary, subaccount) = subaccount_and_acting(*acting, *subaccount);
            Command::UpdateSubaccount(UpdateSubaccount {
                primary,
                subaccount,
                name: name.map(name_of),
                suspended: *suspended,
                use_primary_account_balance: *shared,
            })
        }
        Op::Close { acting, subaccount } => {
            let (primary, subaccount) = subaccount_and_acting(*acting, *subaccount);
            Command::CloseSubaccount(CloseSubaccount {
                primary,
                subaccount,
            })
        }
        Op::Suspend { account, suspended } => Command::SetSuspended(SetSuspended {
            account: who(model, *account),
            suspended: *suspended,
        }),
        Op::Transfer {
            credit,
            id,
            route,
            amount,
            reference,
        } => {
            let (primary, from, to) = match *route {
                Route::ToSubaccount(subaccount) => {
                    let (primary, subaccount) = subaccount_and_acting(Acting::Owner, subaccount);
                    (primary, primary, subaccount)
                }
                Route::FromSubaccount(subaccount) => {
                    let (primary, subaccount) = subaccount_and_acting(Acting::Owner, subaccount);
                    (primary, subaccount, primary)
                }
                Route::Between(from, to) => {
                    let (primary, from) = subaccount_and_acting(Acting::Owner, from);
                    (primary, from, who(model, to))
                }
                Route::Keys { acting, from, to } => (key_of(acting), key_of(from), key_of(to)),
            };
            let transfer = Transfer {
                id: command_id_of(*id),
                primary,
                from,
                to,
                amount: *amount,
                reference: reference_of(*reference),
            };
            if *credit {
                Command::TransferCredit(transfer)
            } else {
                Command::TransferBalance(transfer)
            }
        }
        Op::Charge {
            id,
            account,
            amount,
            reference,
        } => Command::Charge(Charge {
            id: command_id_of(*id),
            account: who(model, *account),
            amount: *amount,
            reference: reference_of(*reference),
        }),
        Op::TopUp {
            id,
            account,
            amount,
            reference,
        } => Command::TopUp(TopUp {
            id: command_id_of(*id),
            primary: key_of(*account),
            amount: *amount,
            reference: reference_of(*reference),
        }),
        Op::SetCreditLine { account, line } => Command::SetCreditLine(SetCreditLine {
            primary: key_of(*account),
            credit_line: *line,
        }),
        Op::CreateSecret { account, secret } => Command::CreateSecret(CreateSecret {
            account: who(model, *account),
            secret: secret_of(*secret),
        }),
        Op::RevokeSecret { account, secret } => Command::RevokeSecret(RevokeSecret {
            account: who(model, *account),
            secret: SecretId::from_bytes([*secret; 16]),
        }),
        Op::Retry { back, alter } => {
            let earlier = history.len().checked_sub(1 + back % history.len().max(1))?;
            let mut command = history[earlier].clone();
            let (amount, reference) = match &mut command {
                Command::TransferBalance(transfer) | Command::TransferCredit(transfer) => {
                    (&mut transfer.amount, &mut transfer.reference)
                }
                Command::Charge(charge) => (&mut charge.amount, &mut charge.reference),
                Command::TopUp(top_up) => (&mut top_up.amount, &mut top_up.reference),
                _ => return None,
            };
            match alter {
                Alter::Nothing => {}
                Alter::Amount => {
                    *amount = amount
                        .checked_add(units(1))
                        .unwrap_or_else(|| units(amount.units() - 1));
                }
                Alter::Reference => reference.push('x'),
            }
            command
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Running a scenario against both
// ---------------------------------------------------------------------------------------------

/// What the test tracks per family (keyed by the primary's id) from the applied events.
#[derive(Debug, Default)]
struct Family {
    /// Σ top-ups − Σ charges, in minor units (invariant 2).
    net: i128,
    /// The credit line last opened with or set, in minor units (invariant 3).
    line: i128,
}

/// Invariants 1–3 on the core state, and the model's accounts against the core's.
fn check_step(
    state: &State,
    model: &Model,
    families: &BTreeMap<AccountId, Family>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(state.check_invariants(), Ok(()), "invariant 1");
    for (primary, family) in families {
        let (mut balances, mut limits) = (0_i128, 0_i128);
        for (id, account) in state.accounts() {
            if id != *primary && account.primary() != Some(*primary) {
                continue;
            }
            if let Funding::Own {
                balance,
                credit_limit,
            } = account.funding()
            {
                balances += balance.units();
                limits += credit_limit.units();
            }
        }
        prop_assert_eq!(balances, family.net, "invariant 2, family {:?}", primary);
        prop_assert_eq!(limits, family.line, "invariant 3, family {:?}", primary);
    }
    prop_assert_eq!(state.account_count(), model.accounts.len(), "account count");
    for (key, expected) in &model.accounts {
        let api_key: ApiKey = key.parse().expect("valid key");
        let Some((id, account)) = state.account_by_key(&api_key) else {
            return Err(TestCaseError::fail(format!("the core lacks account {key}")));
        };
        let key_of_id = |id: AccountId| {
            state
                .account(id)
                .map(|account| account.key.to_string())
                .unwrap_or_default()
        };
        let actual = ModelAccount {
            primary: account.primary().map(key_of_id),
            own: match account.funding() {
                Funding::Own {
                    balance,
                    credit_limit,
                } => Some((dec(balance), dec(credit_limit))),
                Funding::Shared => None,
            },
            suspended: account.suspended(),
            closed: account.closed(),
            secrets: state.secret_ids(id).to_vec(),
            subaccounts: state
                .subaccounts(id)
                .iter()
                .copied()
                .map(key_of_id)
                .collect(),
        };
        prop_assert_eq!(&actual, expected, "account {}", key);
    }
    Ok(())
}

fn track(state: &State, families: &mut BTreeMap<AccountId, Family>, event: &Event) {
    let family_of = |id: AccountId| state.account(id).and_then(|a| a.primary()).unwrap_or(id);
    match event {
        Event::PrimaryOpened {
            account,
            credit_limit,
            ..
        } => {
            families.insert(
                *account,
                Family {
                    net: 0,
                    line: credit_limit.units(),
                },
            );
        }
        Event::ToppedUp {
            account, amount, ..
        } => families.entry(family_of(*account)).or_default().net += amount.units(),
        Event::Charged { payer, amount, .. } => {
            families.entry(family_of(*payer)).or_default().net -= amount.units();
        }
        Event::CreditLineSet {
            account,
            credit_line,
            ..
        } => families.entry(*account).or_default().line = credit_line.units(),
        _ => {}
    }
}

fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
    let policy = Policy {
        subaccounts_per_primary_max: scenario.subaccounts_max,
    };
    let mut state = State::new(policy);
    let mut model = Model::new(usize::try_from(scenario.subaccounts_max).expect("small limit"));
    let mut families = BTreeMap::new();
    let mut log: Vec<(Sequence, Timestamp, Event)> = Vec::new();
    let mut history: Vec<Command> = Vec::new();
    let mut at = 1_700_000_000_000_i64;

    let opens = scenario
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| Op::OpenPrimary {
            key: index,
            line: *line,
            name: 0,
            secret: 1,
        });
    let creates = scenario
        .subaccounts
        .iter()
        .enumerate()
        .map(|(index, (primary, shared))| Op::CreateSubaccount {
            primary: *primary,
            subaccount: PRIMARIES + index,
            shared: *shared,
            name: 0,
            secret: 1,
        });
    let ops = opens.chain(creates).chain(scenario.ops.iter().cloned());
    for (step, op) in ops.enumerate() {
        let Some(command) = resolve(&op, &model, &history) else {
            continue;
        };
        if command.command_id().is_some() {
            history.push(command.clone());
        }
        // Non-decreasing instants, sometimes equal.
        at += i64::try_from(step % 3).expect("small");
        let at = Timestamp(at);
        let seq = state.last_seq().next();
        // The writer reads ahead before deciding (`State::warm`): a pure read.
        let before = state.state_hash();
        state.warm(std::iter::once(&command).chain(&history));
        prop_assert_eq!(
            state.state_hash(),
            before,
            "step {}: warm changed the state",
            step
        );
        let decided = decide(&state, &command);
        let expected = model.step(&command, seq, at);
        match (&decided, &expected) {
            (Ok(Decision::Apply(events)), Outcome::Accepted) => {
                for event in events {
                    let seq = state.last_seq().next();
                    if let Err(error) = state.apply(seq, at, event) {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: decided event does not apply: {error}: {event:?}"
                        )));
                    }
                    track(&state, &mut families, event);
                    log.push((seq, at, event.clone()));
                }
            }
            (Ok(Decision::AlreadyApplied { seq, at }), Outcome::AlreadyApplied(s, a))
                if seq == s && at == a => {}
            (Err(rejection), Outcome::Rejected(modelled)) if rejection == modelled => {}
            _ => {
                return Err(TestCaseError::fail(format!(
                    "step {step}: {command:?}\n  core:  {decided:?}\n  model: {expected:?}"
                )));
            }
        }
        check_step(&state, &model, &families)
            .map_err(|error| TestCaseError::fail(format!("after step {step}: {error}")))?;
    }

    // Invariant 4: replaying the log from empty gives exactly the live state.
    let mut replayed = State::new(policy);
    for (seq, at, event) in &log {
        replayed
            .apply(*seq, *at, event)
            .map_err(|error| TestCaseError::fail(format!("replay: {error}")))?;
    }
    prop_assert_eq!(replayed.state_hash(), state.state_hash(), "invariant 4");
    prop_assert_eq!(&replayed, &state);

    // A read-side projection (no idempotency index) folds the same log into the same accounts.
    let mut projection = State::without_command_index(policy);
    for (seq, at, event) in &log {
        projection
            .apply(*seq, *at, event)
            .map_err(|error| TestCaseError::fail(format!("projection: {error}")))?;
    }
    prop_assert!(projection.accounts().eq(state.accounts()), "projection");
    prop_assert_eq!(projection.last_seq(), state.last_seq());
    prop_assert_eq!(projection.last_at(), state.last_at());
    prop_assert_eq!(projection.command_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_agrees_with_the_reference_model(scenario in scenario()) {
        run(&scenario)?;
    }
}

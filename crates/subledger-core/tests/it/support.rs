//! A small given/when/then harness over `decide` and `State::apply`.
//!
//! `Given` builds a state by deciding and applying commands (each must be accepted), `when`
//! decides one more command, and the `then_*` methods assert the exact outcome. Accepted events
//! are applied with the next sequence numbers and a later timestamp; after every commit the
//! invariants are checked and the whole log is replayed into a fresh state whose hash must
//! equal the live one.

use std::sync::atomic::{AtomicU64, Ordering};

use subledger_core::{
    decide, AccountId, Amount, ApiKey, Charge, CloseSubaccount, Command, CommandId, CreateSecret,
    CreateSubaccount, Currency, Decision, Event, Funding, NewSecret, OpenPrimary, Policy,
    Rejection, RevokeSecret, SecretHash, SecretId, Sequence, SetCreditLine, SetSuspended, State,
    Timestamp, TopUp, Transfer, UpdateSubaccount,
};

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// An api key from its text (8 chars of `[a-z0-9]`).
pub fn key(text: &str) -> ApiKey {
    text.parse().expect("valid api key")
}

/// An exact amount from decimal text: `amt("10.5")`, `amt("-3")`.
pub fn amt(text: &str) -> Amount {
    text.parse().expect("valid amount")
}

/// A syntactically valid, dummy argon2id hash: the core treats it as opaque.
pub fn hash() -> SecretHash {
    SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).expect("valid hash")
}

/// Secret id number `n`.
pub fn secret_id(n: u8) -> SecretId {
    SecretId::from_bytes([n; 16])
}

pub fn new_secret(n: u8) -> NewSecret {
    NewSecret {
        id: secret_id(n),
        hash: hash(),
    }
}

static NEXT_COMMAND_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh command id from a process-wide counter (unique across tests).
pub fn command_id() -> CommandId {
    let n = NEXT_COMMAND_ID.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0xC0; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    CommandId::from_bytes(bytes)
}

/// The idempotency id of a money command.
pub fn id_of(command: &Command) -> CommandId {
    command.command_id().expect("a money command")
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// Opens a primary with an empty name, EUR, the given credit line and secret 1.
pub fn open_primary(primary: &str, credit_line: &str) -> Command {
    Command::OpenPrimary(OpenPrimary {
        key: key(primary),
        name: String::new(),
        currency: Currency::EUR,
        credit_line: amt(credit_line),
        secret: new_secret(1),
    })
}

pub fn open_primary_named(primary: &str, name: &str) -> Command {
    Command::OpenPrimary(OpenPrimary {
        key: key(primary),
        name: name.into(),
        currency: Currency::EUR,
        credit_line: Amount::ZERO,
        secret: new_secret(1),
    })
}

fn create_subaccount(primary: &str, subaccount: &str, name: &str, shared: bool) -> Command {
    Command::CreateSubaccount(CreateSubaccount {
        primary: key(primary),
        key: key(subaccount),
        name: name.into(),
        use_primary_account_balance: shared,
        secret: new_secret(1),
    })
}

/// A subaccount using its primary's balance (the API default).
pub fn create_shared(primary: &str, subaccount: &str) -> Command {
    create_subaccount(primary, subaccount, "sub", true)
}

/// A subaccount with its own balance from the start.
pub fn create_own(primary: &str, subaccount: &str) -> Command {
    create_subaccount(primary, subaccount, "sub", false)
}

pub fn create_named(primary: &str, subaccount: &str, name: &str) -> Command {
    create_subaccount(primary, subaccount, name, true)
}

/// An update that changes nothing; tests set the fields they need.
pub fn update(primary: &str, subaccount: &str) -> UpdateSubaccount {
    UpdateSubaccount {
        primary: key(primary),
        subaccount: key(subaccount),
        name: None,
        suspended: None,
        use_primary_account_balance: None,
    }
}

pub fn rename(primary: &str, subaccount: &str, name: &str) -> Command {
    Command::UpdateSubaccount(UpdateSubaccount {
        name: Some(name.into()),
        ..update(primary, subaccount)
    })
}

pub fn set_mode(primary: &str, subaccount: &str, use_primary_account_balance: bool) -> Command {
    Command::UpdateSubaccount(UpdateSubaccount {
        use_primary_account_balance: Some(use_primary_account_balance),
        ..update(primary, subaccount)
    })
}

pub fn suspend_sub(primary: &str, subaccount: &str, suspended: bool) -> Command {
    Command::UpdateSubaccount(UpdateSubaccount {
        suspended: Some(suspended),
        ..update(primary, subaccount)
    })
}

pub fn close(primary: &str, subaccount: &str) -> Command {
    Command::CloseSubaccount(CloseSubaccount {
        primary: key(primary),
        subaccount: key(subaccount),
    })
}

/// Admin suspend (`true`) / reactivate (`false`) of any account.
pub fn set_suspended(account: &str, suspended: bool) -> Command {
    Command::SetSuspended(SetSuspended {
        account: key(account),
        suspended,
    })
}

pub fn transfer(primary: &str, from: &str, to: &str, amount: &str) -> Transfer {
    Transfer {
        id: command_id(),
        primary: key(primary),
        from: key(from),
        to: key(to),
        amount: amt(amount),
        reference: String::new(),
    }
}

pub fn transfer_balance(primary: &str, from: &str, to: &str, amount: &str) -> Command {
    Command::TransferBalance(transfer(primary, from, to, amount))
}

pub fn transfer_credit(primary: &str, from: &str, to: &str, amount: &str) -> Command {
    Command::TransferCredit(transfer(primary, from, to, amount))
}

pub fn charge_with(account: &str, amount: &str, reference: &str) -> Charge {
    Charge {
        id: command_id(),
        account: key(account),
        amount: amt(amount),
        reference: reference.into(),
    }
}

pub fn charge(account: &str, amount: &str) -> Command {
    Command::Charge(charge_with(account, amount, ""))
}

pub fn top_up(primary: &str, amount: &str) -> Command {
    Command::TopUp(TopUp {
        id: command_id(),
        primary: key(primary),
        amount: amt(amount),
        reference: String::new(),
    })
}

pub fn set_credit_line(primary: &str, credit_line: &str) -> Command {
    Command::SetCreditLine(SetCreditLine {
        primary: key(primary),
        credit_line: amt(credit_line),
    })
}

pub fn create_secret(account: &str, n: u8) -> Command {
    Command::CreateSecret(CreateSecret {
        account: key(account),
        secret: new_secret(n),
    })
}

pub fn revoke_secret(account: &str, n: u8) -> Command {
    Command::RevokeSecret(RevokeSecret {
        account: key(account),
        secret: secret_id(n),
    })
}

// ---------------------------------------------------------------------------------------------
// Given / when / then
// ---------------------------------------------------------------------------------------------

/// A state built from accepted commands, with the log that produced it.
#[derive(Debug)]
pub struct Given {
    state: State,
    log: Vec<(Sequence, Timestamp, Event)>,
    clock: i64,
}

impl Given {
    pub fn new() -> Given {
        Given::with_policy(Policy::default())
    }

    pub fn with_policy(policy: Policy) -> Given {
        Given {
            state: State::new(policy),
            log: Vec::new(),
            clock: 1_700_000_000_000,
        }
    }

    /// Decides `command`, which must be accepted, and applies its events.
    pub fn ok(mut self, command: Command) -> Given {
        match decide(&self.state, &command) {
            Ok(Decision::Apply(events)) => self.commit(&events),
            other => panic!("given {command:?} must be accepted, got {other:?}"),
        }
        self
    }

    pub fn primary(self, primary: &str, credit_line: &str) -> Given {
        self.ok(open_primary(primary, credit_line))
    }

    pub fn shared_sub(self, primary: &str, subaccount: &str) -> Given {
        self.ok(create_shared(primary, subaccount))
    }

    pub fn own_sub(self, primary: &str, subaccount: &str) -> Given {
        self.ok(create_own(primary, subaccount))
    }

    pub fn top_up(self, primary: &str, amount: &str) -> Given {
        self.ok(top_up(primary, amount))
    }

    pub fn transfer(self, primary: &str, from: &str, to: &str, amount: &str) -> Given {
        self.ok(transfer_balance(primary, from, to, amount))
    }

    pub fn lend(self, primary: &str, from: &str, to: &str, amount: &str) -> Given {
        self.ok(transfer_credit(primary, from, to, amount))
    }

    pub fn charge(self, account: &str, amount: &str) -> Given {
        self.ok(charge(account, amount))
    }

    pub fn suspended(self, account: &str) -> Given {
        self.ok(set_suspended(account, true))
    }

    pub fn closed(self, primary: &str, subaccount: &str) -> Given {
        self.ok(close(primary, subaccount))
    }

    /// Decides `command` against the state built so far.
    pub fn when(self, command: Command) -> When {
        let outcome = decide(&self.state, &command);
        When {
            given: self,
            outcome,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The dense id of an existing account.
    pub fn id(&self, account: &str) -> AccountId {
        self.state
            .account_id(&key(account))
            .unwrap_or_else(|| panic!("no account {account}"))
    }

    pub fn last_seq(&self) -> Sequence {
        self.state.last_seq()
    }

    pub fn last_at(&self) -> Timestamp {
        self.state.last_at()
    }

    /// Applies `events` as one batch, then checks the invariants and replay equality.
    fn commit(&mut self, events: &[Event]) {
        self.clock += 1_000;
        let at = Timestamp(self.clock);
        for event in events {
            let seq = self.state.last_seq().next();
            self.state
                .apply(seq, at, event)
                .unwrap_or_else(|error| panic!("decided event must apply: {error}: {event:?}"));
            self.log.push((seq, at, event.clone()));
        }
        self.check();
    }

    /// Invariant 1 (`check_invariants`) and invariant 4 (replay from empty gives the same hash).
    pub fn check(&self) {
        assert_eq!(self.state.check_invariants(), Ok(()), "invariant 1");
        let mut replayed = State::new(*self.state.policy());
        for (seq, at, event) in &self.log {
            replayed.apply(*seq, *at, event).expect("replay applies");
        }
        assert_eq!(replayed.state_hash(), self.state.state_hash(), "replay");
        assert_eq!(replayed, self.state, "replay");
    }

    fn account(&self, account: &str) -> &subledger_core::Account {
        self.state
            .account_by_key(&key(account))
            .unwrap_or_else(|| panic!("no account {account}"))
            .1
    }

    /// Asserts an own-balance account's balance and credit limit.
    pub fn has_own(self, account: &str, balance: &str, credit_limit: &str) -> Given {
        assert_eq!(
            self.account(account).funding(),
            Funding::Own {
                balance: amt(balance),
                credit_limit: amt(credit_limit),
            },
            "funding of {account}"
        );
        self
    }

    /// Asserts a subaccount spends its primary's balance.
    pub fn has_shared(self, account: &str) -> Given {
        assert_eq!(
            self.account(account).funding(),
            Funding::Shared,
            "{account}"
        );
        self
    }

    pub fn expect_suspended(self, account: &str, suspended: bool) -> Given {
        assert_eq!(self.account(account).suspended(), suspended, "{account}");
        self
    }

    pub fn expect_closed(self, account: &str, closed: bool) -> Given {
        assert_eq!(self.account(account).closed(), closed, "{account}");
        self
    }

    pub fn has_secrets(self, account: &str, secrets: &[u8]) -> Given {
        let expected: Vec<SecretId> = secrets.iter().copied().map(secret_id).collect();
        let (id, _) = self
            .state
            .account_by_key(&key(account))
            .unwrap_or_else(|| panic!("no account {account}"));
        assert_eq!(self.state.secret_ids(id).to_vec(), expected, "{account}");
        self
    }
}

impl Default for Given {
    fn default() -> Given {
        Given::new()
    }
}

/// A decided command, waiting for its assertion.
#[derive(Debug)]
pub struct When {
    given: Given,
    outcome: Result<Decision, Rejection>,
}

impl When {
    /// The command was accepted with exactly `expected`; applies them and checks invariants.
    #[track_caller]
    pub fn then_events(mut self, expected: &[Event]) -> Given {
        assert_eq!(self.outcome, Ok(Decision::Apply(expected.to_vec())));
        self.given.commit(expected);
        self.given
    }

    /// The command was accepted and changes nothing.
    #[track_caller]
    pub fn then_no_events(self) -> Given {
        self.then_events(&[])
    }

    /// The command was refused with exactly `expected`; the state is unchanged.
    #[track_caller]
    pub fn then_rejected(self, expected: Rejection) -> Given {
        assert_eq!(self.outcome, Err(expected));
        self.given
    }

    /// The money command was a retry of one applied at `seq`/`at`; nothing changes.
    #[track_caller]
    pub fn then_already_applied(self, seq: Sequence, at: Timestamp) -> Given {
        assert_eq!(self.outcome, Ok(Decision::AlreadyApplied { seq, at }));
        self.given
    }

    /// The command was accepted (events not inspected); applies them. For set-ups inside tests.
    #[track_caller]
    pub fn then_accepted(mut self) -> Given {
        let Ok(Decision::Apply(events)) = &self.outcome else {
            panic!("expected acceptance, got {:?}", self.outcome);
        };
        let events = events.clone();
        self.given.commit(&events);
        self.given
    }
}

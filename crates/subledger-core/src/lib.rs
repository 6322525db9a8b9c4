//! subledger-core: the domain of the ledger, with no I/O, no clock and no RNG.
//!
//! Layout: [`money`] and [`ids`] are the value types; [`command`] is what callers ask for;
//! [`event`] is what the log records; [`decide()`] turns a command and the current [`State`]
//! into events or a [`Rejection`]; [`State::apply`] folds an event into the state. The engine
//! crate owns threads, queues and storage; this crate only knows the rules.
//!
//! ```
//! use subledger_core::*;
//!
//! let mut state = State::new(Policy::default());
//! let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).unwrap();
//! let open = Command::OpenPrimary(OpenPrimary {
//!     key: "prim0001".parse().unwrap(),
//!     name: "Acme".into(),
//!     currency: Currency::EUR,
//!     credit_line: Amount::ZERO,
//!     secret: NewSecret { id: SecretId::from_bytes([1; 16]), hash },
//! });
//! let Ok(Decision::Apply(events)) = decide(&state, &open) else { panic!() };
//! for (offset, event) in (1..).zip(&events) {
//!     state.apply(Sequence(offset), Timestamp(0), event).unwrap();
//! }
//! assert_eq!(state.account_count(), 1);
//! ```

pub mod command;
mod commands;
pub mod decide;
pub mod digest;
pub mod event;
pub mod fields;
pub mod ids;
mod keys;
pub use keys::KeyIndex;
pub mod money;
pub mod rejection;
pub mod secret;
pub mod state;

pub use command::{
    Charge, CloseSubaccount, Command, CreateSecret, CreateSubaccount, NewSecret, OpenPrimary,
    RevokeSecret, SetCreditLine, SetLowBalanceThreshold, SetSuspended, TopUp, Transfer,
    UpdateSubaccount,
};
pub use commands::{
    is_money_event, CommandIndex, CommandIndexV10Of, CommandIndexV10Unentered, CommandIndexV7,
    CommandIndexV7Of, CommandIndexV7Unentered, MoneyRecord, PendingEntry, Records, SharedRecords,
    TagKey, RECORD_RAW_BYTES, SHARED_SEGMENT_RECORDS_MIN,
};
pub use decide::{
    decide, execute, validate_name, validate_reference, Decision, Executed, NAME_CHARS_MAX,
    REFERENCE_CHARS_MAX,
};
pub use event::{Batch, Event, SecretRecord};
pub use ids::{
    AccountId, ApiKey, CommandId, Currency, IdError, SecretId, Sequence, Timestamp, API_KEY_CHARS,
};
pub use money::{Amount, AmountError, Total, AMOUNT_FRACTION_DIGITS_MAX, AMOUNT_WHOLE_MAX};
pub use rejection::{Field, Invalid, Rejection, TransferRule};
pub use secret::{validate_secret, SecretError, SecretHash};
pub use state::{
    encode_state_without_commands, state_hash_of, Account, AccountFacts, ApplyError, ApplyFault,
    CommandContent, CommandRecord, Funding, LowBalance, MoneyKind, Policy, SecretIds, State,
    StateWithoutCommands, NO_PRIMARY, SECRETS_PER_ACCOUNT_MAX, SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT,
};

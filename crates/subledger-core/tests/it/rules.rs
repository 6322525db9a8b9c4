//! One given/when/then test per rule and per rejection of SPEC §4, as `decide` implements them.
//! Every test asserts the exact events or the exact rejection, and the balances after.

use subledger_core::{
    AccountId, Command, Currency, Event, Field, Invalid, Policy, Rejection, SecretRecord,
    TransferRule, SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT,
};

use crate::support::{
    amt, charge, charge_with, close, command_id, create_named, create_own, create_secret,
    create_shared, hash, id_of, key, open_primary, open_primary_named, rename, revoke_secret,
    secret_id, set_credit_line, set_mode, set_suspended, suspend_sub, top_up, transfer,
    transfer_balance, transfer_credit, update, Given,
};

/// The primary of the main family.
const P: &str = "prim0001";
/// Own-balance subaccounts of `P`.
const A: &str = "suba0001";
const B: &str = "suba0002";
/// A subaccount of `P` spending `P`'s balance.
const S: &str = "subs0001";
/// A stranger family: primary `Q` with own-balance subaccount `Z`.
const Q: &str = "prim0002";
const Z: &str = "subq0001";
const UNKNOWN: &str = "unkn0001";

/// `P` (credit line -100, balance 50) with own-balance `A` and `B` and shared `S`; a stranger
/// family `Q` (prepaid, balance 0) with own-balance `Z`.
fn family() -> Given {
    Given::new()
        .primary(P, "-100")
        .own_sub(P, A)
        .own_sub(P, B)
        .shared_sub(P, S)
        .top_up(P, "50")
        .primary(Q, "0")
        .own_sub(Q, Z)
        .has_own(P, "50", "-100")
        .has_own(A, "0", "0")
        .has_shared(S)
}

fn rule(rule: TransferRule) -> Rejection {
    Rejection::InvalidTransfer { rule }
}

fn funds(available: &str, requested: &str) -> Rejection {
    Rejection::InsufficientFunds {
        available: amt(available),
        requested: amt(requested),
    }
}

fn credit(unused: &str, requested: &str) -> Rejection {
    Rejection::InsufficientCredit {
        unused: amt(unused),
        requested: amt(requested),
    }
}

fn invalid(field: Field, reason: Invalid) -> Rejection {
    Rejection::Validation { field, reason }
}

fn unknown(account: &str) -> Rejection {
    Rejection::UnknownAccount { key: key(account) }
}

fn suspended(account: &str) -> Rejection {
    Rejection::Suspended { key: key(account) }
}

fn closed(account: &str) -> Rejection {
    Rejection::Closed { key: key(account) }
}

fn line_not_allowed(requested: &str, lent: &str, balance: &str) -> Rejection {
    Rejection::CreditLineNotAllowed {
        requested: amt(requested),
        lent: amt(lent),
        balance: amt(balance),
    }
}

fn balance_moved(command: &Command, source: AccountId, target: AccountId, amount: &str) -> Event {
    Event::BalanceTransferred {
        command: id_of(command),
        source,
        target,
        amount: amt(amount),
        reference: String::new(),
    }
}

fn credit_moved(command: &Command, source: AccountId, target: AccountId, amount: &str) -> Event {
    Event::CreditTransferred {
        command: id_of(command),
        source,
        target,
        amount: amt(amount),
        reference: String::new(),
    }
}

fn charged(command: &Command, account: AccountId, payer: AccountId, amount: &str) -> Event {
    let Command::Charge(charge) = command else {
        panic!("not a charge");
    };
    Event::Charged {
        command: charge.id,
        account,
        payer,
        amount: amt(amount),
        reference: charge.reference.clone(),
    }
}

fn record(n: u8) -> SecretRecord {
    SecretRecord {
        id: secret_id(n),
        hash: hash(),
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

#[test]
fn open_primary_records_its_credit_line_and_first_secret() {
    Given::new()
        .when(open_primary(P, "-10"))
        .then_events(&[Event::PrimaryOpened {
            account: AccountId(0),
            key: key(P),
            name: String::new(),
            currency: Currency::EUR,
            credit_limit: amt("-10"),
            secret: record(1),
        }])
        .has_own(P, "0", "-10")
        .has_secrets(P, &[1])
        .when(open_primary(P, "0"))
        .then_rejected(Rejection::KeyTaken { key: key(P) });
}

#[test]
fn create_subaccount_shared_by_default_or_with_own_balance_at_zero() {
    Given::new()
        .primary(P, "0")
        .when(create_shared(P, S))
        .then_events(&[Event::SubaccountCreated {
            account: AccountId(1),
            primary: AccountId(0),
            key: key(S),
            name: "sub".into(),
            use_primary_account_balance: true,
            secret: record(1),
        }])
        .has_shared(S)
        .when(create_own(P, A))
        .then_events(&[Event::SubaccountCreated {
            account: AccountId(2),
            primary: AccountId(0),
            key: key(A),
            name: "sub".into(),
            use_primary_account_balance: false,
            secret: record(1),
        }])
        .has_own(A, "0", "0")
        .when(create_shared(P, A))
        .then_rejected(Rejection::KeyTaken { key: key(A) });
}

#[test]
fn subaccounts_own_no_subaccounts() {
    family()
        .when(create_shared(A, "suba0009"))
        .then_rejected(unknown(A))
        .when(create_shared(UNKNOWN, "suba0009"))
        .then_rejected(unknown(UNKNOWN));
}

#[test]
fn a_suspended_primary_cannot_create_subaccounts() {
    family()
        .suspended(P)
        .when(create_shared(P, "suba0009"))
        .then_rejected(suspended(P));
}

#[test]
fn subaccount_limit_counts_open_subaccounts_only() {
    let policy = Policy {
        subaccounts_per_primary_max: 2,
    };
    let limit = Rejection::SubaccountLimitReached { limit: 2 };
    Given::with_policy(policy)
        .primary(P, "0")
        .primary(Q, "0")
        .shared_sub(P, "suba0001")
        .own_sub(P, "suba0002")
        .when(create_shared(P, "suba0003"))
        .then_rejected(limit.clone())
        // The limit is per primary.
        .when(create_shared(Q, "subq0001"))
        .then_accepted()
        // Closed subaccounts do not count.
        .closed(P, "suba0001")
        .when(create_own(P, "suba0003"))
        .then_accepted()
        .has_own("suba0003", "0", "0")
        .when(create_shared(P, "suba0004"))
        .then_rejected(limit);
    assert_eq!(
        Policy::default().subaccounts_per_primary_max,
        SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT
    );
    assert_eq!(SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT, 1_000);
}

#[test]
fn suspend_and_reactivate_any_account() {
    let given = family();
    let (p, a) = (given.id(P), given.id(A));
    given
        .when(set_suspended(A, true))
        .then_events(&[Event::AccountSuspended { account: a }])
        .expect_suspended(A, true)
        .when(set_suspended(A, true))
        .then_no_events()
        .when(set_suspended(A, false))
        .then_events(&[Event::AccountReactivated { account: a }])
        .expect_suspended(A, false)
        .when(set_suspended(A, false))
        .then_no_events()
        .when(set_suspended(P, true))
        .then_events(&[Event::AccountSuspended { account: p }])
        .expect_suspended(P, true)
        .when(suspend_sub(P, A, true))
        .then_events(&[Event::AccountSuspended { account: a }])
        .when(set_suspended(UNKNOWN, true))
        .then_rejected(unknown(UNKNOWN))
        .has_own(P, "50", "-100");
}

// ---------------------------------------------------------------------------------------------
// Balance transfers
// ---------------------------------------------------------------------------------------------

#[test]
fn balance_transfer_primary_to_own_subaccount() {
    let given = family();
    let (p, a) = (given.id(P), given.id(A));
    let command = transfer_balance(P, P, A, "30");
    given
        .when(command.clone())
        .then_events(&[balance_moved(&command, p, a, "30")])
        .has_own(P, "20", "-100")
        .has_own(A, "30", "0");
}

#[test]
fn balance_transfer_own_subaccount_to_primary() {
    let given = family().transfer(P, P, A, "30");
    let (p, a) = (given.id(P), given.id(A));
    let command = transfer_balance(P, A, P, "12.5");
    given
        .when(command.clone())
        .then_events(&[balance_moved(&command, a, p, "12.5")])
        .has_own(P, "32.5", "-100")
        .has_own(A, "17.5", "0");
}

#[test]
fn balance_transfer_may_spend_the_available_including_credit() {
    // available(P) = 50 - (-100) = 150
    family()
        .when(transfer_balance(P, P, A, "150.00000001"))
        .then_rejected(funds("150", "150.00000001"))
        .when(transfer_balance(P, P, A, "150"))
        .then_accepted()
        .has_own(P, "-100", "-100")
        .has_own(A, "150", "0")
        .when(transfer_balance(P, P, A, "0.00000001"))
        .then_rejected(funds("0", "0.00000001"));
}

#[test]
fn subaccount_available_includes_its_credit_limit() {
    family()
        .lend(P, P, A, "40")
        .has_own(A, "0", "-40")
        .when(transfer_balance(P, A, P, "40.00000001"))
        .then_rejected(funds("40", "40.00000001"))
        .when(transfer_balance(P, A, P, "40"))
        .then_accepted()
        .has_own(A, "-40", "-40")
        .has_own(P, "90", "-60");
}

#[test]
fn transfer_between_subaccounts_is_rejected() {
    family()
        .transfer(P, P, A, "10")
        .lend(P, P, A, "10")
        .when(transfer_balance(P, A, B, "5"))
        .then_rejected(rule(TransferRule::SubaccountToSubaccount))
        .when(transfer_credit(P, A, B, "5"))
        .then_rejected(rule(TransferRule::SubaccountToSubaccount))
        .has_own(A, "10", "-10")
        .has_own(B, "0", "0");
}

#[test]
fn transfer_with_a_stranger_or_unknown_account_is_not_in_family() {
    let not_in_family = rule(TransferRule::NotInFamily);
    family()
        .when(transfer_balance(P, P, Z, "5"))
        .then_rejected(not_in_family.clone())
        .when(transfer_balance(P, Q, P, "5"))
        .then_rejected(not_in_family.clone())
        .when(transfer_credit(P, P, UNKNOWN, "5"))
        .then_rejected(not_in_family.clone())
        .when(transfer_balance(P, UNKNOWN, A, "5"))
        .then_rejected(not_in_family.clone())
        // Acting for another family's accounts.
        .when(transfer_balance(Q, P, A, "5"))
        .then_rejected(not_in_family.clone())
        .when(transfer_credit(Q, Q, A, "5"))
        .then_rejected(not_in_family)
        .has_own(P, "50", "-100")
        .has_own(Q, "0", "0")
        .has_own(Z, "0", "0");
}

#[test]
fn transfer_on_behalf_of_an_unknown_or_non_primary_account_is_unknown() {
    family()
        .when(transfer_balance(UNKNOWN, P, A, "5"))
        .then_rejected(unknown(UNKNOWN))
        .when(transfer_credit(A, P, A, "5"))
        .then_rejected(unknown(A))
        .when(transfer_balance(S, P, A, "5"))
        .then_rejected(unknown(S));
}

#[test]
fn transfer_to_the_same_account_is_rejected() {
    family()
        .when(transfer_balance(P, P, P, "5"))
        .then_rejected(rule(TransferRule::SameAccount))
        .when(transfer_credit(P, A, A, "5"))
        .then_rejected(rule(TransferRule::SameAccount))
        .has_own(P, "50", "-100");
}

#[test]
fn transfer_with_a_shared_balance_end_is_rejected() {
    family()
        .when(transfer_balance(P, P, S, "5"))
        .then_rejected(rule(TransferRule::SharedBalance))
        .when(transfer_balance(P, S, P, "5"))
        .then_rejected(rule(TransferRule::SharedBalance))
        .when(transfer_credit(P, P, S, "5"))
        .then_rejected(rule(TransferRule::SharedBalance))
        .has_own(P, "50", "-100")
        .has_shared(S);
}

#[test]
fn transfer_with_a_closed_end_is_rejected() {
    family()
        .closed(P, B)
        .closed(P, S)
        .when(transfer_balance(P, P, B, "5"))
        .then_rejected(rule(TransferRule::Closed))
        .when(transfer_credit(P, B, P, "5"))
        .then_rejected(rule(TransferRule::Closed))
        // Closed wins over shared.
        .when(transfer_balance(P, P, S, "5"))
        .then_rejected(rule(TransferRule::Closed))
        .has_own(P, "50", "-100")
        .has_own(B, "0", "0");
}

#[test]
fn transfers_with_a_suspended_subaccount_are_allowed() {
    family()
        .ok(suspend_sub(P, A, true))
        .expect_suspended(A, true)
        .when(transfer_balance(P, P, A, "20"))
        .then_accepted()
        .when(transfer_balance(P, A, P, "5"))
        .then_accepted()
        .when(transfer_credit(P, P, A, "10"))
        .then_accepted()
        .when(transfer_credit(P, A, P, "4"))
        .then_accepted()
        .has_own(A, "15", "-6")
        .has_own(P, "35", "-94");
}

#[test]
fn transfers_of_a_suspended_primary_are_rejected() {
    let primary_suspended = rule(TransferRule::PrimarySuspended);
    family()
        .transfer(P, P, A, "10")
        .suspended(P)
        .when(transfer_balance(P, P, A, "5"))
        .then_rejected(primary_suspended.clone())
        .when(transfer_balance(P, A, P, "5"))
        .then_rejected(primary_suspended.clone())
        .when(transfer_credit(P, P, A, "5"))
        .then_rejected(primary_suspended)
        .has_own(P, "40", "-100")
        .has_own(A, "10", "0")
        // Reactivated, it may transfer again.
        .ok(set_suspended(P, false))
        .when(transfer_balance(P, A, P, "5"))
        .then_accepted()
        .has_own(P, "45", "-100");
}

#[test]
fn balance_transfer_beyond_the_amount_bound_is_rejected() {
    Given::new()
        .primary(P, "0")
        .own_sub(P, A)
        .top_up(P, "1000000000000")
        .transfer(P, P, A, "1000000000000")
        .top_up(P, "1")
        .when(transfer_balance(P, P, A, "1"))
        .then_rejected(rule(TransferRule::OutOfRange))
        .has_own(A, "1000000000000", "0")
        .has_own(P, "1", "0");
}

// ---------------------------------------------------------------------------------------------
// Credit transfers
// ---------------------------------------------------------------------------------------------

#[test]
fn credit_transfer_moves_the_credit_limit_not_the_balance() {
    let given = family();
    let (p, a) = (given.id(P), given.id(A));
    let lend = transfer_credit(P, P, A, "40");
    let give_back = transfer_credit(P, A, P, "15");
    given
        .when(lend.clone())
        .then_events(&[credit_moved(&lend, p, a, "40")])
        .has_own(P, "50", "-60")
        .has_own(A, "0", "-40")
        .when(give_back.clone())
        .then_events(&[credit_moved(&give_back, a, p, "15")])
        .has_own(P, "50", "-75")
        .has_own(A, "0", "-25");
}

#[test]
fn credit_transfer_requires_unused_credit() {
    // unused(P) = |-100| - max(0, -50) = 100
    family()
        .when(transfer_credit(P, P, A, "100.00000001"))
        .then_rejected(credit("100", "100.00000001"))
        // Spending into the credit draws it: unused = 100 - 70 = 30.
        .charge(P, "120")
        .has_own(P, "-70", "-100")
        .when(transfer_credit(P, P, A, "30.00000001"))
        .then_rejected(credit("30", "30.00000001"))
        .when(transfer_credit(P, P, A, "30"))
        .then_accepted()
        .has_own(P, "-70", "-70")
        .has_own(A, "0", "-30")
        .when(transfer_credit(P, P, B, "0.00000001"))
        .then_rejected(credit("0", "0.00000001"));
}

#[test]
fn credit_transfer_back_requires_the_subaccounts_unused_credit() {
    // A has a limit of -40 and has drawn 10 of it: unused 30.
    family()
        .lend(P, P, A, "40")
        .transfer(P, A, P, "10")
        .has_own(A, "-10", "-40")
        .when(transfer_credit(P, A, P, "30.00000001"))
        .then_rejected(credit("30", "30.00000001"))
        .when(transfer_credit(P, A, P, "30"))
        .then_accepted()
        .has_own(A, "-10", "-10")
        .has_own(P, "60", "-90");
}

#[test]
fn prepaid_accounts_have_no_credit_to_transfer() {
    family()
        .transfer(P, P, A, "10")
        .when(transfer_credit(P, A, P, "1"))
        .then_rejected(credit("0", "1"))
        .when(transfer_credit(Q, Q, Z, "1"))
        .then_rejected(credit("0", "1"));
}

// ---------------------------------------------------------------------------------------------
// Charges
// ---------------------------------------------------------------------------------------------

#[test]
fn charge_debits_the_accounts_own_balance() {
    let given = family().transfer(P, P, A, "30");
    let (p, a) = (given.id(P), given.id(A));
    let on_primary = charge(P, "5");
    let on_subaccount = charge(A, "10");
    given
        .when(on_primary.clone())
        .then_events(&[charged(&on_primary, p, p, "5")])
        .when(on_subaccount.clone())
        .then_events(&[charged(&on_subaccount, a, a, "10")])
        .has_own(P, "15", "-100")
        .has_own(A, "20", "0");
}

#[test]
fn charge_of_a_shared_subaccount_debits_the_primary() {
    let given = family();
    let (p, s) = (given.id(P), given.id(S));
    let command = charge(S, "20");
    given
        .when(command.clone())
        .then_events(&[charged(&command, s, p, "20")])
        .has_own(P, "30", "-100")
        .has_shared(S);
}

#[test]
fn charge_may_spend_the_available_including_credit() {
    family()
        .lend(P, P, A, "10")
        .when(charge(P, "140.00000001"))
        .then_rejected(funds("140", "140.00000001"))
        .when(charge(S, "140.00000001"))
        .then_rejected(funds("140", "140.00000001"))
        .when(charge(P, "140"))
        .then_accepted()
        .has_own(P, "-90", "-90")
        .when(charge(S, "0.00000001"))
        .then_rejected(funds("0", "0.00000001"))
        .when(charge(B, "0.00000001"))
        .then_rejected(funds("0", "0.00000001"))
        .when(charge(A, "10.00000001"))
        .then_rejected(funds("10", "10.00000001"))
        .when(charge(A, "10"))
        .then_accepted()
        .has_own(A, "-10", "-10");
}

#[test]
fn charge_of_a_suspended_account_is_rejected() {
    family()
        .transfer(P, P, A, "10")
        .ok(suspend_sub(P, A, true))
        .ok(suspend_sub(P, S, true))
        .when(charge(A, "1"))
        .then_rejected(suspended(A))
        .when(charge(S, "1"))
        .then_rejected(suspended(S))
        .has_own(A, "10", "0")
        .has_own(P, "40", "-100")
        .ok(suspend_sub(P, A, false))
        .when(charge(A, "1"))
        .then_accepted()
        .has_own(A, "9", "0");
}

#[test]
fn charge_when_the_primary_is_suspended_is_rejected() {
    family()
        .suspended(P)
        .when(charge(P, "1"))
        .then_rejected(suspended(P))
        .when(charge(S, "1"))
        .then_rejected(suspended(P))
        .has_own(P, "50", "-100");
}

/// SPEC §4: a charge is "rejected if the charged account or its primary is suspended". The core
/// only checks the payer, which for an own-balance subaccount is the subaccount itself.
#[test]
fn charge_of_an_own_balance_subaccount_of_a_suspended_primary_is_rejected() {
    family()
        .transfer(P, P, A, "10")
        .suspended(P)
        .when(charge(A, "1"))
        .then_rejected(suspended(P))
        .has_own(A, "10", "0");
}

#[test]
fn charge_of_a_closed_subaccount_is_rejected() {
    family()
        .ok(suspend_sub(P, S, true))
        .closed(P, S)
        .closed(P, B)
        // Closed wins over suspended.
        .when(charge(S, "1"))
        .then_rejected(closed(S))
        .when(charge(B, "1"))
        .then_rejected(closed(B))
        .has_own(P, "50", "-100");
}

#[test]
fn charge_of_an_unknown_account_is_rejected() {
    family()
        .when(charge(UNKNOWN, "1"))
        .then_rejected(unknown(UNKNOWN));
}

// ---------------------------------------------------------------------------------------------
// Top-ups and credit lines
// ---------------------------------------------------------------------------------------------

#[test]
fn top_up_credits_a_primary() {
    let given = family();
    let p = given.id(P);
    let command = top_up(P, "10.25");
    given
        .when(command.clone())
        .then_events(&[Event::ToppedUp {
            command: id_of(&command),
            account: p,
            amount: amt("10.25"),
            reference: String::new(),
        }])
        .has_own(P, "60.25", "-100");
}

#[test]
fn top_up_is_for_primaries_only() {
    family()
        .when(top_up(A, "5"))
        .then_rejected(unknown(A))
        .when(top_up(S, "5"))
        .then_rejected(unknown(S))
        .when(top_up(UNKNOWN, "5"))
        .then_rejected(unknown(UNKNOWN))
        .has_own(A, "0", "0")
        .has_own(P, "50", "-100");
}

#[test]
fn top_up_of_a_suspended_primary_is_accepted() {
    // SPEC §4 restricts charges and transfers of suspended accounts, not payments.
    family()
        .suspended(P)
        .when(top_up(P, "5"))
        .then_accepted()
        .has_own(P, "55", "-100");
}

#[test]
fn top_up_beyond_the_amount_bound_is_rejected() {
    Given::new()
        .primary(P, "0")
        .top_up(P, "999999999999.99999999")
        .when(top_up(P, "0.00000002"))
        .then_rejected(invalid(Field::Amount, Invalid::OutOfRange))
        .when(top_up(P, "0.00000001"))
        .then_accepted()
        .has_own(P, "1000000000000", "0");
}

#[test]
fn set_credit_line_sets_the_family_total() {
    // P lent 40 to A, so P keeps line + lent = -200 + 40 = -160 for itself.
    let given = family().lend(P, P, A, "40");
    let p = given.id(P);
    given
        .when(set_credit_line(P, "-200"))
        .then_events(&[Event::CreditLineSet {
            account: p,
            credit_line: amt("-200"),
            credit_limit: amt("-160"),
        }])
        .has_own(P, "50", "-160")
        .has_own(A, "0", "-40");
}

#[test]
fn credit_line_cannot_be_less_than_what_is_lent() {
    let given = family().lend(P, P, A, "40").lend(P, P, B, "2.5");
    let p = given.id(P);
    given
        .when(set_credit_line(P, "-42.49999999"))
        .then_rejected(line_not_allowed("-42.49999999", "42.5", "50"))
        .when(set_credit_line(P, "0"))
        .then_rejected(line_not_allowed("0", "42.5", "50"))
        .when(set_credit_line(P, "-42.5"))
        .then_events(&[Event::CreditLineSet {
            account: p,
            credit_line: amt("-42.5"),
            credit_limit: amt("0"),
        }])
        .has_own(P, "50", "0")
        .has_own(A, "0", "-40")
        .has_own(B, "0", "-2.5");
}

#[test]
fn credit_line_cannot_withdraw_credit_the_balance_already_uses() {
    family()
        .charge(P, "120")
        .has_own(P, "-70", "-100")
        .when(set_credit_line(P, "-69.99999999"))
        .then_rejected(line_not_allowed("-69.99999999", "0", "-70"))
        .when(set_credit_line(P, "-70"))
        .then_accepted()
        .has_own(P, "-70", "-70");
}

#[test]
fn credit_line_accounts_for_both_lent_and_used_credit() {
    // lent 40 (P limit -60), then P spends to -30: line + 40 ≤ -30, so line ≤ -70.
    family()
        .lend(P, P, A, "40")
        .charge(P, "80")
        .has_own(P, "-30", "-60")
        .when(set_credit_line(P, "-69.99999999"))
        .then_rejected(line_not_allowed("-69.99999999", "40", "-30"))
        .when(set_credit_line(P, "-70"))
        .then_accepted()
        .has_own(P, "-30", "-30")
        .has_own(A, "0", "-40");
}

#[test]
fn credit_line_must_not_be_positive() {
    family()
        .when(set_credit_line(P, "0.00000001"))
        .then_rejected(invalid(Field::CreditLimit, Invalid::Positive))
        .when(open_primary("prim0009", "1"))
        .then_rejected(invalid(Field::CreditLimit, Invalid::Positive))
        .when(set_credit_line(Q, "0"))
        .then_accepted()
        .has_own(Q, "0", "0");
}

#[test]
fn credit_line_is_set_on_primaries_only() {
    family()
        .when(set_credit_line(A, "-5"))
        .then_rejected(unknown(A))
        .when(set_credit_line(UNKNOWN, "-5"))
        .then_rejected(unknown(UNKNOWN));
}

// ---------------------------------------------------------------------------------------------
// Subaccount updates and closing
// ---------------------------------------------------------------------------------------------

#[test]
fn switch_to_own_balance_starts_at_zero_and_never_goes_back() {
    let given = family().charge(S, "5");
    let s = given.id(S);
    given
        .has_own(P, "45", "-100")
        .when(set_mode(P, S, false))
        .then_events(&[Event::SubaccountSwitchedToOwnBalance { account: s }])
        .has_own(S, "0", "0")
        .has_own(P, "45", "-100")
        .when(set_mode(P, S, true))
        .then_rejected(invalid(
            Field::UsePrimaryAccountBalance,
            Invalid::Irreversible,
        ))
        .when(set_mode(P, S, false))
        .then_no_events()
        .has_own(S, "0", "0");
}

#[test]
fn a_shared_subaccount_staying_shared_changes_nothing() {
    family()
        .when(set_mode(P, S, true))
        .then_no_events()
        .has_shared(S)
        .when(Command::UpdateSubaccount(update(P, S)))
        .then_no_events();
}

#[test]
fn an_own_balance_subaccount_never_becomes_shared() {
    family()
        .when(set_mode(P, A, true))
        .then_rejected(invalid(
            Field::UsePrimaryAccountBalance,
            Invalid::Irreversible,
        ))
        .has_own(A, "0", "0");
}

#[test]
fn an_update_applies_all_its_changes_together() {
    let given = family();
    let s = given.id(S);
    let mut all = update(P, S);
    all.name = Some("Renamed".into());
    all.suspended = Some(true);
    all.use_primary_account_balance = Some(false);
    let mut bad = all.clone();
    bad.name = Some(String::new());
    given
        // All or nothing: a bad name rejects the whole update.
        .when(Command::UpdateSubaccount(bad))
        .then_rejected(invalid(Field::Name, Invalid::Empty))
        .has_shared(S)
        .expect_suspended(S, false)
        .when(Command::UpdateSubaccount(all))
        .then_events(&[
            Event::SubaccountSwitchedToOwnBalance { account: s },
            Event::SubaccountRenamed {
                account: s,
                name: "Renamed".into(),
            },
            Event::AccountSuspended { account: s },
        ])
        .has_own(S, "0", "0")
        .expect_suspended(S, true);
}

#[test]
fn rename_validates_the_name() {
    let given = family();
    let a = given.id(A);
    let eighty_wide = "é".repeat(80);
    given
        .when(rename(P, A, "New name"))
        .then_events(&[Event::SubaccountRenamed {
            account: a,
            name: "New name".into(),
        }])
        .when(rename(P, A, &eighty_wide))
        .then_events(&[Event::SubaccountRenamed {
            account: a,
            name: eighty_wide.clone(),
        }])
        .when(rename(P, A, ""))
        .then_rejected(invalid(Field::Name, Invalid::Empty))
        .when(rename(P, A, &"x".repeat(81)))
        .then_rejected(invalid(Field::Name, Invalid::TooLong { chars_max: 80 }))
        .when(rename(P, A, "tab\there"))
        .then_rejected(invalid(Field::Name, Invalid::ControlCharacters))
        .when(rename(P, A, "bell\u{7}"))
        .then_rejected(invalid(Field::Name, Invalid::ControlCharacters))
        .when(rename(P, A, "del\u{7f}"))
        .then_rejected(invalid(Field::Name, Invalid::ControlCharacters));
}

#[test]
fn subaccount_names_are_required_and_validated_on_create() {
    family()
        .when(create_named(P, "suba0009", ""))
        .then_rejected(invalid(Field::Name, Invalid::Empty))
        .when(create_named(P, "suba0009", &"x".repeat(81)))
        .then_rejected(invalid(Field::Name, Invalid::TooLong { chars_max: 80 }))
        .when(create_named(P, "suba0009", "new\nline"))
        .then_rejected(invalid(Field::Name, Invalid::ControlCharacters))
        .when(create_named(P, "suba0009", &"x".repeat(80)))
        .then_accepted();
}

#[test]
fn primary_names_may_be_empty_but_are_validated() {
    Given::new()
        .when(open_primary_named(P, &"x".repeat(81)))
        .then_rejected(invalid(Field::Name, Invalid::TooLong { chars_max: 80 }))
        .when(open_primary_named(P, "nul\0"))
        .then_rejected(invalid(Field::Name, Invalid::ControlCharacters))
        .when(open_primary_named(P, ""))
        .then_accepted()
        .has_own(P, "0", "0");
}

#[test]
fn updates_reach_only_the_callers_own_subaccounts() {
    family()
        .when(rename(P, Z, "mine"))
        .then_rejected(unknown(Z))
        .when(rename(Q, A, "mine"))
        .then_rejected(unknown(A))
        .when(rename(A, B, "mine"))
        .then_rejected(unknown(A))
        .when(rename(P, UNKNOWN, "mine"))
        .then_rejected(unknown(UNKNOWN))
        .when(rename(P, P, "mine"))
        .then_rejected(unknown(P))
        .when(close(Q, A))
        .then_rejected(unknown(A))
        .when(close(P, P))
        .then_rejected(unknown(P));
}

#[test]
fn close_requires_zero_balance_and_zero_credit_limit() {
    let given = family().transfer(P, P, A, "10");
    let a = given.id(A);
    given
        .when(close(P, A))
        .then_rejected(Rejection::NotSettled {
            balance: amt("10"),
            credit_limit: amt("0"),
        })
        .transfer(P, A, P, "10")
        .lend(P, P, A, "5")
        .when(close(P, A))
        .then_rejected(Rejection::NotSettled {
            balance: amt("0"),
            credit_limit: amt("-5"),
        })
        .lend(P, A, P, "5")
        .when(close(P, A))
        .then_events(&[Event::SubaccountClosed { account: a }])
        .expect_closed(A, true)
        .has_own(A, "0", "0")
        .has_own(P, "50", "-100");
}

#[test]
fn a_shared_subaccount_closes_at_any_primary_balance() {
    let given = family().charge(S, "70");
    let s = given.id(S);
    given
        .has_own(P, "-20", "-100")
        .when(close(P, S))
        .then_events(&[Event::SubaccountClosed { account: s }])
        .expect_closed(S, true)
        .has_shared(S)
        .has_own(P, "-20", "-100");
}

#[test]
fn a_closed_key_is_never_reused() {
    family()
        .closed(P, B)
        .when(create_own(P, B))
        .then_rejected(Rejection::KeyTaken { key: key(B) })
        .when(create_shared(Q, B))
        .then_rejected(Rejection::KeyTaken { key: key(B) })
        .when(open_primary(B, "0"))
        .then_rejected(Rejection::KeyTaken { key: key(B) })
        .expect_closed(B, true);
}

#[test]
fn a_closed_subaccount_cannot_be_acted_on() {
    family()
        .closed(P, B)
        .when(close(P, B))
        .then_rejected(closed(B))
        .when(rename(P, B, "again"))
        .then_rejected(closed(B))
        .when(suspend_sub(P, B, true))
        .then_rejected(closed(B))
        .when(set_mode(P, B, false))
        .then_rejected(closed(B))
        .when(set_suspended(B, true))
        .then_rejected(closed(B))
        .when(create_secret(B, 2))
        .then_rejected(closed(B))
        .when(revoke_secret(B, 1))
        .then_rejected(closed(B))
        .when(charge(B, "1"))
        .then_rejected(closed(B))
        .when(transfer_balance(P, P, B, "1"))
        .then_rejected(rule(TransferRule::Closed))
        .expect_closed(B, true)
        .expect_suspended(B, false)
        .has_own(B, "0", "0");
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn an_account_has_at_most_two_secrets() {
    let given = family();
    let a = given.id(A);
    given
        .when(create_secret(A, 2))
        .then_events(&[Event::SecretCreated {
            account: a,
            secret: record(2),
        }])
        .has_secrets(A, &[1, 2])
        .when(create_secret(A, 3))
        .then_rejected(Rejection::ExcessSecret)
        // The count wins over a duplicate id.
        .when(create_secret(A, 1))
        .then_rejected(Rejection::ExcessSecret)
        .has_secrets(A, &[1, 2]);
}

#[test]
fn the_last_secret_cannot_be_revoked() {
    let given = family();
    let p = given.id(P);
    given
        .when(revoke_secret(P, 1))
        .then_rejected(Rejection::LastSecret)
        .ok(create_secret(P, 2))
        .when(revoke_secret(P, 1))
        .then_events(&[Event::SecretRevoked {
            account: p,
            secret: secret_id(1),
        }])
        .has_secrets(P, &[2])
        .when(revoke_secret(P, 2))
        .then_rejected(Rejection::LastSecret)
        // Rotation: add a new one, revoke the old.
        .ok(create_secret(P, 3))
        .ok(revoke_secret(P, 2))
        .has_secrets(P, &[3]);
}

#[test]
fn unknown_or_duplicate_secret_ids_are_rejected() {
    family()
        .when(revoke_secret(P, 9))
        .then_rejected(Rejection::UnknownSecret { id: secret_id(9) })
        .when(create_secret(P, 1))
        .then_rejected(Rejection::SecretIdTaken { id: secret_id(1) })
        .when(create_secret(UNKNOWN, 2))
        .then_rejected(unknown(UNKNOWN))
        .when(revoke_secret(UNKNOWN, 1))
        .then_rejected(unknown(UNKNOWN))
        .has_secrets(P, &[1]);
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

#[test]
fn a_retry_with_the_same_content_returns_the_original_result() {
    let commands = [
        transfer_balance(P, P, A, "7"),
        transfer_credit(P, P, A, "3"),
        charge(S, "5"),
        top_up(P, "2"),
    ];
    for command in commands {
        let given = family().ok(command.clone());
        let (seq, at) = (given.last_seq(), given.last_at());
        // Later commands do not change the original result.
        let given = given.top_up(Q, "1").charge(Q, "1");
        let before = given.state().state_hash();
        let given = given.when(command.clone()).then_already_applied(seq, at);
        assert_eq!(given.state().state_hash(), before);
        given.check();
    }
}

#[test]
fn a_retry_wins_over_every_later_check() {
    let original = charge(A, "5");
    let given = family().transfer(P, P, A, "10").ok(original.clone());
    let (seq, at) = (given.last_seq(), given.last_at());
    given
        .suspended(P)
        .ok(suspend_sub(P, A, true))
        .when(original)
        .then_already_applied(seq, at)
        .has_own(A, "5", "0");
}

#[test]
fn a_retry_with_other_content_is_a_conflict() {
    let Command::Charge(original) = charge(P, "5") else {
        unreachable!()
    };
    let id = original.id;
    let conflict = Rejection::IdempotencyConflict { id };
    let mut other_amount = original.clone();
    other_amount.amount = amt("6");
    let mut other_reference = original.clone();
    other_reference.reference = "x".into();
    let mut other_account = original.clone();
    other_account.account = key(S);
    let mut unknown_account = original.clone();
    unknown_account.account = key(UNKNOWN);
    let mut invalid_amount = original.clone();
    invalid_amount.amount = amt("0");
    let mut as_transfer = transfer(P, P, A, "5");
    as_transfer.id = id;
    let mut given = family().ok(Command::Charge(original.clone()));
    for other in [
        other_amount,
        other_reference,
        other_account,
        unknown_account,
        invalid_amount,
    ] {
        given = given
            .when(Command::Charge(other))
            .then_rejected(conflict.clone());
    }
    given
        .when(Command::TransferBalance(as_transfer.clone()))
        .then_rejected(conflict.clone())
        .when(Command::TopUp(subledger_core::TopUp {
            id,
            primary: key(P),
            amount: amt("5"),
            reference: String::new(),
        }))
        .then_rejected(conflict)
        .has_own(P, "45", "-100");
}

#[test]
fn balance_and_credit_transfers_with_one_id_are_different_content() {
    let mut as_credit = transfer(P, P, A, "5");
    let as_balance = Command::TransferBalance(as_credit.clone());
    as_credit.id = id_of(&as_balance);
    family()
        .ok(as_balance)
        .when(Command::TransferCredit(as_credit.clone()))
        .then_rejected(Rejection::IdempotencyConflict { id: as_credit.id })
        .has_own(A, "5", "0");
}

#[test]
fn rejected_commands_do_not_consume_their_id() {
    let command = charge(A, "5");
    let given = family()
        .when(command.clone())
        .then_rejected(funds("0", "5"))
        .transfer(P, P, A, "10");
    let a = given.id(A);
    given
        .when(command.clone())
        .then_events(&[charged(&command, a, a, "5")])
        .has_own(A, "5", "0");
}

/// SPEC §4: "Resubmitting the same id with the same content returns the original result". The
/// core compares the *payer* resolved at retry time, so after the subaccount switches to its own
/// balance the identical retry is refused as a conflict.
#[test]
fn a_charge_retry_after_the_switch_to_own_balance_returns_the_original_result() {
    let original = charge(S, "5");
    let given = family().ok(original.clone());
    let (seq, at) = (given.last_seq(), given.last_at());
    given
        .ok(set_mode(P, S, false))
        .when(original)
        .then_already_applied(seq, at)
        .has_own(P, "45", "-100")
        .has_own(S, "0", "0");
}

// ---------------------------------------------------------------------------------------------
// Field validation and the order of checks
// ---------------------------------------------------------------------------------------------

#[test]
fn money_amounts_must_be_positive() {
    let not_positive = invalid(Field::Amount, Invalid::NotPositive);
    let mut given = family();
    for amount in ["0", "-0.00000001", "-5", "-1000000000000"] {
        given = given
            .when(transfer_balance(P, P, A, amount))
            .then_rejected(not_positive.clone())
            .when(transfer_credit(P, P, A, amount))
            .then_rejected(not_positive.clone())
            .when(charge(P, amount))
            .then_rejected(not_positive.clone())
            .when(top_up(P, amount))
            .then_rejected(not_positive.clone());
    }
    given.has_own(P, "50", "-100").has_own(A, "0", "0");
}

#[test]
fn references_are_at_most_255_characters_without_control_characters() {
    let too_long = invalid(Field::Reference, Invalid::TooLong { chars_max: 255 });
    let control = invalid(Field::Reference, Invalid::ControlCharacters);
    let longest = "€".repeat(255);
    let with_reference = |reference: &str| {
        let mut transfer = transfer(P, P, A, "1");
        transfer.reference = reference.into();
        transfer
    };
    let top_up_with = |reference: &str| {
        Command::TopUp(subledger_core::TopUp {
            id: command_id(),
            primary: key(P),
            amount: amt("1"),
            reference: reference.into(),
        })
    };
    let given = family();
    let p = given.id(P);
    let accepted = charge_with(P, "1", &longest);
    given
        .when(Command::Charge(charge_with(P, "1", &"r".repeat(256))))
        .then_rejected(too_long.clone())
        .when(Command::TransferBalance(with_reference(&"r".repeat(256))))
        .then_rejected(too_long.clone())
        .when(Command::TransferCredit(with_reference(&"r".repeat(256))))
        .then_rejected(too_long.clone())
        .when(top_up_with(&"r".repeat(256)))
        .then_rejected(too_long)
        .when(Command::Charge(charge_with(P, "1", "line\nbreak")))
        .then_rejected(control.clone())
        .when(Command::TransferBalance(with_reference("tab\t")))
        .then_rejected(control.clone())
        .when(top_up_with("\u{1b}[31m"))
        .then_rejected(control)
        .when(Command::Charge(accepted.clone()))
        .then_events(&[Event::Charged {
            command: accepted.id,
            account: p,
            payer: p,
            amount: amt("1"),
            reference: longest,
        }])
        .has_own(P, "49", "-100");
}

#[test]
fn order_of_checks() {
    family()
        .closed(P, B)
        // 2 before 3: field validation before the account.
        .when(charge(UNKNOWN, "0"))
        .then_rejected(invalid(Field::Amount, Invalid::NotPositive))
        .when(transfer_balance(UNKNOWN, Z, Z, "-1"))
        .then_rejected(invalid(Field::Amount, Invalid::NotPositive))
        .when(rename(UNKNOWN, Z, ""))
        .then_rejected(invalid(Field::Name, Invalid::Empty))
        .when(set_credit_line(UNKNOWN, "1"))
        .then_rejected(invalid(Field::CreditLimit, Invalid::Positive))
        // 3 before 4: the acting primary before the pairing.
        .when(transfer_balance(UNKNOWN, Z, Z, "1"))
        .then_rejected(unknown(UNKNOWN))
        // Within 4: same account, family, subaccount pair, closed, suspended primary, shared.
        .when(transfer_balance(P, Z, Z, "1"))
        .then_rejected(rule(TransferRule::SameAccount))
        .when(transfer_balance(P, A, Z, "1"))
        .then_rejected(rule(TransferRule::NotInFamily))
        .when(transfer_balance(P, A, B, "1"))
        .then_rejected(rule(TransferRule::SubaccountToSubaccount))
        .suspended(P)
        .when(transfer_balance(P, P, B, "1"))
        .then_rejected(rule(TransferRule::Closed))
        .when(transfer_balance(P, P, S, "1000"))
        .then_rejected(rule(TransferRule::PrimarySuspended))
        .ok(set_suspended(P, false))
        // 4 before 5: pairing before funds.
        .when(transfer_balance(P, P, S, "1000"))
        .then_rejected(rule(TransferRule::SharedBalance))
        .when(transfer_credit(P, S, P, "1000"))
        .then_rejected(rule(TransferRule::SharedBalance))
        // Charges: suspension before funds.
        .ok(suspend_sub(P, S, true))
        .when(charge(S, "1000"))
        .then_rejected(suspended(S))
        // Secrets: unknown id before the last-secret rule.
        .when(revoke_secret(A, 9))
        .then_rejected(Rejection::UnknownSecret { id: secret_id(9) })
        .has_own(P, "50", "-100");
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every read-side answer equals a brute-force recomputation from the full event list:
//! statements, point-in-time states at random points, and transfer and payment reports with
//! random filters and page sizes.

use proptest::prelude::*;
use subledger_core::*;
use subledger_views::*;

const PRIMARIES: [&str; 2] = ["viewp001", "viewp002"];
const SUBACCOUNTS: [[&str; 3]; 2] = [
    ["views011", "views012", "views013"],
    ["views021", "views022", "views023"],
];

fn key(text: &str) -> ApiKey {
    text.parse().unwrap()
}

fn units(value: u32) -> Amount {
    Amount::from_units(i128::from(value) * 1_000_000).unwrap()
}

fn secret(n: u32) -> NewSecret {
    NewSecret {
        id: SecretId::from_bytes(u128::from(n).to_le_bytes()),
        hash: SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()).unwrap(),
    }
}

/// One random step: (kind, family, subaccount, amount, time step).
type Step = (u8, usize, usize, u32, i64);

fn command(step: Step, id: u128) -> Command {
    let (kind, family, sub, value, _) = step;
    let primary = PRIMARIES[family];
    let sub = SUBACCOUNTS[family][sub];
    let transfer = |from: &str, to: &str| Transfer {
        id: CommandId::from_bytes(id.to_le_bytes()),
        primary: key(primary),
        from: key(from),
        to: key(to),
        amount: units(value),
        reference: format!("r{id}"),
    };
    match kind % 9 {
        0 => Command::TopUp(TopUp {
            id: CommandId::from_bytes(id.to_le_bytes()),
            primary: key(primary),
            amount: units(value),
            reference: String::new(),
        }),
        1 => Command::TransferBalance(transfer(primary, sub)),
        2 => Command::TransferBalance(transfer(sub, primary)),
        3 => Command::TransferCredit(transfer(primary, sub)),
        4 => Command::TransferCredit(transfer(sub, primary)),
        5 => Command::Charge(Charge {
            id: CommandId::from_bytes(id.to_le_bytes()),
            account: key(sub),
            amount: units(value),
            reference: "c".into(),
        }),
        6 => Command::SetCreditLine(SetCreditLine {
            primary: key(primary),
            credit_line: units(value).negate(),
        }),
        7 => Command::UpdateSubaccount(UpdateSubaccount {
            primary: key(primary),
            subaccount: key(sub),
            name: Some(format!("renamed {id}")),
            suspended: Some(value % 2 == 0),
            use_primary_account_balance: (value % 3 == 0).then_some(false),
        }),
        _ => Command::Charge(Charge {
            id: CommandId::from_bytes(id.to_le_bytes()),
            account: key(primary),
            amount: units(value),
            reference: String::new(),
        }),
    }
}

/// The whole history: (seq, at, event), and the views built from it.
fn build(steps: &[Step]) -> (Vec<(Sequence, Timestamp, Event)>, Views) {
    build_with(steps, command)
}

/// [`command`]'s steps and every other kind of command: thresholds (and so alerts and their
/// re-arming), closing, secrets, suspending primaries.
fn every_command(step: Step, id: u128) -> Command {
    let (kind, family, sub, value, _) = step;
    let primary = key(PRIMARIES[family]);
    let subaccount = key(SUBACCOUNTS[family][sub]);
    let one_of = |pick: bool| if pick { primary } else { subaccount };
    match kind % 16 {
        9 | 10 => Command::SetLowBalanceThreshold(SetLowBalanceThreshold {
            account: one_of(value % 2 == 0),
            threshold: (value % 5 != 0).then(|| units(value)),
        }),
        11 => Command::CloseSubaccount(CloseSubaccount {
            primary,
            subaccount,
        }),
        12 => Command::CreateSecret(CreateSecret {
            account: one_of(value % 2 == 0),
            secret: secret(u32::try_from(id).unwrap()),
        }),
        13 => Command::RevokeSecret(RevokeSecret {
            account: subaccount,
            // The subaccount's first secret, or one a step created (if it was this one's).
            secret: if value % 2 == 0 {
                secret(200 + u32::try_from(family * 10 + sub).unwrap()).id
            } else {
                secret(u32::try_from(id).unwrap().saturating_sub(value)).id
            },
        }),
        14 => Command::SetSuspended(SetSuspended {
            account: one_of(value % 3 == 0),
            suspended: value % 2 == 0,
        }),
        // Accounts opened after money moved and thresholds were set.
        15 => Command::CreateSubaccount(CreateSubaccount {
            primary,
            key: key(&format!("new{:05}", id % 100_000)),
            name: format!("later {id}"),
            use_primary_account_balance: value % 2 == 0,
            secret: secret(u32::try_from(id).unwrap()),
        }),
        _ => command(step, id),
    }
}

fn build_with(
    steps: &[Step],
    to_command: impl Fn(Step, u128) -> Command,
) -> (Vec<(Sequence, Timestamp, Event)>, Views) {
    let mut state = State::new(Policy::default());
    let mut log = Vec::new();
    let mut clock = 1_000_i64;
    let mut setup = Vec::new();
    for (family, primary) in PRIMARIES.iter().enumerate() {
        setup.push(Command::OpenPrimary(OpenPrimary {
            key: key(primary),
            name: "p".into(),
            // Families in two currencies: a subaccount's is its primary's.
            currency: if family % 2 == 0 {
                Currency::EUR
            } else {
                "USD".parse().unwrap()
            },
            credit_line: units(50).negate(),
            secret: secret(100 + u32::try_from(family).unwrap()),
        }));
        for (index, sub) in SUBACCOUNTS[family].iter().enumerate() {
            setup.push(Command::CreateSubaccount(CreateSubaccount {
                primary: key(primary),
                key: key(sub),
                name: format!("s{index}"),
                use_primary_account_balance: index == 2,
                secret: secret(200 + u32::try_from(family * 10 + index).unwrap()),
            }));
        }
    }
    let commands = setup.into_iter().map(|command| (command, 0)).chain(
        steps
            .iter()
            .enumerate()
            .map(|(index, step)| (to_command(*step, 1_000 + index as u128), step.4)),
    );
    for (command, advance) in commands {
        clock += advance;
        if let Ok(Ok(Executed::Applied { first, events })) =
            execute(&mut state, Timestamp(clock), &command)
        {
            for (offset, event) in (0..).zip(events) {
                log.push((Sequence(first.0 + offset), Timestamp(clock), event));
            }
        }
    }
    let mut views = Views::new();
    for (seq, at, event) in &log {
        views.apply(*seq, *at, event).unwrap();
    }
    (log, views)
}

/// Brute force: the state after replaying the events up to (and including) `until`.
fn state_until(
    log: &[(Sequence, Timestamp, Event)],
    until: impl Fn(Sequence, Timestamp) -> bool,
) -> State {
    let mut state = State::new(Policy::default());
    for (seq, at, event) in log {
        if !until(*seq, *at) {
            break;
        }
        state.apply(*seq, *at, event).unwrap();
    }
    state
}

fn funding(state: &State, key: &ApiKey) -> (Option<Amount>, Option<Amount>) {
    match state
        .account_by_key(key)
        .map(|(_, account)| account.funding())
    {
        Some(Funding::Own {
            balance,
            credit_limit,
        }) => (Some(balance), Some(credit_limit)),
        _ => (None, None),
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (0..9_u8, 0..2_usize, 0..3_usize, 1..40_u32, 0..3_i64),
        1..60,
    )
}

/// The records of `views`' idempotency index, frozen (in a copy of the index: the views keep
/// theirs as they were).
fn frozen(views: &Views) -> subledger_core::SharedRecords {
    views
        .state()
        .unwrap()
        .command_index()
        .unwrap()
        .clone()
        .freeze()
}

/// The views of `log` with the idempotency index, as a snapshot holds them.
fn with_index(log: &[(Sequence, Timestamp, Event)]) -> Views {
    let mut views = Views::with_command_index();
    for (seq, at, event) in log {
        views.apply(*seq, *at, event).unwrap();
    }
    views
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Live read views keep a directory of the accounts instead of a copy of the writer's
    /// state, and apply events without it (ADR 0008). Made lean at any point of any command
    /// stream — every kind of command, thresholds, alerts, closing and secrets included — and
    /// brought up to date, they equal the full views (the same hash, the same data) and answer
    /// every account and family query alike.
    #[test]
    fn lean_views_answer_as_full_views_do(
        steps in proptest::collection::vec((0..16_u8, 0..2_usize, 0..3_usize, 1..40_u32, 0..3_i64), 1..80),
        percent in 0..60_usize,
        through_writer in any::<bool>(),
    ) {
        let (log, full) = build_with(&steps, every_command);
        // At least 40 % of the events, opening accounts included, go through the lean apply.
        let cut = log.len() * percent / 100;
        let mut prefix = Views::new();
        for (seq, at, event) in &log[..cut] {
            prefix.apply(*seq, *at, event).unwrap();
        }
        let mut lean = if through_writer {
            // As an open makes them: from views with the index, the state handed to a writer.
            let mut indexed = Views::with_command_index();
            for (seq, at, event) in &log[..cut] {
                indexed.apply(*seq, *at, event).unwrap();
            }
            let (state, read) = indexed.into_writer_and_views().unwrap();
            prop_assert!(state.keeps_command_index() && state.last_seq() == prefix.last_seq());
            read
        } else {
            prefix.into_lean()
        };
        prop_assert!(lean.is_lean());
        for (seq, at, event) in &log[cut..] {
            lean.apply(*seq, *at, event).unwrap();
        }
        prop_assert!(lean.is_lean() && lean.state().is_none());
        prop_assert_eq!(lean.views_hash(), full.views_hash());
        prop_assert!(lean == full);
        prop_assert_eq!((lean.last_seq(), lean.last_at()), (full.last_seq(), full.last_at()));
        let middle = log.get(log.len() / 2).map_or(Sequence::ZERO, |(seq, _, _)| *seq);
        for key in PRIMARIES.iter().chain(SUBACCOUNTS.iter().flatten()).map(|text| key(text)) {
            prop_assert_eq!(lean.account(&key), full.account(&key));
            prop_assert_eq!(lean.account_id(&key), full.account_id(&key));
            prop_assert_eq!(lean.family(&key), full.family(&key));
            prop_assert_eq!(lean.family_summary(&key), full.family_summary(&key));
            prop_assert_eq!(lean.low_balance(&key), full.low_balance(&key));
            prop_assert_eq!(lean.secrets(&key), full.secrets(&key));
            prop_assert_eq!(lean.account_at(&key, AsOf::Seq(middle)), full.account_at(&key, AsOf::Seq(middle)));
            let query = StatementQuery::default();
            prop_assert_eq!(lean.statement(&key, &query), full.statement(&key, &query));
            let id = full.account_id(&key).unwrap();
            prop_assert_eq!(lean.funding_of(id), full.funding_of(id));
            prop_assert_eq!(lean.family_of(id), full.family_of(id));
            prop_assert_eq!(lean.subaccounts(id), full.subaccounts(id));
            prop_assert_eq!(lean.key_of(id), Some(key));
        }
        prop_assert_eq!(lean.primaries(None, 10), full.primaries(None, 10));
        prop_assert_eq!(lean.primaries(Some(&key(PRIMARIES[0])), 10), full.primaries(Some(&key(PRIMARIES[0])), 10));
        let at = log.get(log.len() / 3).map_or(Timestamp(0), |(_, at, _)| *at);
        for primary in PRIMARIES.iter().map(|text| key(text)) {
            let query = TransferQuery::default();
            prop_assert_eq!(lean.family_at(&primary, AsOf::At(at)), full.family_at(&primary, AsOf::At(at)));
            prop_assert_eq!(lean.family_at(&primary, AsOf::Seq(middle)), full.family_at(&primary, AsOf::Seq(middle)));
            for kind in [TransferKind::Balance, TransferKind::Credit] {
                prop_assert_eq!(lean.transfers(&primary, kind, &query), full.transfers(&primary, kind, &query));
            }
            for kind in [PaymentKind::Charges, PaymentKind::TopUps] {
                prop_assert_eq!(lean.payments(&primary, kind, &query), full.payments(&primary, kind, &query));
            }
        }
    }

    /// The snapshot thread's replica keeps a directory of the accounts and the idempotency
    /// index instead of a state (ADR 0008). Made lean at any point and brought up to date, it
    /// writes the very bytes a full replica writes — the state, details and list shapes, and
    /// the histories — and keeps the same index records.
    #[test]
    fn a_lean_replica_writes_the_snapshot_a_full_one_writes(
        steps in proptest::collection::vec((0..16_u8, 0..2_usize, 0..3_usize, 1..40_u32, 0..3_i64), 1..80),
        percent in 0..100_usize,
    ) {
        let (log, _) = build_with(&steps, every_command);
        let cut = log.len() * percent / 100;
        let mut full = Views::with_command_index();
        for (seq, at, event) in &log[..cut] {
            full.apply(*seq, *at, event).unwrap();
        }
        full.keep_command_records_only();
        let mut lean = full.clone().into_lean_keeping_index();
        prop_assert!(lean.is_lean() && lean.command_index().is_some());
        for (seq, at, event) in &log[cut..] {
            full.apply(*seq, *at, event).unwrap();
            lean.apply(*seq, *at, event).unwrap();
        }
        let config = bincode::config::standard();
        let written = |views: &Views| {
            let index = views.command_index().unwrap();
            let shapes = views.money_list_shapes(index.records()).unwrap();
            let head = bincode::encode_to_vec(ViewsHeadV9Of(views, &shapes), config).unwrap();
            let histories = bincode::encode_to_vec(ViewsHistories::of_v9(views), config).unwrap();
            let records = bincode::encode_to_vec(index, config).unwrap();
            (head, histories, records)
        };
        prop_assert_eq!(written(&lean), written(&full));
        prop_assert!(lean == full);
        prop_assert_eq!(lean.views_hash(), full.views_hash());
    }

    /// Lean views refuse what does not follow — an event out of order, in the past, or on an
    /// account they do not know — and change nothing.
    #[test]
    fn lean_views_refuse_what_does_not_follow_and_change_nothing(steps in steps()) {
        let (log, full) = build(&steps);
        let mut lean = full.into_lean();
        let before = lean.views_hash();
        let (last_seq, last_at) = (lean.last_seq(), lean.last_at());
        let unknown = AccountId(1_000);
        let refused = [
            (last_seq, last_at, Event::AccountSuspended { account: AccountId(0) }),
            (last_seq.next(), Timestamp(last_at.0 - 1), Event::AccountSuspended { account: AccountId(0) }),
            (last_seq.next(), last_at, Event::AccountSuspended { account: unknown }),
            (last_seq.next(), last_at, Event::ToppedUp { account: unknown, amount: units(1), command: CommandId::from_bytes([7; 16]), reference: String::new() }),
            // Refused after the first account checked out.
            (last_seq.next(), last_at, Event::BalanceTransferred { command: CommandId::from_bytes([8; 16]), source: AccountId(0), target: unknown, amount: units(1), reference: String::new() }),
            (last_seq.next(), last_at, Event::LowBalanceAlert { account: AccountId(0), available: units(1), threshold: units(2) }),
            (last_seq.next(), last_at, Event::SubaccountCreated { account: AccountId(8), primary: AccountId(1), key: key("refused1"), name: "x".into(), use_primary_account_balance: false, secret: SecretRecord { id: secret(999).id, hash: secret(999).hash } }),
        ];
        for (seq, at, event) in refused {
            prop_assert!(lean.apply(seq, at, &event).is_err());
            prop_assert_eq!(lean.views_hash(), before);
        }
        prop_assert!(!log.is_empty());
        // Lean views have no state to hand to a writer: they are given back whole.
        let given_back = lean.into_writer_and_views().err();
        prop_assert!(given_back.is_some_and(|views| views.is_lean() && views.views_hash() == before));
    }

    /// Snapshot format 9 stores only the shapes of the families' money lists and rebuilds the
    /// lists from the idempotency index's records: the rebuilt lists are the applied ones,
    /// the shapes survive encoding, and shapes that do not fit the records are refused, when
    /// taken as when rebuilt.
    #[test]
    fn money_lists_rebuilt_from_the_index_are_the_applied_ones(steps in steps(), cut in 0..100_usize) {
        let (log, _) = build(&steps);
        let views = with_index(&log);
        let records = views.state().unwrap().command_index().unwrap().records();
        let shared = frozen(&views);
        let shapes = views.money_list_shapes(records).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&shapes, config).unwrap();
        let (decoded, read): (MoneyListShapes, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        prop_assert_eq!(read, bytes.len());
        prop_assert_eq!(&decoded, &shapes);
        let mut rebuilt = views.clone();
        rebuilt.attach_money_lists(views.rebuild_money_lists(&decoded, &shared).unwrap());
        prop_assert!(rebuilt == views);
        prop_assert_eq!(rebuilt.views_hash(), views.views_hash());
        // The rebuilt lists' shapes are the same, checked against the same records.
        prop_assert_eq!(rebuilt.money_list_shapes(records).unwrap(), shapes.clone());
        // Records dated after the views' last event are refused: the rebuild stands for the
        // index's own check when it is attached (`State::attach_checked_command_index`).
        let mut later = CommandIndex::default();
        for (seq, at, event) in &log {
            later.append_event(*seq, Timestamp(at.0 + 1_000_000), event).unwrap();
        }
        later.enter_appended().unwrap();
        let later = later.freeze();
        if !later.is_empty() {
            prop_assert!(views.rebuild_money_lists(&shapes, &later).is_err());
        }

        // The views of a prefix of the log: fewer money commands, other shapes.
        let split = log.len() * cut / 100;
        let prefix = with_index(&log[..split]);
        let prefix_records = prefix.state().unwrap().command_index().unwrap().records();
        let prefix_shared = frozen(&prefix);
        if prefix_records.len() != records.len() {
            prop_assert!(views.money_list_shapes(prefix_records).is_err());
            prop_assert!(views.rebuild_money_lists(&shapes, &prefix_shared).is_err());
            let prefix_shapes = prefix.money_list_shapes(prefix_records).unwrap();
            prop_assert!(views.rebuild_money_lists(&prefix_shapes, &shared).is_err());
        }
        // Rebuilt on the prefix's shared records, then applied on live: the lists then point
        // into the shared records and into the views' own entries, and read as the views that
        // applied everything.
        let prefix_shapes = prefix.money_list_shapes(prefix_records).unwrap();
        let mut resumed = prefix.clone();
        resumed.attach_money_lists(prefix.rebuild_money_lists(&prefix_shapes, &prefix_shared).unwrap());
        for (seq, at, event) in &log[split..] {
            resumed.apply(*seq, *at, event).unwrap();
        }
        prop_assert!(resumed == views);
        prop_assert_eq!(resumed.views_hash(), views.views_hash());
        prop_assert_eq!(resumed.money_list_shapes(records).unwrap(), shapes);
    }

    /// Recovery replays the log after a snapshot with the families' money lists built apart
    /// (`MoneyListsBuilder`, as positions of the index's records) and appended at the end.
    /// After a format-9 snapshot (lists rebuilt on the index's shared records) they point into
    /// the same shared records, copying nothing; after an older format (lists decoded as
    /// entries) the replayed entries are copied from the records. Either way the views equal
    /// those that applied every event.
    #[test]
    fn lists_replayed_after_a_snapshot_equal_the_applied_ones(steps in steps(), cut in 0..100_usize) {
        let (log, _) = build(&steps);
        let full = with_index(&log);
        let split = log.len() * cut / 100;
        let prefix = with_index(&log[..split]);
        let config = bincode::config::standard();

        // Format 9: the prefix's lists rebuilt on its own index's records, frozen.
        let mut shared_form = prefix.clone();
        let mut index = shared_form.detach_command_index().unwrap();
        let records = index.freeze();
        shared_form.attach_command_index(index).unwrap();
        let shapes = prefix
            .money_list_shapes(prefix.state().unwrap().command_index().unwrap().records())
            .unwrap();
        shared_form.attach_money_lists(prefix.rebuild_money_lists(&shapes, &records).unwrap());
        prop_assert_eq!(shared_form.money_entries_shared_and_copied(), (records.len(), 0));

        // Formats 3–8: the lists' entries are decoded from the snapshot.
        let bytes = bincode::encode_to_vec(&prefix, config).unwrap();
        let (copied_form, _): (Views, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        prop_assert!(copied_form == prefix);

        for (mut views, shared) in [(shared_form, true), (copied_form, false)] {
            let mut index = views.detach_command_index().unwrap();
            let mut lists = MoneyListsBuilder::after(&views, index.len());
            for (seq, at, event) in &log[split..] {
                index.append_event(*seq, *at, event).unwrap();
                lists.record(event);
                views.apply_except_money_lists(*seq, *at, event).unwrap();
            }
            index.enter_appended().unwrap();
            views.reattach_replayed_command_index(index).unwrap();
            views.append_money_lists(lists).unwrap();
            prop_assert!(views == full);
            prop_assert_eq!(views.views_hash(), full.views_hash());
            let commands = full.state().unwrap().command_count();
            // Decoded lists without an entry are no obstacle to sharing.
            let copies = !shared && prefix.state().unwrap().command_count() > 0;
            let expected = if copies { (0, commands) } else { (commands, 0) };
            prop_assert_eq!(views.money_entries_shared_and_copied(), expected);
        }
    }

    /// Live, the writer freezes its index's records now and then and the views adopt them,
    /// dropping their own copies: the views then read exactly as the views that kept theirs.
    /// Records the views have not applied yet are not adopted, and nothing changes.
    #[test]
    fn money_records_adopted_from_the_writers_index_read_as_the_copies(steps in steps(), cuts in proptest::collection::vec(any::<bool>(), 200)) {
        let (log, _) = build(&steps);
        let mut kept = Views::new();
        let mut adopting = Views::new();
        let mut writer = State::new(Policy::default());
        for (index, (seq, at, event)) in log.iter().enumerate() {
            writer.apply(*seq, *at, event).unwrap();
            if cuts[index % cuts.len()] {
                // Frozen one event ahead of the views: not adoptable yet (unless that event
                // was no money command).
                let shared = writer.freeze_command_records().unwrap();
                let before = adopting.money_entries_shared_and_copied();
                let adopted = adopting.adopt_money_records(&shared);
                if adopted {
                    prop_assert!(!is_money_event(event));
                } else {
                    prop_assert_eq!(adopting.money_entries_shared_and_copied(), before);
                }
            }
            kept.apply(*seq, *at, event).unwrap();
            adopting.apply(*seq, *at, event).unwrap();
            if cuts[(index + 7) % cuts.len()] {
                let shared = writer.freeze_command_records().unwrap();
                let fresh = shared.len() > adopting.money_entries_shared_and_copied().0;
                prop_assert_eq!(adopting.adopt_money_records(&shared), fresh);
                prop_assert_eq!(adopting.money_entries_shared_and_copied(), (shared.len(), 0));
            }
            prop_assert!(adopting == kept);
        }
        prop_assert_eq!(adopting.views_hash(), kept.views_hash());
        // Views holding the index themselves (the snapshot replica) share its records once it
        // has enough of its own.
        let mut replica = with_index(&log);
        let commands = replica.state().unwrap().command_count();
        replica.share_money_records(commands + 1);
        prop_assert_eq!(replica.money_entries_shared_and_copied(), (0, commands));
        replica.share_money_records(commands.max(1));
        prop_assert_eq!(replica.money_entries_shared_and_copied(), (commands, 0));
        prop_assert!(replica == with_index(&log));
        // Views that number their entries on their own (decoded from an older format) adopt
        // only where their numbering happens to be the log's, entry by entry; either way they
        // read the same.
        let config = bincode::config::standard();
        let legacy = with_index(&log);
        let bytes = bincode::encode_to_vec(&legacy, config).unwrap();
        let (mut decoded, _): (Views, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        let shared = writer.freeze_command_records().unwrap();
        let adopted = decoded.adopt_money_records(&shared);
        prop_assert!(decoded == legacy);
        let expected = if adopted { (shared.len(), 0) } else { (0, shared.len()) };
        prop_assert_eq!(decoded.money_entries_shared_and_copied(), expected);
        // Records of another ledger are never adopted.
        // (Amounts the strategy never draws.)
        let (other_log, _) = build(&[(1, 0, 0, 77, 1), (1, 1, 1, 79, 2)]);
        let mut other = State::new(Policy::default());
        for (seq, at, event) in &other_log {
            other.apply(*seq, *at, event).unwrap();
        }
        let foreign = other.freeze_command_records().unwrap();
        let mut fresh = Views::new();
        for (seq, at, event) in &log {
            fresh.apply(*seq, *at, event).unwrap();
        }
        if !foreign.is_empty() && fresh.money_entries_shared_and_copied().1 >= foreign.len() {
            prop_assert!(!fresh.adopt_money_records(&foreign));
        }
    }

    /// The live path applies whole batches, reading their accounts ahead in chunks
    /// (`Views::warm`); it must build exactly the views one-by-one application does, and the
    /// read-ahead itself must change nothing.
    #[test]
    fn batches_applied_with_read_ahead_equal_events_applied_one_by_one(steps in steps(), cuts in proptest::collection::vec(1..80_usize, 1..6)) {
        let (log, views) = build(&steps);
        let mut batched = Views::new();
        let mut rest = log.as_slice();
        let mut cuts = cuts.into_iter().cycle();
        while let Some(((first, at, _), _)) = rest.split_first() {
            // A batch shares one instant: cut where the instant changes, or after `cut` events.
            let cut = cuts.next().unwrap_or(1);
            let len = rest.iter().take(cut).take_while(|(_, event_at, _)| event_at == at).count();
            let (taken, after) = rest.split_at(len);
            let batch = Batch { first: *first, at: *at, events: taken.iter().map(|(_, _, event)| event.clone()).collect() };
            let before = batched.views_hash();
            batched.warm(&batch.events);
            prop_assert_eq!(batched.views_hash(), before);
            batched.apply_batch(&batch).unwrap();
            rest = after;
        }
        prop_assert_eq!(batched.views_hash(), views.views_hash());
    }

    #[test]
    fn point_in_time_states_equal_a_replay_to_that_point(steps in steps(), cut in 0..100_usize, by_time in any::<bool>()) {
        let (log, views) = build(&steps);
        let (seq, at) = log.get(cut.min(log.len() - 1)).map(|(seq, at, _)| (*seq, *at)).unwrap();
        let (point, expected) = if by_time {
            (AsOf::At(at), state_until(&log, |_, event_at| event_at <= at))
        } else {
            (AsOf::Seq(seq), state_until(&log, |event_seq, _| event_seq <= seq))
        };
        for key in PRIMARIES.iter().chain(SUBACCOUNTS.iter().flatten()).map(|text| key(text)) {
            let answer = views.account_at(&key, point);
            match expected.account_by_key(&key) {
                None => prop_assert!(answer.is_none()),
                Some((_, account)) => {
                    let answer = answer.expect("the account existed then");
                    prop_assert_eq!((answer.balance, answer.credit_limit), funding(&expected, &key));
                    prop_assert_eq!((answer.suspended, answer.closed), (account.suspended(), account.closed()));
                }
            }
        }
        for primary in PRIMARIES.map(key) {
            if let Some(family) = views.family_at(&primary, point) {
                let members = std::iter::once(&family.primary).chain(family.subaccounts.iter());
                let expected_total: i128 = members
                    .map(|member| funding(&expected, &member.key).0.map_or(0, Amount::units))
                    .sum();
                prop_assert_eq!(family.total_balance.units(), expected_total);
            }
        }
    }

    #[test]
    fn statements_equal_the_balance_changes_of_the_log(steps in steps(), page in 1..7_usize, account in 0..8_usize) {
        let (log, views) = build(&steps);
        let keys: Vec<ApiKey> = PRIMARIES.iter().chain(SUBACCOUNTS.iter().flatten()).map(|text| key(text)).collect();
        let key = keys[account % keys.len()];
        // Brute force: replay event by event and note every money event touching the account
        // with its values after.
        let mut state = State::new(Policy::default());
        let mut expected = Vec::new();
        for (seq, at, event) in &log {
            state.apply(*seq, *at, event).unwrap();
            let id = state.account_id(&key).unwrap_or(AccountId(u32::MAX));
            let touches = match event {
                Event::BalanceTransferred { source, target, .. } | Event::CreditTransferred { source, target, .. } => *source == id || *target == id,
                Event::Charged { account, payer, .. } => *account == id || *payer == id,
                Event::ToppedUp { account, .. } | Event::CreditLineSet { account, .. } | Event::SubaccountSwitchedToOwnBalance { account } => *account == id,
                _ => false,
            };
            if touches {
                let (balance, credit) = funding(&state, &key);
                expected.push((seq.0, balance.unwrap_or(Amount::ZERO), credit.unwrap_or(Amount::ZERO)));
            }
        }
        let mut lines = Vec::new();
        let mut query = StatementQuery { limit: Some(page), ..StatementQuery::default() };
        loop {
            let result = views.statement(&key, &query).unwrap();
            prop_assert!(result.items.len() <= page);
            lines.extend(result.items.iter().map(|line| (line.seq.0, line.balance_after, line.credit_limit_after)));
            match result.next {
                Some(cursor) => query.after = Some(cursor),
                None => break,
            }
        }
        prop_assert_eq!(&lines, &expected);
        // Newest first: the same lines in reverse, page by page.
        let mut newest = Vec::new();
        let mut query = StatementQuery { limit: Some(page), newest_first: true, ..StatementQuery::default() };
        loop {
            let result = views.statement(&key, &query).unwrap();
            prop_assert!(result.items.len() <= page);
            newest.extend(result.items.iter().map(|line| (line.seq.0, line.balance_after, line.credit_limit_after)));
            match result.next {
                Some(cursor) => query.after = Some(cursor),
                None => break,
            }
        }
        newest.reverse();
        prop_assert_eq!(newest, expected);
    }

    #[test]
    fn a_family_summary_equals_the_full_family_and_the_primaries_list(steps in steps()) {
        let (_, views) = build(&steps);
        let (listed, next) = views.primaries(None, 10).unwrap();
        prop_assert_eq!(next, None);
        prop_assert_eq!(listed.len(), PRIMARIES.len());
        for (summary, primary) in listed.iter().zip(PRIMARIES) {
            let family = views.family(&key(primary)).unwrap();
            prop_assert_eq!(&summary.primary, &family.primary);
            prop_assert_eq!(summary.subaccounts, family.subaccounts.len());
            prop_assert_eq!(summary.total_balance, family.total_balance);
            prop_assert_eq!(summary.total_credit_limit, family.total_credit_limit);
            prop_assert_eq!(Some(summary.clone()), views.family_summary(&key(primary)));
        }
        // A subaccount is no family; paging one at a time visits the same primaries.
        prop_assert_eq!(views.family_summary(&key(SUBACCOUNTS[0][0])), None);
        let (first, after) = views.primaries(None, 1).unwrap();
        prop_assert_eq!(first[0].primary.key, key(PRIMARIES[0]));
        let (second, _) = views.primaries(after.as_ref(), 1).unwrap();
        prop_assert_eq!(second[0].primary.key, key(PRIMARIES[1]));
    }

    #[test]
    fn reports_equal_filtering_the_log(steps in steps(), family in 0..2_usize, page in 1..9_usize, filter_sub in proptest::option::of(0..3_usize), window in proptest::option::of((0..60_i64, 0..60_i64))) {
        let (log, views) = build(&steps);
        let primary = key(PRIMARIES[family]);
        let filter: Vec<ApiKey> = filter_sub.map(|sub| key(SUBACCOUNTS[family][sub])).into_iter().collect();
        let (start, end) = match window {
            Some((a, b)) => (Some(Timestamp(1_000 + a.min(b))), Some(Timestamp(1_000 + a.max(b)))),
            None => (None, None),
        };
        let in_family = |id: AccountId, state: &State| {
            let account = state.account(id).unwrap();
            account.primary().map_or(account.key, |owner| state.account(owner).unwrap().key) == primary
        };
        let final_state = state_until(&log, |_, _| true);
        let wanted = |ids: &[AccountId]| filter.is_empty() || ids.iter().any(|id| filter.contains(&final_state.account(*id).unwrap().key));
        let in_window = |at: Timestamp| start.is_none_or(|start| at >= start) && end.is_none_or(|end| at < end);
        let mut expected_transfers = Vec::new();
        let mut expected_charges = Vec::new();
        for (seq, at, event) in log.iter().rev() {
            match event {
                Event::BalanceTransferred { source, target, .. } if in_family(*source, &final_state) && in_window(*at) && wanted(&[*source, *target]) => expected_transfers.push(seq.0),
                Event::Charged { account, payer, .. } if in_family(*account, &final_state) && in_window(*at) && wanted(&[*account, *payer]) => expected_charges.push(seq.0),
                _ => {}
            }
        }
        let query = TransferQuery { start, end, subaccounts: filter.clone(), before: None, limit: Some(page) };
        let mut got = Vec::new();
        let mut cursor = query.clone();
        loop {
            let result = views.transfers(&primary, TransferKind::Balance, &cursor).unwrap();
            got.extend(result.items.iter().map(|item| item.seq.0));
            match result.next { Some(next) => cursor.before = Some(next), None => break }
        }
        prop_assert_eq!(got, expected_transfers);
        let mut got = Vec::new();
        let mut cursor = query;
        loop {
            let result = views.payments(&primary, PaymentKind::Charges, &cursor).unwrap();
            got.extend(result.items.iter().map(|item| item.seq.0));
            match result.next { Some(next) => cursor.before = Some(next), None => break }
        }
        prop_assert_eq!(got, expected_charges);
    }
}

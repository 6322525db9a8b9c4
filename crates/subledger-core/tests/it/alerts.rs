//! Low-balance alerts: one per crossing below the threshold, re-armed when the funds are back,
//! recorded as events so replay never repeats them.

use subledger_core::*;

use crate::support::*;

/// Executes commands one per instant, panicking on rejections unless `allow` says so.
struct Run {
    state: State,
    log: Vec<(Sequence, Timestamp, Event)>,
    clock: i64,
}

impl Run {
    fn new() -> Run {
        Run {
            state: State::new(Policy::default()),
            log: Vec::new(),
            clock: 0,
        }
    }

    fn exec(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        self.clock += 1;
        let at = Timestamp(self.clock);
        match execute(&mut self.state, at, &command).expect("apply never fails here")? {
            Executed::Applied { first, events } => {
                for (offset, event) in (0..).zip(&events) {
                    self.log
                        .push((Sequence(first.0 + offset), at, event.clone()));
                }
                Ok(events)
            }
            Executed::AlreadyApplied { .. } => Ok(Vec::new()),
        }
    }

    fn alerts(&self) -> usize {
        self.log
            .iter()
            .filter(|(_, _, event)| matches!(event, Event::LowBalanceAlert { .. }))
            .count()
    }
}

fn threshold(account: &str, value: Option<&str>) -> Command {
    Command::SetLowBalanceThreshold(SetLowBalanceThreshold {
        account: key(account),
        threshold: value.map(amt),
    })
}

#[test]
fn an_alert_fires_once_per_crossing_and_rearms_when_funds_return() {
    let mut run = Run::new();
    run.exec(open_primary("alrp0001", "0")).unwrap();
    run.exec(top_up("alrp0001", "100")).unwrap();
    run.exec(threshold("alrp0001", Some("50"))).unwrap();
    assert_eq!(run.alerts(), 0, "100 available is above 50");
    // 100 → 60: still above.
    run.exec(charge("alrp0001", "40")).unwrap();
    assert_eq!(run.alerts(), 0);
    // 60 → 45: crosses below: one alert, in the same command's events.
    let events = run.exec(charge("alrp0001", "15")).unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(
        events[1],
        Event::LowBalanceAlert { available, threshold, .. } if available == amt("45") && threshold == amt("50")
    ));
    // Further spending below the threshold: no second alert.
    run.exec(charge("alrp0001", "5")).unwrap();
    assert_eq!(run.alerts(), 1);
    // Back at the threshold re-arms; falling below again alerts again.
    run.exec(top_up("alrp0001", "10")).unwrap();
    assert_eq!(
        run.state
            .low_balance(AccountId(0))
            .map(|setting| setting.armed),
        Some(true)
    );
    run.exec(charge("alrp0001", "0.01")).unwrap();
    assert_eq!(run.alerts(), 2);
    // Replay applies the recorded alerts and creates none.
    let mut replayed = State::new(Policy::default());
    for (seq, at, event) in &run.log {
        replayed.apply(*seq, *at, event).unwrap();
    }
    assert_eq!(replayed.state_hash(), run.state.state_hash());
    assert_eq!(
        replayed.low_balance_alerts([AccountId(0)]),
        Vec::new(),
        "disarmed after the alert"
    );
}

#[test]
fn a_threshold_set_above_the_funds_alerts_at_once_and_can_be_removed() {
    let mut run = Run::new();
    run.exec(open_primary("alrp0002", "-20")).unwrap();
    run.exec(top_up("alrp0002", "5")).unwrap();
    let events = run.exec(threshold("alrp0002", Some("30"))).unwrap();
    assert_eq!(
        events.len(),
        2,
        "available 25 is already below 30: {events:?}"
    );
    run.exec(threshold("alrp0002", None)).unwrap();
    run.exec(charge("alrp0002", "20")).unwrap();
    assert_eq!(run.alerts(), 1, "no threshold, no alert");
    assert_eq!(
        run.exec(threshold("alrp0002", None)).unwrap(),
        Vec::new(),
        "nothing to remove"
    );
}

#[test]
fn transfers_alert_the_account_that_falls_below() {
    let mut run = Run::new();
    run.exec(open_primary("alrp0003", "0")).unwrap();
    run.exec(create_own("alrp0003", "alrs0003")).unwrap();
    run.exec(top_up("alrp0003", "100")).unwrap();
    run.exec(transfer_balance("alrp0003", "alrp0003", "alrs0003", "10"))
        .unwrap();
    run.exec(threshold("alrs0003", Some("5"))).unwrap();
    let events = run
        .exec(transfer_balance("alrp0003", "alrs0003", "alrp0003", "6"))
        .unwrap();
    assert!(
        matches!(
            events.last(),
            Some(Event::LowBalanceAlert {
                account: AccountId(1),
                ..
            })
        ),
        "{events:?}"
    );
}

#[test]
fn thresholds_are_refused_where_they_cannot_apply() {
    let mut run = Run::new();
    run.exec(open_primary("alrp0004", "0")).unwrap();
    run.exec(create_shared("alrp0004", "alrs0004")).unwrap();
    assert_eq!(
        run.exec(threshold("alrs0004", Some("1"))),
        Err(Rejection::WrongAccountKind {
            key: key("alrs0004")
        })
    );
    assert_eq!(
        run.exec(threshold("alrp0004", Some("-1"))),
        Err(Rejection::Validation {
            field: Field::Threshold,
            reason: Invalid::NotPositive
        })
    );
    assert_eq!(
        run.exec(threshold("nobody00", Some("1"))),
        Err(Rejection::UnknownAccount {
            key: key("nobody00")
        })
    );
}

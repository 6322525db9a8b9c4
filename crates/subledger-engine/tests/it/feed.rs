//! The change feed: from any sequence number, the log then live, exactly once and in order,
//! across consumers that stop and resume at random points and a feed that falls behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng};
use subledger_core::*;
use subledger_engine::*;

use crate::support::*;

/// Reads events until `head` is reached, stopping and resuming a new feed after a random
/// number of events each time. Returns the sequence numbers seen.
fn consume_with_restarts(
    ledger: &Ledger,
    filter: Filter,
    head: impl Fn() -> Option<Sequence>,
    seed: u8,
) -> Vec<u64> {
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut seen = Vec::new();
    let mut resume = Sequence(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut feed = ledger.feed(resume, filter).unwrap();
        let quota = 1 + rng.random_range(0..25_usize);
        for _ in 0..quota {
            match feed.recv_timeout(Duration::from_millis(20)).unwrap() {
                Some(notice) => {
                    seen.push(notice.seq.0);
                    resume = notice.seq.next();
                }
                None => break,
            }
        }
        // The consumer "dies" here: the feed is dropped, only `resume` is kept.
        drop(feed);
        if let Some(head) = head() {
            if seen.last().is_some_and(|last| *last >= head.0) {
                return seen;
            }
        }
        assert!(Instant::now() < deadline, "the consumer never caught up");
    }
}

#[test]
fn a_consumer_resumed_at_random_points_sees_every_event_once_in_order() {
    let config = Config {
        subscriber_batches_max: 2,
        ..Config::default()
    };
    let ledger = Arc::new(Ledger::in_memory(config).unwrap());
    ledger.submit(open_primary("feed0001")).unwrap().unwrap();
    let writer = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            for step in 0..400 {
                ledger.submit(top_up("feed0001", "1")).unwrap().unwrap();
                if step % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let head = {
        let ledger = Arc::clone(&ledger);
        let finished = Arc::clone(&finished);
        move || {
            finished
                .load(std::sync::atomic::Ordering::SeqCst)
                .then(|| ledger.metrics().last_seq)
        }
    };
    let watcher = {
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            writer.join().unwrap();
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let seen = consume_with_restarts(&ledger, Filter::All, head, 7);
    watcher.join().unwrap();
    let expected: Vec<u64> = (1..=401).collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_family_feed_from_the_past_continues_live_without_gaps_or_repeats() {
    let ledger = Ledger::in_memory(Config::default()).unwrap();
    for command in [
        open_primary("feed0002"),
        open_primary("feed0003"),
        create_subaccount("feed0002", "feeds002", false),
        top_up("feed0002", "50"),
        top_up("feed0003", "50"),
        transfer_balance("feed0002", "feed0002", "feeds002", "5"),
    ] {
        ledger.submit(command).unwrap().unwrap();
    }
    // Family feed from the beginning: events 1, 3, 4, 6 are feed0002's.
    let mut feed = ledger
        .feed(Sequence(1), Filter::Family(key("feed0002")))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(notice) = feed.recv_timeout(Duration::from_millis(20)).unwrap() {
        seen.push(notice.seq.0);
    }
    assert_eq!(seen, vec![1, 3, 4, 6]);
    ledger.submit(top_up("feed0003", "1")).unwrap().unwrap();
    ledger.submit(charge("feeds002", "1")).unwrap().unwrap();
    let live = feed.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((live.seq.0, live.event.kind()), (8, "charged"));
    assert_eq!(feed.next_seq(), Sequence(9));
    // Resuming in the middle.
    let mut resumed = ledger
        .feed(Sequence(4), Filter::Family(key("feed0002")))
        .unwrap();
    let first = resumed
        .recv_timeout(Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!(first.seq, Sequence(4));
}

//! Opening a ledger: the newest usable snapshot, then a replay of the log after it. Every
//! record read is verified (checksum and hash chain); a snapshot that is damaged, does not
//! match the log, or lies beyond it is skipped with a warning, falling back to an older one or
//! to a full replay. A bad record stops recovery with an error naming its sequence number.

use std::time::{Duration, Instant};

use subledger_core::{AccountId, Amount, ApplyError, CommandId, CommandIndex, Event, Sequence};
use subledger_log::{ChainHash, LogReader, Record, SnapshotStore};
use subledger_views::{MoneyListsBuilder, Views};

use crate::snapshot::decode_snapshot_from;
use crate::OpenError;

/// Decoded records queued between the replay's reader and its applier (each up to
/// `events_per_record` events, 1,024 by default): enough to ride out sled's uneven reads.
const REPLAY_QUEUE_RECORDS_MAX: usize = 16;

/// What opening the ledger found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot recovery started from, if any.
    pub snapshot: Option<Sequence>,
    /// Events replayed from the log after the snapshot.
    pub events_replayed: u64,
    /// The log head after recovery.
    pub head: Sequence,
    /// Snapshots skipped and why (recovery still succeeded).
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// The reader's share of replaying `record`'s events after `start`: appends their money
/// commands to `index` (entered, and checked for repeated ids, by [`enter_index`] at the end)
/// and their entries to the families' money lists. An error only if the index is full.
fn read_record(
    index: &mut CommandIndex,
    lists: &mut MoneyListsBuilder,
    record: &Record,
    start: Sequence,
) -> Option<ApplyError> {
    let mut seq = record.first;
    for event in &record.events {
        if seq > start {
            if let Err(fault) = index.append_event(seq, record.at, event) {
                return Some(ApplyError { seq, fault });
            }
            lists.record(event);
        }
        seq = seq.next();
    }
    None
}

/// A record's events as the replay's applier needs them. The reader has appended each money
/// command to the index and routed it to its list: the applier applies the money events'
/// accounts and amounts to the rest of the views, for which their command id and reference
/// change nothing (the index is detached meanwhile). Handing over 32-byte [`LeanEvent`]s
/// instead of the 80-byte events the log decodes cut what crosses between the two cores: in
/// a profile, storing each parsed event (into memory the other core last held) was most of
/// the reader's parsing time.
struct LeanRecord {
    first: Sequence,
    at: subledger_core::Timestamp,
    hash: ChainHash,
    events: Vec<LeanEvent>,
    /// The events that are not money events, whole, in order ([`LeanEvent::Other`]).
    others: Vec<Event>,
}

/// A money event without its command id and reference, or the place of another event.
#[derive(Debug, Clone, Copy)]
enum LeanEvent {
    BalanceTransferred(AccountId, AccountId, Amount),
    CreditTransferred(AccountId, AccountId, Amount),
    /// The charged account, the payer.
    Charged(AccountId, AccountId, Amount),
    ToppedUp(AccountId, Amount),
    Other,
}

impl LeanRecord {
    fn of(record: Record) -> LeanRecord {
        let mut events = Vec::with_capacity(record.events.len());
        let mut others = Vec::new();
        for event in record.events {
            events.push(match event {
                Event::BalanceTransferred {
                    source,
                    target,
                    amount,
                    ..
                } => LeanEvent::BalanceTransferred(source, target, amount),
                Event::CreditTransferred {
                    source,
                    target,
                    amount,
                    ..
                } => LeanEvent::CreditTransferred(source, target, amount),
                Event::Charged {
                    account,
                    payer,
                    amount,
                    ..
                } => LeanEvent::Charged(account, payer, amount),
                Event::ToppedUp {
                    account, amount, ..
                } => LeanEvent::ToppedUp(account, amount),
                other => {
                    others.push(other);
                    LeanEvent::Other
                }
            });
        }
        LeanRecord {
            first: record.first,
            at: record.at,
            hash: record.hash,
            events,
            others,
        }
    }
}

/// The events of `lean`, whole again for the views' apply: a money event with a nil command
/// id and an empty reference (see [`LeanRecord`]), into `out` (cleared first). `false` if an
/// `Other` has no whole event left (never, for a [`LeanRecord::of`]).
fn whole_events(
    lean: &[LeanEvent],
    others: &mut std::vec::IntoIter<Event>,
    out: &mut Vec<Event>,
) -> bool {
    let command = CommandId::from_bytes([0; 16]);
    out.clear();
    for event in lean {
        out.push(match *event {
            LeanEvent::BalanceTransferred(source, target, amount) => Event::BalanceTransferred {
                command,
                source,
                target,
                amount,
                reference: String::new(),
            },
            LeanEvent::CreditTransferred(source, target, amount) => Event::CreditTransferred {
                command,
                source,
                target,
                amount,
                reference: String::new(),
            },
            LeanEvent::Charged(account, payer, amount) => Event::Charged {
                command,
                account,
                payer,
                amount,
                reference: String::new(),
            },
            LeanEvent::ToppedUp(account, amount) => Event::ToppedUp {
                command,
                account,
                amount,
                reference: String::new(),
            },
            // One per `Other`, in order.
            LeanEvent::Other => match others.next() {
                Some(event) => event,
                None => return false,
            },
        });
    }
    true
}

/// Enters the appended commands in the index's table: the first command (in log order) whose
/// id was already applied, as the error `State::apply` would have given.
fn enter_index(index: &mut CommandIndex) -> Option<ApplyError> {
    let (seq, id) = index.enter_appended().err()?;
    Some(ApplyError {
        seq,
        fault: subledger_core::ApplyFault::DuplicateCommand(id),
    })
}

/// The error of a replay: the applier's, unless a repeated command id comes before it in
/// the log (a one-thread replay would have stopped there). An error without a place in the
/// log (a failed read) comes after every record read.
fn first_error(
    applied: Result<(), OpenError>,
    repeated: Option<ApplyError>,
) -> Result<(), OpenError> {
    match (applied, repeated) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(repeated)) => Err(repeated.into()),
        (Err(error), None) => Err(error),
        (Err(error), Some(repeated)) => match error_seq(&error) {
            Some(seq) if seq <= repeated.seq => Err(error),
            _ => Err(repeated.into()),
        },
    }
}

/// Where in the log an error was found, if it names a place.
fn error_seq(error: &OpenError) -> Option<Sequence> {
    match error {
        OpenError::Replay(error) => Some(error.seq),
        OpenError::Log(subledger_log::LogError::Corrupt { seq, .. }) => Some(*seq),
        _ => None,
    }
}

/// Applies `record`'s events after `start` to the views (all but the money lists, which the
/// reader builds), counting them in `replayed`; returns the record's hash. `fault` is the
/// reader's refusal to append an event's command (the index is full): it is reported once
/// that event has passed its other checks, as `State::apply` would order them. `chunk` is a
/// buffer of [`subledger_views::WARM_EVENTS_MAX`] whole events, reused.
fn apply_record(
    views: &mut Views,
    record: LeanRecord,
    fault: Option<ApplyError>,
    start: Sequence,
    replayed: &mut u64,
    chunk: &mut Vec<Event>,
) -> Result<ChainHash, OpenError> {
    let LeanRecord {
        first,
        at,
        hash,
        events,
        others,
    } = record;
    let mut others = others.into_iter();
    let mut seq = first;
    for lean in events.chunks(subledger_views::WARM_EVENTS_MAX) {
        if !whole_events(lean, &mut others, chunk) {
            return Err(OpenError::Thread(
                "the replay's events were handed over out of step".into(),
            ));
        }
        views.warm(chunk);
        for event in chunk.iter() {
            if seq > start {
                views.apply_except_money_lists(seq, at, event)?;
                if let Some(fault) = fault.as_ref().filter(|fault| fault.seq == seq) {
                    return Err(fault.clone().into());
                }
                *replayed += 1;
            }
            seq = seq.next();
        }
    }
    Ok(hash)
}

/// Rebuilds the views with the idempotency index (the snapshot form) from `snapshots` and
/// `reader`. Returns them with the hash of the last record applied.
pub(crate) fn recover(
    reader: &dyn LogReader,
    snapshots: &dyn SnapshotStore,
    use_snapshots: bool,
) -> Result<(Views, ChainHash, Recovery), OpenError> {
    let started = Instant::now();
    let mut recovery = Recovery::default();
    let usable = if use_snapshots {
        newest_usable_snapshot(reader, snapshots, &mut recovery.warnings)?
    } else {
        None
    };
    let (mut views, mut head_hash) = match usable {
        Some((seq, views, hash)) => {
            recovery.snapshot = Some(seq);
            (views, hash)
        }
        None => (Views::with_command_index(), ChainHash::GENESIS),
    };
    let start = views.last_seq();
    // The idempotency index and the families' money lists are rebuilt on the reader's thread,
    // from the same events, while this one applies them to the rest of the views: the
    // applier is the critical path (see ADR 0006).
    let mut replayed = 0;
    let mut index = views.detach_command_index().ok_or_else(|| {
        OpenError::Log(subledger_log::LogError::Corrupt {
            seq: start,
            detail: "the recovered state has no idempotency index".into(),
        })
    })?;
    // At most one money command per event: reserving once spares the index its step-by-step
    // growth (rehashing and page faults dominated the replay profile).
    let tail = usize::try_from(reader.head().0.saturating_sub(start.0)).unwrap_or(0);
    index.reserve_appended(tail);
    let mut lists = MoneyListsBuilder::after(&views, index.len());
    let records = reader.records_from(start.next())?;
    let threaded = std::thread::scope(|scope| -> Option<Result<(), OpenError>> {
        let (sender, receiver) = crossbeam_channel::bounded(REPLAY_QUEUE_RECORDS_MAX);
        let index = &mut index;
        let lists = &mut lists;
        let reader_thread = std::thread::Builder::new()
            .name("subledger-replay-read".into())
            .spawn_scoped(scope, move || {
                for record in records {
                    let item = record.map(|record| {
                        let fault = read_record(index, lists, &record, start);
                        (LeanRecord::of(record), fault)
                    });
                    let stop = !matches!(item, Ok((_, None)));
                    // The applier stopped (it failed): nothing more to do.
                    if sender.send(item).is_err() || stop {
                        break;
                    }
                }
                // Let the applier finish while the table is built.
                drop(sender);
                enter_index(index)
            })
            // No thread to be had: the caller does the same work on this one.
            .ok()?;
        let applied = (|| -> Result<(), OpenError> {
            let mut chunk = Vec::with_capacity(subledger_views::WARM_EVENTS_MAX);
            for item in receiver.iter() {
                let (record, fault) = item?;
                head_hash =
                    apply_record(&mut views, record, fault, start, &mut replayed, &mut chunk)?;
            }
            Ok(())
        })();
        // Unblocks the reader if applying stopped early.
        drop(receiver);
        Some(match reader_thread.join() {
            Ok(repeated) => first_error(applied, repeated),
            // The applier's error comes first: it is about an earlier point of the log.
            Err(_) => {
                applied.and_then(|()| Err(OpenError::Thread("the replay reader panicked".into())))
            }
        })
    });
    match threaded {
        Some(result) => result?,
        None => {
            let applied = (|| -> Result<(), OpenError> {
                let mut chunk = Vec::with_capacity(subledger_views::WARM_EVENTS_MAX);
                for record in reader.records_from(start.next())? {
                    let record = record?;
                    let fault = read_record(&mut index, &mut lists, &record, start);
                    let lean = LeanRecord::of(record);
                    head_hash =
                        apply_record(&mut views, lean, fault, start, &mut replayed, &mut chunk)?;
                }
                Ok(())
            })();
            first_error(applied, enter_index(&mut index))?;
        }
    }
    recovery.events_replayed = replayed;
    // Its records came checked with the snapshot or from the events just applied. The lists
    // point into them: appended once the index is back (its records are then frozen and
    // shared with the lists).
    views
        .reattach_replayed_command_index(index)
        .and_then(|()| views.append_money_lists(lists))
        .map_err(|detail| {
            OpenError::Log(subledger_log::LogError::Corrupt {
                seq: views.last_seq(),
                detail,
            })
        })?;
    recovery.head = views.last_seq();
    recovery.elapsed = started.elapsed();
    for warning in &recovery.warnings {
        tracing::warn!(target: "subledger::recovery", "{warning}");
    }
    Ok((views, head_hash, recovery))
}

fn newest_usable_snapshot(
    reader: &dyn LogReader,
    snapshots: &dyn SnapshotStore,
    warnings: &mut Vec<String>,
) -> Result<Option<(Sequence, Views, ChainHash)>, OpenError> {
    let listed = match snapshots.list() {
        Ok(listed) => listed,
        Err(error) => {
            warnings.push(format!(
                "cannot list snapshots, replaying the whole log: {error}"
            ));
            return Ok(None);
        }
    };
    let head = reader.head();
    for seq in listed.into_iter().rev() {
        let skip = |why: String| format!("snapshot at {seq} skipped: {why}");
        let bytes = match snapshots.load(seq) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                warnings.push(skip("it disappeared".into()));
                continue;
            }
            Err(error) => {
                warnings.push(skip(error.to_string()));
                continue;
            }
        };
        let decoded = match decode_snapshot_from(&bytes) {
            Ok(decoded) if !decoded.views.is_complete() => {
                warnings.push(skip(
                    "its older format lacks the statement history; replaying instead".into(),
                ));
                continue;
            }
            Ok(decoded)
                if !decoded
                    .views
                    .state()
                    .is_some_and(subledger_core::State::keeps_command_index) =>
            {
                warnings.push(skip(
                    "it lacks the idempotency index the writer needs; replaying instead".into(),
                ));
                continue;
            }
            Ok(decoded) if decoded.seq == seq => decoded,
            Ok(decoded) => {
                warnings.push(skip(format!("it says it was taken at {}", decoded.seq)));
                continue;
            }
            Err(error) => {
                warnings.push(skip(error.to_string()));
                continue;
            }
        };
        if seq > head {
            // Snapshots only ever cover durable records, so a valid one beyond the head proves
            // that records the ledger acknowledged are gone: refuse to open a shortened log.
            return Err(OpenError::Log(subledger_log::LogError::Corrupt {
                seq: head.next(),
                detail: format!(
                    "records are missing: a valid snapshot covers up to {seq}, the log ends at {head}"
                ),
            }));
        }
        match reader.hash_at(seq) {
            Ok(Some(hash)) if hash == decoded.head_hash => {
                return Ok(Some((seq, decoded.views, decoded.head_hash)));
            }
            Ok(_) => warnings.push(skip(
                "it does not match the log's record at that point".into(),
            )),
            Err(error) => warnings.push(skip(error.to_string())),
        }
    }
    Ok(None)
}

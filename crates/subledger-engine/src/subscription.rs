//! Subscriptions to committed events. The writer hands each committed batch (shared, not
//! copied) to every subscriber through a bounded channel and never waits: a subscriber that
//! falls `subscriber_batches_max` batches behind is disconnected and told so, and can resume
//! from the log at the last sequence it saw. Filtering happens on the subscriber's thread so a
//! slow filter never slows the writer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rustc_hash::FxHashSet;
use subledger_core::{AccountId, ApiKey, Batch, Event, Sequence, Timestamp};

use crate::Shared;

/// Which committed events a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every event.
    All,
    /// Events touching this account.
    Account(ApiKey),
    /// Events touching this primary or any of its subaccounts, including ones created later.
    Family(ApiKey),
}

/// One committed event as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub seq: Sequence,
    pub at: Timestamp,
    pub event: Event,
}

/// Why a subscription ended or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    #[error("unknown api key {0}")]
    UnknownAccount(ApiKey),
    #[error("too many subscribers (at most {})", crate::SUBSCRIBERS_MAX)]
    TooManySubscribers,
    /// The subscriber fell too far behind, or the ledger closed or stopped. Every event up to
    /// and including `last_seq` was delivered; resume from the log after it.
    #[error("subscription ended after sequence {last_seq}")]
    Ended { last_seq: Sequence },
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    sender: Sender<Arc<Batch>>,
}

/// A live subscription. Delivers, in order and exactly once, every matching event committed
/// after [`Subscription::start`].
#[derive(Debug)]
pub struct Subscription {
    receiver: Receiver<Arc<Batch>>,
    start: Sequence,
    last_seq: Sequence,
    scope: Scope,
    ready: VecDeque<Notice>,
}

#[derive(Debug, Clone)]
enum Scope {
    All,
    Accounts(FxHashSet<AccountId>),
    Family {
        primary: AccountId,
        members: FxHashSet<AccountId>,
    },
}

pub(crate) fn subscribe(
    shared: &Shared,
    filter: Filter,
) -> Result<Subscription, SubscriptionError> {
    // Hold the views' read lock while registering: the writer applies a batch to the views
    // before publishing it, so every batch after `start` reaches us, and any batch at or
    // before `start` that still arrives is skipped by sequence number. Like every read, it
    // starts once the views hold every batch already answered.
    shared.gate.wait_for_answered();
    let views = shared.views.read().map_err(|_| SubscriptionError::Ended {
        last_seq: Sequence::ZERO,
    })?;
    let start = views.last_seq();
    let resolve = |key: ApiKey| {
        views
            .account_id(&key)
            .ok_or(SubscriptionError::UnknownAccount(key))
    };
    let scope = match filter {
        Filter::All => Scope::All,
        Filter::Account(key) => Scope::Accounts(std::iter::once(resolve(key)?).collect()),
        Filter::Family(key) => {
            let primary = views.family_of(resolve(key)?);
            let mut members: FxHashSet<AccountId> = FxHashSet::default();
            members.insert(primary);
            members.extend(views.subaccounts(primary).iter().copied());
            Scope::Family { primary, members }
        }
    };
    let mut subscribers = shared
        .subscribers
        .lock()
        .map_err(|_| SubscriptionError::Ended { last_seq: start })?;
    if subscribers.len() >= crate::SUBSCRIBERS_MAX {
        return Err(SubscriptionError::TooManySubscribers);
    }
    let (sender, receiver) = crossbeam_channel::bounded(shared.subscriber_batches_max.max(1));
    subscribers.push(Subscriber { sender });
    drop(subscribers);
    drop(views);
    Ok(Subscription {
        receiver,
        start,
        last_seq: start,
        scope,
        ready: VecDeque::new(),
    })
}

/// Hands a committed batch to every subscriber without waiting; drops the ones that are full
/// (too slow) or gone.
pub(crate) fn publish(shared: &Shared, batch: &Arc<Batch>) {
    let Ok(mut subscribers) = shared.subscribers.lock() else {
        return;
    };
    subscribers.retain(
        |subscriber| match subscriber.sender.try_send(Arc::clone(batch)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        },
    );
}

/// Ends every subscription (the ledger closed or stopped).
pub(crate) fn disconnect_all(shared: &Shared) {
    if let Ok(mut subscribers) = shared.subscribers.lock() {
        subscribers.clear();
    }
}

impl Subscription {
    /// A copy of the filter for reading older events (family membership as of now, a
    /// superset of any earlier membership).
    fn scope_for_backlog(&self) -> Scope {
        self.scope.clone()
    }

    /// Events with a sequence number above this were not yet committed when subscribing.
    pub fn start(&self) -> Sequence {
        self.start
    }

    /// The sequence number of the last event received (matching or not).
    pub fn last_seq(&self) -> Sequence {
        self.last_seq
    }

    /// The next matching event, waiting as long as needed.
    pub fn recv(&mut self) -> Result<Notice, SubscriptionError> {
        loop {
            if let Some(notice) = self.ready.pop_front() {
                return Ok(notice);
            }
            let batch = self.receiver.recv().map_err(|_| self.ended())?;
            self.take(&batch);
        }
    }

    /// The next matching event, waiting at most `timeout`; `Ok(None)` when nothing came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Notice>, SubscriptionError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(notice) = self.ready.pop_front() {
                return Ok(Some(notice));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.receiver.recv_timeout(left) {
                Ok(batch) => self.take(&batch),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            }
        }
    }

    fn ended(&self) -> SubscriptionError {
        SubscriptionError::Ended {
            last_seq: self.last_seq,
        }
    }

    fn take(&mut self, batch: &Batch) {
        for (seq, event) in batch.iter() {
            if seq <= self.last_seq {
                continue;
            }
            self.last_seq = seq;
            if self.matches(event) {
                self.ready.push_back(Notice {
                    seq,
                    at: batch.at,
                    event: event.clone(),
                });
            }
        }
    }

    fn matches(&mut self, event: &Event) -> bool {
        self.scope.matches(event)
    }
}

impl Scope {
    fn matches(&mut self, event: &Event) -> bool {
        let touched = event.accounts();
        match self {
            Scope::All => true,
            Scope::Accounts(ids) => touched.iter().flatten().any(|id| ids.contains(id)),
            Scope::Family { primary, members } => {
                if let Event::SubaccountCreated {
                    account,
                    primary: owner,
                    ..
                } = event
                {
                    if owner == primary {
                        members.insert(*account);
                    }
                }
                touched.iter().flatten().any(|id| members.contains(id))
            }
        }
    }
}

/// Why a feed stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// Reading the log failed (a corrupt record, storage failure).
    #[error("reading the log: {0}")]
    Log(String),
}

/// A change feed: every matching committed event from a chosen sequence number on — first from
/// the log, then live — in order and exactly once. A consumer that stops keeps the sequence
/// number of the last event it handled and resumes with `from = that + 1`; a feed that falls
/// behind the live stream refills from the log by itself, so nothing is lost or repeated.
#[derive(Debug)]
pub struct Feed {
    shared: Arc<Shared>,
    filter: Filter,
    live: Subscription,
    backlog: VecDeque<Notice>,
    /// Every event below this was delivered or filtered out.
    next: Sequence,
}

/// Most events held in memory while refilling from the log; the rest is read as consumed.
const FEED_BACKLOG_EVENTS_MAX: usize = 65_536;

pub(crate) fn feed(
    shared: &Arc<Shared>,
    from: Sequence,
    filter: Filter,
) -> Result<Feed, FeedError> {
    let live = subscribe(shared, filter)?;
    Ok(Feed {
        shared: Arc::clone(shared),
        filter,
        live,
        backlog: VecDeque::new(),
        next: from.max(Sequence(1)),
    })
}

impl Feed {
    /// The sequence number the feed will deliver from next: every event before it has been
    /// delivered (or did not match).
    pub fn next_seq(&self) -> Sequence {
        self.next
    }

    /// The next matching event, waiting at most `timeout` for a live one; `Ok(None)` when
    /// nothing came.
    pub fn recv_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Option<Notice>, FeedError> {
        loop {
            if let Some(notice) = self.backlog.pop_front() {
                self.next = notice.seq.next();
                return Ok(Some(notice));
            }
            // Events between `next` and the live subscription's start come from the log.
            if self.next <= self.live.start() {
                self.refill()?;
                if !self.backlog.is_empty() {
                    continue;
                }
                self.next = self.next.max(self.live.start().next());
            }
            match self.live.recv_timeout(timeout) {
                Ok(Some(notice)) => {
                    if notice.seq < self.next {
                        continue;
                    }
                    self.next = notice.seq.next();
                    return Ok(Some(notice));
                }
                Ok(None) => {
                    // Nothing matched live; everything the subscription saw is behind us.
                    self.next = self.next.max(self.live.last_seq().next());
                    return Ok(None);
                }
                Err(SubscriptionError::Ended { last_seq }) => {
                    // Fell behind (or the ledger closed): continue from the log.
                    self.next = self.next.max(last_seq.next());
                    self.live = subscribe(&self.shared, self.filter)?;
                    if self.live.start() < self.next {
                        // Nothing new is durable past the point reached: the ledger is closed.
                        return Err(FeedError::Subscription(SubscriptionError::Ended {
                            last_seq: self.next.0.checked_sub(1).map_or(Sequence::ZERO, Sequence),
                        }));
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Reads matching events from `next` up to the live subscription's start from the log,
    /// at most [`FEED_BACKLOG_EVENTS_MAX`] at a time.
    fn refill(&mut self) -> Result<(), FeedError> {
        let until = self.live.start();
        let records = self
            .shared
            .reader
            .records_from(self.next)
            .map_err(|error| FeedError::Log(error.to_string()))?;
        let mut scope = self.live.scope_for_backlog();
        let mut scanned = self.next;
        'records: for record in records {
            let record = record.map_err(|error| FeedError::Log(error.to_string()))?;
            let at = record.at;
            for (seq, event) in record.into_batch().iter() {
                if seq < self.next {
                    continue;
                }
                if seq > until || self.backlog.len() >= FEED_BACKLOG_EVENTS_MAX {
                    break 'records;
                }
                scanned = seq.next();
                if scope.matches(event) {
                    self.backlog.push_back(Notice {
                        seq,
                        at,
                        event: event.clone(),
                    });
                }
            }
        }
        if self.backlog.is_empty() {
            self.next = scanned;
        }
        Ok(())
    }
}

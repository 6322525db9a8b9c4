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

#[derive(Debug)]
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
    // before `start` that still arrives is skipped by sequence number.
    let views = shared.views.read().map_err(|_| SubscriptionError::Ended {
        last_seq: Sequence::ZERO,
    })?;
    let start = views.last_seq();
    let state = views.state();
    let resolve = |key: ApiKey| {
        state
            .account_id(&key)
            .ok_or(SubscriptionError::UnknownAccount(key))
    };
    let scope = match filter {
        Filter::All => Scope::All,
        Filter::Account(key) => Scope::Accounts(std::iter::once(resolve(key)?).collect()),
        Filter::Family(key) => {
            let id = resolve(key)?;
            let primary = state
                .account(id)
                .and_then(|account| account.primary)
                .unwrap_or(id);
            let mut members: FxHashSet<AccountId> = FxHashSet::default();
            members.insert(primary);
            if let Some(owner) = state.account(primary) {
                members.extend(owner.subaccounts.iter().copied());
            }
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
        let touched = event.accounts();
        match &mut self.scope {
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

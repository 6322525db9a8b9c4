//! A one-answer slot a blocking caller sleeps on.
//!
//! Why not a `crossbeam_channel::bounded(1)`: its receive spins and then yields the CPU in a
//! loop before it parks. With hundreds of callers blocked in `Ledger::submit` (the 256-client
//! benchmark), those `sched_yield` loops took about a third of both cores away from the writer
//! and the views thread. Waiting here parks the thread at once (a futex, through `Condvar`).

use std::sync::{Arc, Condvar, Mutex, PoisonError};

enum State<T> {
    Waiting,
    Sent(T),
    /// The sender went away without answering (the writer stopped).
    Dropped,
    Taken,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

pub(crate) struct SlotSender<T>(Option<Arc<Shared<T>>>);
pub(crate) struct SlotReceiver<T>(Arc<Shared<T>>);

pub(crate) fn slot<T>() -> (SlotSender<T>, SlotReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::Waiting),
        ready: Condvar::new(),
    });
    (SlotSender(Some(Arc::clone(&shared))), SlotReceiver(shared))
}

impl<T> SlotSender<T> {
    pub(crate) fn send(mut self, value: T) {
        if let Some(shared) = self.0.take() {
            finish(&shared, State::Sent(value));
        }
    }
}

impl<T> Drop for SlotSender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            finish(&shared, State::Dropped);
        }
    }
}

fn finish<T>(shared: &Shared<T>, outcome: State<T>) {
    // A poisoned lock only means another thread panicked while holding it; the slot's state
    // is still whole (every write is a single assignment).
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    *state = outcome;
    drop(state);
    shared.ready.notify_one();
}

impl<T> SlotReceiver<T> {
    /// The answer, or `None` if the sender was dropped without one.
    pub(crate) fn recv(self) -> Option<T> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Sent(value) => return Some(value),
                State::Dropped | State::Taken => return None,
                State::Waiting => {
                    *state = State::Waiting;
                    state = self
                        .0
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_arrives_across_threads_and_a_dropped_sender_ends_the_wait() {
        let (sender, receiver) = slot();
        let answering = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.send(42);
        });
        assert_eq!(receiver.recv(), Some(42));
        answering.join().unwrap_or_default();

        let (sender, receiver) = slot::<u8>();
        let dropping = std::thread::spawn(move || drop(sender));
        assert_eq!(receiver.recv(), None);
        dropping.join().unwrap_or_default();

        let (sender, receiver) = slot();
        sender.send("early");
        assert_eq!(receiver.recv(), Some("early"));
    }
}

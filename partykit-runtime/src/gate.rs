//! The output gate: messages and HTTP responses that follow a write wait until that
//! write is durable, so no client hears about state that a crash could undo (the
//! guarantee Durable Objects' output gates give).
//!
//! Commits are numbered. Output produced while the room has unconfirmed writes, or while
//! earlier held output is still waiting, is held with the number of the commit it must
//! wait for; the committer releases held output in order as commits complete.
//!
//! The gate knows nothing of connections or storage: output goes to a [`Sink`] (a
//! connection's outbound queue), and the storage's committer tells the gate which
//! commits are durable.

use std::mem;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::Response;

/// Where output goes once the gate lets it through.
pub(crate) trait Sink: Clone {
    /// What the sink takes.
    type Item;

    /// Counts `item` against the sink's limit, before it is held or delivered, so that
    /// held output is bounded like queued output. `false`: the sink takes nothing more
    /// (it is closed, or this item put it over its limit and it closed itself).
    fn admit(&self, item: &Self::Item) -> bool;

    /// Hands over an admitted item.
    fn deliver(&self, item: Self::Item);

    /// An admitted item will never be delivered: the commit it waited for failed.
    fn forget(&self, item: &Self::Item);
}

/// Output waiting for a commit.
enum Held<S: Sink> {
    Output(S, S::Item),
    Reply(oneshot::Sender<Response>, Response),
}

pub(crate) struct Gate<S: Sink> {
    state: Mutex<State<S>>,
}

struct State<S: Sink> {
    /// A write that must be confirmed was made since the last submit.
    dirty: bool,
    /// The number of the last commit handed to the committer.
    submitted: u64,
    /// The number of the last commit holding a write that must be confirmed: output waits
    /// for it, not for later commits of unconfirmed writes only.
    confirmed: u64,
    /// The number of the last commit that is durable.
    committed: u64,
    /// Output in the order it was produced, with the commit each item waits for.
    held: Vec<(u64, Held<S>)>,
}

impl<S: Sink> Default for Gate<S> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                dirty: false,
                submitted: 0,
                confirmed: 0,
                committed: 0,
                held: Vec::new(),
            }),
        }
    }
}

impl<S: Sink> State<S> {
    fn open(&self) -> bool {
        !self.dirty && self.committed >= self.confirmed && self.held.is_empty()
    }

    /// The commit that output produced now must wait for.
    fn waits_for(&self) -> u64 {
        if self.dirty {
            self.submitted + 1
        } else {
            self.confirmed
        }
    }
}

impl<S: Sink> Gate<S> {
    /// Delivers `item` to `sink` now if nothing is pending, otherwise holds it.
    pub(crate) fn send(&self, sink: &S, item: S::Item) {
        if !sink.admit(&item) {
            return;
        }
        let mut state = self.lock();
        if state.open() {
            drop(state);
            sink.deliver(item);
        } else {
            let seq = state.waits_for();
            state.held.push((seq, Held::Output(sink.clone(), item)));
        }
    }

    /// Delivers an item made by `item` to each of `sinks`, or holds it for each; the
    /// gate is consulted once for all of them.
    pub(crate) fn send_each<'s>(
        &self,
        sinks: impl Iterator<Item = &'s S>,
        item: impl Fn() -> S::Item,
    ) where
        S: 's,
    {
        let mut state = self.lock();
        if state.open() {
            drop(state);
            for sink in sinks {
                let item = item();
                // A closed or lagging sink must not stop the others.
                if sink.admit(&item) {
                    sink.deliver(item);
                }
            }
        } else {
            let seq = state.waits_for();
            for sink in sinks {
                let item = item();
                if sink.admit(&item) {
                    state.held.push((seq, Held::Output(sink.clone(), item)));
                }
            }
        }
    }

    /// Answers an HTTP request now if nothing is pending, otherwise holds the answer.
    pub(crate) fn reply(&self, reply: oneshot::Sender<Response>, response: Response) {
        let mut state = self.lock();
        if state.open() {
            drop(state);
            let _ = reply.send(response);
        } else {
            let seq = state.waits_for();
            state.held.push((seq, Held::Reply(reply, response)));
        }
    }

    /// A write that needs confirmation was made: output from now on waits for it.
    pub(crate) fn hold_output(&self) {
        self.lock().dirty = true;
    }

    /// The writes so far are handed to the committer; returns their commit's number.
    pub(crate) fn submitted(&self) -> u64 {
        let mut state = self.lock();
        state.submitted += 1;
        if state.dirty {
            state.confirmed = state.submitted;
        }
        state.dirty = false;
        state.submitted
    }

    /// The number of the last commit handed to the committer.
    pub(crate) fn last_submitted(&self) -> u64 {
        self.lock().submitted
    }

    /// Commit `seq` is durable: releases, in order, everything that waited for it.
    /// Returns how many items (output and replies) were released.
    pub(crate) fn release_through(&self, seq: u64) -> usize {
        let held = self.take_through(seq);
        let released = held.len();
        for held in held {
            match held {
                Held::Output(sink, item) => sink.deliver(item),
                Held::Reply(reply, response) => {
                    let _ = reply.send(response);
                }
            }
        }
        released
    }

    /// Commit `seq` failed, or was dropped because an earlier one failed: everything that
    /// waited for it is dropped, and held requests are answered with `failure`.
    pub(crate) fn discard_through(&self, seq: u64, failure: impl Fn() -> Response) {
        drop_held(self.take_through(seq), failure);
    }

    /// The room reset after a failed commit: nothing held so far will ever be released,
    /// and no earlier commit is waited for any more.
    pub(crate) fn reset(&self, failure: impl Fn() -> Response) {
        let held = {
            let mut state = self.lock();
            state.dirty = false;
            state.committed = state.submitted;
            mem::take(&mut state.held)
        };
        drop_held(held.into_iter().map(|(_, held)| held).collect(), failure);
    }

    /// Marks commits up to `seq` finished and takes the output that waited for them.
    fn take_through(&self, seq: u64) -> Vec<Held<S>> {
        let mut state = self.lock();
        state.committed = state.committed.max(seq);
        let ready = state
            .held
            .iter()
            .position(|(waits_for, _)| *waits_for > seq)
            .unwrap_or(state.held.len());
        state.held.drain(..ready).map(|(_, held)| held).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops held output: items are never delivered; requests are answered with `failure`.
fn drop_held<S: Sink>(held: Vec<Held<S>>, failure: impl Fn() -> Response) {
    for held in held {
        match held {
            Held::Output(sink, item) => sink.forget(&item),
            Held::Reply(reply, _) => {
                let _ = reply.send(failure());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A sink that records what it was given and counts what it holds, up to a limit.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Recorded>>);

    #[derive(Default)]
    struct Recorded {
        delivered: Vec<u32>,
        admitted: usize,
        limit: usize,
    }

    impl Recorder {
        fn with_limit(limit: usize) -> Self {
            let recorder = Self::default();
            recorder.0.lock().unwrap().limit = limit;
            recorder
        }

        fn delivered(&self) -> Vec<u32> {
            self.0.lock().unwrap().delivered.clone()
        }

        fn admitted(&self) -> usize {
            self.0.lock().unwrap().admitted
        }
    }

    impl Sink for Recorder {
        type Item = u32;

        fn admit(&self, _item: &u32) -> bool {
            let mut recorded = self.0.lock().unwrap();
            if recorded.admitted == recorded.limit {
                return false;
            }
            recorded.admitted += 1;
            true
        }

        fn deliver(&self, item: u32) {
            let mut recorded = self.0.lock().unwrap();
            recorded.admitted -= 1;
            recorded.delivered.push(item);
        }

        fn forget(&self, _item: &u32) {
            self.0.lock().unwrap().admitted -= 1;
        }
    }

    #[test]
    fn output_after_a_write_waits_for_its_commit() {
        let gate = Gate::default();
        let sink = Recorder::with_limit(10);
        gate.send(&sink, 1);
        gate.hold_output();
        gate.send(&sink, 2);
        let seq = gate.submitted();
        gate.send(&sink, 3);
        assert_eq!(sink.delivered(), [1]);
        assert_eq!(
            sink.admitted(),
            2,
            "held items count against the sink's limit"
        );
        gate.release_through(seq);
        assert_eq!(sink.delivered(), [1, 2, 3]);
        assert_eq!(sink.admitted(), 0);
    }

    #[test]
    fn held_output_is_bounded_by_the_sink_and_forgotten_on_failure() {
        let gate = Gate::default();
        let sink = Recorder::with_limit(2);
        gate.hold_output();
        let others = [sink.clone(), sink.clone(), sink.clone()];
        gate.send_each(others.iter(), || 7);
        assert_eq!(sink.admitted(), 2, "the third copy was refused, not held");
        let seq = gate.submitted();
        gate.discard_through(seq, || unreachable!("no request is held"));
        assert_eq!(sink.admitted(), 0);
        assert!(sink.delivered().is_empty());
    }
}

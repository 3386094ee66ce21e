//! The output gate: messages and HTTP responses that follow a write wait until that
//! write is durable (SPEC §5.4), so no client hears about state that a crash could undo.
//!
//! Commits are numbered. A frame sent while the room has unconfirmed writes, or while
//! earlier held output is still waiting, is held with the number of the commit it must
//! wait for; the committer releases held output in order as commits complete.

use std::mem;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Message as Frame;
use tokio::sync::oneshot;

use crate::connection::Outbound;
use crate::{Connection, Response};

/// Output waiting for a commit.
pub(crate) enum Held {
    Frame(Connection, Outbound),
    Reply(oneshot::Sender<Response>, Response),
}

#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
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
    held: Vec<(u64, Held)>,
}

impl State {
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

impl Gate {
    /// Sends `outbound` now if nothing is pending, otherwise holds it.
    pub(crate) fn send(&self, connection: &Connection, outbound: Outbound) {
        let mut state = self.lock();
        if state.open() {
            drop(state);
            let _ = connection.push(outbound);
        } else {
            let seq = state.waits_for();
            state
                .held
                .push((seq, Held::Frame(connection.clone(), outbound)));
        }
    }

    /// Sends one frame to many connections, or holds it for each.
    pub(crate) fn broadcast<'c>(
        &self,
        recipients: impl Iterator<Item = &'c Connection>,
        frame: &Frame,
    ) {
        let mut state = self.lock();
        if state.open() {
            drop(state);
            for connection in recipients {
                // A closed or lagging recipient must not stop the others.
                let _ = connection.push(Outbound::Frame(frame.clone()));
            }
        } else {
            let seq = state.waits_for();
            for connection in recipients {
                let held = Held::Frame(connection.clone(), Outbound::Frame(frame.clone()));
                state.held.push((seq, held));
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

    /// A write that needs confirmation was made: what follows waits for it.
    pub(crate) fn close(&self) {
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
    pub(crate) fn committed(&self, seq: u64) {
        for held in self.take_through(seq) {
            match held {
                Held::Frame(connection, outbound) => {
                    let _ = connection.push(outbound);
                }
                Held::Reply(reply, response) => {
                    let _ = reply.send(response);
                }
            }
        }
    }

    /// Commit `seq` failed, or was dropped because an earlier one failed: everything that
    /// waited for it is dropped, and held requests are answered with `failure`.
    pub(crate) fn discard(&self, seq: u64, failure: impl Fn() -> Response) {
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
    fn take_through(&self, seq: u64) -> Vec<Held> {
        let mut state = self.lock();
        state.committed = state.committed.max(seq);
        let ready = state
            .held
            .iter()
            .position(|(waits_for, _)| *waits_for > seq)
            .unwrap_or(state.held.len());
        state.held.drain(..ready).map(|(_, held)| held).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops held output: frames are never sent; requests are answered with `failure`.
fn drop_held(held: Vec<Held>, failure: impl Fn() -> Response) {
    for held in held {
        if let Held::Reply(reply, _) = held {
            let _ = reply.send(failure());
        }
    }
}

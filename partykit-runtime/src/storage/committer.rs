//! One room's commit pipeline: the room hands over what each event wrote and goes on;
//! this task commits it (merging whatever piled up meanwhile into one commit), then
//! releases the output that waited for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::response::IntoResponse;
use http::StatusCode;
use tokio::sync::{mpsc, watch};

use super::backend::{Backend, Mutation, RoomCommit, RoomKey};
use crate::Connection;
use crate::cluster::Tenure;
use crate::gate::Gate;
use crate::metrics::StorageMetrics;
use crate::tasks::Tasks;

/// What one or more events wrote, numbered by the gate.
pub(crate) struct Batch {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) mutations: Vec<Mutation>,
    /// When the room handed it over: output that waited for it was held from then on.
    pub(crate) submitted: std::time::Instant,
}

/// What the committer shares with the room's storage.
pub(crate) struct Shared {
    pub(crate) gate: Arc<Gate<Connection>>,
    /// Bumped when the room resets after a failed commit; older batches are dropped.
    pub(crate) epoch: AtomicU64,
    /// A commit failed and the room has not reset yet.
    pub(crate) failed: AtomicBool,
    /// The number of the last commit that finished (durably or not).
    pub(crate) finished: watch::Sender<u64>,
    /// In cluster mode, the room's lease: its epoch fences every commit, and a fenced
    /// commit cancels its `lost` token.
    pub(crate) lease: Option<Tenure>,
    pub(crate) metrics: Arc<StorageMetrics>,
}

/// What a request whose answer waited for a commit that was dropped (written on top of
/// a failed one) gets.
pub(crate) fn failure() -> axum::response::Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "A storage write failed; the room was reset",
    )
        .into_response()
}

/// What a request whose answer waited for the commit that failed gets: the id the
/// failure was logged with. 503 when the storage could not be reached (trying again
/// later may work), else 500.
fn failed_commit(error_id: &str, unavailable: bool) -> axum::response::Response {
    let (status, what) = if unavailable {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage is unavailable, so a write was not made durable; try again later",
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "A storage write failed; the room was reset",
        )
    };
    (
        status,
        [(crate::ERROR_ID_HEADER, error_id.to_owned())],
        format!("{what} (error id {error_id})"),
    )
        .into_response()
}

/// What a request whose answer waited for a commit refused by the lease fence gets: the
/// room is another node's now, and the same request reaches it there.
pub(crate) fn moved() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::RETRY_AFTER, "1")],
        "The room moved to another node; try again",
    )
        .into_response()
}

/// How many batches may wait for the committer. Whatever waits is merged into the next
/// commit, so a few are enough to keep commits pipelined; when they are full, the room
/// waits before its next event.
const QUEUED_BATCHES: usize = 8;

/// Starts a room's committer; it ends when every sender is dropped and the queue is
/// drained.
pub(crate) fn spawn(
    tasks: &Tasks,
    room: RoomKey,
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    on_durable: impl Fn(&RoomKey, &[Mutation]) + Send + 'static,
) -> mpsc::Sender<Batch> {
    let (sender, mut batches) = mpsc::channel::<Batch>(QUEUED_BATCHES);
    tasks.spawn(async move {
        while let Some(first) = batches.recv().await {
            let mut seq = first.seq;
            let mut epoch = first.epoch;
            let submitted = first.submitted;
            let mut mutations = first.mutations;
            // Group commit within the room: everything queued meanwhile goes in too.
            while let Ok(next) = batches.try_recv() {
                if next.epoch != epoch {
                    // Never merge across a reset: keep only the newer writes.
                    mutations.clear();
                    epoch = next.epoch;
                }
                seq = next.seq;
                mutations.extend(next.mutations);
            }
            let current = shared.epoch.load(Ordering::Acquire);
            if epoch != current || shared.failed.load(Ordering::Acquire) {
                // Written on top of a failed commit: the room resets and drops them.
                shared.gate.discard_through(seq, failure);
                shared.finished.send_replace(seq);
                continue;
            }
            let mut commit = RoomCommit::new(room.clone(), mutations);
            commit.lease = shared.lease.as_ref().map(|lease| lease.epoch);
            let metrics = &shared.metrics;
            #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
            metrics
                .commit_mutations
                .observe(commit.mutations.len() as f64);
            let started = std::time::Instant::now();
            let committed = backend.commit(commit.clone()).await;
            metrics
                .commit_duration
                .observe(started.elapsed().as_secs_f64());
            if committed.is_err() {
                metrics.commit_failures.inc();
            }
            match committed {
                Ok(()) => {
                    // The alarm clock learns of a new alarm before the output that
                    // followed it leaves: a client (a test) that heard back can count
                    // on the alarm being scheduled.
                    on_durable(&room, &commit.mutations);
                    if shared.gate.release_through(seq) > 0 {
                        metrics.gate_hold.observe(submitted.elapsed().as_secs_f64());
                    }
                }
                Err(error) if error.is_fenced() => {
                    // Another node holds the room now: nothing this room holds may be
                    // sent, and the room stops.
                    tracing::warn!(room = %room, %error, "a commit was fenced: the room moved to another node");
                    shared.gate.discard_through(seq, moved);
                    if let Some(lease) = &shared.lease {
                        lease.lost.cancel();
                    }
                    shared.failed.store(true, Ordering::Release);
                }
                Err(error) => {
                    // The requests that waited hear only the id: the detail (a path, a
                    // database message) is for the operator.
                    let error_id = crate::error::new_error_id();
                    tracing::error!(
                        room = %room,
                        %error,
                        error_id,
                        "storage commit failed: dropping the output that waited for it and resetting the room"
                    );
                    // Drop what waited first, then tell the room: anything the room
                    // holds before it sees the flag belongs to the failed state too,
                    // and is dropped when its own commit is discarded.
                    let unavailable = error.is_unavailable();
                    shared
                        .gate
                        .discard_through(seq, || failed_commit(&error_id, unavailable));
                    shared.failed.store(true, Ordering::Release);
                }
            }
            shared.finished.send_replace(seq);
        }
    });
    sender
}

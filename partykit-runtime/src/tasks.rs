//! Who owns the server's work: every task the server starts is spawned here, and
//! shutdown stops them in a fixed order.
//!
//! Shutdown runs in phases, each waiting for the one before:
//!
//! 1. **stopping**: the listener stops accepting; HTTP connections finish the request in
//!    hand; sockets close with 1001; the alarm clock and the cron scheduler stop firing.
//! 2. When every client connection task has ended, **draining**: each room with no open
//!    socket runs what is left in its mailbox (the `on_close` of its sockets among it),
//!    hands its last writes to its committer and exits; no new room starts.
//! 3. When every room and committer has ended, **finishing**: the services rooms needed
//!    until their last commit end (in cluster mode, the lease keeper, which then releases
//!    this node's leases); then the storage backend is closed.
//!
//! Each phase is bounded by what is left of the grace period; when it runs out,
//! **aborting** stops whatever still runs at its next `.await`.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

/// The server's task owner. Cheap to clone; every clone is the same owner.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks {
    /// Client connections: HTTP connections and the tasks of accepted sockets.
    connections: TaskTracker,
    /// Everything else: rooms, committers, the alarm clock, cron, internal deliveries.
    background: TaskTracker,
    /// What rooms need until the last one has stopped (the cluster's lease keeper).
    last: TaskTracker,
    stopping: CancellationToken,
    draining: CancellationToken,
    finishing: CancellationToken,
    aborting: CancellationToken,
}

impl Tasks {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `task` as a client connection's task (or a part of one, like an HTTP/2
    /// stream).
    pub(crate) fn spawn_connection<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let aborting = self.aborting.clone();
        self.connections.spawn(async move {
            aborting.run_until_cancelled(task).await;
        });
    }

    /// Wraps a client connection's future so that shutdown waits for it, for futures
    /// that someone else spawns (axum spawns the task of an upgraded socket).
    pub(crate) fn track_connection<F>(&self, task: F) -> impl Future<Output = ()> + Send + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.connections
            .track_future(abortable(self.aborting.clone(), task))
    }

    /// Counts as a client connection until dropped: for a connection whose task starts
    /// later (an accepted WebSocket upgrade, whose task axum spawns once the 101 is
    /// out), so that shutdown cannot find the connections gone and drain its room in
    /// between.
    pub(crate) fn hold_connection(&self) -> TaskTrackerToken {
        self.connections.token()
    }

    /// Runs `task` in the background: shutdown waits for it after the connections.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background
            .spawn(abortable(self.aborting.clone(), task));
    }

    /// Runs `task` until every room has stopped: shutdown cancels
    /// [`finishing`](Self::finishing) after the background, then waits for it.
    pub(crate) fn spawn_last<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.last.spawn(abortable(self.aborting.clone(), task));
    }

    /// Cancelled when every room and committer has ended.
    pub(crate) fn finishing(&self) -> &CancellationToken {
        &self.finishing
    }

    /// Cancelled when shutdown begins.
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Cancelled when the connections are gone: idle rooms exit.
    pub(crate) fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Begins shutdown when the returned guard is dropped; for servers that are dropped
    /// rather than shut down ([`Server::router`](crate::Server::router)), so that their
    /// background work still ends.
    pub(crate) fn stop_on_drop(&self) -> StopOnDrop {
        StopOnDrop {
            _stopping: self.stopping.clone().drop_guard(),
            _draining: self.draining.clone().drop_guard(),
            _finishing: self.finishing.clone().drop_guard(),
        }
    }

    /// Runs the shutdown phases, by `deadline`. Returns whether everything ended in time
    /// (otherwise what was left was aborted).
    pub(crate) async fn shut_down(&self, deadline: Instant) -> bool {
        self.stopping.cancel();
        self.connections.close();
        let connections_ended = within(deadline, self.connections.wait()).await;
        self.draining.cancel();
        self.background.close();
        let background_ended = within(deadline, self.background.wait()).await;
        self.finishing.cancel();
        self.last.close();
        let last_ended = within(deadline, self.last.wait()).await;
        if connections_ended && background_ended && last_ended {
            return true;
        }
        self.aborting.cancel();
        // Aborted tasks end at their next poll; one that blocks a thread cannot be
        // stopped, so this wait is bounded too.
        let abort_grace = Instant::now() + Duration::from_secs(1);
        within(abort_grace, async {
            self.connections.wait().await;
            self.background.wait().await;
            self.last.wait().await;
        })
        .await;
        false
    }
}

/// See [`Tasks::stop_on_drop`].
#[derive(Debug)]
pub(crate) struct StopOnDrop {
    _stopping: DropGuard,
    _draining: DropGuard,
    _finishing: DropGuard,
}

async fn abortable<F: Future<Output = ()>>(aborting: CancellationToken, task: F) {
    aborting.run_until_cancelled(task).await;
}

async fn within(deadline: Instant, future: impl Future<Output = ()>) -> bool {
    tokio::time::timeout_at(deadline, future).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_run_in_order_and_stragglers_are_aborted() {
        let tasks = Tasks::new();
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let stopping = tasks.stopping().clone();
        let sender = order_tx.clone();
        tokio::spawn(tasks.track_connection(async move {
            stopping.cancelled().await;
            let _ = sender.send("connection closed");
        }));
        let draining = tasks.draining().clone();
        let sender = order_tx.clone();
        tasks.spawn(async move {
            draining.cancelled().await;
            let _ = sender.send("room drained");
        });
        assert!(
            tasks
                .shut_down(Instant::now() + Duration::from_secs(5))
                .await
        );
        assert_eq!(order.recv().await, Some("connection closed"));
        assert_eq!(order.recv().await, Some("room drained"));

        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        assert!(
            !tasks
                .shut_down(Instant::now() + Duration::from_millis(10))
                .await
        );
        assert!(tasks.background.is_empty());
    }
}

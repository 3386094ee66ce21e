//! Cluster mode: many nodes, one owner per room, on PostgreSQL.
//!
//! N copies of the same server run against one PostgreSQL database, which holds room
//! storage, alarms, room ownership and node membership. Correctness rests on PostgreSQL
//! transactions and the database clock; there is no consensus protocol of our own.
//!
//! - **Membership**: every node has a row in `partykit_nodes` with the address of its
//!   internal listener, and heartbeats with the database's `now()`.
//! - **Ownership**: a room is served by the node that holds its lease in
//!   `partykit_room_leases`. The first event for a room nobody holds takes the lease in
//!   one statement, which increments the lease's `epoch`: the fencing token. The owner
//!   renews all its leases in one statement every third of the TTL. Every storage
//!   commit checks the room's epoch in its own transaction, so a node that lost a room
//!   (paused, partitioned, slow) can never write after another node took it over.
//! - **Losing a room** (a renewal that did not succeed before the soft deadline, or a
//!   fenced commit): the room stops taking events, drops the output it held and closes
//!   its sockets with 1012 (Service Restart), so clients reconnect through any node to
//!   the new owner.
//! - **Routing**: hooks run on the node a client reached; then the event goes to the
//!   owner, here or over the owner's internal listener (see `docs/CLUSTER.md`).
//! - **Alarms** live in PostgreSQL: the owner keeps its rooms' alarms on its own clock,
//!   and every node sweeps for due alarms of rooms nobody holds, takes their lease and
//!   runs them. `on_cron` runs once per tick cluster-wide (a claimed row per tick).

pub(crate) mod chain;
mod config;
mod directory;
pub(crate) mod forward;
pub(crate) mod internal;
mod leases;
pub(crate) mod relay;
mod sweeper;
mod throttle;

/// What the cluster modules' unit tests share: a local server and a peer naming it.
#[cfg(test)]
mod test_support {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::Peer;

    /// Serves `router` on a free loopback port, for the test's life.
    pub(super) async fn serve(router: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// A peer whose internal listener is at `addr`.
    pub(super) fn peer(addr: impl ToString) -> Peer {
        Peer {
            node_id: Arc::from("node-b"),
            addr: Arc::from(addr.to_string()),
        }
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

pub use config::{
    CLUSTER_SECRET_VAR, CLUSTER_URL_VAR, ClusterConfig, ClusterConfigError, DEFAULT_LEASE_TTL,
    LEASE_TTL_VAR, NODE_ADDR_VAR,
};
pub(crate) use forward::Forwarder;
pub(crate) use leases::{Owner, Tenure};

use crate::alarms::AlarmClock;
use crate::storage::RoomKey;

/// Another node, as the lease table names it: where its internal listener is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) node_id: Arc<str>,
    /// `host:port` of the peer's internal listener.
    pub(crate) addr: Arc<str>,
}

/// This node's membership of the cluster: its leases, and the statements that keep
/// them.
pub(crate) struct Cluster {
    /// Random for every start, so a restarted node never mistakes its previous life's
    /// leases for its own.
    node_id: Arc<str>,
    node_addr: Arc<str>,
    secret: Arc<str>,
    /// Sends events of rooms other nodes own to their internal listeners.
    forwarder: Forwarder,
    ttl: Duration,
    pool: Pool,
    leases: leases::Leases,
    /// Where the stored alarms of rooms this node takes go.
    alarms: AlarmClock,
    /// The database answered the last statement that needed it (for the log line at
    /// each transition).
    reachable: AtomicBool,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Cluster {
    pub(crate) fn new(
        config: &ClusterConfig,
        pool: Pool,
        alarms: AlarmClock,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let secret: Arc<str> = config.secret.as_str().into();
        Self {
            node_id: crate::connection::new_id().into(),
            node_addr: config.node_addr.as_str().into(),
            forwarder: Forwarder::new(Arc::clone(&secret)),
            secret,
            ttl: config.lease_ttl,
            pool,
            leases: leases::Leases::default(),
            alarms,
            reachable: AtomicBool::new(true),
            metrics,
        }
    }

    /// What this node counts of its cluster work.
    pub(crate) fn metrics(&self) -> &crate::metrics::ClusterMetrics {
        self.metrics.cluster()
    }

    /// `host:port` of this node's internal listener.
    /// Whether the last contact with the cluster database succeeded.
    pub(crate) fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    pub(crate) fn node_addr(&self) -> &str {
        &self.node_addr
    }

    /// The secret every internal request carries.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// The client for other nodes' internal listeners.
    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Registers this node; refuses to start when the database cannot be reached.
    pub(crate) async fn join(&self) -> Result<(), crate::storage::BackendError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO partykit_nodes (id, internal_addr, heartbeat_at) VALUES ($1, $2, now())",
                &[&&*self.node_id, &&*self.node_addr],
            )
            .await
            .map_err(|error| unreachable(&error))?;
        tracing::info!(node = %self.node_id, internal_addr = %self.node_addr, "joined the cluster");
        Ok(())
    }

    /// Starts the cluster's work, owned by `tasks`: the sweep for due alarms of rooms
    /// nobody holds, until shutdown begins; heartbeats, lease renewals and the
    /// soft-deadline check until the last room has stopped (rooms commit until then, so
    /// their leases must hold). The server then calls [`leave`](Self::leave).
    pub(crate) fn start(self: &Arc<Self>, parties: Vec<&'static str>, tasks: &crate::tasks::Tasks) {
        let sweep = sweeper::sweep(Arc::clone(self), parties);
        let stopping = tasks.stopping().clone();
        tasks.spawn(async move {
            stopping.run_until_cancelled(sweep).await;
        });
        let cluster = Arc::clone(self);
        let finishing = tasks.finishing().clone();
        tasks.spawn_last(async move {
            finishing.run_until_cancelled(leases::keep(cluster)).await;
        });
    }

    /// Leaves the cluster after the last room stopped, or after shutdown ran out of time
    /// and stopped what was left (the leases go either way): releases every lease this node
    /// holds (so the rooms come back elsewhere at once, not after the TTL) and removes
    /// the node's row.
    pub(crate) async fn leave(&self) {
        let released = async {
            let client = self.client().await?;
            let rooms = client
                .execute(
                    "UPDATE partykit_room_leases SET expires_at = now() WHERE node_id = $1 AND expires_at > now()",
                    &[&&*self.node_id],
                )
                .await
                .map_err(|error| unreachable(&error))?;
            client
                .execute(
                    "DELETE FROM partykit_nodes WHERE id = $1",
                    &[&&*self.node_id],
                )
                .await
                .map_err(|error| unreachable(&error))?;
            Ok::<_, crate::storage::BackendError>(rooms)
        };
        match tokio::time::timeout(self.ttl, released).await {
            Ok(Ok(rooms)) => {
                tracing::info!(node = %self.node_id, rooms, "left the cluster: leases released");
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot release this node's leases; they expire after the TTL");
            }
            Err(_) => {
                tracing::warn!("releasing this node's leases timed out; they expire after the TTL")
            }
        }
    }

    /// A pooled connection, or an `unavailable` error.
    async fn client(&self) -> Result<deadpool_postgres::Object, crate::storage::BackendError> {
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(error) => {
                self.saw_database(false);
                Err(crate::storage::BackendError::unavailable(format!(
                    "cannot reach the cluster database: {error}"
                )))
            }
        }
    }

    /// Logs once at each transition between reachable and unreachable.
    fn saw_database(&self, reachable: bool) {
        if self.reachable.swap(reachable, Ordering::AcqRel) != reachable {
            if reachable {
                tracing::info!("the cluster database is reachable again");
            } else {
                tracing::error!(
                    "the cluster database is unreachable: writes fail, new rooms are refused, rooms close their sockets with 1012 when their leases cannot be renewed"
                );
            }
        }
    }
}

/// A statement failed: the database is down or the connection broke.
fn unreachable(error: &tokio_postgres::Error) -> crate::storage::BackendError {
    crate::storage::BackendError::unavailable(format!("cluster database: {error}"))
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("node_addr", &self.node_addr)
            .finish_non_exhaustive()
    }
}

/// The key of a lease row.
fn key_of(party: String, room: String) -> RoomKey {
    RoomKey::new(party, room)
}

//! Room leases: taking a room, renewing every room this node holds in one statement,
//! and noticing when a room is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cluster, Peer, key_of, unreachable};
use crate::storage::{BackendError, RoomKey};

/// Takes the room's lease if nobody holds it (or it expired, or this node holds it
/// already: a new life of the room here), incrementing the epoch, and reports the holder
/// either way, with the holder's internal address and, when taken, the room's stored
/// alarm. One statement: the insert-or-update decides, the database's clock judges
/// expiry.
///
/// The row is locked `FOR UPDATE` before it is changed. That waits for every commit
/// transaction holding the row `FOR KEY SHARE` (the storage backend's fence check), so
/// the takeover commits only after them and the new owner loads what they wrote, while
/// a commit that starts later sees the new epoch and is fenced. (The update itself would
/// only take a lock that does not conflict with the fence's.)
const ACQUIRE: &str = "
WITH locked AS (
    SELECT 1 FROM partykit_room_leases WHERE party = $1 AND room = $2 FOR UPDATE
), taken AS (
    INSERT INTO partykit_room_leases AS l (party, room, node_id, epoch, expires_at)
    SELECT $1, $2, $3, 1, now() + $4::float8 * interval '1 millisecond'
    FROM (SELECT count(*) FROM locked) AS after_the_lock
    ON CONFLICT (party, room) DO UPDATE
        SET node_id = excluded.node_id, epoch = l.epoch + 1, expires_at = excluded.expires_at
        WHERE l.expires_at <= now() OR l.node_id = excluded.node_id
    RETURNING l.node_id, l.epoch
)
SELECT t.node_id, t.epoch, true AS taken, NULL::text AS addr,
       (SELECT a.at FROM partykit_alarms a WHERE a.party = $1 AND a.room = $2) AS alarm
FROM taken t
UNION ALL
SELECT l.node_id, l.epoch, false, n.internal_addr, NULL::bigint
FROM partykit_room_leases l LEFT JOIN partykit_nodes n ON n.id = l.node_id
WHERE l.party = $1 AND l.room = $2 AND NOT EXISTS (SELECT 1 FROM taken)";

/// Extends every lease this node still holds with the epoch it holds it at; returns
/// those extended. A lease missing from the answer was taken over.
const RENEW: &str = "
UPDATE partykit_room_leases l
SET expires_at = now() + $4::float8 * interval '1 millisecond'
FROM unnest($1::text[], $2::text[], $3::int8[]) AS h(party, room, epoch)
WHERE l.party = h.party AND l.room = h.room AND l.epoch = h.epoch AND l.node_id = $5
RETURNING l.party, l.room";

const HEARTBEAT: &str = "UPDATE partykit_nodes SET heartbeat_at = now() WHERE id = $1";

/// Lets the lease of a room this node stopped serving expire now, so the next event for
/// it is served at once, here or elsewhere. The epoch stays: a lease row is never
/// deleted, so epochs only grow and an old fencing token never becomes valid again.
const RELEASE: &str = "
UPDATE partykit_room_leases SET expires_at = now()
WHERE party = $1 AND room = $2 AND node_id = $3 AND epoch = $4";

/// A room's hold on its lease, as the room's storage and actor see it.
#[derive(Clone, Debug)]
pub(crate) struct Tenure {
    /// The fencing token every commit of the room carries.
    pub(crate) epoch: u64,
    /// Cancelled when the room is lost: its lease expired or moved on.
    pub(crate) lost: CancellationToken,
}

/// Who serves a room.
#[derive(Debug)]
pub(crate) enum Owner {
    /// This node, from now on: the room may start here (its tenure is
    /// [`Cluster::tenure`]).
    Here,
    /// Another node.
    Node(Peer),
}

#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<RoomKey, Held>>,
    /// One acquisition at a time per room on this node, so two first events do not both
    /// take the lease and leave the room with an outdated epoch.
    acquiring: Mutex<HashMap<RoomKey, Arc<tokio::sync::Mutex<()>>>>,
}

struct Held {
    tenure: Tenure,
    /// When the statement that last extended the lease was sent, on this node's
    /// monotonic clock: the lease is valid for at least the TTL after it.
    confirmed: Instant,
    /// When the lease was taken, and whether a room started under it since: a lease
    /// taken for an event that then never started its room (refused at the room cap, say)
    /// is let go after a TTL rather than renewed for ever.
    taken: Instant,
    started: bool,
}

impl Leases {
    fn held(&self) -> MutexGuard<'_, HashMap<RoomKey, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Cluster {
    /// The room's tenure, for a room starting here under it; `None` if this node does
    /// not hold its lease.
    pub(crate) fn claim(&self, room: &RoomKey) -> Option<Tenure> {
        let mut held = self.leases.held();
        let entry = held
            .get_mut(room)
            .filter(|held| !held.tenure.lost.is_cancelled())?;
        entry.started = true;
        Some(entry.tenure.clone())
    }

    /// The room's tenure, if this node holds its lease.
    pub(crate) fn tenure(&self, room: &RoomKey) -> Option<Tenure> {
        self.leases
            .held()
            .get(room)
            .map(|held| held.tenure.clone())
            .filter(|tenure| !tenure.lost.is_cancelled())
    }

    /// Who serves `room`: this node if it holds the lease or takes it now, else the
    /// holder.
    ///
    /// # Errors
    ///
    /// The database cannot be reached, or the holder is a node that no longer has a row
    /// (its lease has not expired yet): `unavailable`.
    pub(crate) async fn acquire(&self, room: &RoomKey) -> Result<Owner, BackendError> {
        if self.tenure(room).is_some() {
            return Ok(Owner::Here);
        }
        let lock = {
            let mut acquiring = self
                .leases
                .acquiring
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(acquiring.entry(room.clone()).or_default())
        };
        let owner = {
            let _one_at_a_time = lock.lock().await;
            match self.tenure(room) {
                Some(_) => Ok(Owner::Here),
                None => self.take(room).await,
            }
        };
        // The last one out forgets the room's lock.
        let mut acquiring = self
            .leases
            .acquiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&lock) == 2 {
            acquiring.remove(room);
        }
        owner
    }

    async fn take(&self, room: &RoomKey) -> Result<Owner, BackendError> {
        let client = self.client().await?;
        let sent = Instant::now();
        let ttl = self.ttl.as_secs_f64() * 1000.0;
        let rows = tokio::time::timeout(
            self.ttl / 3,
            client.query(
                ACQUIRE,
                &[&&*room.party, &&*room.room, &&*self.node_id, &ttl],
            ),
        )
        .await
        .map_err(|_| BackendError::unavailable("taking a room's lease timed out"))?
        .map_err(|error| {
            self.saw_database(false);
            unreachable(&error)
        })?;
        self.saw_database(true);
        let Some(row) = rows.first() else {
            // Raced with a first insert by another node that our snapshot missed.
            return Err(BackendError::unavailable(
                "the room is being taken by another node; try again",
            ));
        };
        let (node_id, epoch, taken): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
        if taken {
            let tenure = Tenure {
                epoch: u64::try_from(epoch).unwrap_or_default(),
                lost: CancellationToken::new(),
            };
            self.hold(room.clone(), tenure.clone(), sent);
            self.metrics().leases_acquired.inc();
            let alarm: Option<i64> = row.get(4);
            if alarm.is_some() {
                // The room's own clock is this node's now.
                self.alarms.set(room.clone(), alarm);
            }
            tracing::debug!(room = %room, epoch, "took the room's lease");
            return Ok(Owner::Here);
        }
        match row.get::<_, Option<String>>(3) {
            Some(addr) => Ok(Owner::Node(Peer {
                node_id: node_id.into(),
                addr: addr.into(),
            })),
            None => Err(BackendError::unavailable(format!(
                "the room is held by node {node_id}, which left the cluster; it moves when the lease expires"
            ))),
        }
    }

    /// Records a lease taken by a statement sent at `sent`.
    pub(super) fn hold(&self, room: RoomKey, tenure: Tenure, sent: Instant) {
        let held = Held {
            tenure,
            confirmed: sent,
            taken: sent,
            started: false,
        };
        if let Some(previous) = self.leases.held().insert(room, held) {
            // An older life of the room here; its epoch is fenced now.
            previous.tenure.lost.cancel();
        }
    }

    /// The room stopped here (evicted while idle): let its lease go, unless it was taken
    /// again here meanwhile (then the epoch differs and this does nothing).
    pub(crate) async fn release(&self, room: &RoomKey, epoch: u64) {
        {
            let mut held = self.leases.held();
            if held
                .get(room)
                .is_some_and(|held| held.tenure.epoch == epoch)
            {
                held.remove(room);
            }
        }
        let Ok(client) = self.client().await else {
            return;
        };
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        if let Err(error) = client
            .execute(
                RELEASE,
                &[&&*room.party, &&*room.room, &&*self.node_id, &epoch],
            )
            .await
        {
            tracing::debug!(room = %room, %error, "cannot release the room's lease; it expires after the TTL");
        }
    }

    /// The room is lost (a commit was fenced, or its lease could not be renewed in time):
    /// its actor stops and closes its sockets with 1012.
    pub(crate) fn lose(&self, room: &RoomKey, epoch: u64, why: &str) {
        let mut held = self.leases.held();
        if let Some(entry) = held.get(room).filter(|held| held.tenure.epoch == epoch) {
            tracing::warn!(room = %room, epoch, "lost the room: {why}");
            entry.tenure.lost.cancel();
            held.remove(room);
        }
    }

    /// Renews every lease held, and heartbeats; leases missing from the answer were taken
    /// over and are lost.
    async fn renew(&self) -> Result<(), BackendError> {
        let unused: Vec<(RoomKey, u64)> = self
            .leases
            .held()
            .iter()
            .filter(|(_, held)| !held.started && held.taken.elapsed() >= self.ttl)
            .map(|(room, held)| (room.clone(), held.tenure.epoch))
            .collect();
        for (room, epoch) in unused {
            tracing::debug!(room = %room, "releasing the lease of a room that never started here");
            self.release(&room, epoch).await;
        }
        let (parties, rooms, epochs): (Vec<String>, Vec<String>, Vec<i64>) = {
            let held = self.leases.held();
            let mut columns = (
                Vec::with_capacity(held.len()),
                Vec::with_capacity(held.len()),
                Vec::with_capacity(held.len()),
            );
            for (room, held) in held.iter() {
                columns.0.push(room.party.to_string());
                columns.1.push(room.room.to_string());
                columns
                    .2
                    .push(i64::try_from(held.tenure.epoch).unwrap_or(i64::MAX));
            }
            columns
        };
        let client = self.client().await?;
        let sent = Instant::now();
        let ttl = self.ttl.as_secs_f64() * 1000.0;
        let node: &str = &self.node_id;
        // Both statements in one round trip: tokio-postgres pipelines them.
        let renew_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&parties, &rooms, &epochs, &ttl, &node];
        let heartbeat_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&node];
        let (renewed, heartbeat) = tokio::join!(
            client.query(RENEW, &renew_params),
            client.execute(HEARTBEAT, &heartbeat_params),
        );
        let renewed = renewed.map_err(|error| unreachable(&error))?;
        if heartbeat.map_err(|error| unreachable(&error))? == 0 {
            // Our row was removed (a long pause, or an operator): put it back.
            client
                .execute(
                    "INSERT INTO partykit_nodes (id, internal_addr, heartbeat_at) VALUES ($1, $2, now()) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                    &[&node, &&*self.node_addr],
                )
                .await
                .map_err(|error| unreachable(&error))?;
        }
        let renewed: std::collections::HashSet<RoomKey> = renewed
            .iter()
            .map(|row| key_of(row.get(0), row.get(1)))
            .collect();
        let mut lost = Vec::new();
        {
            let mut held = self.leases.held();
            for (party, (room, epoch)) in parties.into_iter().zip(rooms.into_iter().zip(epochs)) {
                let key = RoomKey::new(party, room);
                if renewed.contains(&key) {
                    if let Some(entry) = held.get_mut(&key) {
                        entry.confirmed = entry.confirmed.max(sent);
                    }
                } else {
                    lost.push((key, u64::try_from(epoch).unwrap_or_default()));
                }
            }
        }
        for (room, epoch) in lost {
            self.lose(&room, epoch, "its lease was taken over by another node");
        }
        Ok(())
    }

    /// Loses every room whose lease was last confirmed so long ago that another node may
    /// take it soon: at the soft deadline, a sixth of the TTL before the lease can
    /// expire, so its sockets close before a new owner serves it.
    fn lose_overdue(&self) {
        let soft = self.ttl - self.ttl / 6;
        let now = Instant::now();
        let overdue: Vec<(RoomKey, u64)> = self
            .leases
            .held()
            .iter()
            .filter(|(_, held)| now.duration_since(held.confirmed) >= soft)
            .map(|(room, held)| (room.clone(), held.tenure.epoch))
            .collect();
        for (room, epoch) in overdue {
            self.lose(
                &room,
                epoch,
                "its lease could not be renewed before the soft deadline",
            );
        }
    }
}

/// The lease keeper: every sixth of the TTL checks the soft deadlines, every third
/// renews (with the heartbeat). A renewal that hangs is abandoned after a quarter of the
/// TTL, so a stuck database cannot delay the soft deadline.
pub(super) async fn keep(cluster: Arc<Cluster>) {
    let tick = cluster.ttl / 6;
    let mut ticks = tokio::time::interval(tick.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count: u64 = 0;
    loop {
        ticks.tick().await;
        count += 1;
        if count.is_multiple_of(2) {
            match tokio::time::timeout(cluster.ttl / 4, cluster.renew()).await {
                Ok(Ok(())) => cluster.saw_database(true),
                Ok(Err(error)) => {
                    cluster.saw_database(false);
                    tracing::debug!(%error, "lease renewal failed");
                }
                Err(_) => {
                    cluster.saw_database(false);
                    tracing::debug!("lease renewal timed out");
                }
            }
        }
        cluster.lose_overdue();
    }
}

//! Alarms of rooms nobody holds, and cron ticks run once cluster-wide.
//!
//! An owner keeps its rooms' alarms on its own clock. When a node dies its rooms' alarms
//! still sit in `partykit_alarms`: every node sweeps for due alarms of rooms whose lease
//! is not live, claims each row with `FOR UPDATE SKIP LOCKED` (so two sweepers never
//! claim one alarm), takes the room's lease in the same transaction and hands the alarm
//! to its own clock, which wakes the room here. Delivery is at-least-once: a room whose
//! `on_alarm` ran but whose owner died before the alarm was cleared runs it again, with
//! the retries of single-node mode.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::Tenure;
use super::{Cluster, unreachable};
use crate::storage::{BackendError, RoomKey};

/// How often a node sweeps (at most; a third of the TTL when that is shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The most alarms one sweep claims; the rest wait for the next.
const SWEEP_BATCH: i64 = 64;
/// Claimed cron ticks older than this are deleted.
const CRON_TICKS_KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// Due alarms of this node's parties whose room has no live lease, locked for this
/// transaction; rows another sweeper holds are skipped.
const DUE: &str = "
SELECT a.party, a.room, a.at FROM partykit_alarms a
WHERE a.party = ANY($1) AND a.at <= (extract(epoch FROM now()) * 1000)::int8
  AND NOT EXISTS (
    SELECT 1 FROM partykit_room_leases l
    WHERE l.party = a.party AND l.room = a.room AND l.expires_at > now())
ORDER BY a.at
LIMIT $2
FOR UPDATE OF a SKIP LOCKED";

/// Takes the lease of a room whose alarm was claimed (nobody holds it: checked under the
/// alarm row's lock; a node that took it meanwhile keeps it). The lease row is locked
/// `FOR UPDATE` first, for the reason given at the lease module's `ACQUIRE`.
const TAKE: &str = "
WITH locked AS (
    SELECT 1 FROM partykit_room_leases WHERE party = $1 AND room = $2 FOR UPDATE
)
INSERT INTO partykit_room_leases AS l (party, room, node_id, epoch, expires_at)
SELECT $1, $2, $3, 1, now() + $4::float8 * interval '1 millisecond'
FROM (SELECT count(*) FROM locked) AS after_the_lock
ON CONFLICT (party, room) DO UPDATE
    SET node_id = excluded.node_id, epoch = l.epoch + 1, expires_at = excluded.expires_at
    WHERE l.expires_at <= now()
RETURNING l.epoch";

pub(super) async fn sweep(cluster: Arc<Cluster>, parties: Vec<&'static str>) {
    let parties: Vec<String> = parties.into_iter().map(str::to_owned).collect();
    let mut ticks = tokio::time::interval(SWEEP_EVERY.min(cluster.ttl / 3));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match tokio::time::timeout(cluster.ttl / 3, cluster.sweep_once(&parties)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "alarm sweep failed"),
            Err(_) => tracing::debug!("alarm sweep timed out"),
        }
    }
}

impl Cluster {
    async fn sweep_once(&self, parties: &[String]) -> Result<(), BackendError> {
        let mut client = self.client().await?;
        let sent = Instant::now();
        let transaction = client
            .transaction()
            .await
            .map_err(|error| unreachable(&error))?;
        let due = transaction
            .query(DUE, &[&parties, &SWEEP_BATCH])
            .await
            .map_err(|error| unreachable(&error))?;
        if due.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl.as_secs_f64() * 1000.0;
        let node: &str = &self.node_id;
        let mut taken = Vec::with_capacity(due.len());
        for row in &due {
            let (party, room, at): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let epoch = transaction
                .query_opt(TAKE, &[&party, &room, &node, &ttl])
                .await
                .map_err(|error| unreachable(&error))?;
            if let Some(epoch) = epoch {
                taken.push((RoomKey::new(party, room), epoch.get::<_, i64>(0), at));
            }
        }
        transaction
            .commit()
            .await
            .map_err(|error| unreachable(&error))?;
        for (room, epoch, at) in taken {
            tracing::info!(room = %room, epoch, "took an unheld room to run its due alarm");
            self.hold(
                room.clone(),
                Tenure {
                    epoch: u64::try_from(epoch).unwrap_or_default(),
                    lost: CancellationToken::new(),
                },
                sent,
            );
            self.alarms.set(room, Some(at));
        }
        Ok(())
    }

    /// Claims the tick of cron schedule `name` at `scheduled`: true for exactly one node
    /// of the cluster, which runs it. Old claims are pruned on the way.
    pub(crate) async fn claim_cron_tick(&self, name: &str, scheduled: SystemTime) -> bool {
        let tick = scheduled.duration_since(UNIX_EPOCH).map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
        let claimed = async {
            let client = self.client().await?;
            let node: &str = &self.node_id;
            let inserted = client
                .execute(
                    "INSERT INTO partykit_cron_ticks (name, tick, node_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&name, &tick, &node],
                )
                .await
                .map_err(|error| unreachable(&error))?;
            if inserted == 1 {
                let oldest = tick.saturating_sub(CRON_TICKS_KEPT_MS);
                client
                    .execute(
                        "DELETE FROM partykit_cron_ticks WHERE tick < $1",
                        &[&oldest],
                    )
                    .await
                    .map_err(|error| unreachable(&error))?;
            }
            Ok::<_, BackendError>(inserted == 1)
        };
        match claimed.await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(cron = name, %error, "cannot claim the cron tick; this node skips it");
                false
            }
        }
    }
}

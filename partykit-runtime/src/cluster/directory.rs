//! Which node holds which room, read off the lease table without taking anything: for
//! the inspection API, which lists every node's rooms and sends a room's requests to the
//! node that holds it.

use super::{Cluster, Peer, unreachable};
use crate::storage::{BackendError, RoomKey};

/// The nodes other than this one that hold an unexpired lease, with their addresses.
const HOLDERS: &str = "
SELECT DISTINCT l.node_id, n.internal_addr
FROM partykit_room_leases l JOIN partykit_nodes n ON n.id = l.node_id
WHERE l.expires_at > now() AND l.node_id <> $1";

/// The node holding the room's unexpired lease, if it is not this one.
const HOLDER: &str = "
SELECT l.node_id, n.internal_addr
FROM partykit_room_leases l JOIN partykit_nodes n ON n.id = l.node_id
WHERE l.party = $1 AND l.room = $2 AND l.expires_at > now() AND l.node_id <> $3";

impl Cluster {
    /// The other nodes that hold rooms now.
    pub(crate) async fn lease_holders(&self) -> Result<Vec<Peer>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(HOLDERS, &[&&*self.node_id])
            .await
            .map_err(|error| unreachable(&error))?;
        Ok(rows.iter().map(peer).collect())
    }

    /// The other node that holds `room` now; `None` if it is this one or nobody.
    pub(crate) async fn holder(&self, room: &RoomKey) -> Result<Option<Peer>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(HOLDER, &[&&*room.party, &&*room.room, &&*self.node_id])
            .await
            .map_err(|error| unreachable(&error))?;
        Ok(rows.first().map(peer))
    }
}

fn peer(row: &tokio_postgres::Row) -> Peer {
    let (node_id, addr): (String, String) = (row.get(0), row.get(1));
    Peer {
        node_id: node_id.into(),
        addr: addr.into(),
    }
}

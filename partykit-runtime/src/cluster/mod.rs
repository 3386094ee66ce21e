//! Cluster mode: several nodes serve one set of rooms, each room owned by one node.
//!
//! Integration scaffold for the forwarding modules: the lead's core replaces this file
//! (leases, membership); the names below are the ones the forwarding code uses.

// Until the core builds a `Cluster` and serves the internal listener, much of
// forwarding is unreachable in this branch.
#![allow(dead_code)]

pub(crate) mod chain;
pub(crate) mod forward;
pub(crate) mod internal;
pub(crate) mod relay;

use std::sync::Arc;

pub(crate) use forward::Forwarder;

/// Another node, as the lease table names it: where its internal listener is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) node_id: Arc<str>,
    /// host:port
    pub(crate) addr: Arc<str>,
}

/// This node's part in a cluster.
pub(crate) struct Cluster {
    secret: Arc<str>,
    forwarder: Forwarder,
    /// Scaffold for the forwarding tests: the rooms other nodes own (the core reads the
    /// lease table instead).
    #[cfg(test)]
    owners: std::sync::Mutex<std::collections::HashMap<crate::storage::RoomKey, Peer>>,
}

impl Cluster {
    #[allow(dead_code)] // The lead's core builds it.
    pub(crate) fn new(secret: Arc<str>) -> Self {
        Self {
            forwarder: Forwarder::new(Arc::clone(&secret)),
            secret,
            #[cfg(test)]
            owners: Default::default(),
        }
    }

    /// Scaffold: where `room` of `party` is owned.
    pub(crate) fn owner_of(&self, party: &str, room: &str) -> crate::room::Location {
        #[cfg(test)]
        if let Some(peer) = self
            .owners
            .lock()
            .unwrap()
            .get(&crate::storage::RoomKey::new(party, room))
        {
            return crate::room::Location::Node(peer.clone());
        }
        let _ = (party, room);
        crate::room::Location::Here
    }

    /// Scaffold for the forwarding tests: `peer` owns `room` of `party`.
    #[cfg(test)]
    pub(crate) fn set_owner(&self, party: &str, room: &str, peer: Peer) {
        self.owners
            .lock()
            .unwrap()
            .insert(crate::storage::RoomKey::new(party, room), peer);
    }

    /// The cluster secret.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

//! Awareness (presence: cursors, names) as y-partykit's server keeps it.
//!
//! The server has no state of its own. It applies what clients send, remembers which
//! client ids each connection spoke for, and reports every change so that it can be
//! broadcast to all connections (the sender included: that echo is what keeps a
//! provider's 30-second "no message received" timer from firing). When a connection
//! closes, its client ids are removed, which is broadcast too. States not renewed for
//! 30 seconds are removed as y-protocols' awareness does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use yrs::ClientID;
use yrs::sync::Awareness;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry, AwarenessUpdateSummary};

use crate::Result;

/// How long a remote state lives without renewal (y-protocols' `outdatedTimeout`).
const OUTDATED: Duration = Duration::from_secs(30);
/// How often outdated states are looked for (y-protocols checks every tenth).
const PRUNE_EVERY: Duration = Duration::from_secs(3);

/// The room's awareness and the bookkeeping around it.
pub(crate) struct Presence {
    awareness: Awareness,
    last_prune: Instant,
}

impl Presence {
    pub(crate) fn new(doc: yrs::Doc) -> Self {
        Self {
            awareness: Awareness::new(doc),
            last_prune: Instant::now(),
        }
    }

    pub(crate) fn awareness(&self) -> &Awareness {
        &self.awareness
    }

    /// Every state a client currently has, for a new connection; `None` when there is
    /// none.
    pub(crate) fn states(&self) -> Result<Option<AwarenessUpdate>> {
        let update = self.awareness.update()?;
        Ok((!update.clients.is_empty()).then_some(update))
    }

    /// Applies a client's awareness update. The client ids it added or updated are
    /// recorded in `controlled` (those it removed are dropped from it). Returns what to
    /// broadcast, if anything changed.
    pub(crate) fn apply(
        &mut self,
        update: AwarenessUpdate,
        controlled: &mut HashSet<ClientID>,
    ) -> Result<Option<AwarenessUpdate>> {
        let Some(summary) = self.awareness.apply_update_summary(update)? else {
            return Ok(None);
        };
        controlled.extend(summary.added.iter().chain(&summary.updated).copied());
        for client in &summary.removed {
            controlled.remove(client);
        }
        self.changes(&summary)
    }

    /// Removes the states of `clients` (those still present), keeping their clocks as
    /// y-protocols' `removeAwarenessStates` does. Returns what to broadcast, if anything
    /// was removed.
    pub(crate) fn remove(
        &mut self,
        clients: impl IntoIterator<Item = ClientID>,
    ) -> Result<Option<AwarenessUpdate>> {
        let null: Arc<str> = Arc::from("null");
        let present: HashMap<ClientID, u32> = self
            .awareness
            .iter()
            .filter(|(_, state)| state.data.is_some())
            .map(|(client, state)| (client, state.clock))
            .collect();
        let removals: HashMap<ClientID, AwarenessUpdateEntry> = clients
            .into_iter()
            .filter_map(|client| {
                let entry = AwarenessUpdateEntry {
                    clock: *present.get(&client)?,
                    json: Arc::clone(&null),
                };
                Some((client, entry))
            })
            .collect();
        if removals.is_empty() {
            return Ok(None);
        }
        let update = AwarenessUpdate { clients: removals };
        match self.awareness.apply_update_summary(update)? {
            Some(summary) => self.changes(&summary),
            None => Ok(None),
        }
    }

    /// Removes remote states not renewed for 30 seconds; looks at most every 3 seconds.
    pub(crate) fn prune(&mut self) -> Result<Option<AwarenessUpdate>> {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return Ok(None);
        }
        self.last_prune = Instant::now();
        let now = millis_now();
        let own = self.awareness.client_id();
        let outdated: Vec<ClientID> = self
            .awareness
            .iter()
            .filter(|(client, state)| {
                *client != own
                    && state.data.is_some()
                    && now.saturating_sub(state.last_updated) >= OUTDATED.as_millis() as u64
            })
            .map(|(client, _)| client)
            .collect();
        self.remove(outdated)
    }

    fn changes(&self, summary: &AwarenessUpdateSummary) -> Result<Option<AwarenessUpdate>> {
        let changed = summary.all_changes();
        if changed.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.awareness.update_with_clients(changed)?))
    }
}

fn millis_now() -> u64 {
    use yrs::sync::Clock;
    yrs::sync::time::SystemClock.now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(client: u64, clock: u32, json: &str) -> AwarenessUpdate {
        let entry = AwarenessUpdateEntry {
            clock,
            json: Arc::from(json),
        };
        AwarenessUpdate {
            clients: [(ClientID::new(client), entry)].into(),
        }
    }

    #[test]
    fn states_are_tracked_per_connection_and_removed() {
        let mut presence = Presence::new(yrs::Doc::new());
        assert!(presence.states().unwrap().is_none());

        let mut controlled = HashSet::new();
        let change = presence
            .apply(state(7, 1, r#"{"user":"ada"}"#), &mut controlled)
            .unwrap()
            .unwrap();
        assert_eq!(
            change.clients[&ClientID::new(7)].json.as_ref(),
            r#"{"user":"ada"}"#
        );
        assert!(controlled.contains(&ClientID::new(7)));
        assert_eq!(presence.states().unwrap().unwrap().clients.len(), 1);

        // A stale clock changes nothing.
        let stale = presence.apply(state(7, 1, r#"{"user":"bob"}"#), &mut controlled);
        assert!(stale.unwrap().is_none());

        // Removal keeps the clock, so peers that saw clock 1 drop the state.
        let removal = presence.remove([ClientID::new(7)]).unwrap().unwrap();
        let entry = &removal.clients[&ClientID::new(7)];
        assert_eq!((entry.clock, entry.json.as_ref()), (1, "null"));
        assert!(presence.states().unwrap().is_none());
        // Removing again, or an unknown client, broadcasts nothing.
        assert!(presence.remove([ClientID::new(7)]).unwrap().is_none());
        assert!(presence.remove([ClientID::new(8)]).unwrap().is_none());

        // The client comes back with a newer clock.
        let back = presence.apply(state(7, 2, r#"{"user":"ada"}"#), &mut controlled);
        assert!(back.unwrap().is_some());
        // And leaves by itself: it is no longer the connection's to remove.
        let left = presence.apply(state(7, 3, "null"), &mut controlled);
        assert!(left.unwrap().is_some());
        assert!(!controlled.contains(&ClientID::new(7)));
    }
}

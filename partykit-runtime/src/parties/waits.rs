//! Who is waiting for whom: calls between rooms form a wait-for graph, and a call that
//! would close a cycle fails at once instead of deadlocking.
//!
//! LiveRooms run one event at a time, so a room awaiting another room cannot take events:
//! if A awaits B while B (in this call or another) awaits A, neither ever proceeds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::storage::RoomKey;

#[derive(Default)]
pub(crate) struct WaitGraph {
    edges: Mutex<HashMap<RoomKey, Vec<RoomKey>>>,
}

/// An edge of the graph; removed when the call ends.
pub(crate) struct Waiting {
    graph: Arc<WaitGraph>,
    from: RoomKey,
    to: RoomKey,
}

impl WaitGraph {
    /// Records that `from` waits for `to`, unless `to` already (transitively) waits for
    /// `from`; then returns the cycle, starting and ending at `from`.
    pub(crate) fn wait(
        self: &Arc<Self>,
        from: &RoomKey,
        to: &RoomKey,
    ) -> Result<Waiting, Vec<RoomKey>> {
        let mut edges = self.edges.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut path) = path_between(&edges, to, from) {
            path.insert(0, from.clone());
            return Err(path);
        }
        edges.entry(from.clone()).or_default().push(to.clone());
        Ok(Waiting {
            graph: Arc::clone(self),
            from: from.clone(),
            to: to.clone(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut edges = self
            .graph
            .edges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(targets) = edges.get_mut(&self.from) {
            if let Some(index) = targets.iter().position(|target| *target == self.to) {
                targets.swap_remove(index);
            }
            if targets.is_empty() {
                edges.remove(&self.from);
            }
        }
    }
}

/// A path of waits from `start` to `goal` (both included), if there is one.
fn path_between(
    edges: &HashMap<RoomKey, Vec<RoomKey>>,
    start: &RoomKey,
    goal: &RoomKey,
) -> Option<Vec<RoomKey>> {
    let mut seen = HashSet::new();
    let mut stack = vec![vec![start.clone()]];
    while let Some(path) = stack.pop() {
        let last = path.last()?;
        if last == goal {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in edges.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> RoomKey {
        RoomKey::new("main", room)
    }

    #[test]
    fn cycles_are_refused_and_edges_removed() {
        let graph = Arc::new(WaitGraph::default());
        let (a, b, c) = (key("a"), key("b"), key("c"));
        assert_eq!(graph.wait(&a, &a).err(), Some(vec![a.clone(), a.clone()]));
        let a_b = graph.wait(&a, &b).unwrap();
        let b_c = graph.wait(&b, &c).unwrap();
        assert_eq!(
            graph.wait(&c, &a).err(),
            Some(vec![c.clone(), a.clone(), b.clone(), c.clone()])
        );
        drop(b_c);
        let c_a = graph.wait(&c, &a).unwrap();
        drop((a_b, c_a));
        assert!(graph.edges.lock().unwrap().is_empty());
    }
}

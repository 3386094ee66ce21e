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

    /// Every room that waits for `room`, directly or through others (not `room` itself
    /// unless it is in a cycle, which `wait` never lets form).
    pub(crate) fn waiting_on(&self, room: &RoomKey) -> Vec<RoomKey> {
        let edges = self.edges.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waiting = Vec::new();
        let mut seen = HashSet::from([room.clone()]);
        let mut frontier = vec![room.clone()];
        while let Some(awaited) = frontier.pop() {
            for (from, targets) in edges.iter() {
                if targets.contains(&awaited) && seen.insert(from.clone()) {
                    waiting.push(from.clone());
                    frontier.push(from.clone());
                }
            }
        }
        waiting
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

    #[test]
    fn waiting_on_is_transitive() {
        let graph = Arc::new(WaitGraph::default());
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
        let _a_b = graph.wait(&a, &b).unwrap();
        let _b_c = graph.wait(&b, &c).unwrap();
        let _d_c = graph.wait(&d, &c).unwrap();
        let mut on_c = graph.waiting_on(&c);
        on_c.sort_by(|x, y| x.room.cmp(&y.room));
        assert_eq!(on_c, vec![a.clone(), b.clone(), d.clone()]);
        assert_eq!(graph.waiting_on(&b), vec![a.clone()]);
        assert!(graph.waiting_on(&a).is_empty());
    }

    #[test]
    fn a_chain_that_waits_for_the_caller_of_the_target_is_a_cycle() {
        let graph = Arc::new(WaitGraph::default());
        let (x, y, t) = (key("x"), key("y"), key("t"));
        // On the owner of `t`: a forwarded call from `x` (which `y` waits for) to `t`.
        let guards = crate::cluster::chain::Chain(vec![x.clone(), y.clone()])
            .install(&graph, &t)
            .unwrap();
        // `t` calling back into `y` (or `x`) would deadlock across the nodes.
        let cycle = graph.wait(&t, &y).err().expect("a cycle");
        assert_eq!(cycle, vec![t.clone(), y.clone(), t.clone()]);
        assert!(graph.wait(&t, &x).is_err());
        // A chain through `t` itself is refused at once.
        assert!(
            crate::cluster::chain::Chain(vec![t.clone()])
                .install(&graph, &t)
                .is_err()
        );
        drop(guards);
        let _t_y = graph.wait(&t, &y).unwrap();
    }
}

//! Spreading edges over the cluster: a hub with more than its share of the edges sends some of
//! them to the hub with the fewest (Redirect naming that hub's tunnel address, then GoAway), a
//! few each round.
//!
//! The share is counted in edges: every edge holds a control channel (memory, heartbeats, a
//! TLS session) whether or not it streams, and streams start on demand wherever the viewers
//! are, so edges are the load a hub can be asked to give up. Only serving (*allocated*) hubs
//! count and receive; a draining hub sends all of its edges away by itself.
//!
//! The rule, with `share` = the edges of the serving hubs divided by their number, rounded up:
//! a hub moves edges only while it has more than `share`, only to a hub with fewer than
//! `share`, and never more than the target has room for, so two hubs can never hand the same
//! edges back and forth. At most a tenth of the share (at least one) moves per round, so a new
//! hub takes its share over several rounds instead of a storm of handshakes at once; rounds
//! are `cluster.rebalanceInterval` apart, long enough for the moved edges to show in the
//! registry's loads.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Cluster;
use super::records::{HubRecord, HubState};
use crate::registry::{NodeCommand, NodeRegistry};
use crate::session::Sessions;

/// Edges to move in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// How many.
    pub count: usize,
    /// The hub to send them to.
    pub hub: String,
    /// Its tunnel address, for the Redirect.
    pub address: String,
}

/// What this hub should give up, given the cluster's hubs (as the registry shows them) and the
/// edges connected here now; `None` when it is within its share or nobody has room.
pub fn plan(me: &str, my_edges: usize, hubs: &[HubRecord]) -> Option<Move> {
    let serving: Vec<&HubRecord> = hubs.iter().filter(|h| h.state == HubState::Allocated).collect();
    if !serving.iter().any(|h| h.name == me) || serving.len() < 2 {
        return None;
    }
    let edges = |h: &HubRecord| if h.name == me { my_edges } else { h.load.edges };
    let total: usize = serving.iter().map(|h| edges(h)).sum();
    let share = total.div_ceil(serving.len());
    if my_edges <= share {
        return None;
    }
    let target = serving
        .iter()
        .filter(|h| h.name != me)
        .min_by(|a, b| (a.load.edges, a.name.as_str()).cmp(&(b.load.edges, b.name.as_str())))?;
    let room = share.saturating_sub(target.load.edges);
    let per_round = (share / 10).max(1);
    let count = (my_edges - share).min(room).min(per_round);
    (count > 0).then(|| Move { count, hub: target.name.clone(), address: target.tunnel_address.clone() })
}

/// Where a draining hub sends `node`: a serving hub other than `me`, chosen with odds in
/// proportion to its room below the share its edges will have once all of `me`'s (`my_edges`)
/// have moved, so a drain's edges spread instead of all landing on the emptiest hub. The
/// choice is a hash of the node's name: the same node gets the same answer.
pub fn drain_target(me: &str, my_edges: usize, node: &str, hubs: &[HubRecord]) -> Option<String> {
    let serving: Vec<&HubRecord> = hubs.iter().filter(|h| h.state == HubState::Allocated && h.name != me).collect();
    if serving.is_empty() {
        return None;
    }
    let total = my_edges + serving.iter().map(|h| h.load.edges).sum::<usize>();
    let share = total.div_ceil(serving.len());
    let rooms: Vec<u64> = serving.iter().map(|h| share.saturating_sub(h.load.edges).max(1) as u64).collect();
    // FNV-1a: stable across runs and builds, unlike the standard hasher.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut pick = hash % rooms.iter().sum::<u64>();
    for (h, room) in serving.iter().zip(rooms) {
        if pick < room {
            return Some(h.tunnel_address.clone());
        }
        pick -= room;
    }
    None
}

/// When rounds happen: every `interval` (none when it is zero).
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    interval: Duration,
    next: Instant,
}

impl Rounds {
    /// Rounds every `interval` from `now` on; a zero interval turns balancing off.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self { interval, next: now + interval }
    }

    /// When the next round is due; `None` when balancing is off.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.interval.is_zero()).then_some(self.next)
    }

    /// Whether a round is due at `now`; if so the next one is an interval later.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() || now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }
}

/// Runs balancing rounds until `shutdown`.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    registry: Arc<NodeRegistry>,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
) {
    let mut rounds = Rounds::new(Instant::now(), cluster.settings.rebalance_interval.get());
    while let Some(at) = rounds.poll_timeout() {
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            () = shutdown.cancelled() => return,
        }
        if !rounds.handle_timeout(Instant::now()) || cluster.state() != HubState::Allocated {
            continue;
        }
        // Without a current registry nobody's load is known: nothing moves.
        if cluster.status() != super::RegistryStatus::Available {
            continue;
        }
        let hubs = cluster.with_view(|v| v.hubs());
        let Some(m) = plan(&cluster.name, registry.len(), &hubs) else { continue };
        let nodes = registry.snapshot();
        // Edges that stream nothing here first (moving one that does costs its viewers a
        // switch to a relay), then the most recently connected.
        let mut streaming: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for s in sessions.snapshot() {
            *streaming.entry(s.key.node.clone()).or_default() += 1;
        }
        let mut order: Vec<_> = nodes
            .into_iter()
            .map(|(node, e)| (streaming.get(&node).copied().unwrap_or(0), Reverse(e.connected_at), node))
            .collect();
        order.sort();
        let mut moved = 0;
        for (_, _, node) in order.into_iter().take(m.count) {
            match registry.send(&node, NodeCommand::Redirect { target: m.address.clone() }) {
                Ok(()) => moved += 1,
                Err(e) => debug!(%node, error = %e, "edge not sent on"),
            }
        }
        info!(moved, to = %m.hub, address = %m.address, "edges sent to a hub with fewer than its share");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::Load;

    fn hub(name: &str, edges: usize, state: HubState) -> HubRecord {
        HubRecord {
            name: name.into(),
            stream_url: format!("http://{name}:10005"),
            tunnel_address: format!("{name}:10006"),
            state,
            load: Load { edges, ..Load::default() },
            version: "0".into(),
        }
    }

    fn serving(loads: &[(&str, usize)]) -> Vec<HubRecord> {
        loads.iter().map(|(n, e)| hub(n, *e, HubState::Allocated)).collect()
    }

    /// Runs rounds until nothing moves; the edges per hub at the end and the rounds it took.
    fn settle(mut loads: Vec<(&str, usize)>) -> (Vec<usize>, usize) {
        for round in 0..1000 {
            let mut moved = false;
            for i in 0..loads.len() {
                let hubs = serving(&loads);
                if let Some(m) = plan(loads[i].0, loads[i].1, &hubs) {
                    loads[i].1 -= m.count;
                    let t = loads.iter().position(|(n, _)| *n == m.hub).unwrap();
                    loads[t].1 += m.count;
                    moved = true;
                }
            }
            if !moved {
                return (loads.iter().map(|(_, e)| *e).collect(), round);
            }
        }
        panic!("never settled: {loads:?}");
    }

    #[test]
    fn a_hub_over_its_share_sends_edges_to_the_emptiest_hub() {
        let hubs = serving(&[("a", 4), ("b", 0), ("c", 2)]);
        assert_eq!(plan("a", 4, &hubs), Some(Move { count: 1, hub: "b".into(), address: "b:10006".into() }));
        assert_eq!(plan("b", 0, &hubs), None);
        assert_eq!(plan("c", 2, &hubs), None, "at its share");
        // The count here is live, not the registry's: edges that already left do not move twice.
        assert_eq!(plan("a", 2, &hubs), None);
    }

    #[test]
    fn edges_settle_within_one_of_even_and_never_move_back() {
        assert_eq!(settle(vec![("a", 4), ("b", 0)]).0, [2, 2]);
        assert_eq!(settle(vec![("a", 5), ("b", 0)]).0, [3, 2]);
        assert_eq!(settle(vec![("a", 3), ("b", 0), ("c", 0)]).0, [1, 1, 1]);
        assert_eq!(settle(vec![("a", 2), ("b", 1), ("c", 0)]).0, [1, 1, 1]);
        assert_eq!(settle(vec![("a", 1), ("b", 1), ("c", 0)]).0, [1, 1, 0], "within one: nothing moves");
        // A new hub in a cluster of 10,000 edges each: a tenth of the share per round.
        let (end, rounds) = settle(vec![("a", 10_000), ("b", 10_000), ("c", 0)]);
        assert_eq!(end.iter().sum::<usize>(), 20_000);
        assert!(end.iter().all(|e| e.abs_diff(6667) <= 1), "{end:?}");
        assert!((5..=12).contains(&rounds), "{rounds} rounds");
    }

    #[test]
    fn only_serving_hubs_count_and_receive() {
        let mut hubs = serving(&[("a", 6), ("b", 0)]);
        hubs.push(hub("c", 0, HubState::Tombstone));
        hubs.push(hub("d", 0, HubState::Initialized));
        assert_eq!(plan("a", 6, &hubs).map(|m| m.hub), Some("b".into()), "not the draining or starting hub");
        // A draining hub moves nothing by this rule (the drain sends every edge away), and a
        // hub alone has nowhere to send any.
        hubs[0].state = HubState::Tombstone;
        assert_eq!(plan("a", 6, &hubs), None);
        assert_eq!(plan("a", 6, &serving(&[("a", 6)])), None);
        assert_eq!(plan("z", 6, &serving(&[("a", 6), ("b", 0)])), None, "not registered yet");
    }

    #[test]
    fn a_drain_spreads_its_edges_by_room_and_skips_hubs_that_do_not_serve() {
        let mut hubs = serving(&[("a", 300), ("b", 0), ("c", 200)]);
        hubs.push(hub("d", 0, HubState::Tombstone));
        let mut to = std::collections::BTreeMap::new();
        for n in 0..300 {
            let t = drain_target("a", 300, &format!("edge-{n}"), &hubs).unwrap();
            *to.entry(t).or_insert(0) += 1;
        }
        // Once a's 300 have moved, b and c should have 250 each: b has room for 250, c for 50.
        assert_eq!(to.keys().collect::<Vec<_>>(), ["b:10006", "c:10006"]);
        assert!((215..=285).contains(&to["b:10006"]), "{to:?}");
        assert_eq!(drain_target("a", 300, "edge-7", &hubs), drain_target("a", 300, "edge-7", &hubs));
        assert_eq!(drain_target("a", 3, "edge-1", &serving(&[("a", 3)])), None, "nowhere to go");
    }

    #[test]
    fn rounds_come_every_interval_and_not_at_all_when_off() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Rounds::new(t0, 10 * s);
        assert_eq!(r.poll_timeout(), Some(t0 + 10 * s));
        assert!(!r.handle_timeout(t0 + 9 * s));
        assert!(r.handle_timeout(t0 + 10 * s));
        assert_eq!(r.poll_timeout(), Some(t0 + 20 * s));
        let mut off = Rounds::new(t0, Duration::ZERO);
        assert_eq!(off.poll_timeout(), None);
        assert!(!off.handle_timeout(t0 + 100 * s));
    }
}

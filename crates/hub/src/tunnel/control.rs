//! A node's control channel: registers the node, carries AddVideo/RemoveVideo, heartbeats.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{CatalogEntry, ErrorCode, Message, RunningStream, V3};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{TunnelCtx, TunnelLink, TunnelSettings};
use crate::listener::Remote;
use crate::registry::{NodeCommand, NodeEntry, Takeover, command_queue};
use crate::session::SessionEvent;

/// What a control Hello carried.
pub(super) struct ControlHello {
    pub agent: String,
    pub instance: u64,
    pub catalog: Vec<CatalogEntry>,
    pub running: Vec<RunningStream>,
    /// The protocol version the connection speaks.
    pub version: u16,
}

/// How often an identity conflict of one node is logged as a warning (each is counted).
const CONFLICT_WARN_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn run(
    ctx: Arc<TunnelCtx>,
    settings: Arc<TunnelSettings>,
    mut link: TunnelLink,
    node: String,
    hello: ControlHello,
    remote: Remote,
) {
    let ControlHello { agent, instance, catalog, running, version } = hello;
    if ctx.sessions.draining() {
        info!(%node, "control channel refused: this hub is draining");
        let msg = format!("hub {} is draining; dial another hub", settings.hub_name);
        link.fail(ErrorCode::Draining, msg).await;
        return;
    }
    let (tx, mut commands) = mpsc::channel(command_queue(catalog.len()));
    let cancel = ctx.shutdown.child_token();
    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let last_heard = ctx.registry.last_heard(now);
    let entry = NodeEntry {
        conn_id,
        instance,
        last_heard: last_heard.clone(),
        agent: agent.clone(),
        catalog: catalog.clone(),
        remote,
        connected_at: now,
        commands: tx,
        cancel: cancel.clone(),
    };
    // Admitted (or refused) before Welcome, so a refused edge reads why instead of a Welcome.
    match ctx.registry.register(&node, entry, now, settings.heartbeat.interval) {
        Err(holder) => {
            refuse_duplicate(&ctx, link, &node, remote, holder).await;
            return;
        }
        Ok(Some((old, why))) => {
            let why = match why {
                Takeover::SameEdge => "the same edge reconnected",
                Takeover::Lapsed => "the previous connection went silent",
            };
            info!(%node, previous = %old.remote, %remote, %why, "a new control connection replaces the previous one");
            old.cancel.cancel();
        }
        Ok(None) => {}
    }
    if let Err(e) = link.send(&settings.welcome(version)).await {
        warn!(%node, error = %e, "could not send Welcome");
        if ctx.registry.unregister(&node, conn_id) {
            ctx.sessions.node_gone(&node);
        }
        return;
    }
    let streams: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    info!(%node, %agent, streams = %streams.join(","), "edge connected");
    // Re-bind what the edge still runs; stop what this hub no longer knows (a hub restart, a
    // session that ended while the edge was away).
    if !running.is_empty() {
        info!(%node, sessions = running.len(), "edge re-announces its running streams");
    }
    for r in ctx.sessions.node_back(&node, &running) {
        // A session of the hub this edge came from (it is draining, or the edge fell back):
        // that hub stops it once it has the stream from here, not before.
        if ctx.sessions.session_elsewhere(&node, &r.stream, r.session) {
            info!(%node, stream = %r.stream, session = r.session, "leaving a stream of another hub running");
            continue;
        }
        info!(%node, stream = %r.stream, session = r.session, "stopping a stream this hub no longer has");
        let msg = Message::RemoveVideo { session: r.session, stream: r.stream };
        if let Err(e) = link.send(&msg).await {
            warn!(%node, error = %e, "could not send RemoveVideo");
        }
    }

    let node_stats = ctx.registry.node_stats(&node);
    let mut hb = Heartbeat::new(Instant::now(), settings.heartbeat);
    let outcome = loop {
        tokio::select! {
            msg = link.recv() => {
                last_heard.heard(Instant::now());
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break "connection closed by the edge".into(),
                    Err(e) => {
                        let msg = e.to_string();
                        link.fail(ErrorCode::Protocol, msg.clone()).await;
                        break msg;
                    }
                };
                match link.liveness(&mut hb, msg).await {
                    Err(e) => break format!("send failed: {e}"),
                    Ok(None) => {
                        if let Some(rtt) = hb.srtt() {
                            node_stats.rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Message::Error(e))) if e.session != 0 => {
                        warn!(%node, session = e.session, code = %e.code, message = %e.message, "edge reports a stream failure");
                        // A node may only fail its own sessions.
                        match ctx.sessions.by_id(e.session) {
                            Some(s) if s.key.node == node => {
                                s.try_report(SessionEvent::StartFailed(format!("edge {node}: {}", e.message)));
                            }
                            Some(s) => warn!(%node, owner = %s.key.node, session = e.session, "ignoring an error about another node's session"),
                            None => {}
                        }
                    }
                    Ok(Some(Message::Error(e))) => break format!("edge error ({}): {}", e.code, e.message),
                    Ok(Some(Message::Catalog { catalog })) => {
                        let streams: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
                        info!(%node, streams = %streams.join(","), "edge catalog updated");
                        ctx.registry.set_catalog(&node, conn_id, catalog);
                    }
                    Ok(Some(Message::GoAway { reason })) => break format!("edge said goodbye: {reason}"),
                    Ok(Some(other)) => {
                        let msg = format!("{} is not allowed on a control channel", other.name());
                        link.fail(ErrorCode::Protocol, msg.clone()).await;
                        break msg;
                    }
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break "command queue closed".into() };
                let msg = match cmd {
                    NodeCommand::AddVideo { session, stream } => Message::AddVideo { session, stream },
                    NodeCommand::RemoveVideo { session, stream } => Message::RemoveVideo { session, stream },
                    NodeCommand::Redirect { target } => {
                        // A v2 edge takes the GoAway alone and dials the next hub of its list.
                        if version >= V3 && link.send(&Message::Redirect { target: target.clone() }).await.is_err() {
                            break "send failed".into();
                        }
                        link.go_away("moved to another hub to balance the cluster").await;
                        break format!("sent to {target} to balance the cluster");
                    }
                };
                if let Err(e) = link.send(&msg).await {
                    break format!("send failed: {e}");
                }
            }
            () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                if let Err(reason) = link.heartbeat(&mut hb, "edge").await {
                    break reason;
                }
            }
            () = cancel.cancelled() => {
                let reason = if ctx.shutdown.is_cancelled() {
                    "hub shutting down"
                } else if ctx.sessions.draining() {
                    // Told where to go, the edge need not try the hubs of its list in turn.
                    let edges = ctx.registry.len();
                    if version >= V3 && let Some(target) = ctx.sessions.drain_target(&node, edges) {
                        let _ = link.send(&Message::Redirect { target }).await;
                    }
                    "hub draining"
                } else {
                    "replaced by a newer connection"
                };
                link.go_away(reason).await;
                break reason.into();
            }
        }
    };
    if ctx.registry.unregister(&node, conn_id) {
        node_stats.rtt_us.store(0, Ordering::Relaxed);
        info!(%node, reason = %outcome, "edge disconnected");
        ctx.sessions.node_gone(&node);
    } else {
        debug!(%node, reason = %outcome, "replaced control connection ended");
    }
}

/// Refuses a control connection for a node another edge holds: the newcomer reads why (and
/// backs off); the hub warns, once a minute per node, with both addresses, and counts each.
async fn refuse_duplicate(ctx: &TunnelCtx, link: TunnelLink, node: &str, remote: Remote, holder: Remote) {
    let stats = ctx.registry.node_stats(node);
    let warn_now = {
        let mut last = stats.conflict_warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|t| t.elapsed() >= CONFLICT_WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    let refused = stats.identity_conflicts.get();
    if warn_now {
        warn!(
            %node, %remote, connected = %holder, refused,
            "refused a second edge with this node's identity: another edge is connected with it (a cloned certificate?)"
        );
    } else {
        debug!(%node, %remote, connected = %holder, refused, "refused a second edge with this node's identity");
    }
    // Kept the same at every attempt, so the edge can log it once.
    let message = format!(
        "node {node:?} is already connected to this hub from another edge; each edge needs its own certificate \
         and node name (mediamesh certs --node NAME)"
    );
    link.fail(ErrorCode::DuplicateNode, message).await;
}

//! A node's control channel: registers the node, carries AddVideo/RemoveVideo, heartbeats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mediamesh_tunnel::liveness::Heartbeat;
use mediamesh_tunnel::wire::{CatalogEntry, ErrorCode, Message, RunningStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{TunnelCtx, TunnelLink};
use crate::registry::{NodeCommand, NodeEntry, command_queue};
use crate::session::SessionEvent;

/// What a control Hello carried.
pub(super) struct ControlHello {
    pub agent: String,
    pub catalog: Vec<CatalogEntry>,
    pub running: Vec<RunningStream>,
}

pub(super) async fn run(
    ctx: Arc<TunnelCtx>,
    mut link: TunnelLink,
    node: String,
    hello: ControlHello,
    remote: SocketAddr,
) {
    let ControlHello { agent, catalog, running } = hello;
    let (tx, mut commands) = mpsc::channel(command_queue(catalog.len()));
    let cancel = ctx.shutdown.child_token();
    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = link.send(&ctx.welcome()).await {
        warn!(%node, error = %e, "could not send Welcome");
        return;
    }
    let streams: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    info!(%node, %agent, streams = %streams.join(","), "edge connected");
    let entry = NodeEntry {
        conn_id,
        agent,
        catalog: catalog.clone(),
        remote,
        connected_at: Instant::now(),
        commands: tx,
        cancel: cancel.clone(),
    };
    let reconnect = ctx.registry.register(&node, entry);
    if let Some(old) = &reconnect {
        info!(%node, "a newer control connection replaces the previous one");
        old.cancel.cancel();
    }
    // Re-bind what the edge still runs; stop what this hub no longer knows (a hub restart, a
    // session that ended while the edge was away).
    if !running.is_empty() {
        info!(%node, sessions = running.len(), "edge re-announces its running streams");
    }
    for r in ctx.sessions.node_back(&node, &running) {
        info!(%node, stream = %r.stream, session = r.session, "stopping a stream this hub no longer has");
        let msg = Message::RemoveVideo { session: r.session, stream: r.stream };
        if let Err(e) = link.send(&msg).await {
            warn!(%node, error = %e, "could not send RemoveVideo");
        }
    }

    let node_stats = ctx.registry.node_stats(&node);
    let mut hb = Heartbeat::new(Instant::now(), ctx.heartbeat);
    let outcome = loop {
        tokio::select! {
            msg = link.recv() => {
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
                let reason = if ctx.shutdown.is_cancelled() { "hub shutting down" } else { "replaced by a newer connection" };
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

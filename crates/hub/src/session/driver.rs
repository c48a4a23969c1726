//! The task that runs one session's [`Lifecycle`]: turns viewer-count changes, tunnel events
//! and timers into inputs, and carries out its outputs.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::lifecycle::{Input, Lifecycle, Output, Phase};
use super::upstream::StartError;
use super::{Session, SessionEvent, Sessions};

pub(crate) async fn run(
    sessions: Arc<Sessions>,
    session: Arc<Session>,
    mut events: mpsc::Receiver<SessionEvent>,
    created: Instant,
) {
    let mut lc = Lifecycle::new(created, sessions.config().lifecycle, session.viewer_count());
    let shutdown = sessions.shutdown_token().clone();
    loop {
        if carry_out(&sessions, &session, &mut lc) {
            return;
        }
        session.set_phase(lc.phase());
        let deadline = lc.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = session.demand.notified() => {
                lc.handle_input(Instant::now(), Input::Viewers(session.viewer_count()));
            }
            ev = events.recv() => {
                let input = match ev {
                    Some(SessionEvent::UpstreamAttached) => Input::UpstreamAttached,
                    Some(SessionEvent::UpstreamEnded(r)) => Input::UpstreamEnded(r),
                    Some(SessionEvent::UpstreamLost(r)) => Input::UpstreamLost(r),
                    Some(SessionEvent::StartFailed(r)) => Input::StartFailed(r),
                    Some(SessionEvent::NodeBack) => Input::NodeBack,
                    Some(SessionEvent::NodeReannounced) => Input::NodeReannounced,
                    Some(SessionEvent::NodeMoved) => Input::NodeMoved,
                    Some(SessionEvent::NodeGone) | None => Input::NodeGone,
                };
                tracing::debug!(stream = %session.key, session = session.id, %input, "session event");
                lc.handle_input(Instant::now(), input);
            }
            () = sleep => {
                // Decide under the map lock: joins take it too, so no viewer can slip in
                // between counting zero viewers and forgetting the session.
                let mut maps = sessions.lock_maps();
                let now = Instant::now();
                lc.handle_input(now, Input::Viewers(session.viewer_count()));
                lc.handle_timeout(now);
                if lc.phase() == Phase::Closed {
                    maps.remove(&session);
                }
            }
            () = shutdown.cancelled() => lc.handle_input(Instant::now(), Input::Shutdown),
        }
    }
}

/// Carries out pending outputs; true once the session is closed.
fn carry_out(sessions: &Sessions, session: &Arc<Session>, lc: &mut Lifecycle) -> bool {
    let key = &session.key;
    while let Some(out) = lc.poll_output() {
        match out {
            Output::SendAddVideo => {
                let started = session.source().start(session);
                let upstream = session.source().kind(session).name();
                match started {
                    Ok(()) => tracing::info!(stream = %key, session = session.id, upstream, "stream asked for"),
                    Err(StartError::Unreachable(reason)) => {
                        tracing::info!(stream = %key, session = session.id, upstream, %reason, "waiting for the upstream");
                        lc.handle_input(Instant::now(), Input::NodeGone);
                    }
                    Err(StartError::Failed(reason)) => lc.handle_input(Instant::now(), Input::StartFailed(reason)),
                }
            }
            Output::SendRemoveVideo => {
                session.source().stop(session);
                tracing::info!(stream = %key, session = session.id, "stream let go");
                session.cancel_upstream(false);
            }
            Output::EndViewers(reason) => {
                tracing::info!(stream = %key, session = session.id, %reason, viewers = session.viewer_count(), "stream ended");
                session.log.close(&reason);
            }
            Output::Closed => {
                sessions.lock_maps().remove(session);
                session.set_phase(Phase::Closed);
                // Viewers that raced with the close see an ended stream rather than wait forever.
                session.log.close("the stream session closed");
                session.cancel_upstream(true);
                tracing::info!(stream = %key, session = session.id, "session closed");
                return true;
            }
        }
    }
    false
}

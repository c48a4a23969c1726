//! The control agent in simulated time.

use super::*;
use crate::config::{SourceConfig, TestPatternConfig};

const S: Duration = Duration::from_secs(1);

fn pattern(fps: u32) -> StreamConfig {
    StreamConfig::new(SourceConfig::TestPattern(TestPatternConfig { fps, ..TestPatternConfig::default() }))
}

fn catalog() -> BTreeMap<String, StreamConfig> {
    [("cam1".to_owned(), pattern(25)), ("cam2".to_owned(), pattern(25))].into()
}

fn drain(a: &mut Agent) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn add(session: SessionId, stream: &str) -> Input {
    Input::AddVideo { session, stream: stream.into(), refused: None }
}

fn connected(t0: Instant) -> Agent {
    let mut a = Agent::new(t0, catalog());
    a.handle_input(t0, Input::Connected { grace: 30 * S, hub: "hub-a".into() });
    a
}

fn error_code(o: &Output) -> Option<ErrorCode> {
    match o {
        Output::Send(Message::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[test]
fn add_video_starts_once_and_a_repeat_changes_nothing() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(7, "cam1"));
    let out = drain(&mut a);
    assert!(matches!(&out[..], [Output::Start { session: 7, start: 1, stream, .. }] if stream == "cam1"));
    a.handle_input(t0, add(7, "cam1"));
    assert_eq!(drain(&mut a), vec![], "a repeated AddVideo");
    assert_eq!(a.announce(), vec![RunningStream { session: 7, stream: "cam1".into() }]);
}

#[test]
fn a_new_session_for_a_running_stream_replaces_the_old_one() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(7, "cam1"));
    drain(&mut a);
    a.handle_input(t0, add(8, "cam1"));
    let out = drain(&mut a);
    assert_eq!(out[0], Output::Stop { session: 7, why: StopReason::Replaced });
    assert!(matches!(out[1], Output::Start { session: 8, start: 2, .. }));
    // The old start's end report is stale and changes nothing.
    a.handle_input(t0, Input::UplinkEnded { session: 7, start: 1, failed: None });
    assert_eq!(drain(&mut a), vec![]);
    assert_eq!(a.stream(8), Some("cam1"));
}

#[test]
fn unknown_streams_and_recent_failures_are_answered_with_errors() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(1, "nope"));
    assert_eq!(drain(&mut a).iter().map(error_code).collect::<Vec<_>>(), vec![Some(ErrorCode::UnknownStream)]);
    let refused = Refused { reason: "ffmpeg exited".into(), retry_in: 2 * S };
    a.handle_input(t0, Input::AddVideo { session: 2, stream: "cam1".into(), refused: Some(refused) });
    let out = drain(&mut a);
    assert_eq!(out.iter().map(error_code).collect::<Vec<_>>(), vec![Some(ErrorCode::SourceFailed)]);
    assert_eq!(a.running(), 0, "the camera is spared");
}

#[test]
fn a_failed_source_is_reported_and_recorded() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(3, "cam2"));
    drain(&mut a);
    a.handle_input(t0, Input::UplinkEnded { session: 3, start: 1, failed: Some("camera refused".into()) });
    let out = drain(&mut a);
    assert_eq!(out[0], Output::StartFailed { stream: "cam2".into(), reason: "camera refused".into() });
    assert_eq!(error_code(&out[1]), Some(ErrorCode::SourceFailed));
    assert_eq!(a.running(), 0);
}

#[test]
fn uplinks_outlive_a_short_outage_and_are_announced_again() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(4, "cam1"));
    a.handle_input(t0, add(5, "cam2"));
    drain(&mut a);
    a.handle_input(t0 + S, Input::Disconnected);
    assert_eq!(a.poll_timeout(), Some(t0 + 31 * S));
    // A source that fails while the hub is away is recorded; nobody can be told.
    a.handle_input(t0 + 2 * S, Input::UplinkEnded { session: 5, start: 2, failed: Some("gone".into()) });
    assert_eq!(drain(&mut a), vec![Output::StartFailed { stream: "cam2".into(), reason: "gone".into() }]);
    a.handle_timeout(t0 + 20 * S);
    assert_eq!(drain(&mut a), vec![], "within the grace period");
    a.handle_input(t0 + 20 * S, Input::Connected { grace: 10 * S, hub: "hub-a".into() });
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.announce(), vec![RunningStream { session: 4, stream: "cam1".into() }]);
}

#[test]
fn the_hub_away_longer_than_its_grace_orphans_every_uplink() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, Input::Connected { grace: 10 * S, hub: "hub-a".into() });
    a.handle_input(t0, add(4, "cam1"));
    a.handle_input(t0, add(5, "cam2"));
    drain(&mut a);
    a.handle_input(t0 + S, Input::Disconnected);
    // A redial that fails does not restart the clock.
    a.handle_input(t0 + 5 * S, Input::Disconnected);
    assert_eq!(a.poll_timeout(), Some(t0 + 11 * S));
    a.handle_timeout(t0 + 11 * S);
    assert_eq!(
        drain(&mut a),
        vec![
            Output::Stop { session: 4, why: StopReason::Orphaned },
            Output::Stop { session: 5, why: StopReason::Orphaned }
        ]
    );
    assert_eq!(a.poll_timeout(), None, "nothing left to orphan");
    assert!(a.announce().is_empty());
}

#[test]
fn a_reloaded_catalog_restarts_changed_streams_and_stops_removed_ones() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(4, "cam1"));
    a.handle_input(t0, add(5, "cam2"));
    drain(&mut a);
    let reloaded: BTreeMap<String, StreamConfig> =
        [("cam1".to_owned(), pattern(10)), ("cam3".to_owned(), pattern(25))].into();
    a.handle_input(t0, Input::Catalog(reloaded));
    let out = drain(&mut a);
    assert!(matches!(&out[0], Output::Send(Message::Catalog { catalog }) if catalog.len() == 2));
    assert_eq!(out[1], Output::Stop { session: 4, why: StopReason::Reconfigured });
    assert!(matches!(&out[2], Output::Start { session: 4, start: 3, config, .. } if *config == pattern(10)));
    assert_eq!(out[3], Output::Stop { session: 5, why: StopReason::Removed });
    assert_eq!(error_code(&out[4]), Some(ErrorCode::SourceFailed));
    // The restarted stream's old start ending is not its end.
    a.handle_input(t0, Input::UplinkEnded { session: 4, start: 1, failed: None });
    assert_eq!(a.stream(4), Some("cam1"));
}

#[test]
fn a_stream_another_hub_started_keeps_running_beside_the_new_hubs_until_that_hub_ends_it() {
    let t0 = Instant::now();
    let mut a = connected(t0);
    a.handle_input(t0, add(7, "cam1"));
    drain(&mut a);
    // hub-a sends the edge to hub-b; the uplink of hub-a's session goes on meanwhile.
    a.handle_input(t0 + S, Input::Disconnected);
    a.handle_input(t0 + S, Input::Connected { grace: 30 * S, hub: "hub-b".into() });
    a.handle_input(t0 + S, add(9, "cam1"));
    let out = drain(&mut a);
    assert!(matches!(&out[..], [Output::Start { session: 9, .. }]), "make before break: {out:?}");
    assert_eq!(a.running(), 2);
    // hub-a closes its tunnel once it relays from hub-b: that uplink ends on its own.
    a.handle_input(t0 + 2 * S, Input::UplinkEnded { session: 7, start: 1, failed: None });
    assert_eq!(a.announce(), vec![RunningStream { session: 9, stream: "cam1".into() }]);
    // hub-b restarting asks again under its own name: that replaces.
    a.handle_input(t0 + 3 * S, add(11, "cam1"));
    let out = drain(&mut a);
    assert_eq!(out[0], Output::Stop { session: 9, why: StopReason::Replaced });
}

//! Hostile and broken input: each is answered with a clear error and closes only the connection
//! that sent it, while a healthy viewer of another stream keeps receiving every frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use mediamesh_edge::dial::{DialConfig, DialError, dial};
use mediamesh_hub::client::{ClientError, ViewerClient, ViewerItem};
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};
use mediamesh_testkit::{Fixture, assert_consecutive, counters, http, read_frames};
use mediamesh_tls::TlsFiles;
use mediamesh_tunnel::wire::{CatalogEntry, Channel, ErrorCode, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
const PPS: &[u8] = b"\x68\xce\x0f\xc8";

fn dial_config(fx: &Fixture, files: &TlsFiles, claim: &str) -> DialConfig {
    DialConfig {
        server: fx.hub.tunnel_addr.to_string(),
        server_name: "localhost".try_into().unwrap(),
        tls: mediamesh_tls::tunnel_client_config(files).unwrap(),
        node: claim.into(),
        handshake_timeout: Duration::from_secs(10),
        write_deadline: Duration::from_secs(10),
        unsent_lowat: None,
        ca_file: files.ca.clone(),
        fallbacks: vec![],
    }
}

async fn healthy_viewer(fx: &Fixture) -> ViewerClient {
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 3).await;
    v
}

/// The healthy viewer still gets consecutive frames.
async fn still_flowing(v: &mut ViewerClient) {
    assert_consecutive(&counters(&read_frames(v, 10).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_an_unknown_ca_is_refused() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;
    let rogue = &fx.pki.rogue.edges[0].1; // "edge-1", signed by a CA the hub does not trust
    let files = TlsFiles { ca: fx.pki.main.ca_cert.clone(), ..rogue.clone() };
    let err =
        dial(&dial_config(&fx, &files, "edge-1"), Channel::Control { instance: 7, catalog: vec![], running: vec![] })
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("refused this edge's certificate"), "{msg}");
    assert!(err.is_permanent(), "{msg}");
    still_flowing(&mut v).await;
    assert_eq!(fx.hub.registry().snapshot().len(), 1, "only the real edge is registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_hubs_certificate_opens_a_relay_and_it_opens_nothing_else() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;
    // An edge asking for a stream as a relay: it would watch any camera without a viewer's
    // credentials.
    let relay = Channel::Relay { node: "edge-1".into(), stream: "cam1".into() };
    let err = dial(&dial_config(&fx, fx.pki.edge("edge-2"), "edge-2"), relay.clone()).await.unwrap_err();
    let DialError::Refused { code, message } = &err else { panic!("expected a refusal, got {err}") };
    assert_eq!((*code, message.as_str()), (ErrorCode::Unauthorized, "only a hub's certificate may open a relay"));
    // A hub's certificate (the test PKI's, which carries the hub mark) cannot pose as an edge.
    let hub = TlsFiles { ca: fx.pki.main.ca_cert.clone(), ..fx.pki.main.hub.clone() };
    let control = Channel::Control { instance: 7, catalog: vec![], running: vec![] };
    let err = dial(&dial_config(&fx, &hub, "edge-1"), control).await.unwrap_err();
    let DialError::Refused { code, message } = &err else { panic!("expected a refusal, got {err}") };
    assert_eq!((*code, message.as_str()), (ErrorCode::Unauthorized, "a hub's certificate opens only relays"));
    // It may open a relay; of a stream that is not here it is told so, and nothing else moves.
    let relay = Channel::Relay { node: "edge-9".into(), stream: "cam1".into() };
    let err = dial(&dial_config(&fx, &hub, "hub-b"), relay).await.unwrap_err();
    let DialError::Refused { code, message } = &err else { panic!("expected a refusal, got {err}") };
    assert_eq!(*code, ErrorCode::UnknownStream, "{message}");
    assert!(message.contains("edge-9"), "{message}");
    still_flowing(&mut v).await;
    assert_eq!(fx.hub.registry().snapshot().len(), 1, "only the real edge is registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cannot_claim_another_node() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;
    // edge-2's valid certificate, claiming to be edge-1.
    let err = dial(
        &dial_config(&fx, fx.pki.edge("edge-2"), "edge-1"),
        Channel::Control { instance: 7, catalog: vec![], running: vec![] },
    )
    .await
    .unwrap_err();
    let DialError::Refused { code, message } = &err else { panic!("expected a refusal, got {err}") };
    assert_eq!(*code, ErrorCode::Unauthorized);
    assert!(
        message.contains(r#"certificate identifies node "edge-2""#) && message.contains(r#"claims "edge-1""#),
        "{message}"
    );
    still_flowing(&mut v).await;
    let nodes = fx.hub.registry().snapshot();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].0, "edge-1", "the real edge-1 is undisturbed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_cap_ends_only_its_stream() {
    const CAP: u32 = 64 * 1024;
    let fx = Fixture::builder().hub(|h| h.max_frame_bytes = CAP).start().await;
    let mut v = healthy_viewer(&fx).await;

    // A hand-driven edge-2 offering stream "big".
    let cfg = dial_config(&fx, fx.pki.edge("edge-2"), "edge-2");
    let catalog = vec![CatalogEntry { name: "big".into(), description: String::new() }];
    let (mut control, _) = dial(&cfg, Channel::Control { instance: 7, catalog, running: vec![] }).await.unwrap();
    fx.wait_for_node("edge-2").await;
    let url = fx.ws_url("edge-2", "big");
    let big_viewer = tokio::spawn(async move {
        let mut bv = ViewerClient::connect(&url, &Default::default()).await.unwrap();
        loop {
            match bv.next().await.unwrap() {
                Some(ViewerItem::End(reason)) => return reason,
                Some(_) => {}
                None => panic!("closed without an end event"),
            }
        }
    });
    let session = loop {
        match control.recv().await.unwrap().unwrap() {
            Message::AddVideo { session, stream } if stream == "big" => break session,
            _ => {}
        }
    };
    let (mut data, welcome) = dial(&cfg, Channel::Data { session, stream: "big".into() }).await.unwrap();
    assert_eq!(welcome.max_frame_bytes, CAP, "the hub announces its cap");
    let header = StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS))] };
    data.send(&Message::StreamHeader(header)).await.unwrap();
    let frame = Frame {
        track: 0,
        flags: FrameFlags::keyframe(true),
        seq: 0,
        pts: 0,
        dts: 0,
        capture_us: 0,
        payload: Bytes::from(vec![0u8; CAP as usize + 1]),
    };
    data.send(&Message::Frame(frame)).await.unwrap();
    let Message::Error(e) = data.recv().await.unwrap().unwrap() else { panic!("expected an Error") };
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert!(e.message.contains("65537") && e.message.contains("65536"), "{}", e.message);
    let reason = tokio::time::timeout(Duration::from_secs(10), big_viewer).await.unwrap().unwrap();
    assert!(reason.contains("exceeds"), "the big stream's viewer is told why: {reason}");
    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tunnel_port_closes_only_that_connection() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;

    // Not even TLS.
    let mut tcp = tokio::net::TcpStream::connect(fx.hub.tunnel_addr).await.unwrap();
    let junk: Vec<u8> = (0..16 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = tcp.write_all(&junk).await;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a TLS alert
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the hub closes a connection that sends garbage");

    // Valid TLS, WebSocket and Hello, then garbage inside a binary message.
    let cfg = dial_config(&fx, fx.pki.edge("edge-3"), "edge-3");
    let (mut link, _) = dial(&cfg, Channel::Control { instance: 7, catalog: vec![], running: vec![] }).await.unwrap();
    link.send_raw(Bytes::from_static(b"\x00\x00\x00\x05\x7fjunk")).await.unwrap();
    let Message::Error(e) = link.recv().await.unwrap().unwrap() else { panic!("expected an Error") };
    assert_eq!(e.code, ErrorCode::Protocol);
    assert!(e.message.contains("unknown message type 0x7f"), "{}", e.message);
    assert!(matches!(link.recv().await, Ok(None) | Err(_)), "then the hub closes it");

    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_and_streams_are_404_with_a_message() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;
    for (node, stream, needle) in [
        ("nope", "cam1", r#"node \"nope\" is not connected"#),
        ("edge-1", "nope", r#"node \"edge-1\" has no stream \"nope\""#),
    ] {
        match fx.viewer(node, stream).await {
            Err(ClientError::Refused { status: 404, message }) => {
                assert!(message.contains(&needle.replace('\\', "")), "{message}")
            }
            other => panic!("expected 404 for {node}/{stream}, got {other:?}"),
        }
        let (status, body) = http::get(fx.hub.stream_addr, &format!("/api/v1/nodes/{node}/streams/{stream}")).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains(needle), "{body}");
    }
    let (status, body) = http::get(fx.hub.stream_addr, "/api/v1/nonsense").await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_fail_another_nodes_stream() {
    let fx = Fixture::builder().start().await;
    let mut v = healthy_viewer(&fx).await;
    let victim = fx.hub.sessions().snapshot()[0].id;
    // edge-2, properly authenticated, reports a failure of edge-1's session.
    let cfg = dial_config(&fx, fx.pki.edge("edge-2"), "edge-2");
    let (mut control, _) =
        dial(&cfg, Channel::Control { instance: 7, catalog: vec![], running: vec![] }).await.unwrap();
    let err = mediamesh_tunnel::wire::ErrorMsg {
        code: ErrorCode::SourceFailed,
        session: victim,
        message: "pretend the camera died".into(),
    };
    control.send(&Message::Error(err)).await.unwrap();
    still_flowing(&mut v).await;
    still_flowing(&mut v).await;
    assert_eq!(fx.hub.sessions().snapshot()[0].id, victim, "edge-1's session is untouched");
}

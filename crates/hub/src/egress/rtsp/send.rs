//! Sending to one RTSP connection: the writer task (responses in order, and the media of a
//! TCP-interleaved session) and the sender task of a UDP session.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::media::{MediaOut, Out, Plan, RtpItem, tcp_slices};
use super::transport::Dest;
use super::udp::{Liveness, MMSG_BATCH, send_datagrams};
use crate::egress::io::{describe_write_error, write_all_vectored};
use crate::egress::mailbox::Receiver;
use crate::session::ViewerEnd;

/// What the reader asks the writer to do.
pub(crate) enum WriterCmd {
    Response(Bytes),
    Play { session: String, media: Box<MediaOut>, response: Bytes },
    Stop { session: String, response: Bytes },
}

/// Owns the write half: responses in order, and the media of a TCP-interleaved session.
pub(crate) async fn writer_task(
    mut wr: OwnedWriteHalf,
    mut cmds: Receiver<Box<WriterCmd>>,
    closed: CancellationToken,
    stall: Duration,
) -> String {
    let mut media: Option<(String, Box<MediaOut>)> = None;
    let (mut batch, mut plan, mut rtcp_frames): (Vec<RtpItem>, Plan, Vec<Vec<u8>>) = Default::default();
    let reason = 'outer: loop {
        // The reader drops its sender when the connection closes. (Checked on the channel, an
        // atomic load, rather than on `closed`, whose check takes a lock: this runs per frame.)
        if cmds.is_closed() {
            // Responses already queued (a refusal's answer) still go out; media stops.
            drain(&mut cmds, &mut wr, stall).await;
            break "connection closed".into();
        }
        let mut progressed = false;
        while let Some(cmd) = cmds.try_recv() {
            progressed = true;
            if let Err(r) = apply(cmd, &mut media, &mut wr, stall).await {
                break 'outer r;
            }
        }
        if let Some((_, m)) = media.as_mut() {
            let status = match m.next_batch(&mut batch, &mut plan) {
                Ok(s) => s,
                Err(too_slow) => break too_slow,
            };
            if !batch.is_empty() {
                let mut slices = tcp_slices(&batch, &plan, &m.tracks, &m.rtp.shared, &mut rtcp_frames);
                if let Err(e) = write_all_vectored(&mut wr, &mut slices, stall).await {
                    m.viewer.set_end(ViewerEnd::of_write_error(&e));
                    break describe_write_error(&e);
                }
                m.viewer.account_sent(plan.frames, plan.bytes);
                // Caught up: wait for the next frame rather than read again to find nothing.
                progressed |= status.more;
            }
            if let Some(end) = status.ended {
                let byes: Vec<Vec<u8>> = m
                    .byes()
                    .into_iter()
                    .filter_map(|(i, b)| match m.tracks[i].dest {
                        Dest::Tcp { rtcp, .. } => {
                            let mut f = vec![b'$', rtcp, 0, b.len() as u8];
                            f.extend_from_slice(&b);
                            Some(f)
                        }
                        Dest::Udp { .. } => None,
                    })
                    .collect();
                let mut slices: Vec<IoSlice<'_>> = byes.iter().map(|b| IoSlice::new(b)).collect();
                let _ = write_all_vectored(&mut wr, &mut slices, stall).await;
                break format!("stream ended: {end}");
            }
            progressed |= status.skipped > 0;
        }
        if progressed {
            continue;
        }
        enum Wake {
            Cmd(Option<Box<WriterCmd>>),
            Changed(bool),
        }
        let wake = {
            let changed = async {
                match media.as_mut() {
                    Some((_, m)) => m.viewer.cursor.changed().await,
                    None => std::future::pending().await,
                }
            };
            // No branch for `closed`: when the connection closes, the reader drops its sender
            // and `recv` ends; a cancellation future here would take a lock per frame.
            tokio::select! {
                biased;
                c = cmds.recv() => Wake::Cmd(c),
                c = changed => Wake::Changed(c),
            }
        };
        match wake {
            Wake::Cmd(None) => break "connection closed".into(),
            Wake::Cmd(Some(cmd)) => {
                if let Err(r) = apply(cmd, &mut media, &mut wr, stall).await {
                    break r;
                }
            }
            Wake::Changed(true) => {}
            Wake::Changed(false) => break "session gone".into(),
        }
    };
    drop(media);
    closed.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    reason
}

/// Writes the responses still queued; a PLAY's media is not started.
async fn drain(cmds: &mut Receiver<Box<WriterCmd>>, wr: &mut OwnedWriteHalf, stall: Duration) {
    while let Some(cmd) = cmds.try_recv() {
        let bytes = match *cmd {
            WriterCmd::Response(b) | WriterCmd::Play { response: b, .. } | WriterCmd::Stop { response: b, .. } => b,
        };
        if write_all_vectored(wr, &mut [IoSlice::new(&bytes)], stall).await.is_err() {
            return;
        }
    }
}

async fn apply(
    cmd: Box<WriterCmd>,
    media: &mut Option<(String, Box<MediaOut>)>,
    wr: &mut OwnedWriteHalf,
    stall: Duration,
) -> Result<(), String> {
    let bytes = match *cmd {
        WriterCmd::Response(b) => b,
        WriterCmd::Play { session, media: m, response } => {
            *media = Some((session, m));
            response
        }
        WriterCmd::Stop { session, response } => {
            if media.as_ref().is_some_and(|(id, _)| *id == session) {
                *media = None;
            }
            response
        }
    };
    write_all_vectored(wr, &mut [IoSlice::new(&bytes)], stall).await.map_err(|e| describe_write_error(&e))
}

/// Sends a UDP session's media until it is torn down, the stream ends, or the client goes
/// silent for the session timeout.
pub(crate) async fn udp_sender(
    mut m: MediaOut,
    udp: Arc<super::udp::UdpPair>,
    cancel: CancellationToken,
    conn_closed: CancellationToken,
    liveness: Liveness,
    timeout: Duration,
    stall: Duration,
) {
    let (mut batch, mut plan): (Vec<RtpItem>, Plan) = Default::default();
    let check = Duration::from_secs(1).min(timeout);
    let mut pace = Pacer::new(UDP_RATE_BYTES_PER_S, UDP_BURST_BYTES);
    let reason = loop {
        let status = match m.next_batch(&mut batch, &mut plan) {
            Ok(s) => s,
            Err(too_slow) => {
                conn_closed.cancel();
                break too_slow;
            }
        };
        if !batch.is_empty() {
            let mut rtcp = plan.rtcp.iter().peekable();
            let mut stalled = None;
            // Runs of datagrams to one address go out in one `sendmmsg` each; a run ends where
            // an RTCP report is due, the track (address) changes, or it is full.
            let mut run: Vec<[IoSlice<'_>; 2]> = Vec::with_capacity(plan.packets.len().min(MMSG_BATCH));
            let (mut run_to, mut run_entry) = (None, 0);
            for i in 0..=plan.packets.len() {
                // UDP tracks are planned packet by packet.
                let next = plan.packets.get(i).and_then(|out| match out {
                    Out::Packet(packet) => match m.tracks[usize::from(packet.track)].dest {
                        Dest::Udp { rtp, .. } => Some((packet, rtp)),
                        Dest::Tcp { .. } => None,
                    },
                    Out::Frame { .. } => None,
                });
                let rtcp_due = rtcp.peek().is_some_and(|(at, ..)| *at == i);
                let to_elsewhere = next.is_some_and(|(_, to)| run_to != Some(to));
                if let Some(to) = run_to
                    && (i == plan.packets.len() || rtcp_due || to_elsewhere || run.len() == MMSG_BATCH)
                {
                    pace.take(run.iter().map(|[head, body]| head.len() + body.len()).sum()).await;
                    match tokio::time::timeout(stall, send_datagrams(&udp.rtp, &run, to)).await {
                        Ok(Ok(())) => {}
                        // ICMP unreachable from an earlier datagram and the like: the client
                        // may be gone; its silence will time the session out.
                        Ok(Err(e)) => debug!(to = %to, error = %e, "udp send failed"),
                        Err(_) => {
                            stalled = Some(run_entry);
                            break;
                        }
                    }
                    run_to = None;
                    run.clear();
                }
                while let Some((_, rti, sr)) = rtcp.next_if(|(at, ..)| *at == i) {
                    send_rtcp(&udp, &m.tracks[*rti].dest, sr).await;
                }
                if let Some((packet, to)) = next {
                    let p = super::media::packet_payload(&batch, packet);
                    if run.is_empty() {
                        run_entry = packet.entry as usize;
                    }
                    run_to = Some(to);
                    run.push([IoSlice::new(packet.udp_head()), IoSlice::new(&p.body)]);
                }
            }
            if let Some(ei) = stalled {
                // Only the frames before the one that stalled went out.
                let sent: Vec<_> =
                    batch[..ei].iter().filter(|f| m.tracks.iter().any(|t| t.id == f.entry.frame.track)).collect();
                m.viewer.account_sent(sent.len() as u64, sent.iter().map(|f| f.entry.frame.payload.len() as u64).sum());
                m.viewer.set_end(ViewerEnd::Stalled);
                conn_closed.cancel();
                break format!("the shared UDP socket accepted nothing for {:.0} s", stall.as_secs_f64());
            }
            // Every report went out in the loop: the last index it visits is past the last
            // packet, where reports of the batch's last frame are planned.
            m.viewer.account_sent(plan.frames, plan.bytes);
        }
        if let Some(end) = status.ended {
            for (i, bye) in m.byes() {
                send_rtcp(&udp, &m.tracks[i].dest, &bye).await;
            }
            conn_closed.cancel();
            break format!("stream ended: {end}");
        }
        if !batch.is_empty() || status.skipped > 0 {
            continue;
        }
        tokio::select! {
            ok = m.viewer.cursor.changed() => if !ok { break "session gone".into() },
            () = cancel.cancelled() => break "torn down".into(),
            () = tokio::time::sleep(check) => {
                let silent = udp.now_ms().saturating_sub(liveness.load(Ordering::Relaxed));
                if silent > timeout.as_millis() as u64 {
                    m.viewer.set_end(ViewerEnd::Timeout);
                    conn_closed.cancel();
                    break format!("no RTCP or request for {:.0} s (session timeout)", timeout.as_secs_f64());
                }
            }
        }
    };
    debug!(stream = %m.viewer.session.key, %reason, "udp sender stopped");
}

/// What one UDP viewer may be sent per second (100 Mbit/s) and at once: the kernel drops
/// datagrams a socket buffer cannot hold, so a viewer catching up on a burst is paced instead.
const UDP_RATE_BYTES_PER_S: f64 = 100e6 / 8.0;
const UDP_BURST_BYTES: f64 = 256.0 * 1024.0;

/// A token bucket.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Pacer {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, at: tokio::time::Instant::now() }
    }

    /// Waits until `bytes` may be sent, and takes them.
    async fn take(&mut self, bytes: usize) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / self.rate)).await;
        }
    }
}

async fn send_rtcp(udp: &super::udp::UdpPair, dest: &Dest, data: &[u8]) {
    if let Dest::Udp { rtcp, .. } = dest
        && let Err(e) = udp.rtcp.send_to(data, rtcp).await
    {
        debug!(to = %rtcp, error = %e, "rtcp send failed");
    }
}

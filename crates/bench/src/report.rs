//! The ladder's measurements of a server process (CPU time and memory from `/proc`) and its
//! table on the terminal.

use crate::Outcome;
use crate::servers::{Protocol, Server};

/// CPU time and memory of a set of processes, from `/proc`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ProcSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

impl ProcSample {
    pub(crate) fn take(pids: &[u32]) -> Self {
        let mut s = Self::default();
        for pid in pids {
            // Fields after the command name: utime and stime are the 12th and 13th, in clock
            // ticks (100 per second on Linux).
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
            {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks: u64 = f.get(11..13).into_iter().flatten().filter_map(|v| v.parse::<u64>().ok()).sum();
                s.cpu_s += ticks as f64 / 100.0;
            }
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                s.rss_kib += status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            }
        }
        s
    }
}

pub(crate) fn print_head() {
    println!(
        "{:<10} {:<8} {:<7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6} {:>5}",
        "server",
        "proto",
        "client",
        "streams",
        "viewers",
        "cpu%",
        "view%",
        "cpu-s/Gb",
        "rss-MiB",
        "KiB/view",
        "Mbit/s",
        "p50-ms",
        "p99-ms",
        "max-ms",
        "sock-p99",
        "missed",
        "lost"
    );
}

pub(crate) fn print_row(o: &Outcome) {
    let name = match o.spec.server {
        Server::Mediamesh => "mediamesh",
        Server::NginxRtmp => "nginx-rtmp",
        Server::Gstreamer => "gstreamer",
        Server::Janus => "janus",
    };
    let proto = match o.spec.protocol {
        Protocol::Ws => "ws",
        Protocol::RtspTcp => "rtsp-tcp",
        Protocol::RtspUdp => "rtsp-udp",
        Protocol::Rtmp => "rtmp",
        Protocol::Webrtc => "webrtc",
    };
    let opt = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
    println!(
        "{:<10} {:<8} {:<7} {:>7} {:>7} {:>6.1} {:>6} {:>8} {:>7.1} {:>8} {:>8.1} {:>7.2} {:>7.2} {:>7.1} {:>8} {:>6} {:>5}",
        name,
        proto,
        o.spec.client,
        o.spec.streams,
        o.spec.viewers,
        o.cpu_percent,
        opt(o.viewers_cpu_percent, 1),
        opt(o.cpu_s_per_gbit, 3),
        o.rss_mib,
        opt(o.rss_per_viewer_kib, 1),
        o.delivered_mbit_s,
        o.latency_ms.p50,
        o.latency_ms.p99,
        o.latency_ms.max,
        opt(o.socket_latency_ms.as_ref().map(|l| l.p99), 2),
        o.frames_missed,
        o.viewers_lost
    );
    if let Some(p) = &o.profile {
        println!(
            "  perf: {:.1} % of samples in the kernel, {:.1} % in loopback's receive path (the viewers' half); report {}",
            p.kernel_percent,
            p.receive_percent,
            p.report.display()
        );
        for (pct, dso, sym) in p.top.iter().take(8) {
            println!("    {pct:>5.1} %  {dso:<18} {sym}");
        }
    }
    if let Some(e) = &o.error {
        // A peer's bytes can end up in an error (a reply that was not one): print text only.
        let e: String = e.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '.' }).collect();
        println!("  ! {e}");
    }
}

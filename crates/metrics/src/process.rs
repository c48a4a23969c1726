//! The standard `process_*` metrics (as Prometheus client libraries name them), from `/proc`:
//! CPU time, resident and virtual memory, open and allowed file descriptors, start time.

use crate::Exposition;

/// One reading of the process's counters; `None` where `/proc` did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads this process's counters.
pub fn sample() -> Sample {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
    // Numbering from proc(5): state is field 3, i.e. fields[0] here.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = field(14).zip(field(15)).map(|(u, s)| (u + s) as f64 / ticks);
    let virtual_bytes = field(23);
    let resident_bytes = field(24).map(|pages| pages * page);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
    let start_time_seconds = boot.zip(field(22)).map(|(boot, start)| boot + start as f64 / ticks);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
    });
    Sample { cpu_seconds, resident_bytes, virtual_bytes, open_fds, max_fds, start_time_seconds }
}

/// Writes the `process_*` families.
pub fn render(m: &mut Exposition) {
    let s = sample();
    let families: [(&str, &str, &str, Option<f64>); 6] = [
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", s.cpu_seconds),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            s.resident_bytes.map(|v| v as f64),
        ),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", s.virtual_bytes.map(|v| v as f64)),
        ("process_open_fds", "gauge", "Number of open file descriptors.", s.open_fds.map(|v| v as f64)),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.", s.max_fds.map(|v| v as f64)),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            m.single(name, kind, help, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_itself() {
        let before = sample();
        // Burn a little CPU and memory.
        let v: Vec<u64> = (0..2_000_000u64).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        assert!(v.iter().fold(0u64, |a, b| a ^ b) != 1);
        let s = sample();
        assert!(s.cpu_seconds.unwrap() >= before.cpu_seconds.unwrap());
        assert!(s.resident_bytes.unwrap() > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes.unwrap() >= s.resident_bytes.unwrap());
        assert!(s.open_fds.unwrap() >= 3 && s.max_fds.unwrap() >= s.open_fds.unwrap(), "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 3600.0, "{started} vs {now}");
        let mut m = Exposition::default();
        render(&mut m);
        let page = m.finish();
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            assert!(page.contains(&format!("\n{name} ")), "{page}");
        }
    }
}

//! Logs that tools can read, through the real binary: JSON lines that parse, text without ANSI
//! colour when stderr is not a terminal, values quoted when they hold spaces, OpenH264's own
//! messages turned into log events, and a stream that lingers out and stops logged as a normal
//! stop, not as a lost tunnel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

/// Starts the demo with `args` (ports 0, linger 1 s) and the environment `env`; returns it, its
/// printed view command and its state folder. Its stderr goes to `stderr.log` in that folder.
fn demo(tag: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, String, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("mm-log-{tag}-{}-{}", std::process::id(), mediamesh_testkit::unix_micros()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--stream-port", "0", "--tunnel-port", "0", "--rtsp-port", "0", "--linger", "1", "--state-dir"])
        .arg(dir.join("state"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut view = None;
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(" view ws://") {
            view = Some(line.trim().replace("--frames 100 --out cam1.h264", "--frames 20 --quiet"));
        }
        if line.starts_with("mediamesh demo ready") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "demo did not get ready");
    }
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    (child, view.expect("a view command"), dir)
}

/// Runs the printed view command (a stream starts), waits for it to linger out, stops the demo
/// and returns its stderr.
fn watch_and_stop(mut child: Child, view: &str, dir: &std::path::Path) -> String {
    let args: Vec<&str> = view.split_whitespace().collect();
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{view}: {}", String::from_utf8_lossy(&out.stderr));
    let log = dir.join("stderr.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&log).unwrap().contains("uplink ended") {
        assert!(
            Instant::now() < deadline,
            "the stream did not linger out:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mediamesh_testkit::signal(child.id(), mediamesh_testkit::Signal::SIGTERM);
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    text
}

fn assert_normal_stop(text: &str) {
    for bad in ["lost", "redialling", "panicked", "WARN", "ERROR", "\"level\":\"WARN\"", "\"level\":\"ERROR\""] {
        assert!(!text.contains(bad), "a normal linger stop logged {bad:?}:\n{text}");
    }
}

#[test]
fn json_lines_parse_and_carry_level_time_target_spans_and_message() {
    let (child, view, dir) =
        demo("json", &["--log-format", "json"], &[("RUST_LOG", "info,openh264=debug"), ("NO_COLOR", "")]);
    let text = watch_and_stop(child, &view, &dir);
    let mut saw_span = false;
    let mut saw_openh264 = false;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        saw_span |=
            v["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "tunnel" && s["remote"].is_string()));
        saw_openh264 |= v["target"] == "openh264";
    }
    assert!(saw_span, "tunnel events carry their span's fields:\n{text}");
    assert!(saw_openh264, "OpenH264's message is a log event:\n{text}");
    assert!(!text.contains("[OpenH264]"), "no raw OpenH264 line:\n{text}");
    assert_normal_stop(&text);
}

#[test]
fn text_to_a_file_has_no_colour_and_quotes_values_with_spaces() {
    let (child, view, dir) = demo("text", &[], &[("RUST_LOG", "info,openh264=debug")]);
    let text = watch_and_stop(child, &view, &dir);
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a log file:\n{text}");
    assert!(text.contains("reason=\"viewer closed\""), "a value with a space is quoted:\n{text}");
    assert!(text.contains("DEBUG OpenH264: "), "OpenH264's message is a log line:\n{text}");
    assert!(!text.contains("[OpenH264]") && !text.contains("Some("), "{text}");
    assert_normal_stop(&text);
}

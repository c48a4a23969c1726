//! `mediamesh demo` as a new user runs it: start it, run the view command it prints, decode the
//! dump with ffprobe, stop it with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_serves_the_printed_view_command_and_stops_cleanly() {
    mediamesh_testkit::require::ffmpeg();
    let dir = std::env::temp_dir().join(format!("mm-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["demo", "--stream-port", "0", "--tunnel-port", "0", "--rtsp-port", "0", "--state-dir"])
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut view_cmd = None;
    let started = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(" view wss://") {
            view_cmd = Some(line.trim().to_owned());
        }
        if line.starts_with("mediamesh demo ready") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "demo did not get ready");
    }
    let view_cmd = view_cmd.expect("the demo prints a view command");

    // Run exactly what was printed (it writes cam1.h264 into the working directory).
    let args: Vec<&str> = view_cmd.split_whitespace().collect();
    let out = Command::new(args[0]).args(&args[1..]).arg("--quiet").current_dir(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{view_cmd}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("received 100 frames"), "{stdout}");
    assert!(stdout.contains("0 gaps, 0 out of order"), "{stdout}");

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(dir.join("cam1.h264"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264,1280,720,100");

    mediamesh_testkit::signal(demo.id(), mediamesh_testkit::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = demo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "demo exits cleanly on SIGTERM: {exit:?}");
    drop(lines);
    let _ = std::fs::remove_dir_all(&dir);
}

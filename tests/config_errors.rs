//! Configuration errors, through the real binary: each names the file, the line and the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str], yaml: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "mm-config-test-{}-{}",
        std::process::id(),
        mediamesh_testkit::unix_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mediamesh")).args(args).arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "{args:?} accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const TLS: &str = "  tlsTunnelCAFile: ca.pem\n  tlsTunnelCertFile: hub.pem\n  tlsTunnelPrivateKeyFile: hub.key\n";

#[test]
fn unknown_key_names_line_and_key() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n{TLS}  lingr: 3\n"));
    assert!(err.contains("bad.yaml:5: cloudDataStream.lingr: unknown field `lingr`"), "{err}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n  streamPort: lots\n{TLS}"));
    assert!(err.contains("bad.yaml:2: cloudDataStream.streamPort:"), "{err}");
}

#[test]
fn syntax_error_names_the_line() {
    let err = run(&["hub", "--config"], "cloudDataStream:\n  streamPort: [1, 2\n");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("streamPort") || err.contains("line 2") || err.contains("line 3"), "{err}");
}

#[test]
fn unusable_value_names_line_and_key() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n{TLS}  maxFrameBytes: 0\n"));
    assert!(err.contains("bad.yaml:5: cloudDataStream.maxFrameBytes:"), "{err}");
}

#[test]
fn edge_stream_errors_name_the_stream() {
    let yaml = "edgeDataStream:\n  server: hub:10006\n  nodeName: n1\n  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n  streams:\n    cam1:\n      testPatern: {}\n";
    let err = run(&["edge", "--config"], yaml);
    assert!(err.contains("bad.yaml:9: edgeDataStream.streams.cam1.testPatern: unknown field"), "{err}");
    let yaml = yaml.replace("testPatern: {}", "testPattern: {width: 641}");
    let err = run(&["edge", "--config"], &yaml);
    assert!(err.contains("bad.yaml:9: edgeDataStream.streams.cam1.testPattern:"), "{err}");
    assert!(err.contains("even"), "{err}");
}

#[test]
fn missing_block_is_explained() {
    let err = run(&["edge", "--config"], &format!("cloudDataStream:\n{TLS}"));
    assert!(err.contains("no edgeDataStream block"), "{err}");
}

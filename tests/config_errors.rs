//! Configuration through the real binary: each error once, naming the file, the line and the
//! key; every duration form; a KubeEdge-wrapped file; environment overrides; `mediamesh check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mediamesh_testkit::TestPki;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!(
            "mm-config-test-{}-{}",
            std::process::id(),
            mediamesh_testkit::unix_micros()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mediamesh(args: &[&str], file: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mediamesh")).args(args).arg(file).envs(env.iter().copied()).output().unwrap()
}

/// Runs a command that must fail on `yaml`; its stderr.
fn run(args: &[&str], yaml: &str) -> String {
    let dir = Dir::new();
    let out = mediamesh(args, &dir.write("bad.yaml", yaml), &[]);
    assert!(!out.status.success(), "{args:?} accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics unless `needle` is in `text` exactly once.
fn once(text: &str, needle: &str) {
    assert_eq!(text.matches(needle).count(), 1, "{needle:?} once in:\n{text}");
}

const TLS: &str = "  tlsTunnelCAFile: ca.pem\n  tlsTunnelCertFile: hub.pem\n  tlsTunnelPrivateKeyFile: hub.key\n";

#[test]
fn unknown_key_names_line_and_key_once_with_a_suggestion() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n{TLS}  lingr: 3\n"));
    once(&err, "bad.yaml:5: cloudDataStream.lingr: unknown key `lingr`; did you mean `linger`?");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n  streamPort: lots\n{TLS}"));
    once(&err, "bad.yaml:2: cloudDataStream.streamPort:");
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
    once(&err, "bad.yaml:5: cloudDataStream.maxFrameBytes:");
}

#[test]
fn a_missing_file_names_the_key_that_points_at_it() {
    let err = run(&["hub", "--config"], &format!("cloudDataStream:\n{TLS}  auth: {{anonymous: [read]}}\n"));
    once(&err, "bad.yaml:2: cloudDataStream.tlsTunnelCAFile: cannot read ");
    assert!(err.contains("ca.pem: No such file or directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn edge_stream_errors_name_the_stream() {
    let yaml = "edgeDataStream:\n  server: hub:10006\n  nodeName: n1\n  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n  streams:\n    cam1:\n      testPatern: {}\n";
    let err = run(&["edge", "--config"], yaml);
    once(
        &err,
        "bad.yaml:9: edgeDataStream.streams.cam1.testPatern: unknown key `testPatern`; did you mean `testPattern`?",
    );
    let yaml = yaml.replace("testPatern: {}", "testPattern: {width: 641}");
    let err = run(&["edge", "--config"], &yaml);
    once(&err, "bad.yaml:9: edgeDataStream.streams.cam1.testPattern:");
    assert!(err.contains("even"), "{err}");
}

#[test]
fn missing_block_is_explained() {
    let err = run(&["edge", "--config"], &format!("cloudDataStream:\n{TLS}"));
    assert!(err.contains("no edgeDataStream block"), "{err}");
}

/// A hub configuration with real certificates, written into `dir`, with `extra` keys.
fn hub_yaml(pki: &TestPki, extra: &str) -> String {
    format!(
        "cloudDataStream:\n  tlsTunnelCAFile: {}\n  tlsTunnelCertFile: {}\n  tlsTunnelPrivateKeyFile: {}\n{extra}  \
         listenAddress: 127.0.0.1\n",
        pki.main.ca_cert.display(),
        pki.main.hub.cert.display(),
        pki.main.hub.key.display()
    )
}

fn check(file: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = mediamesh(&["check", "-c"], file, env);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_duration_form_is_accepted() {
    let pki = TestPki::new();
    let dir = Dir::new();
    for (value, ok) in [("10", true), ("0.5", true), ("10s", true), ("500ms", true), ("1m", true), ("ten", false)] {
        let file =
            dir.write("hub.yaml", &hub_yaml(&pki, &format!("  linger: {value}\n  heartbeat: {{interval: 500ms}}\n")));
        let (success, err) = check(&file, &[]);
        assert_eq!(success, ok, "linger: {value}\n{err}");
        if !ok {
            once(&err, "hub.yaml:5: cloudDataStream.linger: ");
            assert!(err.contains("not a duration"), "{err}");
        }
    }
}

#[test]
fn check_says_ok_or_names_the_problem_as_nginx_t_does() {
    let pki = TestPki::new();
    let dir = Dir::new();
    let file = dir.write("hub.yaml", &hub_yaml(&pki, ""));
    let (ok, err) = check(&file, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("hub.yaml syntax is ok"), "{err}");
    assert!(err.contains("hub.yaml test is successful"), "{err}");
    // A key that does not match its certificate: found by reading both, as the hub would.
    let mismatched =
        hub_yaml(&pki, "").replace(&pki.main.hub.key.display().to_string(), &pki.rogue.hub.key.display().to_string());
    let (ok, err) = check(&dir.write("hub.yaml", &mismatched), &[]);
    assert!(!ok, "a key of another certificate passed");
    assert!(err.contains("test failed"), "{err}");
    // An edge whose certificate names another node.
    let edge = format!(
        "edgeDataStream:\n  server: hub.example.com:10006\n  nodeName: edge-9\n  tlsTunnelCAFile: {}\n  tlsTunnelCertFile: {}\n  tlsTunnelPrivateKeyFile: {}\n",
        pki.main.ca_cert.display(),
        pki.edge("edge-1").cert.display(),
        pki.edge("edge-1").key.display()
    );
    let (ok, err) = check(&dir.write("edge.yaml", &edge), &[]);
    assert!(!ok);
    assert!(err.contains("identifies node \"edge-1\""), "{err}");
    let (ok, err) = check(&dir.write("edge.yaml", &edge), &[("MEDIAMESH_EDGEDATASTREAM_NODENAME", "edge-1")]);
    assert!(ok, "the environment sets nodeName: {err}");
}

#[test]
fn a_hub_beyond_loopback_without_an_auth_block_refuses_to_start_and_names_the_fix() {
    let pki = TestPki::new();
    let dir = Dir::new();
    let open = hub_yaml(&pki, "").replace("127.0.0.1", "0.0.0.0");
    let file = dir.write("hub.yaml", &open);
    let out = mediamesh(&["hub", "-c"], &file, &[]);
    assert!(!out.status.success(), "a hub on 0.0.0.0 without auth started");
    let err = String::from_utf8_lossy(&out.stderr);
    once(&err, "cloudDataStream.auth: the hub listens on 0.0.0.0 with no auth block");
    assert!(err.contains("`auth: {anonymous: [read]}`") && err.contains("docs/security.md"), "{err}");
    // The fix it names works.
    let fixed = format!("{open}  auth: {{anonymous: [read]}}\n");
    let (ok, err) = check(&dir.write("hub.yaml", &fixed), &[]);
    assert!(ok, "{err}");
    // A mistake inside the block names its line and key.
    let bad = format!("{open}  auth:\n    users:\n      - user: viewer\n        password: hunter2\n");
    let (ok, err) = check(&dir.write("hub.yaml", &bad), &[]);
    assert!(!ok);
    once(&err, "cloudDataStream.auth.users[0].password:");
    assert!(!err.contains("hunter2"), "the password reached the error: {err}");
    let bad = format!("{open}  auth: {{anonymous: [watch]}}\n");
    let (ok, err) = check(&dir.write("hub.yaml", &bad), &[]);
    assert!(!ok);
    once(&err, "hub.yaml:6: cloudDataStream.auth: unknown action \"watch\"");
}

#[test]
fn a_kubeedge_cloudcore_file_is_read_and_its_other_modules_ignored() {
    let pki = TestPki::new();
    let dir = Dir::new();
    let block =
        hub_yaml(&pki, "  linger: 5s\n").replace("\n  ", "\n    ").replace("cloudDataStream:", "  cloudDataStream:");
    let text = format!(
        "apiVersion: cloudcore.config.kubeedge.io/v1alpha2\nkind: CloudCore\nkubeAPIConfig:\n  kubeConfig: \"\"\n  master: \"\"\n\
         modules:\n  cloudHub:\n    advertiseAddress:\n    - 10.0.0.1\n    nodeLimit: 1000\n  edgeController:\n    enable: true\n{block}"
    );
    let file = dir.write("cloudcore.yaml", &text);
    let (ok, err) = check(&file, &[]);
    assert!(ok, "{err}");
    // A mistake inside our block still names its line and key.
    let bad = text.replace("linger: 5s", "lingr: 5s");
    let (ok, err) = check(&dir.write("cloudcore.yaml", &bad), &[]);
    assert!(!ok);
    once(&err, "cloudcore.yaml:17: modules.cloudDataStream.lingr: unknown key `lingr`; did you mean `linger`?");
}

#[test]
fn environment_overrides_reach_the_running_hub() {
    let pki = TestPki::new();
    let dir = Dir::new();
    let file = dir.write("hub.yaml", &hub_yaml(&pki, "  streamPort: 1\n"));
    // A value the file's key cannot take, from the environment: named by its variable.
    let (ok, err) = check(&file, &[("MEDIAMESH_CLOUDDATASTREAM_MAXFRAMEBYTES", "0")]);
    assert!(!ok);
    once(&err, "MEDIAMESH_CLOUDDATASTREAM_MAXFRAMEBYTES (environment): cloudDataStream.maxFrameBytes: must be between");
    let (ok, err) = check(&file, &[("MEDIAMESH_CLOUDDATASTREAM_RTSP_PORTT", "1")]);
    assert!(!ok);
    once(&err, "MEDIAMESH_CLOUDDATASTREAM_RTSP_PORTT (environment): no such key");
    // `enable` from the environment: the hub has nothing to do.
    let out = mediamesh(&["hub", "-c"], &file, &[("MEDIAMESH_CLOUDDATASTREAM_ENABLE", "false")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cloudDataStream.enable is false"));
    // The running hub takes its ports from the environment, not the file's port 1.
    let mut hub = Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["hub", "-c"])
        .arg(&file)
        .envs([
            ("MEDIAMESH_CLOUDDATASTREAM_STREAMPORT", "0"),
            ("MEDIAMESH_CLOUDDATASTREAM_TUNNELPORT", "0"),
            ("MEDIAMESH_CLOUDDATASTREAM_RTSP_ENABLE", "false"),
            ("MEDIAMESH_CLOUDDATASTREAM_LISTENADDRESS", "127.0.0.1"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(hub.stdout.take().unwrap()), &mut line).unwrap();
    mediamesh_testkit::signal(hub.id(), mediamesh_testkit::Signal::SIGTERM);
    let _ = hub.wait();
    assert!(line.starts_with("mediamesh hub ready: viewers and API at http://127.0.0.1:"), "{line}");
    assert!(!line.contains("127.0.0.1:1,") && !line.contains("RTSP"), "{line}");
}

//! Loading a configuration file into the hub's or the edge's block.
//!
//! One file holds `cloudDataStream` (the hub), `edgeDataStream` (the edge) or both, on their
//! own or inside a KubeEdge `cloudcore.yaml` / `edgecore.yaml` ([`document`]). Loading a block:
//!
//! 1. the YAML is parsed into the typed block; unknown keys and wrong types are errors naming
//!    the file, the line and the dotted key, with "did you mean" for a near miss ([`keys`]);
//! 2. relative paths are resolved against the file's folder;
//! 3. `MEDIAMESH_<BLOCK>_<KEY>` environment variables override keys ([`env`]);
//! 4. the values are validated, and every file the block names must be readable; an error
//!    names the key (and its line, or the variable that set it).
//!
//! Each error is one line. `mediamesh check` runs this without starting anything, and SIGHUP
//! runs it again to reload.

#![forbid(unsafe_code)]

mod document;
mod env;
pub mod fuzz;
mod keys;

use std::path::{Path, PathBuf};

use mediamesh_edge::EdgeConfig;
use mediamesh_hub::HubConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use document::ConfigFile;
pub use env::Override;

/// A block of a configuration file.
pub trait Block: Serialize + DeserializeOwned + Sized {
    /// Its key: `cloudDataStream` or `edgeDataStream`.
    const NAME: &'static str;
    /// The command that runs it.
    const COMMAND: &'static str;
    /// Takes the block out of a parsed file.
    fn take(file: &mut ConfigFile) -> Option<Self>;
    /// Its `enable` switch.
    fn enabled(&self) -> bool;
    /// `(key below the block, reason)` for a value that cannot work.
    fn check_values(&self) -> Result<(), (String, String)>;
    /// Makes relative paths absolute against `base`.
    fn resolve_paths(&mut self, base: &Path);
    /// Every file the block names: `(key below the block, path)`.
    fn files(&self) -> Vec<(String, PathBuf)>;
    /// The block with every optional part filled in, as JSON: which keys exist, and their
    /// types.
    fn schema() -> serde_json::Value;
}

impl Block for HubConfig {
    const NAME: &'static str = "cloudDataStream";
    const COMMAND: &'static str = "hub";
    fn take(file: &mut ConfigFile) -> Option<Self> {
        file.cloud.take()
    }
    fn enabled(&self) -> bool {
        self.enable
    }
    fn check_values(&self) -> Result<(), (String, String)> {
        self.validate().map_err(|e| (e.key, e.reason))
    }
    fn resolve_paths(&mut self, base: &Path) {
        HubConfig::resolve_paths(self, base);
    }
    fn files(&self) -> Vec<(String, PathBuf)> {
        HubConfig::files(self).into_iter().map(|(k, p)| (k.to_owned(), p.to_path_buf())).collect()
    }
    fn schema() -> serde_json::Value {
        serde_json::to_value(HubConfig::schema()).unwrap_or_default()
    }
}

impl Block for EdgeConfig {
    const NAME: &'static str = "edgeDataStream";
    const COMMAND: &'static str = "edge";
    fn take(file: &mut ConfigFile) -> Option<Self> {
        file.edge.take()
    }
    fn enabled(&self) -> bool {
        self.enable
    }
    fn check_values(&self) -> Result<(), (String, String)> {
        self.validate().map_err(|e| (e.key, e.reason))
    }
    fn resolve_paths(&mut self, base: &Path) {
        EdgeConfig::resolve_paths(self, base);
    }
    fn files(&self) -> Vec<(String, PathBuf)> {
        EdgeConfig::files(self).into_iter().map(|(k, p)| (k, p.to_path_buf())).collect()
    }
    fn schema() -> serde_json::Value {
        EdgeConfig::schema()
    }
}

/// A loaded block.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The block, paths resolved, overrides applied, validated.
    pub config: T,
    /// The environment variables that changed it.
    pub overrides: Vec<Override>,
    /// Set when the file is a KubeEdge configuration.
    pub kubeedge: Option<document::KubeEdgeFile>,
}

/// Why a configuration cannot be used. Each is one line naming where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: std::io::Error,
    },
    /// YAML syntax, a wrong type or an unknown key.
    #[error("{}:{line}: {key}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line (1-based), 0 if unknown.
        line: usize,
        /// Dotted key at that line, or `(document)`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A well-formed value that cannot work, or a file it names that cannot be read.
    #[error("{}: {key}: {reason}", place(path, *line, var.as_deref()))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line of the key (1-based), 0 if it is not written in the file.
        line: usize,
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
        /// The environment variable that set the key, if one did.
        var: Option<String>,
    },
    /// An environment override that names no key or holds an unusable value.
    #[error("{var} (environment): {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// The file has no block for this command.
    #[error("{}: no {block} block; `mediamesh {command}` needs one", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The block it lacks.
        block: &'static str,
        /// The command that needs it.
        command: &'static str,
    },
}

fn place(path: &Path, line: usize, var: Option<&str>) -> String {
    match (var, line) {
        (Some(var), _) => format!("{var} (environment)"),
        (None, 0) => path.display().to_string(),
        (None, line) => format!("{}:{line}", path.display()),
    }
}

/// Reads and parses a file: the text and its blocks.
pub fn read(path: &Path) -> Result<(String, ConfigFile), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|reason| LoadError::Read { path: path.into(), reason })?;
    let text = line_breaks(text);
    let file = parse(path, &text)?;
    Ok((text, file))
}

/// `text` with each lone CR made a LF. YAML counts a lone CR as a line break and `str::lines`
/// does not, so without this an error's line and the key found on it disagree (found by the
/// config_load fuzz target).
pub fn line_breaks(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Parses the text of the file at `path` (named in errors only).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, LoadError> {
    ConfigFile::parse(text).map_err(|e| parse_error(path, text, &e))
}

/// A parse error with its line, dotted key and, for a key that does not exist, a suggestion.
fn parse_error(path: &Path, text: &str, e: &serde_saphyr::Error) -> LoadError {
    use serde_saphyr::MessageFormatter;
    let line = e.location().map_or(0, |l| l.line() as usize);
    let key = keys::key_at_line(text, line).unwrap_or_else(|| "(document)".into());
    static SCHEMAS: std::sync::OnceLock<(serde_json::Value, serde_json::Value)> = std::sync::OnceLock::new();
    let (hub, edge) = SCHEMAS.get_or_init(|| (<HubConfig as Block>::schema(), <EdgeConfig as Block>::schema()));
    let unknown =
        keys::unknown_key(hub, HubConfig::NAME, &key).or_else(|| keys::unknown_key(edge, EdgeConfig::NAME, &key));
    let message = unknown
        .unwrap_or_else(|| serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet()).into_owned());
    // serde quotes an unusable value in its message; a camera URL's password must not show.
    let message = one_line(&mediamesh_edge::redact::text(&message));
    LoadError::Parse { path: path.into(), line, key: one_line(&key), message }
}

/// `text` with control characters escaped: an error is one log line, whatever a quoted key or
/// value in the file holds (the config_load fuzz target found a key with a newline in it).
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Loads the block `T` from `path`, with overrides from `vars` (the process environment, or a
/// test's). `Ok(None)`: the block says `enable: false`.
pub fn load<T: Block>(path: &Path, vars: &[(String, String)]) -> Result<Option<Loaded<T>>, LoadError> {
    load_with(path, vars, true)
}

/// [`load`], checking that the files the block names can be read only if `check_files` (an
/// edge joining a hub writes its certificate files first).
pub fn load_with<T: Block>(
    path: &Path,
    vars: &[(String, String)],
    check_files: bool,
) -> Result<Option<Loaded<T>>, LoadError> {
    let (text, mut file) = read(path)?;
    let Some(loaded) = from_file::<T>(path, &text, &mut file, vars)? else {
        return Ok(None);
    };
    for (key, file) in loaded.config.files().into_iter().filter(|_| check_files) {
        if let Err(e) = std::fs::File::open(&file) {
            return Err(invalid::<T>(
                path,
                &text,
                &loaded.overrides,
                key,
                format!("cannot read {}: {e}", file.display()),
            ));
        }
    }
    Ok(Some(loaded))
}

/// The block `T` of a parsed file (`text` is its source, for line numbers), without touching
/// the files it names.
fn from_file<T: Block>(
    path: &Path,
    text: &str,
    file: &mut ConfigFile,
    vars: &[(String, String)],
) -> Result<Option<Loaded<T>>, LoadError> {
    let kubeedge = file.kubeedge.take();
    let block = T::take(file).ok_or(LoadError::Missing { path: path.into(), block: T::NAME, command: T::COMMAND })?;
    let base = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let mut config = block;
    config.resolve_paths(&base);
    let (mut config, overrides) = env::apply(config, vars)?;
    // An override of `enable` counts too.
    if !config.enabled() {
        return Ok(None);
    }
    config.resolve_paths(&std::env::current_dir().unwrap_or_default());
    config.check_values().map_err(|(key, reason)| invalid::<T>(path, text, &overrides, key, reason))?;
    Ok(Some(Loaded { config, overrides, kubeedge }))
}

/// An unusable value of `key` (below the block), with its line or the variable that set it.
fn invalid<T: Block>(path: &Path, text: &str, overrides: &[Override], key: String, reason: String) -> LoadError {
    let dotted = format!("{}.{key}", T::NAME);
    let var = overrides.iter().find(|o| dotted == o.dotted || dotted.starts_with(&format!("{}.", o.dotted)));
    LoadError::Invalid {
        path: path.into(),
        line: keys::find_key_line(text, &dotted).unwrap_or(0),
        key: one_line(&dotted),
        reason: one_line(&reason),
        var: var.map(|o| one_line(&o.var)),
    }
}

/// The process environment, for [`load`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// `$XDG_STATE_HOME/mediamesh/<name>` (or `~/.local/state/...`, or the temp folder): where the
/// demo and the bench keep what they generate.
pub fn state_dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mediamesh").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("mm-cfg-{tag}-{}-{}", std::process::id(), mediamesh_tunnel_micros()))
    }

    fn mediamesh_tunnel_micros() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
    }

    #[test]
    fn example_files_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        // The examples name certificates the reader creates with `mediamesh certs`: check the
        // values, not the files.
        let (_, mut file) = read(&root.join("hub.yaml")).unwrap();
        file.cloud.take().unwrap().validate().unwrap();
        let (_, mut file) = read(&root.join("edge.yaml")).unwrap();
        let edge = file.edge.take().unwrap();
        edge.validate().unwrap();
        assert_eq!(edge.streams.len(), 4);
    }

    #[test]
    fn a_key_with_a_newline_in_it_makes_a_one_line_error() {
        let dir = temp("newline");
        let p = write(&dir, "bad.yaml", "edgeDataStream:\n  \"server\\nfake: log line\": x\n");
        let e = load::<EdgeConfig>(&p, &[]).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("server\\nfake"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_ending_in_a_lone_cr_are_counted_as_yaml_counts_them() {
        let dir = temp("cr");
        let p = write(&dir, "mac.yaml", "cloudDataStream:\r  streamPort: 1\r  lingr: 3\r");
        let e = load::<HubConfig>(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("mac.yaml:3: cloudDataStream.lingr: unknown key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_errors_name_line_and_key_once() {
        let dir = temp("parse");
        let tls = "  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n";
        let p = write(&dir, "bad.yaml", &format!("cloudDataStream:\n{tls}  streamPort: lots\n"));
        let e = load::<HubConfig>(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("bad.yaml:5: cloudDataStream.streamPort:"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let p = write(&dir, "bad.yaml", &format!("cloudDataStream:\n{tls}  lingr: 3\n"));
        let e = load::<HubConfig>(&p, &[]).unwrap_err().to_string();
        assert!(e.ends_with("bad.yaml:5: cloudDataStream.lingr: unknown key `lingr`; did you mean `linger`?"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths_resolve_against_the_files_folder_and_missing_files_name_their_key() {
        let dir = temp("paths");
        for f in ["ca.pem", "hub.pem"] {
            write(&dir.join("tls"), f, "x");
        }
        let text = "cloudDataStream:\n  tlsTunnelCAFile: tls/ca.pem\n  tlsTunnelCertFile: tls/hub.pem\n  tlsTunnelPrivateKeyFile: tls/hub.key\n  listenAddress: 127.0.0.1\n";
        let p = write(&dir, "hub.yaml", text);
        let e = load::<HubConfig>(&p, &[]).unwrap_err().to_string();
        let key = dir.join("tls/hub.key");
        assert!(
            e.starts_with(&format!(
                "{}:4: cloudDataStream.tlsTunnelPrivateKeyFile: cannot read {}:",
                p.display(),
                key.display()
            )),
            "{e}"
        );
        write(&dir.join("tls"), "hub.key", "x");
        let loaded = load::<HubConfig>(&p, &[]).unwrap().unwrap();
        assert_eq!(loaded.config.tls_tunnel_ca_file, dir.join("tls/ca.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The configuration `deploy/` ships in a ConfigMap, under `key`.
    fn shipped(configmap: &str, key: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(configmap);
        let text = std::fs::read_to_string(&path).unwrap();
        let map: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        map["data"][key].as_str().unwrap().to_owned()
    }

    #[test]
    fn the_configurations_deploy_ships_load_with_the_pods_overrides() {
        let dir = temp("deploy");
        let vars = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let hub = write(&dir, "hub.yaml", &shipped("base/hub-config.yaml", "hub.yaml"));
        let pod = vars(&[
            ("MEDIAMESH_CLOUDDATASTREAM_HUBNAME", "mediamesh-hub-7d9c-x2x"),
            ("MEDIAMESH_CLOUDDATASTREAM_CLUSTER_ADVERTISESTREAMURL", "http://10.1.2.3:10005"),
            ("MEDIAMESH_CLOUDDATASTREAM_CLUSTER_ADVERTISETUNNELADDRESS", "10.1.2.3:10006"),
            ("MEDIAMESH_CLOUDDATASTREAM_CLUSTER_ETCD", "[http://etcd.example.internal:2379]"),
        ]);
        let c = load_with::<HubConfig>(&hub, &pod, false).unwrap().unwrap().config;
        assert_eq!(c.hub_name, "mediamesh-hub-7d9c-x2x");
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.etcd, ["http://etcd.example.internal:2379"]);
        assert_eq!(cluster.advertise_stream_url.as_deref(), Some("http://10.1.2.3:10005"));
        let edge = write(&dir, "edge.yaml", &shipped("overlays/kubeedge/edge-config.yaml", "edge.yaml"));
        let node = vars(&[("MEDIAMESH_EDGEDATASTREAM_NODENAME", "edge-node-1")]);
        let c = load_with::<EdgeConfig>(&edge, &node, false).unwrap().unwrap().config;
        assert_eq!(c.node_name, "edge-node-1");
    }

    #[test]
    fn environment_overrides_set_keys_and_errors_name_the_variable() {
        let dir = temp("env");
        let text = "edgeDataStream:\n  server: hub:10006\n  nodeName: edge-1\n  tlsTunnelCAFile: /dev/null\n  tlsTunnelCertFile: /dev/null\n  tlsTunnelPrivateKeyFile: /dev/null\n  streams:\n    front_door:\n      rtsp: {url: \"rtsp://cam/x\"}\n";
        let p = write(&dir, "edge.yaml", text);
        let vars = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let loaded = load::<EdgeConfig>(
            &p,
            &vars(&[
                ("MEDIAMESH_EDGEDATASTREAM_SERVER", "hub.example.com:443"),
                ("MEDIAMESH_EDGEDATASTREAM_HEARTBEAT_TIMEOUT", "5s"),
                ("MEDIAMESH_EDGEDATASTREAM_STREAMS_FRONT_DOOR_RTSP_PASSWORD", "1234"),
                ("MEDIAMESH_LOG_FORMAT", "json"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap()
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.server, "hub.example.com:443");
        assert_eq!(c.heartbeat.timeout.get().as_secs(), 5);
        let mediamesh_edge::config::SourceConfig::Rtsp(camera) = &c.streams["front_door"].source else {
            panic!("front_door is a camera")
        };
        assert_eq!(camera.password.as_deref(), Some("1234"));
        assert_eq!(loaded.overrides.len(), 3);
        let e = load::<EdgeConfig>(&p, &vars(&[("MEDIAMESH_EDGEDATASTREAM_UPLINKQUEUEFRAMES", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MEDIAMESH_EDGEDATASTREAM_UPLINKQUEUEFRAMES (environment): edgeDataStream.uplinkQueueFrames: must be at least 2"
        );
        let e = load::<EdgeConfig>(&p, &vars(&[("MEDIAMESH_EDGEDATASTREAM_SERVR", "x:1")])).unwrap_err();
        assert!(e.to_string().starts_with("MEDIAMESH_EDGEDATASTREAM_SERVR (environment): no such key"), "{e}");
        let e = load::<EdgeConfig>(&p, &vars(&[("MEDIAMESH_EDGEDATASTREAM_UPLINKQUEUEFRAMES", "many")])).unwrap_err();
        assert!(e.to_string().starts_with("MEDIAMESH_EDGEDATASTREAM_UPLINKQUEUEFRAMES (environment): "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

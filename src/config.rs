//! Loading the YAML configuration file.
//!
//! One file may hold the hub's block (`cloudDataStream`), the edge's (`edgeDataStream`) or
//! both, as KubeEdge's `cloudcore.yaml` / `edgecore.yaml` fragments. Unknown keys are errors.
//! Every error names the file, the line and the dotted key.

use std::path::{Path, PathBuf};

use mediamesh_edge::EdgeConfig;
use mediamesh_hub::HubConfig;
use serde::Deserialize;

/// The top level of a configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The hub's block.
    #[serde(rename = "cloudDataStream", default)]
    pub cloud: Option<HubConfig>,
    /// The edge's block.
    #[serde(rename = "edgeDataStream", default)]
    pub edge: Option<EdgeConfig>,
}

/// A configuration error with its place in the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax or a type error, with serde-saphyr's snippet.
    #[error("{path}:{line}: {key}: {message}\n{detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line (1-based), 0 if unknown.
        line: u64,
        /// Dotted key at that line, or `(document)`.
        key: String,
        /// One-line message.
        message: String,
        /// The rendered snippet.
        detail: String,
    },
    /// A well-formed value that cannot work.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line of the key (1-based), 0 if it is not written in the file.
        line: usize,
        /// The error, starting with the dotted key.
        message: String,
    },
    /// The block the command needs is missing or disabled.
    #[error("{path}: {message}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<(ConfigFile, String), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
    let file = parse(&text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        let rendered = e.to_string();
        let message = rendered
            .lines()
            .next()
            .map(|l| l.trim_start_matches("error: ").split_once(": ").map_or(l, |(_, m)| m))
            .unwrap_or_default()
            .to_owned();
        let key = key_at_line(&text, line as usize).unwrap_or_else(|| "(document)".into());
        LoadError::Parse { path: path.into(), line, key, message, detail: rendered }
    })?;
    Ok((file, text))
}

fn parse(text: &str) -> Result<ConfigFile, serde_saphyr::Error> {
    serde_saphyr::from_str(text)
}

impl LoadError {
    /// An error about a dotted key (`cloudDataStream.maxFrameBytes: ...`), located in `text`.
    pub fn invalid(path: &Path, text: &str, message: String) -> Self {
        let key = message.split(':').next().unwrap_or_default();
        let line = find_key_line(text, key).unwrap_or(0);
        LoadError::Invalid { path: path.into(), line, message }
    }
}

/// The dotted path of the key written on `line` (1-based) of block-style YAML.
pub fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let target = lines.get(line.checked_sub(1)?)?;
    let (indent, key) = key_of(target)?;
    let mut path = vec![key];
    let mut want = indent;
    for l in lines[..line - 1].iter().rev() {
        if let Some((i, k)) = key_of(l)
            && i < want
        {
            path.push(k);
            want = i;
            if i == 0 {
                break;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The line (1-based) where a dotted key is written, if it is.
pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let mut path: Vec<(usize, String)> = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let Some((indent, key)) = key_of(l) else { continue };
        while path.last().is_some_and(|(i, _)| *i >= indent) {
            path.pop();
        }
        path.push((indent, key));
        if path.iter().map(|(_, k)| k.as_str()).eq(dotted.split('.')) {
            return Some(n + 1);
        }
    }
    None
}

/// `(indent, key)` of a `key: ...` line; comments, list items and blank lines give `None`.
fn key_of(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
        return None;
    }
    let (key, _) = trimmed.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains(' ')).then(|| (line.len() - trimmed.len(), key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# comment\ncloudDataStream:\n  streamPort: 1\n  frameLog:\n    maxFrames: 3\nedgeDataStream:\n  streams:\n    cam1:\n      testPattern:\n        width: 641\n";

    #[test]
    fn key_paths_and_lines() {
        assert_eq!(key_at_line(DOC, 3).as_deref(), Some("cloudDataStream.streamPort"));
        assert_eq!(key_at_line(DOC, 5).as_deref(), Some("cloudDataStream.frameLog.maxFrames"));
        assert_eq!(key_at_line(DOC, 10).as_deref(), Some("edgeDataStream.streams.cam1.testPattern.width"));
        assert_eq!(find_key_line(DOC, "cloudDataStream.frameLog.maxFrames"), Some(5));
        assert_eq!(find_key_line(DOC, "edgeDataStream.streams.cam1.testPattern"), Some(9));
        assert_eq!(find_key_line(DOC, "cloudDataStream.maxFrames"), None);
    }

    #[test]
    fn example_files_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let (hub, _) = load(&root.join("hub.yaml")).unwrap();
        hub.cloud.unwrap().validate().unwrap();
        let (edge, _) = load(&root.join("edge.yaml")).unwrap();
        let edge = edge.edge.unwrap();
        edge.validate().unwrap();
        assert_eq!(edge.streams.len(), 4);
    }

    #[test]
    fn parse_errors_name_line_and_key() {
        let dir = std::env::temp_dir().join(format!("mm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.yaml");
        std::fs::write(&p, "cloudDataStream:\n  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n  streamPort: lots\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.yaml:5: cloudDataStream.streamPort:"), "{e}");
        std::fs::write(&p, "cloudDataStream:\n  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n  lingr: 3\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.yaml:5: cloudDataStream.lingr: unknown field `lingr`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

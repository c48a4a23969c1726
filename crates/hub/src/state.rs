//! What the hub keeps across restarts, in `stateDir`: join tokens (`join-tokens.json`) and
//! revoked nodes (`revoked.json`).
//!
//! The command line (`mediamesh token create`, `mediamesh node revoke`) and the running hub
//! both change these files. Each change is a read-modify-write under an exclusive lock on
//! `state.lock` and lands with a rename, so a reader never sees half a file and no change is
//! lost to a concurrent one. The files are mode 0600: a join token's secret is stored only as
//! its SHA-256, but the file still says which nodes may join.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Largest state file read.
const MAX_FILE: u64 = 16 << 20;
/// Most join tokens outstanding at once.
pub const MAX_TOKENS: usize = 10_000;
/// The prefix that marks a join token and its format's version.
pub const TOKEN_PREFIX: &str = "mmj1";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what the hub wrote.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Too many join tokens are outstanding.
    #[error("{MAX_TOKENS} join tokens are outstanding; let some expire first")]
    TooManyTokens,
}

/// Why a join token was refused. The text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Not a join token.
    #[error("not a join token (expected {TOKEN_PREFIX}.ID.SECRET.CA-FINGERPRINT)")]
    Malformed,
    /// No such token, or a wrong secret.
    #[error("unknown join token")]
    Unknown,
    /// Its time is up.
    #[error("the join token has expired")]
    Expired,
    /// It was used already.
    #[error("the join token has been used already")]
    Used,
    /// The node it is for has been revoked.
    #[error("node {0:?} is revoked")]
    Revoked(String),
}

/// A join token's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Public id (the store's key).
    pub id: String,
    /// The secret half.
    pub secret: String,
    /// SHA-256 of the hub's CA certificate, hex: how the edge recognises the hub.
    pub ca_fingerprint: String,
}

impl JoinToken {
    /// Reads `mmj1.ID.SECRET.FINGERPRINT`.
    pub fn parse(text: &str) -> Result<Self, JoinError> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoinError::Malformed);
        };
        let ok =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok(id, 8) || !ok(secret, 32) || fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JoinError::Malformed);
        }
        Ok(Self { id: id.into(), secret: secret.into(), ca_fingerprint: fp.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", self.id, self.secret, self.ca_fingerprint)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tokens {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    id: String,
    node: String,
    secret_sha256: String,
    expires: u64,
    #[serde(default)]
    used: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Revoked {
    /// Node → when it was revoked (Unix seconds): its certificates issued before then are
    /// refused.
    nodes: BTreeMap<String, u64>,
}

/// The `stateDir`.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` random characters from `[a-z0-9]` (a secret of 32 holds about 165 bits).
fn random_text(n: usize) -> Result<String, StateError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| StateError::Io {
        path: PathBuf::from("(random)"),
        source: std::io::Error::other("the system random generator failed"),
    })?;
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
}

impl StateStore {
    /// The store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |source| StateError::Io { path: dir.to_path_buf(), source };
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `f` holding the store's lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
        let path = self.path("state.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateError::Io { path: path.clone(), source })?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| StateError::Io { path: path.clone(), source: e.into() })?;
        let out = f();
        let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
        out
    }

    fn read<T: for<'de> Deserialize<'de> + Default>(&self, name: &str) -> Result<T, StateError> {
        let path = self.path(name);
        let io = |source| StateError::Io { path: path.clone(), source };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
            Err(e) => return Err(io(e)),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE), &mut text).map_err(io)?;
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt { path: path.clone(), reason: e.to_string() })
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let io = |source| StateError::Io { path: path.clone(), source };
        let text = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f =
            std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// A new join token for `node`, valid for `ttl`, naming the CA with `ca_fingerprint`.
    pub fn create_token(&self, node: &str, ttl: Duration, ca_fingerprint: &str) -> Result<JoinToken, StateError> {
        let token = JoinToken { id: random_text(8)?, secret: random_text(32)?, ca_fingerprint: ca_fingerprint.into() };
        self.locked(|| {
            let mut t: Tokens = self.read("join-tokens.json")?;
            let now = unix(SystemTime::now());
            t.tokens.retain(|e| e.expires > now);
            if t.tokens.len() >= MAX_TOKENS {
                return Err(StateError::TooManyTokens);
            }
            t.tokens.push(TokenEntry {
                id: token.id.clone(),
                node: node.into(),
                secret_sha256: sha256_hex(&token.secret),
                expires: now.saturating_add(ttl.as_secs()),
                used: None,
            });
            self.write("join-tokens.json", &t)
        })?;
        Ok(token)
    }

    /// Uses `token` once: the node it was made for.
    pub fn consume_token(&self, token: &JoinToken, now: SystemTime) -> Result<Result<String, JoinError>, StateError> {
        self.locked(|| {
            let mut t: Tokens = self.read("join-tokens.json")?;
            let now = unix(now);
            let Some(entry) = t.tokens.iter_mut().find(|e| e.id == token.id) else {
                return Ok(Err(JoinError::Unknown));
            };
            let hashed = sha256_hex(&token.secret);
            if !mediamesh_auth::digest::constant_time_eq(hashed.as_bytes(), entry.secret_sha256.as_bytes()) {
                return Ok(Err(JoinError::Unknown));
            }
            if entry.used.is_some() {
                return Ok(Err(JoinError::Used));
            }
            if entry.expires <= now {
                return Ok(Err(JoinError::Expired));
            }
            entry.used = Some(now);
            let node = entry.node.clone();
            t.tokens.retain(|e| e.expires > now);
            self.write("join-tokens.json", &t)?;
            Ok(Ok(node))
        })
    }

    /// Revokes `node` as of `at`; false if it was revoked at or after that already.
    pub fn revoke(&self, node: &str, at: SystemTime) -> Result<bool, StateError> {
        self.locked(|| {
            let mut r: Revoked = self.read("revoked.json")?;
            let at = unix(at);
            if r.nodes.get(node).is_some_and(|t| *t >= at) {
                return Ok(false);
            }
            r.nodes.insert(node.into(), at);
            self.write("revoked.json", &r)?;
            Ok(true)
        })
    }

    /// Every revoked node and when.
    pub fn revocations(&self) -> Result<BTreeMap<String, SystemTime>, StateError> {
        let r: Revoked = self.read("revoked.json")?;
        Ok(r.nodes.into_iter().map(|(n, t)| (n, SystemTime::UNIX_EPOCH + Duration::from_secs(t))).collect())
    }

    /// When `revoked.json` last changed (to notice the command line's changes).
    pub fn revocations_changed(&self) -> Option<SystemTime> {
        std::fs::metadata(self.path("revoked.json")).and_then(|m| m.modified()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (StateStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("mm-state-{}-{}", std::process::id(), random_text(6).unwrap()));
        (StateStore::open(&dir).unwrap(), dir)
    }

    #[test]
    fn a_join_token_works_once_and_only_before_it_expires() {
        let (s, dir) = store();
        let fp = "ab".repeat(32);
        let t = s.create_token("edge-7", Duration::from_secs(3600), &fp).unwrap();
        let parsed = JoinToken::parse(&t.to_string()).unwrap();
        assert_eq!(parsed, t);
        let wrong = JoinToken { secret: "x".repeat(32), ..t.clone() };
        assert_eq!(t.to_string().len(), 4 + 1 + 8 + 1 + 32 + 1 + 64);
        assert_eq!(s.consume_token(&wrong, SystemTime::now()).unwrap(), Err(JoinError::Unknown));
        assert_eq!(s.consume_token(&t, SystemTime::now()).unwrap(), Ok("edge-7".into()));
        assert_eq!(s.consume_token(&t, SystemTime::now()).unwrap(), Err(JoinError::Used));
        let old = s.create_token("edge-8", Duration::from_secs(60), &fp).unwrap();
        assert_eq!(
            s.consume_token(&old, SystemTime::now() + Duration::from_secs(61)).unwrap(),
            Err(JoinError::Expired)
        );
        assert_eq!(JoinToken::parse("mmj1.a.b.c"), Err(JoinError::Malformed));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("join-tokens.json")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn revocations_persist_and_only_move_forward() {
        let (s, dir) = store();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(s.revoke("edge-7", t).unwrap());
        assert!(!s.revoke("edge-7", t).unwrap());
        let again = StateStore::open(&dir).unwrap();
        assert_eq!(again.revocations().unwrap().get("edge-7"), Some(&t));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

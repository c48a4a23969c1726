//! Enrollment from the command line: `mediamesh token create` and `mediamesh node revoke` on
//! the hub's machine, `mediamesh edge --join` at a site, and the edge's certificate renewal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use mediamesh_edge::EdgeConfig;
use mediamesh_hub::HubConfig;
use mediamesh_hub::enroll::Issued;
use mediamesh_hub::outbound::Target;
use mediamesh_hub::state::{JoinToken, StateStore};
use mediamesh_tls::TlsFiles;
use mediamesh_tls::enroll::{PinnedCaVerifier, join_client_config, renew_client_config};

use mediamesh_config as config;

/// Largest answer read from the hub.
const MAX_ANSWER: usize = 64 * 1024;
/// How long one enrollment or renewal exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Certificates with a longer lifetime are not renewed automatically (an operator's PKI, or
/// `mediamesh certs`).
const RENEWABLE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a one-time join token for a node (run where the hub's configuration is).
    Create {
        /// The hub's configuration (its `stateDir` and `enrollment` block).
        #[arg(long, short)]
        config: PathBuf,
        /// The node the token enrolls.
        #[arg(long)]
        node: String,
        /// How long the token may be used: `90s`, `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Revoke a node: a running hub closes its tunnels within a second and refuses its
    /// certificates from then on, also after a restart.
    Revoke {
        /// The hub's configuration (its `stateDir`).
        #[arg(long, short)]
        config: PathBuf,
        /// The node.
        node: String,
    },
}

fn hub_config(path: &Path) -> anyhow::Result<HubConfig> {
    let loaded = config::load::<HubConfig>(path, &config::process_env())?
        .with_context(|| format!("{}: cloudDataStream.enable is false", path.display()))?;
    Ok(loaded.config)
}

fn store(cfg: &HubConfig, path: &Path) -> anyhow::Result<StateStore> {
    let dir = cfg.state_dir.as_deref().with_context(|| {
        format!(
            "{}: cloudDataStream.stateDir is not set; the hub keeps join tokens and revocations there",
            path.display()
        )
    })?;
    Ok(StateStore::open(dir)?)
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let TokenCommand::Create { config: path, node, ttl } = args.command;
    mediamesh_tunnel::wire::validate_name(&node).map_err(|e| anyhow::anyhow!("--node {node:?}: {e}"))?;
    let cfg = hub_config(&path)?;
    anyhow::ensure!(
        cfg.enrollment.is_some(),
        "{}: the hub has no cloudDataStream.enrollment block, so it cannot enroll edges",
        path.display()
    );
    let fingerprint = mediamesh_tls::enroll::file_fingerprint(&cfg.tls_tunnel_ca_file)?;
    let ttl = Duration::from_secs(super::auth::parse_ttl(&ttl)?);
    let token = store(&cfg, &path)?.create_token(&node, ttl, &fingerprint)?;
    println!("{token}");
    eprintln!(
        "join token for node {node:?}, usable once within {} s; at the site:\n  mediamesh edge -c edge.yaml --join HUB:{} --token {token}",
        ttl.as_secs(),
        cfg.tunnel_port
    );
    Ok(())
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let NodeCommand::Revoke { config: path, node } = args.command;
    let cfg = hub_config(&path)?;
    let newly = store(&cfg, &path)?.revoke(&node, SystemTime::now())?;
    if newly {
        println!(
            "node {node:?} revoked: a running hub closes its tunnels within a second and refuses its certificates"
        );
    } else {
        println!("node {node:?} was revoked already");
    }
    Ok(())
}

fn exchange_error(status: http::StatusCode, body: &[u8]) -> anyhow::Error {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("the hub answered HTTP {status}: {message}")
}

/// Writes `contents` to `path` through a temporary file and a rename, with `mode`.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `mediamesh edge --join HUB:PORT --token T`: a key, a certificate request, the hub checked
/// against the token's CA fingerprint, and the certificate it signs written where the
/// configuration's `tlsTunnel*` keys say.
pub async fn join(path: &Path, hub: &str, token: &str) -> anyhow::Result<()> {
    let loaded = config::load_with::<EdgeConfig>(path, &config::process_env(), false)?
        .with_context(|| format!("{}: edgeDataStream.enable is false", path.display()))?;
    let cfg = loaded.config;
    let token = JoinToken::parse(token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let (key, csr) = mediamesh_tls::enroll::request(&cfg.node_name)?;
    let pin = PinnedCaVerifier::new(&token.ca_fingerprint);
    let target = Target::with_tls(hub, "/api/v1/enroll", join_client_config(pin.clone())?, cfg.server_name.as_deref())?;
    let body = serde_json::to_vec(&serde_json::json!({ "token": token.to_string(), "csr": csr }))?;
    let (status, answer) = target
        .send(http::Method::POST, Some(body), MAX_ANSWER, EXCHANGE_TIMEOUT)
        .await
        .with_context(|| format!("joining the hub at {hub}"))?;
    if !status.is_success() {
        return Err(exchange_error(status, &answer).context(format!("joining the hub at {hub}")));
    }
    let issued: Issued = serde_json::from_slice(&answer).context("reading the hub's answer")?;
    anyhow::ensure!(
        issued.node == cfg.node_name,
        "the token is for node {:?}, but {} says nodeName {:?}; fix the configuration and ask for a new token",
        issued.node,
        path.display(),
        cfg.node_name
    );
    let ca = pin.ca().context("the hub's CA was not seen")?;
    write_file(&cfg.tls_tunnel_private_key_file, &key, 0o600)?;
    write_file(&cfg.tls_tunnel_cert_file, &issued.certificate, 0o644)?;
    write_file(&cfg.tls_tunnel_ca_file, &mediamesh_tls::enroll::certificate_pem(&ca), 0o644)?;
    let valid = issued.expires.saturating_sub(unix_now());
    println!(
        "joined as node {:?}: certificate valid for {} min (renewed after two thirds), written to {} (key {}, hub CA {})",
        issued.node,
        valid / 60,
        cfg.tls_tunnel_cert_file.display(),
        cfg.tls_tunnel_private_key_file.display(),
        cfg.tls_tunnel_ca_file.display()
    );
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When the edge's certificate should be renewed: two thirds into its lifetime, for
/// certificates that live 30 days or less (enrolled ones); `None` for the rest.
pub fn renewal_due(cfg: &EdgeConfig) -> Option<Instant> {
    let certs = mediamesh_tls::load_certs(&cfg.tls_tunnel_cert_file).ok()?;
    let (from, until) = mediamesh_tls::enroll::validity(certs.first()?)?;
    // Issued certificates start BACKDATE early; count their lifetime from when they were made.
    let issued = from + mediamesh_tls::enroll::BACKDATE;
    let lifetime = until.duration_since(issued).ok()?;
    if lifetime > RENEWABLE_LIFETIME {
        return None;
    }
    let due = issued + lifetime * 2 / 3;
    let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
    Some(Instant::now() + wait)
}

/// Renews the edge's certificate over mutual TLS with the current one, and writes the new key
/// and certificate in place of the old.
pub async fn renew(cfg: &EdgeConfig) -> anyhow::Result<Issued> {
    let files = TlsFiles {
        ca: cfg.tls_tunnel_ca_file.clone(),
        cert: cfg.tls_tunnel_cert_file.clone(),
        key: cfg.tls_tunnel_private_key_file.clone(),
    };
    let (key, csr) = mediamesh_tls::enroll::request(&cfg.node_name)?;
    let target =
        Target::with_tls(&cfg.server, "/api/v1/renew", renew_client_config(&files)?, cfg.server_name.as_deref())?;
    let body = serde_json::to_vec(&serde_json::json!({ "csr": csr }))?;
    let (status, answer) = target.send(http::Method::POST, Some(body), MAX_ANSWER, EXCHANGE_TIMEOUT).await?;
    if !status.is_success() {
        return Err(exchange_error(status, &answer));
    }
    let issued: Issued = serde_json::from_slice(&answer).context("reading the hub's answer")?;
    anyhow::ensure!(issued.node == cfg.node_name, "the hub issued a certificate for {:?}", issued.node);
    write_file(&cfg.tls_tunnel_private_key_file, &key, 0o600)?;
    write_file(&cfg.tls_tunnel_cert_file, &issued.certificate, 0o644)?;
    Ok(issued)
}

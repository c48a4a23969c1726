//! `mediamesh hub`, `mediamesh edge` and `mediamesh check`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mediamesh_edge::{Edge, EdgeConfig};
use mediamesh_hub::{Hub, HubConfig};
use tracing::{error, info, warn};

use super::{Signal, Signals};
use crate::notify::notify;
use mediamesh_config::{self as config, Block, Loaded};

/// Loads block `T`, saying so in the log when it came from a KubeEdge file or was overridden.
fn load<T: Block>(path: &Path) -> anyhow::Result<Option<T>> {
    let Some(Loaded { config, overrides, kubeedge }) = config::load::<T>(path, &config::process_env())? else {
        info!(block = T::NAME, "{}.enable is false; nothing to do", T::NAME);
        return Ok(None);
    };
    if let Some(k) = kubeedge {
        info!(
            block = T::NAME,
            kind = k.kind.as_deref().unwrap_or("unknown"),
            ignored = %k.other_modules.join(","),
            "reading {} from a KubeEdge configuration; its other modules are KubeEdge's and ignored",
            T::NAME
        );
    }
    for o in overrides {
        info!(var = %o.var, key = %o.dotted, "configuration key set from the environment");
    }
    Ok(Some(config))
}

/// Warns about files holding viewer secrets that other users can read: the configuration when
/// its `auth` block has users (a Digest entry is as good as the password for RTSP; a hash can be
/// attacked offline), and an HMAC token secret.
fn warn_readable_secrets(path: &Path, cfg: &HubConfig) {
    let Some(auth) = &cfg.auth else { return };
    let mut files = Vec::new();
    if !auth.users.is_empty() {
        files.push((path.to_path_buf(), "holds auth.users"));
    }
    if let Some(jwt) = &auth.jwt
        && jwt.algorithms.iter().any(|a| a.starts_with("HS"))
        && let Some(key) = &jwt.key_file
        && !std::fs::read(key).is_ok_and(|b| b.starts_with(b"-----BEGIN"))
    {
        files.push((key.clone(), "holds the token secret (auth.jwt.keyFile)"));
    }
    for (file, what) in files {
        if let Some(mode) = mediamesh_tls::readable_by_others(&file) {
            warn!(file = %file.display(), mode = %format!("{mode:o}"), "{what} and is readable by other users; chmod 600 it");
        }
    }
}

pub async fn hub(path: &Path) -> anyhow::Result<()> {
    let Some(cfg) = load::<HubConfig>(path)? else { return Ok(()) };
    warn_readable_secrets(path, &cfg);
    let mut signals = Signals::new().context("installing signal handlers")?;
    let hub = Hub::bind(cfg).await.context("starting the hub")?;
    let rtsp = hub.rtsp_url("NODE", "STREAM").map(|u| format!(", RTSP at {u}")).unwrap_or_default();
    println!("mediamesh hub ready: viewers and API at {}{rtsp}, edges at {}", hub.base_url(), hub.tunnel_addr);
    notify("READY=1\nSTATUS=serving");
    // Certificates renewed in place (cert-manager, an ACME client) are picked up like SIGHUP.
    let mut watched = Watched::new(path);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        let why = tokio::select! {
            s = signals.next() => match s {
                Signal::Stop => {
                    drain_on_stop(&hub, &mut signals).await;
                    break;
                }
                Signal::Reload => "SIGHUP",
            },
            // Drained through the API.
            () = hub.drained() => break,
            _ = tick.tick() => match watched.changed() {
                Some(_) => "a certificate or key file changed",
                None => continue,
            },
        };
        notify("RELOADING=1\nSTATUS=reloading the configuration");
        info!(why, "reloading");
        reload(path, |cfg: HubConfig| hub.reload(cfg).map(|r| (r.applied, r.needs_restart)));
        watched = Watched::new(path);
        notify("READY=1\nSTATUS=serving");
    }
    notify("STOPPING=1\nSTATUS=stopping");
    info!("stopping");
    hub.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// A hub of a cluster drains before it stops (docs/cluster.md); a second stop signal cuts the
/// drain short. A hub alone stops at once.
async fn drain_on_stop(hub: &mediamesh_hub::RunningHub, signals: &mut Signals) {
    let Ok(deadline) = hub.drain(None) else { return };
    notify("STATUS=draining");
    info!(deadline_s = deadline.as_secs_f64(), "stop signal: draining (a second one stops at once)");
    let second_stop = async { while signals.next().await != Signal::Stop {} };
    tokio::select! {
        () = hub.drained() => {}
        () = second_stop => info!("second stop signal: stopping without waiting for the drain"),
    }
}

pub async fn edge(path: &Path) -> anyhow::Result<()> {
    let Some(cfg) = load::<EdgeConfig>(path)? else { return Ok(()) };
    let mut signals = Signals::new().context("installing signal handlers")?;
    let edge = Edge::start(cfg).context("starting the edge agent")?;
    println!("mediamesh edge ready: node {node} dialling {server}", node = edge.node(), server = edge.server());
    notify("READY=1\nSTATUS=running");
    let mut current = cfg_for_renewal(path);
    let mut renew_at = current.as_ref().and_then(super::enroll::renewal_due);
    let mut failures = 0u32;
    loop {
        let renewal = async {
            match renew_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = signals.next() => {
                if s == Signal::Stop {
                    break;
                }
                notify("RELOADING=1\nSTATUS=reloading the configuration");
                reload(path, |cfg: EdgeConfig| edge.reload(cfg).map(|r| (r.applied, r.needs_restart)));
                notify("READY=1\nSTATUS=running");
            }
            () = renewal => {
                let Some(cfg) = &current else { continue };
                match super::enroll::renew(cfg).await {
                    Ok(issued) => {
                        info!(node = %issued.node, expires = issued.expires, "certificate renewed");
                        failures = 0;
                        reload(path, |cfg: EdgeConfig| edge.reload(cfg).map(|r| (r.applied, r.needs_restart)));
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let retry = Duration::from_secs(5 << failures.min(6));
                        warn!(error = %super::error_chain(&e), retry_s = retry.as_secs(), "certificate renewal failed");
                        renew_at = Some(std::time::Instant::now() + retry);
                        continue;
                    }
                }
            }
        }
        current = cfg_for_renewal(path);
        renew_at = current.as_ref().and_then(super::enroll::renewal_due);
    }
    notify("STOPPING=1\nSTATUS=stopping");
    info!("stopping");
    edge.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// The edge configuration as the file says now, for renewing its certificate.
fn cfg_for_renewal(path: &Path) -> Option<EdgeConfig> {
    config::load::<EdgeConfig>(path, &config::process_env()).ok().flatten().map(|l| l.config)
}

/// How often the hub looks at its configuration and certificate files for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The certificate and key files the configuration names, with when each last changed. The
/// configuration file itself is not watched: an edit in progress is no signal to reload.
struct Watched(Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>);

impl Watched {
    fn new(path: &Path) -> Self {
        let mut files = Vec::new();
        if let Ok(Some(l)) = config::load_with::<HubConfig>(path, &config::process_env(), false) {
            files.extend(l.config.files().into_iter().map(|(_, p)| p.to_path_buf()));
        }
        Self(
            files
                .into_iter()
                .map(|p| {
                    let t = modified(&p);
                    (p, t)
                })
                .collect(),
        )
    }

    /// The first file whose modification time moved since the last look.
    fn changed(&mut self) -> Option<std::path::PathBuf> {
        for (p, seen) in &mut self.0 {
            let now = modified(p);
            if now != *seen {
                *seen = now;
                return Some(p.clone());
            }
        }
        None
    }
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads block `T` from `path` (SIGHUP) and applies it; a configuration that does not load
/// or apply is rejected with its error, and the running one stays.
pub fn reload<T: Block, E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    apply: impl FnOnce(T) -> Result<(Vec<String>, Vec<String>), E>,
) {
    info!(file = %path.display(), "SIGHUP: reloading the configuration");
    let loaded = match config::load::<T>(path, &config::process_env()) {
        Ok(Some(l)) => l,
        Ok(None) => {
            warn!(block = T::NAME, "the reloaded file disables this block; it keeps running until it is stopped");
            return;
        }
        Err(e) => {
            error!(error = %e, "configuration reload rejected; the running configuration stays");
            return;
        }
    };
    match apply(loaded.config) {
        Ok((applied, needs_restart)) => {
            info!(changed = %list(&applied), "configuration reloaded");
            if !needs_restart.is_empty() {
                warn!(keys = %list(&needs_restart), "these changes need a restart; they keep their running values");
            }
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            error!(error = %super::error_chain(&e), "configuration reload rejected; the running configuration stays");
        }
    }
}

fn list(keys: &[String]) -> String {
    if keys.is_empty() { "nothing".into() } else { keys.join(",") }
}

/// `mediamesh check -c FILE`: loads and validates every block the file has, reads its
/// certificates and keys as the hub and the edge would, and starts nothing. Prints as
/// `nginx -t` does; the exit status says whether the file can be used.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let name = path.display();
    let result = check_blocks(path);
    match &result {
        Ok(blocks) => {
            eprintln!("mediamesh: the configuration file {name} syntax is ok ({})", blocks.join(", "));
            eprintln!("mediamesh: configuration file {name} test is successful");
        }
        Err(e) => {
            eprintln!("mediamesh: [error] {}", super::error_chain(e));
            eprintln!("mediamesh: configuration file {name} test failed");
        }
    }
    result.map(drop).map_err(|_| anyhow::Error::new(super::Reported))
}

fn check_blocks(path: &Path) -> anyhow::Result<Vec<String>> {
    let (_, file) = config::read(path)?;
    let (has_hub, has_edge) = (file.cloud.is_some(), file.edge.is_some());
    if !has_hub && !has_edge {
        anyhow::bail!("{}: no cloudDataStream or edgeDataStream block", path.display());
    }
    let env = config::process_env();
    let mut blocks = Vec::new();
    if has_hub {
        match config::load::<HubConfig>(path, &env)? {
            Some(loaded) => {
                mediamesh_hub::check_tls(&loaded.config)?;
                blocks.push(HubConfig::NAME.to_owned());
            }
            None => blocks.push(format!("{} disabled", HubConfig::NAME)),
        }
    }
    if has_edge {
        match config::load::<EdgeConfig>(path, &env)? {
            Some(loaded) => {
                mediamesh_edge::check_tls(&loaded.config)?;
                blocks.push(EdgeConfig::NAME.to_owned());
            }
            None => blocks.push(format!("{} disabled", EdgeConfig::NAME)),
        }
    }
    Ok(blocks)
}

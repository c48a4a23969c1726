//! The task that keeps this hub registered in etcd and its view of the cluster current.
//!
//! One round: grant a lease, read the whole prefix into the view, watch it from the next
//! revision, and every [`PUBLISH_INTERVAL`] write what changed of this hub's entries under the
//! lease ([`Publisher`]); renew the lease three times per TTL. Any error ends the round: the
//! registry counts as unavailable (what needs it is refused with a clear error, what this hub
//! serves goes on), and the next round, after a backoff, starts with a new lease and writes
//! everything again. The old lease is then revoked, which removes what this hub no longer
//! has. On shutdown the lease is revoked, so the hub's entries go at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use mediamesh_tunnel::backoff::{Backoff, BackoffConfig};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::publish::{Op, Publisher};
use super::records::{CatalogRecord, HubRecord, Key, Load, NodeRecord, SessionRecord};
use super::{Cluster, RegistryStatus};
use crate::registry::NodeRegistry;
use crate::session::Sessions;
use crate::session::lifecycle::Phase;

/// How often this hub's entries are compared with what it wrote.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// How often the load in the hub's record is measured.
const LOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Retries after a failed round: soon, then at most every 2 s.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Each request to etcd, and connecting, must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a round with etcd ended.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// A request failed.
    #[error("{what}: {source}")]
    Etcd {
        /// What was asked.
        what: &'static str,
        /// etcd's or the transport's error.
        source: etcd_client::Error,
    },
    /// The lease expired before it was renewed (etcd was away longer than the TTL).
    #[error("the lease expired")]
    LeaseExpired,
    /// No renewal was answered within the TTL.
    #[error("no lease renewal answered for {0:.1} s")]
    RenewalsUnanswered(f64),
    /// etcd ended the watch (its history was compacted past it, or it restarted).
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

fn etcd(what: &'static str) -> impl FnOnce(etcd_client::Error) -> RoundError {
    move |source| RoundError::Etcd { what, source }
}

/// This hub's side: what it publishes.
pub struct Local {
    /// Its nodes.
    pub registry: Arc<NodeRegistry>,
    /// Its sessions.
    pub sessions: Arc<Sessions>,
    load: LoadSampler,
}

impl Local {
    /// This hub's nodes and sessions.
    pub fn new(registry: Arc<NodeRegistry>, sessions: Arc<Sessions>) -> Self {
        Self { registry, sessions, load: LoadSampler::default() }
    }

    /// The entries this hub should have in the registry now.
    fn desired(&mut self, cluster: &Cluster, now: Instant) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |key: Key, value: String| {
            out.insert(cluster.keys.key(&key), value);
        };
        let sessions = self.sessions.snapshot();
        let nodes = self.registry.snapshot();
        let load = self.load.sample(now, &sessions, nodes.len());
        let hub = HubRecord {
            name: cluster.name.clone(),
            stream_url: cluster.stream_url.clone(),
            tunnel_address: cluster.tunnel_address.clone(),
            state: cluster.state(),
            load,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        put(Key::Hub(cluster.name.clone()), to_json(&hub));
        for (node, entry) in nodes {
            let catalog = entry
                .catalog
                .iter()
                .map(|c| CatalogRecord { name: c.name.clone(), description: c.description.clone() })
                .collect();
            let record = NodeRecord { hub: cluster.name.clone(), catalog };
            put(Key::Node { node, hub: cluster.name.clone() }, to_json(&record));
        }
        for s in sessions.iter().filter(|s| s.phase() != Phase::Closed) {
            let record = SessionRecord {
                hub: cluster.name.clone(),
                session: s.id,
                phase: s.phase().name().into(),
                viewers: s.viewer_count(),
            };
            let key =
                Key::Session { node: s.key.node.clone(), stream: s.key.stream.clone(), hub: cluster.name.clone() };
            put(key, to_json(&record));
        }
        out
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Records are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// Measures the hub's load between samples: rates from the sessions' counters, CPU from
/// the process's resource usage.
#[derive(Debug, Default)]
struct LoadSampler {
    last: Option<(Instant, u64, u64, u64, Duration)>,
    load: Load,
}

impl LoadSampler {
    fn sample(&mut self, now: Instant, sessions: &[Arc<crate::session::Session>], edges: usize) -> Load {
        self.load.streams = sessions.len();
        self.load.viewers = sessions.iter().map(|s| s.viewer_count()).sum();
        self.load.edges = edges;
        if self.last.is_some_and(|(at, ..)| now.saturating_duration_since(at) < LOAD_INTERVAL) {
            return self.load;
        }
        let bytes_in: u64 = sessions.iter().map(|s| s.stats.bytes_in.get()).sum();
        let frames_in: u64 = sessions.iter().map(|s| s.stats.frames_in.get()).sum();
        let bytes_out: u64 = sessions.iter().map(|s| s.bytes_out()).sum();
        let cpu = cpu_time();
        if let Some((at, b_in, f_in, b_out, c)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
            // Sessions that closed take their counters with them: a drop counts as zero.
            let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs) as u64;
            self.load.bits_in_per_sec = rate(bytes_in, b_in) * 8;
            self.load.bits_out_per_sec = rate(bytes_out, b_out) * 8;
            self.load.frames_in_per_sec = rate(frames_in, f_in);
            self.load.cpu_cores = (cpu.saturating_sub(c).as_secs_f64() / secs * 100.0).round() / 100.0;
        }
        self.last = Some((now, bytes_in, frames_in, bytes_out, cpu));
        self.load
    }
}

/// CPU time this process used, user and system.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
        };
        tv(u.user_time()) + tv(u.system_time())
    })
}

/// Keeps the hub registered until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, mut local: Local, shutdown: CancellationToken) {
    let Ok(config) = BackoffConfig::try_new(RETRY_INITIAL, RETRY_MAX, Duration::from_secs(10)) else {
        return;
    };
    let mut backoff = Backoff::new(config, u64::from(std::process::id()));
    let mut publisher = Publisher::default();
    let mut old_lease: Option<i64> = None;
    loop {
        let started = Instant::now();
        backoff.connected(started);
        let result = tokio::select! {
            r = round(&cluster, &mut local, &mut publisher, &mut old_lease, &shutdown) => r,
            () = shutdown.cancelled() => Ok(()),
        };
        let Err(e) = result else {
            if let Some(id) = old_lease {
                revoke(&cluster, id).await;
            }
            return;
        };
        backoff.disconnected(Instant::now());
        publisher.forget();
        let error = e.to_string();
        let since = match cluster.status() {
            RegistryStatus::Unavailable { since, .. } => since,
            _ => {
                warn!(%error, "the cluster registry is unavailable; serving what this hub has, retrying");
                Instant::now()
            }
        };
        cluster.set_status(RegistryStatus::Unavailable { since, error });
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {
                if let Some(id) = old_lease {
                    revoke(&cluster, id).await;
                }
                return;
            }
        }
    }
}

async fn connect(cluster: &Cluster) -> Result<Client, RoundError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(cluster.keepalive_interval(), REQUEST_TIMEOUT);
    Client::connect(&cluster.settings.etcd, Some(options)).await.map_err(etcd("connect"))
}

/// Revokes a lease on the way out: this hub's entries go at once instead of at its expiry.
async fn revoke(cluster: &Cluster, id: i64) {
    let Ok(mut client) = connect(cluster).await else { return };
    match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(id)).await {
        Ok(Ok(_)) => info!(hub = %cluster.name, "left the cluster registry"),
        Ok(Err(e)) => debug!(error = %e, "lease not revoked"),
        Err(_) => debug!("lease revocation timed out"),
    }
}

async fn round(
    cluster: &Cluster,
    local: &mut Local,
    publisher: &mut Publisher,
    old_lease: &mut Option<i64>,
    shutdown: &CancellationToken,
) -> Result<(), RoundError> {
    let mut client = connect(cluster).await?;
    let ttl = cluster.settings.lease_ttl.get().as_secs() as i64;
    let lease = client.lease_grant(ttl, None).await.map_err(etcd("grant a lease"))?.id();
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease).await.map_err(etcd("renew the lease"))?;
    // The view: everything now, then every change after it.
    let all = cluster.keys.all();
    let snapshot = client.get(all.as_str(), Some(GetOptions::new().with_prefix())).await.map_err(etcd("read"))?;
    let revision = snapshot.header().map_or(0, |h| h.revision());
    cluster.with_view(|view| {
        view.clear();
        for kv in snapshot.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Err(e) = view.apply(&cluster.keys, &key, Some(kv.value()), kv.mod_revision()) {
                warn!(error = %e, "registry entry ignored");
            }
        }
    });
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watch = client.watch(all.as_str(), Some(options)).await.map_err(etcd("watch"))?;
    publish(cluster, local, publisher, &mut client, lease).await?;
    if let Some(old) = old_lease.replace(lease)
        && old != lease
    {
        // What this hub wrote before is written again under the new lease; what it no
        // longer has goes with the old one.
        let _ = client.lease_revoke(old).await;
    }
    cluster.set_status(RegistryStatus::Available);
    info!(hub = %cluster.name, entries = publisher.len(), ttl_s = ttl, "registered in the cluster registry");
    let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(cluster.keepalive_interval());
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => publish(cluster, local, publisher, &mut client, lease).await?,
            _ = renew.tick() => {
                let unanswered = last_renewed.elapsed();
                if unanswered > cluster.settings.lease_ttl.get() {
                    return Err(RoundError::RenewalsUnanswered(unanswered.as_secs_f64()));
                }
                keeper.keep_alive().await.map_err(etcd("renew the lease"))?;
            }
            r = renewals.message() => match r.map_err(etcd("renew the lease"))? {
                Some(resp) if resp.ttl() > 0 => last_renewed = Instant::now(),
                Some(_) => return Err(RoundError::LeaseExpired),
                None => return Err(RoundError::WatchEnded("the lease renewal stream closed".into())),
            },
            r = watch.message() => {
                let Some(resp) = r.map_err(etcd("watch"))? else {
                    return Err(RoundError::WatchEnded("the stream closed".into()));
                };
                if resp.canceled() {
                    return Err(RoundError::WatchEnded(format!("canceled at compaction revision {}", resp.compact_revision())));
                }
                let mut arrived = Vec::new();
                cluster.with_view(|view| {
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                        if let Err(e) = view.apply(&cluster.keys, &key, value, kv.mod_revision()) {
                            warn!(error = %e, "registry entry ignored");
                        }
                        if let (Some(_), Some(Key::Node { node, hub })) = (value, cluster.keys.parse(&key))
                            && hub != cluster.name
                        {
                            arrived.push(node);
                        }
                    }
                });
                // A node of this hub's sessions that connected to another hub: the sessions
                // waiting for it can have it from there.
                for node in arrived {
                    local.sessions.node_elsewhere(&node);
                }
            }
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Writes what changed of this hub's entries.
async fn publish(
    cluster: &Cluster,
    local: &mut Local,
    publisher: &mut Publisher,
    client: &mut Client,
    lease: i64,
) -> Result<(), RoundError> {
    let desired = local.desired(cluster, Instant::now());
    for op in publisher.plan(&desired) {
        match &op {
            Op::Put { key, value } => {
                let options = PutOptions::new().with_lease(lease);
                client.put(key.as_str(), value.as_str(), Some(options)).await.map_err(etcd("write"))?;
            }
            Op::Delete { key } => {
                client.delete(key.as_str(), None).await.map_err(etcd("delete"))?;
            }
        }
        publisher.done(op);
    }
    Ok(())
}

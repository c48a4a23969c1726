//! The `cluster` block: hubs that share an etcd registry.

use mediamesh_tunnel::settings::Seconds;
use serde::{Deserialize, Serialize};

/// Several hubs sharing a registry in etcd. Without this block a hub runs alone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSettings {
    /// etcd's client URLs (`http://etcd-0.etcd:2379`); the client spreads over them.
    pub etcd: Vec<String>,
    /// The prefix of every key this cluster writes. Default `/mediamesh`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long a hub's entries outlive it if it stops renewing them (it crashed, or lost
    /// etcd). Default 5 s.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Seconds,
    /// The stream port's base URL as other hubs and browsers reach it
    /// (`https://hub-a.example.com:10005`). Default: the listen address and port.
    #[serde(default)]
    pub advertise_stream_url: Option<String>,
    /// The tunnel port as other hubs and edges reach it (`hub-a.example.com:10006`). Default:
    /// the listen address and port.
    #[serde(default)]
    pub advertise_tunnel_address: Option<String>,
    /// How long a draining hub (SIGTERM, `POST /api/v1/hub/drain`) keeps its viewers at most
    /// before it ends them and exits. Default 30 s.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline: Seconds,
    /// How often a hub with more than its share of the cluster's edges sends some to the hub
    /// with the fewest (`docs/cluster.md`); 0 turns it off. Default 10 s.
    #[serde(default = "default_rebalance_interval")]
    pub rebalance_interval: Seconds,
}

impl ClusterSettings {
    /// A cluster on these etcd URLs, with the defaults.
    pub fn new(etcd: Vec<String>) -> Self {
        Self {
            etcd,
            prefix: default_prefix(),
            lease_ttl: default_lease_ttl(),
            advertise_stream_url: None,
            advertise_tunnel_address: None,
            drain_deadline: default_drain_deadline(),
            rebalance_interval: default_rebalance_interval(),
        }
    }

    /// Every optional key set, for the configuration schema.
    pub fn schema() -> Self {
        Self {
            advertise_stream_url: Some(String::new()),
            advertise_tunnel_address: Some(String::new()),
            ..Self::new(vec![String::new()])
        }
    }

    /// Checks what types cannot: `(key below cluster, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.etcd.is_empty() {
            return Err(("etcd".into(), "needs at least one etcd URL (http://host:2379)".into()));
        }
        for url in &self.etcd {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(("etcd".into(), format!("{url:?} is not an etcd client URL (http://host:2379)")));
            }
            if url.starts_with("https://") {
                return Err((
                    "etcd".into(),
                    "etcd over TLS is not supported yet; use http:// on a private network".into(),
                ));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(("prefix".into(), format!("{:?} must start with '/' and not end with one", self.prefix)));
        }
        if self.drain_deadline.get() > std::time::Duration::from_secs(24 * 3600) {
            return Err(("drainDeadline".into(), "must be at most a day".into()));
        }
        if !self.rebalance_interval.get().is_zero() && self.rebalance_interval.get() < self.lease_ttl.get() {
            return Err((
                "rebalanceInterval".into(),
                "must be 0 (off) or at least leaseTtl: a round must see the last round's moves in the loads".into(),
            ));
        }
        let ttl = self.lease_ttl.get();
        if ttl < std::time::Duration::from_secs(2) || ttl > std::time::Duration::from_secs(300) {
            return Err(("leaseTtl".into(), "must be 2 to 300 seconds (etcd leases count whole seconds)".into()));
        }
        Ok(())
    }
}

fn default_prefix() -> String {
    "/mediamesh".into()
}

fn default_lease_ttl() -> Seconds {
    Seconds::new(5)
}

fn default_rebalance_interval() -> Seconds {
    Seconds::new(10)
}

fn default_drain_deadline() -> Seconds {
    Seconds::new(30)
}

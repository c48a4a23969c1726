//! Hubs that share a registry in etcd (`docs/cluster.md`).
//!
//! Each hub registers itself, the nodes connected to it and the sessions it runs, under a
//! lease it keeps renewing ([`etcd`]); a hub that dies loses its entries when the lease
//! expires. Each hub also watches the whole prefix, so its [`ClusterView`] shows every hub,
//! node and session of the cluster. The policy parts ([`records`], [`view`], [`publish`]) do
//! no I/O; [`etcd`] is the task that talks to etcd.
//!
//! Without a `cluster` block none of this runs and a hub is alone, as before.

pub mod balance;
pub mod drain;
pub mod etcd;
pub mod publish;
pub mod records;
pub mod relay;
pub mod view;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use self::records::{HubState, Keys};
use self::view::ClusterView;
use crate::config::ClusterSettings;

/// Whether the registry can be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryStatus {
    /// Not reached yet since the hub started.
    Connecting,
    /// Registered, lease renewed, view current.
    Available,
    /// etcd is unreachable (or refused) since `since`: what this hub serves goes on; what
    /// needs the rest of the cluster is refused.
    Unavailable {
        /// Since when.
        since: Instant,
        /// The last error.
        error: String,
    },
}

/// Why something that needs the registry is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// etcd cannot be reached.
    #[error(
        "the cluster registry (etcd) is unreachable ({error}) for {secs:.0} s; streams of edges on other hubs cannot be found meanwhile"
    )]
    RegistryUnavailable {
        /// The last error.
        error: String,
        /// For how long.
        secs: f64,
    },
    /// Not registered yet.
    #[error("the hub is still joining the cluster registry")]
    Joining,
}

/// This hub's membership of a cluster.
#[derive(Debug)]
pub struct Cluster {
    /// This hub's name.
    pub name: String,
    /// The settings.
    pub settings: ClusterSettings,
    /// Its keys.
    pub keys: Keys,
    /// The stream port's URL others reach.
    pub stream_url: String,
    /// The tunnel port's address others reach.
    pub tunnel_address: String,
    view: Mutex<ClusterView>,
    status: Mutex<RegistryStatus>,
    state: Mutex<HubState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section replaces or reads a value whole; a poisoned one is consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// Membership of `settings`' cluster as `name`, reachable at these addresses.
    pub fn new(name: String, settings: ClusterSettings, stream_url: String, tunnel_address: String) -> Self {
        Self {
            keys: Keys::new(&settings.prefix),
            name,
            settings,
            stream_url,
            tunnel_address,
            view: Mutex::default(),
            status: Mutex::new(RegistryStatus::Connecting),
            state: Mutex::new(HubState::Initialized),
        }
    }

    /// A copy of the cluster as last seen.
    pub fn view(&self) -> ClusterView {
        lock(&self.view).clone()
    }

    /// Runs `f` on the view.
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&mut ClusterView) -> R) -> R {
        f(&mut lock(&self.view))
    }

    /// Whether the registry is usable.
    pub fn status(&self) -> RegistryStatus {
        lock(&self.status).clone()
    }

    pub(crate) fn set_status(&self, status: RegistryStatus) {
        *lock(&self.status) = status;
    }

    /// The view, if the registry is usable now; else why not.
    pub fn current_view(&self) -> Result<ClusterView, ClusterError> {
        match self.status() {
            RegistryStatus::Available => Ok(self.view()),
            RegistryStatus::Connecting => Err(ClusterError::Joining),
            RegistryStatus::Unavailable { since, error } => {
                Err(ClusterError::RegistryUnavailable { error, secs: since.elapsed().as_secs_f64() })
            }
        }
    }

    /// This hub's lifecycle state.
    pub fn state(&self) -> HubState {
        *lock(&self.state)
    }

    /// Moves this hub to `state`.
    pub fn set_state(&self, state: HubState) {
        *lock(&self.state) = state;
    }

    /// How often this hub renews its lease: three times per TTL, so one lost renewal is not
    /// the end of it.
    pub fn keepalive_interval(&self) -> Duration {
        self.settings.lease_ttl.get() / 3
    }
}

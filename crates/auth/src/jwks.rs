//! Token keys from a JWKS URL (RFC 7517): reading a key set, when to fetch it ([`Schedule`],
//! driven with `now`), and the cache verifiers read while the hub's fetcher fills it.
//!
//! The set is fetched at start, every `jwksRefresh`, and when a token names a key id the set
//! does not hold (a provider that rotated its key), but not more often than [`MIN_GAP`]: tokens
//! with made-up key ids must not turn the hub into a load generator against the provider. A
//! failed fetch keeps the keys the set had: tokens signed with them still pass.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest key set read.
pub const MAX_BYTES: usize = 1 << 20;
/// Most keys kept from one set.
pub const MAX_KEYS: usize = 64;
/// Fetches are at least this far apart, whatever asks for them.
pub const MIN_GAP: Duration = Duration::from_secs(10);
/// How long a request with an unknown key id waits for the fetch it caused.
pub const WAIT_FOR_FETCH: Duration = Duration::from_secs(3);

/// One key of the set.
#[derive(Clone)]
pub struct Key {
    /// `kid`, if the set names it.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("family", &self.key.family()).finish()
    }
}

/// Why a key set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Over [`MAX_BYTES`].
    #[error("the key set is larger than {MAX_BYTES} bytes")]
    TooLarge,
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Json(String),
    /// No key the allowed algorithms can use.
    #[error("no signing key in the set fits the allowed algorithms")]
    NoUsableKey,
}

/// The signing keys of a JWKS document that one of `algorithms` can use.
pub fn parse(bytes: &[u8], algorithms: &[Algorithm]) -> Result<Vec<Key>, JwksError> {
    if bytes.len() > MAX_BYTES {
        return Err(JwksError::TooLarge);
    }
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Json(e.to_string()))?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            algorithms.iter().any(|a| a.family() == key.family()).then(|| Key { kid: jwk.common.key_id.clone(), key })
        })
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

/// When to fetch: at start, every `refresh` after a success, sooner after a failure (doubling
/// from [`MIN_GAP`] up to `refresh`), and soon when asked ([`Schedule::want`]); never twice
/// within [`MIN_GAP`], never two at once.
#[derive(Debug)]
pub struct Schedule {
    refresh: Duration,
    due: Instant,
    last_start: Option<Instant>,
    in_flight: bool,
    failures: u32,
}

impl Schedule {
    /// A schedule whose first fetch is due at `now`.
    pub fn new(refresh: Duration, now: Instant) -> Self {
        Self { refresh: refresh.max(MIN_GAP), due: now, last_start: None, in_flight: false, failures: 0 }
    }

    /// A fetch is wanted (a token named an unknown key): as soon as the gap allows. Returns
    /// whether one will start within [`MIN_GAP`] of `now` (a caller may wait for it).
    pub fn want(&mut self, now: Instant) -> bool {
        let earliest = self.last_start.map_or(now, |t| (t + MIN_GAP).max(now));
        self.due = self.due.min(earliest);
        self.in_flight || earliest <= now
    }

    /// `true` if a fetch should start now; it is then in flight until [`Schedule::done`].
    pub fn poll_start(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.due || self.last_start.is_some_and(|t| now < t + MIN_GAP) {
            return false;
        }
        self.in_flight = true;
        self.last_start = Some(now);
        true
    }

    /// The fetch started last ended at `now`, well or not.
    pub fn done(&mut self, ok: bool, now: Instant) {
        self.in_flight = false;
        if ok {
            self.failures = 0;
            self.due = now + self.refresh;
        } else {
            self.failures = self.failures.saturating_add(1);
            let backoff = MIN_GAP.saturating_mul(1 << self.failures.min(16).saturating_sub(1)).min(self.refresh);
            self.due = now + backoff;
        }
    }

    /// When [`Schedule::poll_start`] should be called next (`None` while a fetch runs).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        Some(match self.last_start {
            Some(t) => self.due.max(t + MIN_GAP),
            None => self.due,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    keys: Arc<Vec<Key>>,
    error: Option<String>,
    generation: u64,
}

/// The keys of one JWKS URL, shared by the verifiers (which read it and ask for fetches) and
/// the fetcher (which fills it).
#[derive(Debug)]
pub struct JwksCache {
    url: String,
    state: Mutex<State>,
    schedule: Mutex<Schedule>,
    /// Wakes the fetcher when a fetch is wanted.
    wanted: tokio::sync::Notify,
    /// The generation after each fetch, for requests waiting on one.
    fetched: tokio::sync::watch::Sender<u64>,
}

impl JwksCache {
    /// An empty cache for `url`, its first fetch due now.
    pub fn new(url: &str, refresh: Duration) -> Self {
        Self {
            url: url.to_owned(),
            state: Mutex::default(),
            schedule: Mutex::new(Schedule::new(refresh, Instant::now())),
            wanted: tokio::sync::Notify::new(),
            fetched: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys now.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.lock().keys.clone()
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetch schedule (for the fetcher).
    pub fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a fetch's outcome: new keys, or the error (keeping the keys there were).
    pub fn store(&self, outcome: Result<Vec<Key>, String>) {
        let generation = {
            let mut s = self.lock();
            match outcome {
                Ok(keys) => {
                    s.keys = Arc::new(keys);
                    s.error = None;
                }
                Err(e) => s.error = Some(e),
            }
            s.generation += 1;
            s.generation
        };
        self.fetched.send_replace(generation);
    }

    /// Waits until a fetch is wanted (for the fetcher).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Asks for a fetch and waits up to [`WAIT_FOR_FETCH`] for it, if one can happen soon.
    /// Returns whether a fetch ended meanwhile.
    pub async fn refresh(&self) -> bool {
        let mut rx = self.fetched.subscribe();
        let soon = self.schedule().want(Instant::now());
        self.wanted.notify_one();
        if !soon {
            return false;
        }
        tokio::time::timeout(WAIT_FOR_FETCH, rx.changed()).await.is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_JWKS: &str = r#"{"keys":[
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a","use":"sig"},
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
        {"kty":"oct","k":"c2VjcmV0","kid":"h"}
    ]}"#;

    #[test]
    fn a_set_gives_its_signing_keys_for_the_allowed_algorithms() {
        let keys = parse(ED_JWKS.as_bytes(), &[Algorithm::EdDSA]).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), vec![Some("a")]);
        assert_eq!(parse(ED_JWKS.as_bytes(), &[Algorithm::RS256]).unwrap_err(), JwksError::NoUsableKey);
        assert!(matches!(parse(b"{\"keys\": 3}", &[Algorithm::EdDSA]), Err(JwksError::Json(_))));
        assert_eq!(parse(&vec![b' '; MAX_BYTES + 1], &[Algorithm::EdDSA]).unwrap_err(), JwksError::TooLarge);
    }

    #[test]
    fn fetches_follow_the_refresh_back_off_on_failure_and_never_crowd() {
        let t0 = Instant::now();
        let refresh = Duration::from_secs(300);
        let mut s = Schedule::new(refresh, t0);
        assert!(s.poll_start(t0), "the first fetch is due at once");
        assert!(!s.poll_start(t0), "one at a time");
        assert_eq!(s.poll_timeout(), None);
        s.done(true, t0 + Duration::from_secs(1));
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(301)));
        // A token names an unknown key 5 s later: the fetch waits for the gap.
        assert!(!s.want(t0 + Duration::from_secs(5)), "not within the gap");
        assert_eq!(s.poll_timeout(), Some(t0 + MIN_GAP));
        assert!(!s.poll_start(t0 + Duration::from_secs(9)));
        assert!(s.poll_start(t0 + MIN_GAP));
        // Failures back off: 10 s, 20 s, 40 s, … up to the refresh.
        let mut now = t0 + MIN_GAP;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            s.done(false, now);
            let next = s.poll_timeout().unwrap();
            gaps.push((next - now).as_secs());
            now = next;
            assert!(s.poll_start(now));
        }
        assert_eq!(gaps, vec![10, 20, 40, 80, 160, 300, 300]);
        s.done(true, now);
        assert_eq!(s.poll_timeout(), Some(now + refresh));
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_keys() {
        let cache = JwksCache::new("https://id.example/jwks", Duration::from_secs(300));
        cache.store(Ok(parse(ED_JWKS.as_bytes(), &[Algorithm::EdDSA]).unwrap()));
        cache.store(Err("connection refused".into()));
        assert_eq!(cache.keys().len(), 1);
        assert_eq!(cache.last_error().as_deref(), Some("connection refused"));
    }
}

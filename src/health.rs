//! Health and readiness: what each secret's handle can say about the value it serves, and one
//! verdict over the secrets a service cannot work without, for a readiness probe.
//!
//! [`Readiness`] holds the handles a service declares required, each under a name of the
//! service's choosing (the name, not the secret id, is what a probe's answer shows). Its
//! [`check`](Readiness::check) reads each handle's status (lock-free, no store call) and
//! answers with a [`ReadinessReport`]: ready or not, a reason a person can read, and each
//! secret's [`SecretHealth`]. It fits behind any HTTP framework's probe: answer 200 when
//! [`is_ready`](ReadinessReport::is_ready), else 503, with the report's JSON as the body. It
//! never carries a value; errors appear as their kind and message, which never quote one.
//!
//! | a required secret is | verdict |
//! |---|---|
//! | fresh | ready |
//! | stale (store unreachable or throttling), within its cache's `max_stale` | ready, degraded |
//! | stale past `max_stale` | **not ready**: the cache no longer vouches for it |
//! | failing (the store says gone or denied) | ready, degraded: the value held may still work |
//! | decode failed (a newer version does not decode) | ready, degraded: the older one serves |
//! | lease expired | **not ready**: those credentials no longer work |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> credswap::Result<()> {
//! use std::sync::Arc;
//! use credswap::health::Readiness;
//! use credswap::{MemoryProvider, SecretCache};
//!
//! let store = Arc::new(MemoryProvider::new());
//! let _ = store.set("prod/orders/db", r#"{"username": "app", "password": "pw"}"#);
//! let cache = SecretCache::builder(store).build()?;
//! let db = cache.handle::<serde_json::Value>("prod/orders/db").await?;
//!
//! let readiness = Readiness::new().require("orders-db", &db);
//! let report = readiness.check();
//! assert!(report.is_ready());
//! assert_eq!(report.reason(), "ready: orders-db fresh");
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::ErrorKind;
use crate::handle::{HandleStatus, SecretHandle};
use crate::time::Instant;

/// What one secret's handle says about the value it serves, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SecretHealth {
    /// The name the service gave the secret.
    pub name: Arc<str>,
    /// The version served.
    pub version: String,
    /// The state, with its details.
    pub state: HealthState,
    /// Time left on the lease of the value served (leased secrets only).
    #[serde(rename = "lease_remaining_seconds", serialize_with = "seconds_opt")]
    pub lease_remaining: Option<Duration>,
}

/// A [`HandleStatus`] seen from a probe: how long each state has lasted instead of when it began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// The store confirmed the version at its last check.
    Fresh,
    /// The store could not be asked for this long: last-known-good is served.
    Stale {
        /// How long the store has been failing.
        #[serde(rename = "seconds", serialize_with = "seconds")]
        lasted: Duration,
        /// Its last error's kind.
        #[serde(serialize_with = "kind_name")]
        kind: ErrorKind,
        /// Its last error, in words (ids and codes, never a value).
        error: String,
    },
    /// The store has answered for this long that the secret is gone or access is denied.
    Failing {
        /// How long.
        #[serde(rename = "seconds", serialize_with = "seconds")]
        lasted: Duration,
        /// The answer's kind.
        #[serde(serialize_with = "kind_name")]
        kind: ErrorKind,
        /// The answer, in words.
        error: String,
    },
    /// The lease of the value served ended this long ago.
    LeaseExpired {
        /// How long ago.
        #[serde(rename = "seconds_ago", serialize_with = "seconds")]
        ago: Duration,
    },
    /// A newer version could not be decoded; an older one is served.
    DecodeFailed {
        /// The version that could not be decoded.
        version: String,
        /// Why (never its content).
        error: String,
    },
}

fn kind_name<S: serde::Serializer>(kind: &ErrorKind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.as_str())
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn seconds_opt<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

/// How a [`ReadinessReport`] judges the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Every required secret is fresh.
    Ready,
    /// Serving, but some secret is not confirmed by the store (see the reason).
    Degraded,
    /// Some required secret cannot be trusted to work: take the instance out of rotation.
    NotReady,
}

/// The answer of [`Readiness::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReadinessReport {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for a person: the verdict and each secret that is not fresh.
    pub reason: String,
    /// Each required secret, in the order they were declared.
    pub secrets: Vec<SecretHealth>,
}

impl ReadinessReport {
    /// Whether the service may take traffic (ready or degraded).
    pub fn is_ready(&self) -> bool {
        self.verdict != Verdict::NotReady
    }

    /// Why, for a person.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The report as JSON (what a probe's body can be).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// What [`Readiness`] needs of a handle, whatever it decodes to.
trait Watched: Send + Sync {
    fn health(&self, name: &Arc<str>, now: Instant) -> (SecretHealth, Verdict);
}

impl<T: Send + Sync + 'static> Watched for SecretHandle<T> {
    fn health(&self, name: &Arc<str>, now: Instant) -> (SecretHealth, Verdict) {
        let snapshot = self.load_full();
        let lease_remaining = snapshot
            .lease_end()
            .map(|end| end.saturating_duration_since(now));
        let words = |error: &crate::Error| error.to_string();
        let (state, verdict) = match self.status() {
            HandleStatus::Fresh => (HealthState::Fresh, Verdict::Ready),
            HandleStatus::Stale { error, since } => {
                let lasted = now.saturating_duration_since(since);
                let verdict = if lasted > self.cache().max_stale() {
                    Verdict::NotReady
                } else {
                    Verdict::Degraded
                };
                let state = HealthState::Stale {
                    lasted,
                    kind: error.kind(),
                    error: words(&error),
                };
                (state, verdict)
            }
            HandleStatus::Failing { error, since } => {
                let state = HealthState::Failing {
                    lasted: now.saturating_duration_since(since),
                    kind: error.kind(),
                    error: words(&error),
                };
                (state, Verdict::Degraded)
            }
            HandleStatus::LeaseExpired { at } => {
                let state = HealthState::LeaseExpired {
                    ago: now.saturating_duration_since(at),
                };
                (state, Verdict::NotReady)
            }
            HandleStatus::DecodeFailed { error, version } => {
                let state = HealthState::DecodeFailed {
                    version: version.to_string(),
                    error: words(&error),
                };
                (state, Verdict::Degraded)
            }
        };
        let health = SecretHealth {
            name: Arc::clone(name),
            version: snapshot.version().id.to_string(),
            state,
            lease_remaining,
        };
        (health, verdict)
    }
}

/// The secrets a service cannot work without, and the verdict over them. See the
/// [module](self) docs.
#[derive(Clone, Default)]
pub struct Readiness {
    required: Vec<(Arc<str>, Arc<dyn Watched>)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.required.iter().map(|(name, _)| &**name).collect();
        f.debug_struct("Readiness")
            .field("required", &names)
            .finish()
    }
}

impl Readiness {
    /// No required secrets yet (a service with none is ready).
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Requires the secret behind `handle`, shown as `name`.
    pub fn require<T: Send + Sync + 'static>(
        mut self,
        name: impl Into<Arc<str>>,
        handle: &SecretHandle<T>,
    ) -> Self {
        self.required.push((name.into(), Arc::new(handle.clone())));
        self
    }

    /// The verdict now, from each handle's status: no store call, no lock, no waiting.
    pub fn check(&self) -> ReadinessReport {
        let now = Instant::now();
        let mut verdict = Verdict::Ready;
        let mut secrets = Vec::with_capacity(self.required.len());
        let mut notes = Vec::new();
        for (name, handle) in &self.required {
            let (health, judged) = handle.health(name, now);
            verdict = match (verdict, judged) {
                (Verdict::NotReady, _) | (_, Verdict::NotReady) => Verdict::NotReady,
                (Verdict::Degraded, _) | (_, Verdict::Degraded) => Verdict::Degraded,
                _ => Verdict::Ready,
            };
            notes.push(describe(&health));
            secrets.push(health);
        }
        let head = match verdict {
            Verdict::Ready => "ready",
            Verdict::Degraded => "ready, degraded",
            Verdict::NotReady => "not ready",
        };
        let reason = if notes.is_empty() {
            format!("{head}: no required secrets")
        } else {
            format!("{head}: {}", notes.join("; "))
        };
        ReadinessReport {
            verdict,
            reason,
            secrets,
        }
    }
}

/// One secret's state, in words.
fn describe(health: &SecretHealth) -> String {
    let mut out = String::new();
    let _ = match &health.state {
        HealthState::Fresh => write!(out, "{} fresh", health.name),
        HealthState::Stale { lasted, error, .. } => write!(
            out,
            "{} stale for {} (the store fails: {error})",
            health.name,
            human(*lasted)
        ),
        HealthState::Failing { lasted, error, .. } => write!(
            out,
            "{} failing for {} (the store answers: {error}); serving the last value",
            health.name,
            human(*lasted)
        ),
        HealthState::LeaseExpired { ago } => write!(
            out,
            "{} lease expired {} ago; its credentials no longer work",
            health.name,
            human(*ago)
        ),
        HealthState::DecodeFailed { version, error } => write!(
            out,
            "{} version {version} does not decode ({error}); serving the previous one",
            health.name
        ),
    };
    if let (HealthState::Fresh, Some(left)) = (&health.state, health.lease_remaining) {
        let _ = write!(out, ", lease ends in {}", human(left));
    }
    out
}

/// A duration in whole seconds, minutes and hours, as a person reads it.
fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::provider::SecretProvider;
    use crate::value::{Lease, SecretValue, Selector, Version, Versioned};
    use crate::{Error, MemoryProvider, SecretCache};

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Creds {
        username: String,
    }

    fn cache(store: Arc<dyn SecretProvider>) -> SecretCache {
        SecretCache::builder(store)
            .ttl(Duration::from_secs(60))
            .max_stale(Duration::from_secs(600))
            .build()
            .unwrap()
    }

    fn memory() -> Arc<MemoryProvider> {
        let store = Arc::new(MemoryProvider::new());
        let _ = store.set("db", r#"{"username": "app", "password": "pw-never-shown"}"#);
        let _ = store.set(
            "api",
            r#"{"username": "svc", "password": "pw-never-shown"}"#,
        );
        store
    }

    /// Lets the handles' watchers run their loads at the refresh points passed.
    async fn pass(by: Duration) {
        tokio::time::advance(by).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_secrets_make_a_ready_service() {
        let store = memory();
        let cache = cache(store);
        let db = cache.handle::<Creds>("db").await.unwrap();
        let api = cache.handle::<Creds>("api").await.unwrap();
        let report = Readiness::new()
            .require("db", &db)
            .require("api", &api)
            .check();
        assert_eq!(report.verdict, Verdict::Ready);
        assert_eq!(report.reason(), "ready: db fresh; api fresh");
        assert_eq!(report.secrets.len(), 2);
        assert_eq!(
            Readiness::new().check().reason(),
            "ready: no required secrets"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_degrades_until_the_stale_bound_then_the_service_is_not_ready() {
        let store = memory();
        let cache = cache(Arc::clone(&store) as _);
        let db = cache.handle::<Creds>("db").await.unwrap();
        let readiness = Readiness::new().require("orders-db", &db);
        store.fail_with(Some(Error::transient("db", "store unreachable")));
        pass(Duration::from_secs(61)).await;
        let report = readiness.check();
        assert_eq!(report.verdict, Verdict::Degraded, "{}", report.reason());
        assert!(report.is_ready());
        assert!(
            report
                .reason()
                .starts_with("ready, degraded: orders-db stale for "),
            "{}",
            report.reason()
        );
        assert!(matches!(
            &report.secrets[0].state,
            HealthState::Stale {
                kind: ErrorKind::Transient,
                ..
            }
        ));
        pass(Duration::from_secs(660)).await;
        let report = readiness.check();
        assert_eq!(report.verdict, Verdict::NotReady, "{}", report.reason());
        assert!(!report.is_ready());
        assert!(
            report
                .reason()
                .starts_with("not ready: orders-db stale for 1"),
            "{}",
            report.reason()
        );
        let json = report.to_json();
        assert!(json.contains(r#""verdict":"not_ready""#), "{json}");
        assert!(
            json.contains(r#""state":"stale""#) && json.contains(r#""kind":"transient""#),
            "{json}"
        );
        assert!(!json.contains("pw-never-shown") && !report.reason().contains("pw-never-shown"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_denied_or_undecodable_secret_degrades_and_says_which() {
        let store = memory();
        let cache = cache(Arc::clone(&store) as _);
        let db = cache.handle::<Creds>("db").await.unwrap();
        let api = cache.handle::<Creds>("api").await.unwrap();
        let readiness = Readiness::new().require("db", &db).require("api", &api);
        let _ = store.set("api", r#"{"user": "pw-never-shown"}"#);
        pass(Duration::from_secs(61)).await;
        let _ = store.remove("db");
        pass(Duration::from_secs(61)).await;
        let report = readiness.check();
        assert_eq!(report.verdict, Verdict::Degraded, "{}", report.reason());
        assert!(
            matches!(
                &report.secrets[0].state,
                HealthState::Failing {
                    kind: ErrorKind::NotFound,
                    ..
                }
            ),
            "{:?}",
            report.secrets[0]
        );
        assert!(
            matches!(&report.secrets[1].state, HealthState::DecodeFailed { .. }),
            "{:?}",
            report.secrets[1]
        );
        assert!(
            report.reason().contains("db failing for"),
            "{}",
            report.reason()
        );
        assert!(
            report.reason().contains("does not decode"),
            "{}",
            report.reason()
        );
        assert!(!report.to_json().contains("pw-never-shown"));
        assert!(!report.reason().contains("pw-never-shown"));
    }

    /// Leased credentials once, then an unreachable store.
    struct LeasedOnce(AtomicBool);

    #[async_trait::async_trait]
    impl SecretProvider for LeasedOnce {
        fn name(&self) -> &str {
            "leased-once"
        }

        async fn fetch(&self, id: &str, _: &Selector) -> crate::Result<Versioned<SecretValue>> {
            if self.0.swap(true, Ordering::SeqCst) {
                return Err(Error::transient(id, "store unreachable"));
            }
            let mut version = Version::current("v1");
            version.lease = Some(Lease::new("lease-1", Duration::from_secs(120), false));
            Ok(Versioned::new(
                SecretValue::from(r#"{"username": "v-1"}"#),
                version,
            ))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_makes_the_service_not_ready() {
        let cache = cache(Arc::new(LeasedOnce(AtomicBool::new(false))));
        let db = cache.handle::<Creds>("db").await.unwrap();
        let readiness = Readiness::new().require("db", &db);
        let report = readiness.check();
        assert_eq!(report.verdict, Verdict::Ready);
        assert!(
            report
                .reason()
                .starts_with("ready: db fresh, lease ends in 1m5"),
            "{}",
            report.reason()
        );
        pass(Duration::from_secs(121)).await;
        let report = readiness.check();
        assert_eq!(report.verdict, Verdict::NotReady, "{}", report.reason());
        assert!(matches!(
            report.secrets[0].state,
            HealthState::LeaseExpired { .. }
        ));
        assert!(
            report.reason().contains("lease expired"),
            "{}",
            report.reason()
        );
    }
}

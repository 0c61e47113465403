//! How a rotating pool retries rejected logins, retires old connections, and where it connects.

use std::time::Duration;

use crate::backoff::Backoff;

/// Where a rotating pool's connections go.
///
/// Database secrets often name a host and port (the RDS shape always does), but the pool may need
/// to go elsewhere: RDS Proxy, PgBouncer, a sidecar, an SSH tunnel in development.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Endpoint {
    /// The host and port the secret names, when it names them; the pool's configured ones
    /// otherwise. The default.
    #[default]
    FromSecret,
    /// Always the pool's configured host, port (and `hostaddr`); the secret's are ignored.
    Configured,
}

/// How a rotation-aware pool retries rejected logins, retires old connections, and where it
/// connects. Build it from the defaults with its setters:
///
/// ```
/// use std::time::Duration;
/// use credswap::pg::{Endpoint, RetryAndDrain};
///
/// let config = RetryAndDrain::default()
///     .drain_delay(Duration::from_secs(10))
///     .endpoint(Endpoint::Configured);
/// assert_eq!(config.drain_delay, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryAndDrain {
    /// Connection attempts after an authentication failure before the caller sees it. Default: 8.
    pub retry_attempts: u32,
    /// The longest a caller waits for a login to succeed again. Default: 30 s.
    pub retry_budget: Duration,
    /// First and largest wait between attempts (jittered, exponential). Default: 50 ms to 2 s.
    pub backoff_min: Duration,
    /// See `backoff_min`.
    pub backoff_max: Duration,
    /// How long connections opened with credentials that were rotated away stay in use. Each
    /// version of the credentials gets its own deadline when it is replaced; its connections are
    /// closed when they next come back to (or are taken from) the pool after that, idle ones at
    /// once. Default: 30 s.
    pub drain_delay: Duration,
    /// Connections opened with leased credentials are retired at least this long before the lease
    /// ends, whatever the drain delay. Default: 30 s.
    pub lease_margin: Duration,
    /// Where connections go. Default: [`Endpoint::FromSecret`].
    pub endpoint: Endpoint,
}

impl Default for RetryAndDrain {
    fn default() -> Self {
        RetryAndDrain {
            retry_attempts: 8,
            retry_budget: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            drain_delay: Duration::from_secs(30),
            lease_margin: Duration::from_secs(30),
            endpoint: Endpoint::FromSecret,
        }
    }
}

impl RetryAndDrain {
    /// Sets [`retry_attempts`](Self::retry_attempts).
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.retry_attempts = attempts;
        self
    }

    /// Sets [`retry_budget`](Self::retry_budget).
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sets [`backoff_min`](Self::backoff_min) and [`backoff_max`](Self::backoff_max).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Sets [`drain_delay`](Self::drain_delay).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Sets [`lease_margin`](Self::lease_margin).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
        self
    }

    /// Sets [`endpoint`](Self::endpoint).
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        Backoff::new(self.backoff_min, self.backoff_max).after(attempt)
    }
}

//! The background task that keeps a session's token alive: renew at about two thirds of the TTL,
//! log in again when renewal is refused or capped, back off when Vault fails, stop when there is
//! nothing left to do.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;

use super::auth::{Token, auth_info};
use super::session::{Inner, SessionEvent, VaultSession};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::time::{Instant, later};

/// The first wait after a failure; it doubles with each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The shortest wait before a renewal, however little of the TTL is left.
const RENEW_FLOOR: Duration = Duration::from_millis(100);

pub(super) fn spawn(session: &VaultSession) {
    let shutdown = session.inner.shutdown.subscribe();
    let _task = tokio::spawn(run(std::sync::Arc::downgrade(&session.inner), shutdown));
}

/// What the task does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Try (renew or log in) at this instant.
    TryAt(Instant),
    /// Wait until the token expires, then stop: a token that can be neither renewed nor
    /// replaced.
    ExpireAt(Instant),
    /// Nothing to do, ever: the token never expires, or it expired and cannot be replaced.
    Stop,
}

/// The wait after `failures` failures in a row (at least 1): about 1 s, doubling, capped at 5
/// minutes, with "equal jitter" (half fixed, half random) so a fleet does not retry in step.
fn backoff(failures: u32) -> Duration {
    // The crate's rule adds up to as much again: half the bounds keep the waits between them.
    Backoff::new(BACKOFF_MIN / 2, BACKOFF_MAX / 2).after(failures)
}

fn next(token: &Token, can_login: bool, failures: u32, now: Instant) -> Next {
    let Some(expires_at) = token.expires_at else {
        return Next::Stop;
    };
    if !can_login {
        if now >= expires_at {
            return Next::Stop;
        }
        if !token.renewable {
            return Next::ExpireAt(expires_at);
        }
    }
    if failures > 0 {
        return Next::TryAt(later(now, backoff(failures)));
    }
    let remaining = expires_at.saturating_duration_since(now);
    let wait = remaining
        .mul_f64(0.6 + 0.1 * fastrand::f64())
        .max(RENEW_FLOOR);
    Next::TryAt(later(now, wait))
}

async fn run(session: Weak<Inner>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let next = {
            let Some(inner) = session.upgrade() else {
                return;
            };
            let token = inner.token.load_full();
            next(&token, inner.auth.can_login(), failures, Instant::now())
        };
        let (at, then_stop) = match next {
            Next::Stop => return,
            Next::TryAt(at) => (at, false),
            Next::ExpireAt(at) => (at, true),
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep_until(at) => {}
        }
        let Some(inner) = session.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let session = VaultSession { inner };
        if then_stop {
            session.inner.events.emit(SessionEvent::TokenExpired);
            return;
        }
        match renew_or_relogin(&session).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                let _ = session
                    .inner
                    .keep_alive_failures
                    .fetch_add(1, Ordering::Relaxed);
                let retry_in = backoff(failures);
                session.inner.events.emit(SessionEvent::KeepAliveFailed {
                    kind: error.kind(),
                    consecutive_failures: failures,
                    retry_in,
                });
                let token = session.inner.token.load_full();
                if !session.inner.auth.can_login() && token.expired(Instant::now()) {
                    session.inner.events.emit(SessionEvent::TokenExpired);
                    return;
                }
            }
        }
    }
}

async fn renew_or_relogin(session: &VaultSession) -> Result<()> {
    let inner = &session.inner;
    let generation = session.generation();
    let token = inner.token.load_full();
    let can_login = inner.auth.can_login();
    let mut reason = "renewal_refused";
    if token.renewable {
        let path = "auth/token/renew-self";
        let body =
            serde_json::json!({ "increment": format!("{}s", token.granted.as_secs().max(1)) });
        match inner
            .http
            .call(Method::POST, path, Some(&token.secret), Some(&body))
            .await
        {
            Ok(response) => {
                if let Ok(info) = auth_info(path, response) {
                    let granted = Duration::from_secs(info.lease_duration);
                    let _ = inner.renewals.fetch_add(1, Ordering::Relaxed);
                    // Shortened by the max TTL: a fresh login (below) is better, when we can.
                    let capped = granted < token.granted;
                    if !(capped && can_login) {
                        // Keep comparing with the full grant, to notice the cap again.
                        let full = if capped { token.granted } else { granted };
                        session.extend(granted, full, info.renewable);
                        inner
                            .events
                            .emit(SessionEvent::TokenRenewed { ttl: granted });
                        return Ok(());
                    }
                    reason = "max_ttl";
                }
            }
            Err(error) => {
                if error.is_retryable() || !can_login {
                    return Err(error);
                }
            }
        }
    }
    if can_login {
        session.relogin(generation, reason).await
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn token(ttl: Duration, renewable: bool) -> Token {
        Token::new(SecretString::from("t"), ttl, renewable)
    }

    #[test]
    fn backoff_starts_near_a_second_doubles_and_is_capped_never_zero() {
        for failures in 1..64 {
            let wait = backoff(failures);
            assert!(wait >= Duration::from_millis(500), "{failures}: {wait:?}");
            assert!(wait <= BACKOFF_MAX, "{failures}: {wait:?}");
        }
        assert!(backoff(1) <= Duration::from_secs(1));
        assert!(backoff(4) >= Duration::from_secs(4));
        assert!(backoff(20) >= BACKOFF_MAX / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_tried_in_a_loop_whatever_the_token() {
        let now = Instant::now();
        // A root token never expires: nothing to do.
        assert_eq!(
            next(&token(Duration::ZERO, false), false, 0, now),
            Next::Stop
        );
        // A token that can be neither renewed nor replaced: wait for its end, then stop.
        let fixed = token(Duration::from_secs(4), false);
        assert_eq!(
            next(&fixed, false, 0, now),
            Next::ExpireAt(now + Duration::from_secs(4))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(next(&fixed, false, 0, Instant::now()), Next::Stop);
        // An expired token that can be replaced: try soon, but never at once, and back off.
        let now = Instant::now();
        let Next::TryAt(at) = next(&fixed, true, 0, now) else {
            panic!("expected a try")
        };
        assert!(at >= now + RENEW_FLOOR);
        let Next::TryAt(at) = next(&fixed, true, 3, now) else {
            panic!("expected a try")
        };
        assert!(at >= now + Duration::from_secs(2));
        // A healthy renewable token: at about two thirds of its TTL.
        let healthy = token(Duration::from_secs(30), true);
        let Next::TryAt(at) = next(&healthy, false, 0, now) else {
            panic!("expected a try")
        };
        assert!(at >= now + Duration::from_secs(18) && at <= now + Duration::from_secs(21));
    }
}

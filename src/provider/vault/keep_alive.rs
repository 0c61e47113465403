//! When to keep a session's token alive: renew at about two thirds of the TTL, log in again when
//! renewal is refused or capped, back off when Vault fails, stop when there is nothing left to
//! do. The task that acts on it is the session's (`session.rs`).

use std::time::Duration;

use super::auth::Token;
use crate::backoff::Backoff;
use crate::time::{Instant, later};

/// The first wait after a failure; it doubles with each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The shortest wait before a renewal, however little of the TTL is left.
const RENEW_FLOOR: Duration = Duration::from_millis(100);

/// What the task does next.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// Try (renew or log in) at this instant.
    TryAt(Instant),
    /// Wait until the token expires, then stop: a token that can be neither renewed nor
    /// replaced.
    ExpireAt(Instant),
    /// Nothing to do, ever: the token never expires, or it expired and cannot be replaced.
    Stop,
}

/// The wait after `failures` failures in a row (at least 1): 0.5 to 1 s, doubling, never over 5
/// minutes, jittered so a fleet does not retry in step.
pub(super) fn backoff(failures: u32) -> Duration {
    // The crate's rule adds up to as much again: half the bounds keep the waits between them.
    Backoff::new(BACKOFF_MIN / 2, BACKOFF_MAX / 2).after(failures)
}

pub(super) fn next(token: &Token, can_login: bool, failures: u32, now: Instant) -> Next {
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

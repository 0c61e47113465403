//! An in-process schedule, for services that rotate their own secrets.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::ExponentialBackoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::rotator::Rotator;
use super::steps::RotationOutcome;
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};
use crate::time::{Instant, later, later_wall};

const DAY: u64 = 24 * 60 * 60;

/// A daily window (UTC) in which scheduled rotations may run, such as 02:00–04:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u64,
    length: Duration,
}

impl Window {
    /// A window opening every day at `hour:minute` UTC for `length` (at most 24 hours; it may run
    /// past midnight).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for an hour over 23, a minute over 59, or a
    /// length of zero or over a day.
    pub fn daily_utc(hour: u8, minute: u8, length: Duration) -> Result<Self> {
        if hour > 23 || minute > 59 {
            return Err(Error::config(format!(
                "{hour:02}:{minute:02} is not a time of day"
            )));
        }
        if length.is_zero() || length > Duration::from_secs(DAY) {
            return Err(Error::config(
                "a rotation window lasts more than zero and at most 24 hours",
            ));
        }
        Ok(Window {
            start: u64::from(hour) * 3600 + u64::from(minute) * 60,
            length,
        })
    }

    /// The first moment at or after `at` inside a window, plus `offset` (capped to stay inside)
    /// when `at` itself is outside.
    fn next_inside(&self, at: SystemTime, offset: Duration) -> SystemTime {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let day_start = since_epoch.as_secs() - since_epoch.as_secs() % DAY;
        // Today's window and yesterday's (which may run past midnight into today).
        for opens in [day_start.saturating_sub(DAY), day_start] {
            let opens = Duration::from_secs(opens + self.start);
            if since_epoch >= opens && since_epoch < opens + self.length {
                return at;
            }
        }
        let today = Duration::from_secs(day_start + self.start);
        let opens = if since_epoch < today {
            today
        } else {
            today + Duration::from_secs(DAY)
        };
        let offset = offset.min(self.length.saturating_sub(Duration::from_secs(1)));
        UNIX_EPOCH + opens + offset
    }
}

/// When a [`ScheduledRotation`] rotates: every `period`, each attempt delayed by a random part of
/// `jitter` (so replicas and secrets do not rotate in step), moved into the daily
/// [`Window`] when there is one. An attempt is [`rotate_if_due`](Rotator::rotate_if_due) with a
/// minimum age (half the period by default): a replica whose attempt comes less than that after
/// another replica's rotation skips it, so replicas started close together rotate once per period,
/// not once each (replicas started further apart than the minimum age each rotate in a period;
/// raise it toward the period if that matters).
///
/// An attempt that finds the secret not due yet waits until the current version is a period old
/// (age counts from the version's creation, so "every 30 days" means every 30 days, give or take
/// the jitter); one that finds a rotation under way elsewhere looks again after `retry_after`.
/// A failed attempt is tried again after `retry_after`, the delay doubling, with jitter, for every
/// failure in a row, up to the period. Failures that trying again will not fix (a rollback, a
/// configuration, decoding or permission error, a request the store refuses) wait a full period,
/// with a warning in the log each time. [`Attempts`] shows both.
///
/// ```
/// use std::time::Duration;
/// use credswap::rotation::{Schedule, Window};
///
/// let schedule = Schedule::every(Duration::from_secs(7 * 24 * 3600))
///     .jitter(Duration::from_secs(30 * 60))
///     .window(Window::daily_utc(2, 0, Duration::from_secs(2 * 3600))?);
/// # drop(schedule);
/// # Ok::<(), credswap::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    period: Duration,
    jitter: Duration,
    window: Option<Window>,
    retry_after: Duration,
    min_age: Option<Duration>,
}

impl Schedule {
    /// Rotate every `period` (no jitter, no window, retries after 5 minutes or a period if
    /// shorter).
    pub fn every(period: Duration) -> Self {
        Schedule {
            period,
            jitter: Duration::ZERO,
            window: None,
            retry_after: period.min(Duration::from_secs(300)),
            min_age: None,
        }
    }

    /// Delays each attempt by a random duration up to `jitter`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Rotates only inside `window`.
    pub fn window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }

    /// How long after a failed attempt to try again; the delay doubles (with jitter) for each
    /// failure in a row, up to the period.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Skips a secret whose current version is younger than this (default: half the period).
    pub fn min_age(mut self, min_age: Duration) -> Self {
        self.min_age = Some(min_age);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.period < Duration::from_secs(1) || self.retry_after < Duration::from_millis(10) {
            return Err(Error::config(
                "a rotation schedule's period is at least a second and its retry delay at least \
                 10 ms",
            ));
        }
        if self.min_age.is_some_and(|min_age| min_age > self.period) {
            // A secret older than the period but younger than the minimum age would be asked
            // about again at once, forever.
            return Err(Error::config(
                "a rotation schedule's minimum age is at most its period",
            ));
        }
        for (what, value) in [
            ("period", Some(self.period)),
            ("jitter", Some(self.jitter)),
            ("retry delay", Some(self.retry_after)),
            ("minimum age", self.min_age),
        ] {
            if value.is_some_and(|value| value > crate::time::MAX_SETTING) {
                return Err(Error::config(format!(
                    "the rotation schedule's {what} is over ten years"
                )));
            }
        }
        Ok(())
    }

    /// The moment of the attempt planned for `due`, with `fraction` (0 to 1) of the jitter.
    pub(crate) fn plan(&self, due: SystemTime, fraction: f64) -> SystemTime {
        let jitter = self.jitter.mul_f64(fraction.clamp(0.0, 1.0));
        let at = later_wall(due, jitter);
        match &self.window {
            Some(window) => window.next_inside(at, jitter),
            None => at,
        }
    }
}

/// The clock a schedule runs by: the wall clock at start plus Tokio's clock since then, so the
/// window follows the time of day, and tests under `tokio::time::pause()` control it entirely
/// (the age of a secret included: each attempt measures it at this clock's now).
#[derive(Clone, Copy)]
struct Clock {
    wall: SystemTime,
    instant: Instant,
}

impl Clock {
    fn start() -> Self {
        Clock {
            wall: SystemTime::now(),
            instant: Instant::now(),
        }
    }

    fn now(&self) -> SystemTime {
        later_wall(self.wall, self.instant.elapsed())
    }

    fn instant_of(&self, at: SystemTime) -> Instant {
        let since_start = at.duration_since(self.wall).unwrap_or(Duration::ZERO);
        later(self.instant, since_start)
    }
}

/// Failures that trying again soon will not fix: a person has to look.
fn needs_attention(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::RolledBack
            | ErrorKind::Config
            | ErrorKind::InvalidRequest
            | ErrorKind::Decode
            | ErrorKind::AccessDenied
    )
}

/// How long after a failed attempt to try again: exponential with jitter from `retry_after` up to
/// the period, or the period for failures that need a person.
struct Retry {
    rule: Backoff,
    backoff: ExponentialBackoff,
    period: Duration,
    retry_after: Duration,
    failures_in_a_row: u32,
}

impl Retry {
    fn new(schedule: &Schedule) -> Self {
        let rule = Backoff::new(schedule.retry_after, schedule.period);
        Retry {
            backoff: rule.delays(),
            rule,
            period: schedule.period,
            retry_after: schedule.retry_after,
            failures_in_a_row: 0,
        }
    }

    /// The delay before the next attempt, after `result`: a period after a rotation; what is
    /// left of the period after one that was not due (its age counts from the version's
    /// creation, so a secret never gets older than the period by much more than the jitter); the
    /// retry delay after one found under way (another rotator's run ends soon, and then this
    /// secret's age decides); the backoff after a failure.
    fn after(&mut self, result: &Result<RotationOutcome>) -> Duration {
        let Err(error) = result else {
            self.failures_in_a_row = 0;
            self.backoff = self.rule.delays();
            return match result {
                Ok(RotationOutcome::NotDue { age, .. }) => self.period.saturating_sub(*age),
                Ok(RotationOutcome::UnderWay { .. }) => self.retry_after.min(self.period),
                _ => self.period,
            };
        };
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if needs_attention(error) {
            return self.period;
        }
        let backoff = self.backoff.next().unwrap_or(self.period).min(self.period);
        backoff.max(
            error
                .retry_after()
                .unwrap_or(Duration::ZERO)
                .min(self.period),
        )
    }
}

/// A rotation running on a [`Schedule`] in a background task.
///
/// # Stopping
///
/// [`shutdown`](Self::shutdown) stops the schedule and waits: a rotation under way finishes (or
/// rolls back) first, so the database and the store agree when it returns. Dropping the handle
/// (or [`stop`](Self::stop)) stops it without waiting: no attempt starts after that, and one
/// under way still runs to its end in the background. Nothing cuts a rotation off between `set`
/// and `finish` but the runtime shutting down.
///
/// A service shutting down stops, in this order: its schedules (`shutdown().await`), its push
/// subscribers, its pools, its caches ([`SecretCache::shutdown`](crate::SecretCache::shutdown)),
/// and last the [`VaultSession`](crate::provider::VaultSession) they use.
#[derive(Debug)]
pub struct ScheduledRotation {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    attempts: watch::Receiver<Attempts>,
}

/// What the schedule has done so far.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Attempts {
    /// Attempts made.
    pub count: u64,
    /// The last attempt's result: its outcome, or its error (kind and message, never a value).
    pub last: Option<std::result::Result<RotationOutcome, Error>>,
    /// Failed attempts since the last one that did not fail.
    pub failures_in_a_row: u32,
    /// How long after the last attempt the next is planned (before the schedule's jitter and
    /// window): a period after a rotation; what is left of the period, counted from the current
    /// version's creation, after one that was not due; the retry delay after one found under way;
    /// after a failure, the backoff, or a full period for failures that need a person.
    pub next_after: Option<Duration>,
}

impl ScheduledRotation {
    /// Attempts made so far, and the last one's result.
    pub fn attempts(&self) -> Attempts {
        self.attempts.borrow().clone()
    }

    /// Waits for the next attempt to complete and returns the tally.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`] when the schedule's task ended (its runtime shut down) and nothing
    /// will rotate until the secret is scheduled again. A panic in the store, the target or a
    /// hook does not end it: that attempt fails (with [`ErrorKind::Transient`]) and the schedule
    /// tries again.
    pub async fn next_attempt(&mut self) -> Result<Attempts> {
        self.attempts.changed().await.map_err(|_| {
            Error::new(ErrorKind::Closed).with_message(
                "the rotation schedule has stopped (its task ended); schedule the secret again",
            )
        })?;
        Ok(self.attempts.borrow_and_update().clone())
    }

    /// Stops the schedule without waiting: no attempt starts after this; one under way runs to
    /// its end in the background. The same as dropping the handle.
    pub fn stop(self) {}

    /// Stops the schedule and waits until it has: an attempt under way finishes (its rotation
    /// completes or rolls back), none starts after it.
    ///
    /// # Cancellation
    ///
    /// Dropping the future does not undo the stop; the attempt under way still runs to its end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ScheduledRotation {
    fn drop(&mut self) {
        // Not an abort: an attempt under way must not stop between `set` and `finish`.
        let _ = self.stop.send(true);
    }
}

impl Rotator {
    /// Rotates `secret_id` on `schedule` in a background task until the returned handle is shut
    /// down or dropped (see [`ScheduledRotation`] for how it stops). Each attempt's events go to
    /// [`subscribe`](Self::subscribe)rs as usual; a pending version left by a rotator that died
    /// is finished by the next attempt (see
    /// [`RotatorBuilder::resume_orphaned`](super::RotatorBuilder::resume_orphaned)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a period under a second or absurd durations.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns the task there).
    pub fn schedule(&self, secret_id: &str, schedule: Schedule) -> Result<ScheduledRotation> {
        schedule.validate()?;
        let (report, attempts) = watch::channel(Attempts::default());
        let (stop, mut stopped) = watch::channel(false);
        let rotator = self.clone();
        let secret_id: Arc<str> = secret_id.into();
        let task = tokio::spawn(async move {
            let clock = Clock::start();
            let min_age = schedule.min_age.unwrap_or(schedule.period / 2);
            let mut retry = Retry::new(&schedule);
            let mut due = clock.now();
            loop {
                let at = schedule.plan(due, fastrand::f64());
                tokio::select! {
                    biased;
                    // `wait_for` fails only when the handle is gone, which is a stop too.
                    _ = stopped.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep_until(clock.instant_of(at)) => {}
                }
                let started = clock.now();
                // Not raced with the stop: an attempt, once started, runs to its end.
                let result = rotator.rotate_if_due_at(&secret_id, min_age, started).await;
                let wait = retry.after(&result);
                due = match &result {
                    Ok(_) => later_wall(started, wait),
                    Err(error) => {
                        if needs_attention(error) {
                            tracing::warn!(
                                target: "credswap::rotation",
                                secret_id = %secret_id,
                                kind = %error.kind(),
                                retry_in_s = wait.as_secs(),
                                "credswap: a scheduled rotation failed in a way retrying will not \
                                 fix; trying again only after a full period"
                            );
                        }
                        later_wall(clock.now(), wait)
                    }
                };
                report.send_modify(|attempts| {
                    attempts.count += 1;
                    attempts.last = Some(result);
                    attempts.failures_in_a_row = retry.failures_in_a_row;
                    attempts.next_after = Some(wait);
                });
            }
        });
        Ok(ScheduledRotation {
            stop,
            task: Some(task),
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u64, hour: u64, minute: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(day * DAY + hour * 3600 + minute * 60)
    }

    #[test]
    fn attempts_move_into_the_window() {
        let window = Window::daily_utc(2, 0, Duration::from_secs(2 * 3600)).unwrap();
        let schedule = Schedule::every(Duration::from_secs(DAY))
            .jitter(Duration::from_secs(600))
            .window(window);
        // Inside the window: as planned, plus the jitter.
        assert_eq!(schedule.plan(at(10, 2, 30), 0.5), at(10, 2, 35));
        // Before it: the window's opening, plus the jitter.
        assert_eq!(schedule.plan(at(10, 1, 0), 0.5), at(10, 2, 5));
        // After it: tomorrow's opening.
        assert_eq!(schedule.plan(at(10, 9, 0), 0.0), at(11, 2, 0));
        // A window running past midnight.
        let night = Schedule::every(Duration::from_secs(DAY))
            .window(Window::daily_utc(23, 0, Duration::from_secs(3 * 3600)).unwrap());
        assert_eq!(night.plan(at(10, 1, 0), 0.0), at(10, 1, 0));
        assert_eq!(night.plan(at(10, 3, 0), 0.0), at(10, 23, 0));
        // No window: jitter only.
        let plain = Schedule::every(Duration::from_secs(60)).jitter(Duration::from_secs(10));
        assert_eq!(
            plain.plan(at(1, 0, 0), 1.0),
            at(1, 0, 0) + Duration::from_secs(10)
        );
    }

    #[test]
    fn bad_windows_and_schedules_are_configuration_errors() {
        assert!(Window::daily_utc(24, 0, Duration::from_secs(60)).is_err());
        assert!(Window::daily_utc(1, 60, Duration::from_secs(60)).is_err());
        assert!(Window::daily_utc(1, 0, Duration::ZERO).is_err());
        assert!(Window::daily_utc(1, 0, Duration::from_secs(DAY + 1)).is_err());
        assert!(
            Schedule::every(Duration::from_millis(10))
                .validate()
                .is_err()
        );
        assert!(
            Schedule::every(Duration::from_secs(60))
                .jitter(Duration::MAX)
                .validate()
                .is_err()
        );
    }
}

//! Schedules under paused time: the age of a secret, retries and their backoff, a stopped task.

use std::time::Duration;

use super::*;
use crate::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_schedule_rotates_once_per_period_and_replicas_do_not_double_up() {
    let s = setup(Strategy::SingleUser, "app");
    // Two replicas on the same schedule (default minimum age: half the period), same store and
    // database. The secret was just written, so the first attempts find it too young; after that
    // the secret's age is read on the schedule's clock, which paused time moves.
    let mut first = s.rotator.schedule("db", Schedule::every(HOUR)).unwrap();
    let second_rotator = s.rotator.clone();
    let mut second = second_rotator
        .schedule("db", Schedule::every(HOUR))
        .unwrap();
    let started = Instant::now();
    for period in 0..3u32 {
        let a = first.next_attempt().await.unwrap();
        let b = second.next_attempt().await.unwrap();
        assert_eq!(
            started.elapsed(),
            HOUR * period,
            "attempts come once a period"
        );
        let outcomes = [a.last.unwrap().unwrap(), b.last.unwrap().unwrap()];
        let rotated = outcomes.iter().filter(|o| o.rotated()).count();
        let expected = usize::from(period > 0);
        assert_eq!(rotated, expected, "period {period}: {outcomes:?}");
        for outcome in outcomes.iter().filter(|o| !o.rotated()) {
            assert!(
                matches!(
                    outcome,
                    RotationOutcome::NotDue { .. } | RotationOutcome::UnderWay { .. }
                ),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(s.finished.load(Ordering::SeqCst), 2);
    first.stop();
    second.stop();
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_ones_that_need_a_person_wait_a_period() {
    let s = setup(Strategy::SingleUser, "app");
    *s.db.fail_begin.lock().unwrap() = Some(ErrorKind::Transient);
    let retry = Duration::from_secs(10);
    let mut schedule = s
        .rotator
        .schedule(
            "db",
            Schedule::every(HOUR)
                .retry_after(retry)
                .min_age(Duration::ZERO),
        )
        .unwrap();
    let mut last = Instant::now();
    let mut planned: Option<Duration> = None;
    let mut floor = retry;
    for failures in 1..=6u32 {
        let attempts = schedule.next_attempt().await.unwrap();
        if let Some(planned) = planned {
            let waited = last.elapsed();
            assert!(
                waited.abs_diff(planned) < Duration::from_millis(1),
                "{waited:?} {planned:?}"
            );
        }
        last = Instant::now();
        assert_eq!(attempts.failures_in_a_row, failures);
        let next = attempts.next_after.unwrap();
        // Doubling from `retry_after`, each with up to as much again of jitter.
        assert!(
            next >= floor && next < floor * 2,
            "failure {failures}: {next:?}"
        );
        planned = Some(next);
        floor *= 2;
    }
    // A failure that retrying will not fix waits a whole period, and keeps counting.
    *s.db.fail_begin.lock().unwrap() = Some(ErrorKind::RolledBack);
    let attempts = schedule.next_attempt().await.unwrap();
    assert_eq!(attempts.failures_in_a_row, 7);
    assert_eq!(attempts.next_after, Some(HOUR));
    *s.db.fail_begin.lock().unwrap() = None;
    let waited_from = Instant::now();
    let attempts = schedule.next_attempt().await.unwrap();
    assert!(waited_from.elapsed().abs_diff(HOUR) < Duration::from_millis(1));
    assert!(attempts.last.unwrap().unwrap().rotated());
    assert_eq!(attempts.failures_in_a_row, 0);
    assert_eq!(attempts.next_after, Some(HOUR));
    assert_eq!(attempts.count, 8);
}

#[tokio::test(start_paused = true)]
async fn backoff_never_exceeds_the_period() {
    let s = setup(Strategy::SingleUser, "app");
    *s.db.fail_begin.lock().unwrap() = Some(ErrorKind::Throttled);
    let period = Duration::from_secs(60);
    let mut schedule = s
        .rotator
        .schedule(
            "db",
            Schedule::every(period).retry_after(Duration::from_secs(20)),
        )
        .unwrap();
    for _ in 0..5 {
        let attempts = schedule.next_attempt().await.unwrap();
        assert!(attempts.next_after.unwrap() <= period, "{attempts:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_target_fails_an_attempt_and_the_schedule_carries_on() {
    let s = setup(Strategy::SingleUser, "app");
    s.db.panic_on_begin.store(true, Ordering::SeqCst);
    let mut schedule = s.rotator.schedule("db", Schedule::every(HOUR)).unwrap();
    // A target that panics fails the attempt; the schedule carries on and tries again.
    let attempts = schedule.next_attempt().await.unwrap();
    let err = attempts.last.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    s.db.panic_on_begin.store(false, Ordering::SeqCst);
    let attempts = schedule.next_attempt().await.unwrap();
    // The secret is younger than the minimum age: not due, and next asked when it is a period old.
    let Some(Ok(RotationOutcome::NotDue { age, .. })) = attempts.last else {
        panic!("{attempts:?}");
    };
    assert_eq!(attempts.next_after, Some(HOUR - age));
    schedule.shutdown().await;
}

#[tokio::test]
async fn rotate_if_due_skips_a_fresh_secret() {
    let s = setup(Strategy::SingleUser, "app");
    let outcome = s.rotator.rotate_if_due("db", HOUR).await.unwrap();
    assert!(
        matches!(outcome, RotationOutcome::NotDue { .. }),
        "{outcome:?}"
    );
    assert!(
        s.rotator
            .rotate_if_due("db", Duration::ZERO)
            .await
            .unwrap()
            .rotated()
    );
}

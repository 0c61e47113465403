//! Which credentials each connection logged in with, and when each version of them must go.
//!
//! Neither sqlx nor deadpool lets us attach data to a connection; both tell us when it was created
//! (its age). So the ledger keeps the periods during which each set of credentials was the one new
//! logins used ("epochs"), and judges a connection by the credentials in force when it was
//! created. That holds for every login that finished with the credentials in force when it
//! finished; a login that started before a switch and finished after it (a slow TLS handshake, a
//! proxy, a busy server) is recorded as a *mark*: the time it finished and the credentials it
//! really used. A connection created near a mark is judged by the oldest credentials that may be
//! its own. Judging is conservative: a connection is never kept past the deadline of credentials it
//! may have used; at worst a new connection is retired early, which costs one login.
//!
//! Each version of the credentials gets its own deadline when it is replaced: the earlier of the
//! replacement time plus the drain delay and its lease's end minus the lease margin. Frequent
//! rotations do not postpone older deadlines.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::config::RetryAndDrain;
use super::events::RotationRecord;
use crate::time::{Instant, later};
use crate::value::VersionId;

/// How close to a switch a connection's creation must be to be judged by either side of it (the
/// time between a login's end and the pool stamping the connection's creation is microseconds).
const MARGIN: Duration = Duration::from_millis(100);
/// After a version's deadline, how often its remaining connections are looked for (those that
/// were busy at the deadline come back later), and for how long.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_FOR: Duration = Duration::from_secs(600);
/// Versions remembered for statistics.
const HISTORY: usize = 32;

/// One period in which new logins used one version's credentials.
#[derive(Debug)]
struct Span {
    epoch: u64,
    version: VersionId,
    from: Instant,
}

/// A login that finished with credentials other than those in force when it finished.
#[derive(Debug)]
struct Mark {
    at: Instant,
    version: VersionId,
}

/// What the pool knows about one version of the credentials: what its user sees (the
/// [`RotationRecord`]), and what only the ledger needs.
#[derive(Debug, Clone)]
pub(crate) struct VersionRecord {
    pub(crate) record: RotationRecord,
    /// When its lease ends (leased credentials).
    pub(crate) lease_end: Option<Instant>,
    /// Whether its deadline has been announced.
    pub(crate) announced: bool,
}

/// What a judged connection turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Retire it: it may have used this version, past its deadline (`None`: opened before any
    /// version the ledger remembers).
    Retire(Option<VersionId>),
}

#[derive(Debug)]
pub(crate) struct Ledger {
    spans: VecDeque<Span>,
    marks: VecDeque<Mark>,
    records: HashMap<VersionId, VersionRecord>,
    /// Versions in the order the pool took them in.
    order: VecDeque<VersionId>,
    /// Connections created before this are retired: their spans were forgotten.
    floor: Option<Instant>,
    /// The newest version of the forgotten spans: what a connection below the floor was opened
    /// with, as near as the ledger still knows.
    floor_version: Option<VersionId>,
}

impl Ledger {
    pub(crate) fn new(
        epoch: u64,
        version: VersionId,
        lease_end: Option<Instant>,
        now: Instant,
    ) -> Self {
        let mut ledger = Ledger {
            spans: VecDeque::new(),
            marks: VecDeque::new(),
            records: HashMap::new(),
            order: VecDeque::new(),
            floor: None,
            floor_version: None,
        };
        ledger.record(&version, now).lease_end = lease_end;
        ledger.spans.push_back(Span {
            epoch,
            version,
            from: now,
        });
        ledger
    }

    fn record(&mut self, version: &VersionId, now: Instant) -> &mut VersionRecord {
        if !self.records.contains_key(version) {
            self.order.push_back(version.clone());
        }
        self.records
            .entry(version.clone())
            .or_insert_with(|| VersionRecord {
                record: RotationRecord {
                    version: version.clone(),
                    seen_at: now,
                    update_latency: None,
                    replaced_at: None,
                    drain_deadline: None,
                    connections_opened: 0,
                    connections_drained: 0,
                },
                lease_end: None,
                announced: false,
            })
    }

    /// New logins use `version`'s credentials from now on (a new version, or a switch to the
    /// previous one and back).
    pub(crate) fn begin(&mut self, epoch: u64, version: &VersionId, now: Instant) {
        let _ = self.record(version, now);
        self.spans.push_back(Span {
            epoch,
            version: version.clone(),
            from: now,
        });
    }

    /// A version that new logins used before the pool's time (the previous credentials of a handle
    /// the pool started on) gets a deadline from now, like one replaced now.
    pub(crate) fn adopt_replaced(
        &mut self,
        version: &VersionId,
        lease_end: Option<Instant>,
        now: Instant,
        config: &RetryAndDrain,
    ) {
        if self
            .records
            .get(version)
            .is_none_or(|r| r.record.replaced_at.is_none())
        {
            let _ = self.replace(version, lease_end, now, config);
        }
    }

    /// `version` was replaced by a newer one at `now`: its deadline is set, once, for good.
    pub(crate) fn replace(
        &mut self,
        version: &VersionId,
        lease_end: Option<Instant>,
        now: Instant,
        config: &RetryAndDrain,
    ) -> Instant {
        let record = self.record(version, now);
        if let Some(end) = lease_end {
            record.lease_end = Some(end);
        }
        if let Some(deadline) = record.record.drain_deadline {
            return deadline;
        }
        let mut deadline = later(now, config.drain_delay);
        if let Some(end) = record.lease_end {
            let before_end = end.checked_sub(config.lease_margin).unwrap_or(now).max(now);
            deadline = deadline.min(before_end);
        }
        record.record.replaced_at = Some(now);
        record.record.drain_deadline = Some(deadline);
        deadline
    }

    /// The current version's lease was renewed: it now ends at `lease_end`.
    pub(crate) fn renewed(&mut self, version: &VersionId, lease_end: Option<Instant>) {
        if let Some(record) = self.records.get_mut(version) {
            record.lease_end = lease_end;
        }
    }

    fn epoch_now(&self) -> Option<u64> {
        self.spans.back().map(|span| span.epoch)
    }

    fn version_of(&self, epoch: u64) -> Option<&VersionId> {
        self.spans
            .iter()
            .rev()
            .find(|span| span.epoch == epoch)
            .map(|span| &span.version)
    }

    /// A login with the credentials of `epoch` finished at `now`. Returns the version's update
    /// latency when this is its first connection.
    pub(crate) fn login_finished(
        &mut self,
        epoch: u64,
        now: Instant,
    ) -> Option<(VersionId, Duration)> {
        let version = self.version_of(epoch)?.clone();
        if self.epoch_now() != Some(epoch) {
            self.marks.push_back(Mark {
                at: now,
                version: version.clone(),
            });
        }
        let record = self.records.get_mut(&version)?;
        record.record.connections_opened += 1;
        if record.record.update_latency.is_none() && record.record.replaced_at.is_none() {
            let latency = now.saturating_duration_since(record.record.seen_at);
            record.record.update_latency = Some(latency);
            return Some((version, latency));
        }
        None
    }

    /// A login finished at `now` whose credentials we did not see (it did not go through the
    /// rotating pool's own acquire): it may have started up to `bound` ago, so it is judged by the
    /// oldest credentials in force since then.
    #[cfg(feature = "sqlx")]
    pub(crate) fn login_finished_unseen(&mut self, bound: Duration, now: Instant) {
        let since = now.checked_sub(bound).unwrap_or(now);
        let oldest = self
            .spans
            .iter()
            .enumerate()
            .filter(|(i, _)| self.spans.get(i + 1).is_none_or(|next| next.from > since))
            .map(|(_, span)| span.epoch)
            .next();
        if let Some(epoch) = oldest {
            let _ = self.login_finished(epoch, now);
        }
    }

    /// When `version` was replaced, if it was and is still recorded.
    pub(crate) fn replaced_at(&self, version: &VersionId) -> Option<Instant> {
        self.records.get(version)?.record.replaced_at
    }

    /// Whether a connection created at `created` must be closed now.
    pub(crate) fn judge(&mut self, created: Instant, now: Instant) -> Verdict {
        if self.floor.is_some_and(|floor| created < floor) {
            return Verdict::Retire(self.floor_version.clone());
        }
        // A version no longer recorded is long gone: its connections go.
        // A version no longer recorded is long gone: its connections go.
        let expired = |version: &VersionId, records: &HashMap<VersionId, VersionRecord>| {
            records.get(version).is_none_or(|r| {
                r.record
                    .drain_deadline
                    .is_some_and(|deadline| now >= deadline)
            })
        };
        let window_start = created.checked_sub(MARGIN).unwrap_or(created);
        // The spans in force at any time in [created - MARGIN, created].
        let mut doomed = None;
        for (i, span) in self.spans.iter().enumerate() {
            let ends = self.spans.get(i + 1).map(|next| next.from);
            let overlaps = span.from <= created && ends.is_none_or(|end| end > window_start);
            if overlaps && expired(&span.version, &self.records) {
                doomed = Some(span.version.clone());
                break;
            }
        }
        if doomed.is_none() {
            for mark in &self.marks {
                let near = mark
                    .at
                    .max(created)
                    .saturating_duration_since(mark.at.min(created))
                    <= MARGIN;
                if near && expired(&mark.version, &self.records) {
                    doomed = Some(mark.version.clone());
                    break;
                }
            }
        }
        match doomed {
            Some(version) => {
                if let Some(record) = self.records.get_mut(&version) {
                    record.record.connections_drained += 1;
                }
                Verdict::Retire(Some(version))
            }
            None => Verdict::Keep,
        }
    }

    /// Whether any connection may need retiring now (a deadline has passed): the pools skip
    /// judging when not.
    pub(crate) fn any_due(&self, now: Instant) -> bool {
        self.floor.is_some()
            || self.records.values().any(|r| {
                r.record
                    .drain_deadline
                    .is_some_and(|deadline| now >= deadline)
            })
    }

    /// When the pool should next look for connections to retire: the next deadline, or soon
    /// after one passed, while connections of that version may still come back.
    pub(crate) fn next_sweep(&self, now: Instant) -> Option<Instant> {
        self.records
            .values()
            .filter_map(|r| {
                let deadline = r.record.drain_deadline?;
                if deadline > now {
                    Some(deadline)
                } else if now < later(deadline, SWEEP_FOR)
                    && r.record.connections_opened > r.record.connections_drained
                {
                    Some(later(now, SWEEP_EVERY))
                } else {
                    None
                }
            })
            .min()
    }

    /// Versions whose deadline passed and was not announced yet; marks them announced.
    pub(crate) fn newly_due(&mut self, now: Instant) -> Vec<RotationRecord> {
        let mut due = Vec::new();
        for record in self.records.values_mut() {
            if !record.announced
                && record
                    .record
                    .drain_deadline
                    .is_some_and(|deadline| now >= deadline)
            {
                record.announced = true;
                due.push(record.record.clone());
            }
        }
        due
    }

    /// Forgets what no connection can need any more: leading spans whose versions are past their
    /// deadline (connections created before what remains are retired outright), marks before
    /// that, and records beyond the history kept.
    pub(crate) fn prune(&mut self, now: Instant) {
        while self.spans.len() > 1 {
            let front = &self.spans[0];
            let dead = self
                .records
                .get(&front.version)
                .and_then(|r| r.record.drain_deadline)
                .is_some_and(|deadline| now >= deadline);
            if !dead {
                break;
            }
            if let Some(popped) = self.spans.pop_front() {
                self.floor_version = Some(popped.version);
            }
            // A connection created just after the next span began may still be the old one's.
            let next_from = self.spans[0].from;
            self.floor = Some(later(next_from, MARGIN));
        }
        if let Some(floor) = self.floor {
            let keep_after = floor.checked_sub(MARGIN).unwrap_or(floor);
            while self.marks.front().is_some_and(|mark| mark.at < keep_after) {
                let _ = self.marks.pop_front();
            }
        }
        while self.order.len() > HISTORY {
            let Some(oldest) = self.order.front().cloned() else {
                break;
            };
            let in_use = self.spans.iter().any(|span| span.version == oldest)
                || self.marks.iter().any(|mark| mark.version == oldest);
            if in_use {
                break;
            }
            let _ = self.order.pop_front();
            let _ = self.records.remove(&oldest);
        }
    }

    /// The versions the pool has used, oldest first.
    pub(crate) fn history(&self) -> Vec<RotationRecord> {
        self.order
            .iter()
            .filter_map(|version| self.records.get(version).map(|r| r.record.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryAndDrain {
        RetryAndDrain::default()
            .drain_delay(Duration::from_secs(1))
            .lease_margin(Duration::from_secs(5))
    }

    fn v(id: &str) -> VersionId {
        VersionId::new(id)
    }

    #[tokio::test(start_paused = true)]
    async fn each_version_goes_at_its_own_deadline_however_often_it_rotates() {
        let start = Instant::now();
        let mut ledger = Ledger::new(0, v("v0"), None, start);
        // Rotations every 200 ms (v1 at 200 ms, v2 at 400 ms, ...), a connection opened 150 ms
        // into each version's turn.
        let mut created = Vec::new();
        for (epoch, name) in [(1, "v1"), (2, "v2"), (3, "v3"), (4, "v4")] {
            tokio::time::advance(Duration::from_millis(150)).await;
            created.push(Instant::now());
            tokio::time::advance(Duration::from_millis(50)).await;
            let now = Instant::now();
            let old = ledger.spans.back().unwrap().version.clone();
            let _ = ledger.replace(&old, None, now, &config());
            ledger.begin(epoch, &v(name), now);
        }
        tokio::time::advance(Duration::from_millis(150)).await;
        created.push(Instant::now());
        let at = |ms: u64| start + Duration::from_millis(ms);
        // v0 was replaced at 200 ms: its connection goes at 1.2 s, not 1 s after the last rotation.
        assert_eq!(ledger.judge(created[0], at(1199)), Verdict::Keep);
        assert_eq!(
            ledger.judge(created[0], at(1200)),
            Verdict::Retire(Some(v("v0")))
        );
        // v1 was replaced at 400 ms: its connection goes at 1.4 s.
        assert_eq!(ledger.judge(created[1], at(1399)), Verdict::Keep);
        assert_eq!(
            ledger.judge(created[1], at(1400)),
            Verdict::Retire(Some(v("v1")))
        );
        assert_eq!(ledger.judge(created[3], at(1799)), Verdict::Keep);
        assert_eq!(
            ledger.judge(created[3], at(1800)),
            Verdict::Retire(Some(v("v3")))
        );
        // The newest never goes.
        assert_eq!(ledger.judge(created[4], at(100_000)), Verdict::Keep);
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_that_finished_after_the_switch_is_judged_by_what_it_used() {
        let mut ledger = Ledger::new(0, v("old"), None, Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        let switch = Instant::now();
        let _ = ledger.replace(&v("old"), None, switch, &config());
        ledger.begin(1, &v("new"), switch);
        // A login that started with epoch 0 finishes 400 ms after the switch.
        tokio::time::advance(Duration::from_millis(400)).await;
        let late = Instant::now();
        let _ = ledger.login_finished(0, late);
        // An honest new connection, created well after.
        tokio::time::advance(Duration::from_millis(300)).await;
        let fresh = Instant::now();
        let _ = ledger.login_finished(1, fresh);
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(ledger.judge(late, now), Verdict::Retire(Some(v("old"))));
        assert_eq!(ledger.judge(fresh, now), Verdict::Keep);
        // The old span is forgotten once its deadline passed; the mark still judges the late one.
        ledger.prune(now);
        assert_eq!(ledger.judge(late, now), Verdict::Retire(Some(v("old"))));
        assert_eq!(ledger.judge(fresh, now), Verdict::Keep);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_moves_the_deadline_and_an_ending_one_brings_it_forward() {
        let now = Instant::now();
        let mut ledger = Ledger::new(0, v("lease-1"), Some(now + Duration::from_secs(10)), now);
        // Renewed several times: the lease now ends in an hour.
        ledger.renewed(&v("lease-1"), Some(now + Duration::from_secs(3600)));
        tokio::time::advance(Duration::from_secs(60)).await;
        let replaced = Instant::now();
        let deadline = ledger.replace(&v("lease-1"), None, replaced, &config());
        // The drain delay, not "at once" (the first lease's end is long past).
        assert_eq!(deadline, replaced + Duration::from_secs(1));
        // A lease ending sooner than the drain delay (minus the margin) wins.
        let mut short = Ledger::new(0, v("a"), None, replaced);
        let deadline = short.replace(
            &v("a"),
            Some(replaced + Duration::from_secs(5) + Duration::from_millis(300)),
            replaced,
            &config(),
        );
        assert_eq!(deadline, replaced + Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_spans_retire_their_connections_and_sweeps_stop() {
        let mut ledger = Ledger::new(0, v("v0"), None, Instant::now());
        let old = Instant::now();
        let _ = ledger.login_finished(0, old);
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        let _ = ledger.replace(&v("v0"), None, now, &config());
        ledger.begin(1, &v("v1"), now);
        assert_eq!(ledger.next_sweep(now), Some(now + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        assert!(ledger.any_due(now));
        assert_eq!(ledger.newly_due(now).len(), 1);
        assert!(ledger.newly_due(now).is_empty(), "announced once");
        ledger.prune(now);
        assert_eq!(ledger.judge(old, now), Verdict::Retire(Some(v("v0"))));
        assert!(ledger.replaced_at(&v("v0")).is_some());
        // v0 had one connection, not drained yet: sweeps go on for a while, then stop.
        assert!(ledger.next_sweep(now).is_some());
        tokio::time::advance(SWEEP_FOR + Duration::from_secs(1)).await;
        assert_eq!(ledger.next_sweep(Instant::now()), None);
    }

    #[cfg(feature = "sqlx")]
    #[tokio::test(start_paused = true)]
    async fn unseen_logins_are_judged_by_the_oldest_credentials_they_may_have_used() {
        let mut ledger = Ledger::new(0, v("v0"), None, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let switch = Instant::now();
        let _ = ledger.replace(&v("v0"), None, switch, &config());
        ledger.begin(1, &v("v1"), switch);
        tokio::time::advance(Duration::from_secs(1)).await;
        let finished = Instant::now();
        ledger.login_finished_unseen(Duration::from_secs(30), finished);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            ledger.judge(finished, Instant::now()),
            Verdict::Retire(Some(v("v0")))
        );
    }
}

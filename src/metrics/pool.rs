//! A rotating pool's metrics: counters and connection gauges from its monitor, latencies from
//! its events and timings.

use ::metrics::{SharedString, counter, gauge, histogram};

use super::catalogue as m;
use super::labels::SecretLabels;
use super::{Source, secs};
use crate::pg::monitor::WeakMonitor;
use crate::pg::{ConnectionTiming, PoolEvent, PoolMonitor};

pub(super) fn watch(name: &str, monitor: &PoolMonitor) -> Box<dyn Source> {
    let name = SharedString::from(name.to_owned());
    let events = name.clone();
    monitor.on_event(move |event| {
        let pool = [("pool", events.clone())];
        match event {
            PoolEvent::FirstConnection {
                since_created: Some(latency),
                ..
            } => histogram!(m::POOL_UPDATE_LATENCY, &pool).record(secs(*latency)),
            PoolEvent::ConnectionRetired { since_replaced, .. } => {
                histogram!(m::POOL_DRAIN, &pool).record(secs(*since_replaced));
            }
            _ => {}
        }
    });
    let timings = name.clone();
    monitor.on_timing(move |timing| {
        let pool = [("pool", timings.clone())];
        match timing {
            ConnectionTiming::Created(took) => {
                histogram!(m::DB_CREATE_TIME, &pool).record(secs(*took))
            }
            ConnectionTiming::Waited(took) => {
                histogram!(m::DB_WAIT_TIME, &pool).record(secs(*took))
            }
        }
    });
    Box::new(PoolSource {
        name,
        monitor: monitor.downgrade(),
    })
}

struct PoolSource {
    name: SharedString,
    monitor: WeakMonitor,
}

impl Source for PoolSource {
    fn publish(&mut self, _: &SecretLabels) -> bool {
        let Some(monitor) = self.monitor.upgrade() else {
            return false;
        };
        let stats = monitor.stats();
        let pool = [("pool", self.name.clone())];
        counter!(m::POOL_AUTH_FAILURES, &pool).absolute(stats.auth_failures);
        counter!(m::POOL_RETRIES, &pool).absolute(stats.retries);
        counter!(m::POOL_FALLBACKS, &pool).absolute(stats.fallbacks_to_previous);
        counter!(m::POOL_EXHAUSTED, &pool).absolute(stats.exhausted);
        counter!(m::POOL_SWAPS, &pool).absolute(stats.credential_swaps);
        counter!(m::POOL_DRAINED, &pool).absolute(stats.connections_drained);
        let connections = monitor.connections();
        for (state, count) in [("idle", connections.idle), ("used", connections.used)] {
            let labels = [
                ("pool", self.name.clone()),
                ("state", SharedString::const_str(state)),
            ];
            gauge!(m::DB_CONNECTIONS, &labels).set(count as f64);
        }
        gauge!(m::DB_CONNECTIONS_MAX, &pool).set(connections.max as f64);
        gauge!(m::DB_PENDING, &pool).set(connections.pending as f64);
        true
    }
}

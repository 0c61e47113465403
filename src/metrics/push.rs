//! A push subscriber's metrics: counters and connection state from its snapshot, rejections and
//! apply latency from its events.

use ::metrics::{SharedString, counter, gauge, histogram};

use super::catalogue as m;
use super::labels::SecretLabels;
use super::{Source, secs};
use crate::push::subscriber::WeakSubscriber;
use crate::push::{PushEvent, Subscriber};

pub(super) fn watch(name: &str, subscriber: &Subscriber) -> Box<dyn Source> {
    let name = SharedString::from(name.to_owned());
    let events = name.clone();
    subscriber.on_event(move |event| match event {
        PushEvent::Applied {
            since_sent,
            since_received,
            ..
        } => {
            let latency = since_sent.unwrap_or(*since_received);
            histogram!(m::PUSH_APPLY_LATENCY, &[("subscriber", events.clone())])
                .record(secs(latency));
        }
        PushEvent::Rejected { reason, .. } => {
            let labels = [
                ("subscriber", events.clone()),
                ("reason", SharedString::const_str(reason.as_str())),
            ];
            counter!(m::PUSH_REJECTED, &labels).increment(1);
        }
        _ => {}
    });
    for reason in ["unsigned", "forged"] {
        let labels = [
            ("subscriber", name.clone()),
            ("reason", SharedString::const_str(reason)),
        ];
        counter!(m::PUSH_REJECTED, &labels).absolute(0);
    }
    Box::new(PushSource {
        name,
        subscriber: subscriber.downgrade(),
    })
}

struct PushSource {
    name: SharedString,
    subscriber: WeakSubscriber,
}

impl Source for PushSource {
    fn publish(&mut self, _: &SecretLabels) -> bool {
        let Some(stats) = self.subscriber.stats() else {
            return false;
        };
        let subscriber = [("subscriber", self.name.clone())];
        counter!(m::PUSH_RECEIVED, &subscriber).absolute(stats.received);
        counter!(m::PUSH_APPLIED, &subscriber).absolute(stats.applied);
        counter!(m::PUSH_IGNORED, &subscriber).absolute(stats.ignored);
        counter!(m::PUSH_RECONNECTS, &subscriber).absolute(stats.reconnects);
        let malformed = [
            ("subscriber", self.name.clone()),
            ("reason", SharedString::const_str("malformed")),
        ];
        counter!(m::PUSH_REJECTED, &malformed).absolute(stats.malformed);
        gauge!(m::PUSH_CONNECTED, &subscriber).set(if stats.connected { 1.0 } else { 0.0 });
        true
    }
}

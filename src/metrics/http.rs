//! The HTTP consumers' metrics: an auth middleware's rejections, refreshes and replays, an
//! API-key layer's accepted and refused requests, all from their counters' snapshots.

use std::sync::Weak;

use ::metrics::{SharedString, counter};

use super::Source;
use super::catalogue as m;
use super::labels::SecretLabels;

#[cfg(feature = "http-client")]
pub(super) fn watch_client(
    name: &str,
    counters: Weak<crate::http::client::Counters>,
) -> Box<dyn Source> {
    Box::new(ClientSource {
        name: SharedString::from(name.to_owned()),
        counters,
    })
}

#[cfg(feature = "http-client")]
struct ClientSource {
    name: SharedString,
    counters: Weak<crate::http::client::Counters>,
}

#[cfg(feature = "http-client")]
impl Source for ClientSource {
    fn publish(&mut self, _: &SecretLabels) -> bool {
        let Some(counters) = self.counters.upgrade() else {
            return false;
        };
        let stats = counters.snapshot();
        let client = [("client", self.name.clone())];
        counter!(m::HTTP_CLIENT_REJECTIONS, &client).absolute(stats.rejections);
        counter!(m::HTTP_CLIENT_REFRESHES, &client).absolute(stats.refreshes);
        counter!(m::HTTP_CLIENT_REPLAYS, &client).absolute(stats.replays);
        for (reason, count) in [
            ("nothing_newer", stats.nothing_newer),
            ("refresh_failed", stats.refresh_failures),
            ("not_replayable", stats.not_replayed),
        ] {
            let labels = [
                ("client", self.name.clone()),
                ("reason", SharedString::const_str(reason)),
            ];
            counter!(m::HTTP_CLIENT_UNRESOLVED, &labels).absolute(count);
        }
        true
    }
}

#[cfg(feature = "http-server")]
use crate::http::Rejection;

#[cfg(feature = "http-server")]
pub(super) fn watch_server(
    name: &str,
    counters: Weak<crate::http::server::Counters>,
) -> Box<dyn Source> {
    Box::new(ServerSource {
        name: SharedString::from(name.to_owned()),
        counters,
    })
}

#[cfg(feature = "http-server")]
struct ServerSource {
    name: SharedString,
    counters: Weak<crate::http::server::Counters>,
}

#[cfg(feature = "http-server")]
impl Source for ServerSource {
    fn publish(&mut self, _: &SecretLabels) -> bool {
        let Some(counters) = self.counters.upgrade() else {
            return false;
        };
        let stats = counters.snapshot();
        for (key, count) in [
            ("current", stats.accepted_current),
            ("previous", stats.accepted_previous),
        ] {
            let labels = [
                ("server", self.name.clone()),
                ("key", SharedString::const_str(key)),
            ];
            counter!(m::HTTP_SERVER_ACCEPTED, &labels).absolute(count);
        }
        for (reason, count) in [
            (Rejection::Missing, stats.missing),
            (Rejection::Malformed, stats.malformed),
            (Rejection::Unknown, stats.unknown),
            (Rejection::PreviousExpired, stats.previous_expired),
        ] {
            let labels = [
                ("server", self.name.clone()),
                ("reason", SharedString::const_str(reason.as_str())),
            ];
            counter!(m::HTTP_SERVER_REJECTED, &labels).absolute(count);
        }
        true
    }
}

//! The one mapping from [`PgCredentials`] to a tokio-postgres connection's settings.

use tokio_postgres::Config;
use tokio_postgres::config::SslMode;

use super::credentials::{PgCredentials, TlsLevel};

fn ssl_mode(level: TlsLevel) -> SslMode {
    // tokio-postgres only knows whether to use TLS; verifying the server is the TLS connector's
    // job (native-tls and rustls connectors verify by default).
    match level {
        TlsLevel::Disable => SslMode::Disable,
        TlsLevel::Allow | TlsLevel::Prefer => SslMode::Prefer,
        TlsLevel::Require | TlsLevel::VerifyCa | TlsLevel::VerifyFull => SslMode::Require,
    }
}

fn level_of(mode: SslMode) -> TlsLevel {
    match mode {
        SslMode::Disable => TlsLevel::Disable,
        SslMode::Prefer => TlsLevel::Prefer,
        _ => TlsLevel::Require,
    }
}

/// `base` with `creds` applied: the user and password; the host and port the secret names when
/// `from_secret` (otherwise the configured ones stay); the database it names; its `sslmode` when
/// stricter than `base`'s (never looser). Every other setting of `base` (keepalives,
/// `tcp_user_timeout`, `hostaddr`, `application_name`, options, timeouts, channel binding, ...)
/// stays. The one mapping from credentials to a tokio-postgres connection: the deadpool pool and
/// the rotation engine's target both use it.
pub(crate) fn with_credentials(base: &Config, creds: &PgCredentials, from_secret: bool) -> Config {
    let login = creds.login_at(from_secret);
    let moves_target = login.host.is_some() || login.port.is_some();
    let mut config = if moves_target {
        // tokio-postgres can only add hosts and ports: build the target anew, with everything else.
        let mut fresh = settings_of(base);
        match login.host {
            Some(host) => {
                let _ = fresh.host(host);
            }
            None => {
                for host in base.get_hosts() {
                    let _ = match host {
                        tokio_postgres::config::Host::Tcp(name) => fresh.host(name),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(path) => fresh.host_path(path),
                    };
                }
                for addr in base.get_hostaddrs() {
                    let _ = fresh.hostaddr(*addr);
                }
            }
        }
        match login.port {
            Some(port) => {
                let _ = fresh.port(port);
            }
            None => {
                for port in base.get_ports() {
                    let _ = fresh.port(*port);
                }
            }
        }
        fresh
    } else {
        base.clone()
    };
    let _ = config.user(login.username).password(login.password);
    if let Some(dbname) = login.dbname {
        let _ = config.dbname(dbname);
    }
    if let Some(level) = login.tls_at_least {
        if level > level_of(base.get_ssl_mode()) {
            let _ = config.ssl_mode(ssl_mode(level));
        }
    }
    config
}

/// Every setting of `config` but its hosts, host addresses and ports.
fn settings_of(config: &Config) -> Config {
    let mut fresh = Config::new();
    if let Some(user) = config.get_user() {
        let _ = fresh.user(user);
    }
    if let Some(password) = config.get_password() {
        let _ = fresh.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        let _ = fresh.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        let _ = fresh.options(options);
    }
    if let Some(name) = config.get_application_name() {
        let _ = fresh.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        let _ = fresh.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        let _ = fresh.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        let _ = fresh.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        let _ = fresh.keepalives_retries(retries);
    }
    let _ = fresh
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    fresh
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use std::time::Duration;

    use super::*;

    fn rds(json_extra: &str) -> PgCredentials {
        serde_json::from_str(&format!(
            r#"{{"username": "app", "password": "pw", "dbname": "orders"{json_extra}}}"#
        ))
        .unwrap()
    }

    fn base() -> Config {
        let mut config = Config::new();
        let _ = config
            .host("proxy.internal")
            .hostaddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)))
            .port(6432)
            .application_name("orders")
            .ssl_mode(SslMode::Require)
            .keepalives_idle(Duration::from_secs(17))
            .keepalives_interval(Duration::from_secs(3))
            .keepalives_retries(4)
            .tcp_user_timeout(Duration::from_secs(9))
            .connect_timeout(Duration::from_secs(5))
            .options("-c statement_timeout=5000");
        config
    }

    fn assert_settings_kept(config: &Config) {
        assert_eq!(config.get_application_name(), Some("orders"));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(17));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(config.get_keepalives_retries(), Some(4));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(config.get_options(), Some("-c statement_timeout=5000"));
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        assert_eq!(config.get_dbname(), Some("orders"));
    }

    #[test]
    fn the_secrets_target_replaces_the_configured_one_and_keeps_every_other_setting() {
        let creds = rds(r#", "host": "db.internal", "port": 5432, "ssl_mode": "disable""#);
        let config = with_credentials(&base(), &creds, true);
        assert_settings_kept(&config);
        assert_eq!(config.get_hosts().len(), 1);
        assert_eq!(config.get_ports(), &[5432], "one port, not two");
        assert!(
            config.get_hostaddrs().is_empty(),
            "the proxy's address is not the secret host's"
        );
        // The secret cannot lower the TLS the pool was given.
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn the_configured_target_stays_when_asked_and_tls_can_only_go_up() {
        let creds = rds(r#", "host": "db.internal", "port": 5432, "ssl_mode": "verify-full""#);
        let mut plain = base();
        let _ = plain.ssl_mode(SslMode::Prefer);
        let config = with_credentials(&plain, &creds, false);
        assert_settings_kept(&config);
        assert_eq!(config.get_ports(), &[6432]);
        assert_eq!(config.get_hostaddrs().len(), 1);
        assert!(
            matches!(&config.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "proxy.internal")
        );
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        // A port alone in the secret replaces the configured one (not a second port).
        let port_only = rds(r#", "port": 5433"#);
        let config = with_credentials(&base(), &port_only, true);
        assert_eq!(config.get_ports(), &[5433]);
        assert_settings_kept(&config);
    }
}

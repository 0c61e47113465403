//! `PostgresTarget`'s own rules, without a server: where credentials may go, TLS, timeouts.

use super::*;

fn location(ssl_mode: Option<&str>) -> PgCredentials {
    let secret = serde_json::json!({
        "host": "db.internal", "port": 5432, "username": "app", "password": "Pw-Location-1",
    });
    let mut location: PgCredentials = serde_json::from_value(secret).unwrap();
    // Set by hand: a secret with a mode nobody knows does not even decode.
    location.ssl_mode = ssl_mode.map(str::to_owned);
    location
}

fn config_of<T>(target: &PostgresTarget<T>, ssl_mode: Option<&str>) -> Result<Config> {
    let password = SecretString::from("Pw-Admin-1");
    target.config("db", &location(ssl_mode), "rotator", &password, false)
}

fn pinned(host: &str, port: u16) -> Config {
    let mut config = Config::new();
    let _ = config.host(host).port(port);
    config
}

/// Stands for a real connector (rustls, openssl): only its type matters here.
#[derive(Clone)]
struct SomeTls;

#[test]
fn the_secrets_ssl_mode_raises_tls_and_needs_a_connector() {
    let plain = PostgresTarget::new().allow_plaintext();
    for mode in [None, Some("disable"), Some("prefer"), Some("allow")] {
        let config = config_of(&plain, mode).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable, "{mode:?}");
    }
    for mode in ["require", "verify-ca", "verify-full", "VERIFY_FULL"] {
        let err = config_of(&plain, Some(mode)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{mode}: {err}");
        assert!(err.to_string().contains("PostgresTarget::tls"), "{err}");
    }
    // With a connector, TLS is required whatever the secret says.
    let with_tls = PostgresTarget::new().tls(SomeTls);
    for mode in [None, Some("disable"), Some("require"), Some("verify-full")] {
        let config = config_of(&with_tls, mode).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require, "{mode:?}");
        assert_eq!(config.get_channel_binding(), ChannelBinding::Prefer);
    }
    // A connection that itself asks for TLS needs a connector too.
    let mut required = pinned("db.internal", 5432);
    let _ = required.ssl_mode(SslMode::Require);
    let target = PostgresTarget::new().allow_plaintext().connection(required);
    let err = config_of(&target, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // A mode nobody knows is not guessed at.
    let err = config_of(&plain, Some("requir")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.to_string().contains("Pw-"), "{err}");
}

#[test]
fn a_timeout_under_a_millisecond_is_still_a_timeout() {
    assert_eq!(timeout_millis(Duration::from_micros(500)), 1);
    assert_eq!(timeout_millis(Duration::from_nanos(1)), 1);
    assert_eq!(timeout_millis(Duration::from_micros(1200)), 2);
    assert_eq!(timeout_millis(Duration::from_secs(30)), 30_000);
    assert_eq!(timeout_millis(Duration::ZERO), 0, "zero stays 'no timeout'");
}

#[test]
fn plaintext_is_an_explicit_choice() {
    let err = config_of(&PostgresTarget::new(), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("allow_plaintext"), "{err}");
}

#[test]
fn the_admin_goes_only_where_the_configuration_says() {
    let password = SecretString::from("Pw-Admin-1");
    let admin = |target: &PostgresTarget<SomeTls>, ssl: Option<&str>| {
        target.config("db", &location(ssl), "rotator", &password, true)
    };
    // Not pinned: the secret's host would decide where the admin password goes.
    let unpinned = PostgresTarget::new().tls(SomeTls);
    let err = admin(&unpinned, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("PostgresTarget::connection"),
        "{err}"
    );
    // Pinned, and the secret agrees (names may differ in case).
    let target = PostgresTarget::new()
        .tls(SomeTls)
        .connection(pinned("DB.internal", 5432));
    let config = admin(&target, None).unwrap();
    assert_eq!(config.get_hosts(), &[Host::Tcp("DB.internal".to_owned())]);
    assert_eq!(config.get_ports(), &[5432]);
    assert_eq!(config.get_channel_binding(), ChannelBinding::Require);
    // A secret that names another host or port is refused, for every login.
    for (host, port) in [("attacker.example", 5432), ("db.internal", 6543)] {
        let target = PostgresTarget::new()
            .tls(SomeTls)
            .connection(pinned(host, port));
        for admin_login in [true, false] {
            let err = target
                .config("db", &location(None), "rotator", &password, admin_login)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
            assert!(err.to_string().contains("db.internal:5432"), "{err}");
        }
    }
    // Without an admin, an unpinned target follows the secret.
    let config = config_of(&PostgresTarget::new().allow_plaintext(), None).unwrap();
    assert_eq!(config.get_hosts(), &[Host::Tcp("db.internal".to_owned())]);
}

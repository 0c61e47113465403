//! The `credswap` command as a pipeline runs it: real processes (psql, sh, dbt) against the
//! test kit's PostgreSQL, moto and OpenBao.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use credswap::testkit::{MotoServer, OpenBaoServer, PostgresServer, find_pg_bin};
use tokio::process::Command;

/// Credentials the test gives credswap for moto: the child must never see them.
const AWS_KEY_ID: &str = "AKIDSTORECREDENTIAL";
const AWS_SECRET_KEY: &str = "store-secret-key-never-for-the-child";

fn credswap() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credswap"));
    let _ = command
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .kill_on_drop(true);
    command
}

fn psql() -> PathBuf {
    find_pg_bin().expect("PostgreSQL's binaries").join("psql")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn moto() -> (MotoServer, Client) {
    MotoServer::start_with_client().await.expect("start moto")
}

async fn postgres() -> PostgresServer {
    tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL")
}

async fn openbao() -> OpenBaoServer {
    tokio::task::spawn_blocking(OpenBaoServer::start)
        .await
        .unwrap()
        .expect("start OpenBao")
}

fn db_secret(pg: &PostgresServer, user: &str, password: &str) -> String {
    serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres",
        "username": user, "password": password,
    })
    .to_string()
}

/// `credswap run` with the secret named `db` mapped to libpq's variables, running `psql`.
fn run_psql(store_args: &[String], reference: &str, pg: &PostgresServer, sql: &str) -> Command {
    let mut command = credswap();
    let _ = command
        .args(store_args)
        .args(["run", "--secret", &format!("db={reference}")])
        .args([
            "--env",
            "PGUSER=db:username",
            "--env",
            "PGPASSWORD=db:password",
        ])
        .args(["--", psql().to_str().unwrap(), "-h", "127.0.0.1", "-p"])
        .arg(pg.port().to_string())
        .args([
            "-d",
            "postgres",
            "-X",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
    command
}

fn moto_args(moto: &MotoServer) -> Vec<String> {
    vec!["--aws-endpoint".into(), moto.endpoint()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_psql_credentials_from_moto_and_keeps_the_store_credentials() {
    let pg = postgres().await;
    let (moto, client) = moto().await;
    pg.execute("CREATE ROLE pipeline LOGIN PASSWORD 'pipeline-pw-from-moto'")
        .unwrap();
    let _ = client
        .create_secret()
        .name("prod/warehouse")
        .secret_string(db_secret(&pg, "pipeline", "pipeline-pw-from-moto"))
        .send()
        .await
        .unwrap();

    let output = run_psql(
        &moto_args(&moto),
        "aws:prod/warehouse",
        &pg,
        "select current_user",
    )
    .output()
    .await
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "pipeline");

    // The child's environment: the mapped fields, and none of the store's credentials.
    let output = credswap()
        .args(moto_args(&moto))
        .env("CREDSWAP_TIMEOUT", "20s")
        .args([
            "run",
            "-s",
            "wh=aws:prod/warehouse",
            "-e",
            "DBT_PASSWORD=wh:password",
        ])
        .args([
            "--env-json",
            "wh=WH_",
            "--airflow-conn",
            "warehouse=wh",
            "--",
            "env",
        ])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let env: Vec<&str> = stdout.lines().collect();
    assert!(
        env.contains(&"DBT_PASSWORD=pipeline-pw-from-moto"),
        "{stdout}"
    );
    assert!(env.contains(&"WH_USERNAME=pipeline"));
    assert!(env.contains(&format!("WH_PORT={}", pg.port()).as_str()));
    let airflow = env
        .iter()
        .find_map(|l| l.strip_prefix("AIRFLOW_CONN_WAREHOUSE="))
        .expect("the Airflow connection");
    let conn: serde_json::Value = serde_json::from_str(airflow).unwrap();
    assert_eq!(conn["login"], "pipeline");
    assert_eq!(conn["schema"], "postgres");
    assert_eq!(conn["conn_type"], "postgres");
    for kept in [
        AWS_KEY_ID,
        AWS_SECRET_KEY,
        "CREDSWAP_TIMEOUT",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(!stdout.contains(kept), "the child saw {kept}");
    }
    // Unless asked.
    let output = credswap()
        .args(moto_args(&moto))
        .args([
            "run",
            "--pass-store-credentials",
            "-s",
            "wh=aws:prod/warehouse",
        ])
        .args(["-e", "P=wh:password", "--", "env"])
        .output()
        .await
        .unwrap();
    assert!(text(&output).0.contains(AWS_SECRET_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_psql_credentials_from_openbao_kv_and_dynamic_ones_it_revokes() {
    let pg = postgres().await;
    let bao = openbao().await;
    pg.execute("CREATE ROLE kv_reader LOGIN PASSWORD 'kv-reader-pw'")
        .unwrap();
    let file = bao.work_dir().join("db.json");
    std::fs::write(&file, db_secret(&pg, "kv_reader", "kv-reader-pw")).unwrap();
    let _ = bao
        .cli(&[
            "kv",
            "put",
            "secret/app/db",
            &format!("@{}", file.display()),
        ])
        .unwrap();
    let vault = |command: &mut Command| {
        let _ = command
            .env("VAULT_ADDR", bao.addr())
            .env("VAULT_TOKEN", bao.root_token());
    };

    let mut command = run_psql(&[], "vault-kv:secret/app/db", &pg, "select current_user");
    vault(&mut command);
    let output = command.output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "kv_reader");

    let mut command = credswap();
    vault(&mut command);
    let output = command
        .args([
            "run",
            "-s",
            "db=vault-kv:secret/app/db",
            "-e",
            "P=db:password",
            "--",
            "env",
        ])
        .output()
        .await
        .unwrap();
    let (stdout, _) = text(&output);
    assert!(stdout.contains("P=kv-reader-pw"));
    assert!(
        !stdout.contains(bao.root_token()),
        "the child saw the Vault token"
    );

    // Dynamic credentials: a new user for the command, revoked when it ends.
    bao.cli(&["secrets", "enable", "database"]).unwrap();
    let url = format!(
        "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    bao.cli(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        &url,
        "username=postgres",
        &format!("password={}", pg.superuser_password()),
        "allowed_roles=*",
    ])
    .unwrap();
    bao.cli(&[
        "write", "database/roles/reports", "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        "default_ttl=5m", "max_ttl=10m",
    ])
    .unwrap();
    let count = "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'";
    let mut command = run_psql(
        &[],
        "vault-db:database/creds/reports",
        &pg,
        "select current_user",
    );
    vault(&mut command);
    let output = command.output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.trim().starts_with("v-"), "{stdout}");
    assert!(stderr.contains("revoked 1 lease"), "{stderr}");
    assert_eq!(
        pg.execute(count).unwrap().trim(),
        "0",
        "the dynamic user outlived the command"
    );

    // --keep-leases leaves it alive.
    let mut command = credswap();
    vault(&mut command);
    let output = command
        .args([
            "run",
            "--keep-leases",
            "-s",
            "db=vault-db:database/creds/reports",
        ])
        .args(["-e", "P=db:password", "--", "true"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(pg.execute(count).unwrap().trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_come_back_and_sigterm_reaches_the_child() {
    let with = |script: &str| {
        let mut command = credswap();
        let _ = command.env("S", "{\"a\":\"b\"}").args([
            "run", "-s", "s=env:S", "-e", "A=s:a", "--", "sh", "-c", script,
        ]);
        command
    };
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("kill -9 $$", 128 + 9),
        ("exit 7", 7),
    ] {
        let status = with(script).status().await.unwrap();
        assert_eq!(status.code(), Some(code), "{script}");
    }
    let status = credswap()
        .args(["run", "--", "/nonexistent/command"])
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(127));

    // SIGTERM sent to `run` reaches the child, whose own exit code comes back.
    let mut child =
        with("trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    let _ = stdout.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "ready");
    kill("TERM", child.id().unwrap());
    let status = child.wait().await.unwrap();
    line.clear();
    let _ = stdout.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "got-term");
    assert_eq!(status.code(), Some(42));
}

fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_within_the_timeout_with_a_clear_message() {
    // A port that accepts connections and never answers: the worst kind of unreachable.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", black_hole.local_addr().unwrap());
    let _held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().flatten() {
            held.push(stream);
        }
    });
    for (args, reference) in [
        (vec!["--aws-endpoint", address.as_str()], "aws:prod/db"),
        (vec!["--vault-addr", address.as_str()], "vault-kv:secret/db"),
    ] {
        let started = Instant::now();
        let output = credswap()
            .env("VAULT_TOKEN", "s.some-token")
            .args(&args)
            .args([
                "--timeout",
                "2s",
                "run",
                "-s",
                &format!("db={reference}"),
                "-e",
                "P=db:password",
                "--",
                "true",
            ])
            .output()
            .await
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(69), "{reference}: {stderr}");
        assert!(stderr.contains(reference), "{stderr}");
        assert!(stderr.contains("hint:"), "{stderr}");
        // The design bound: the 2 s timeout, plus starting a process; far from a hang.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{reference} took {:?}",
            started.elapsed()
        );
    }
    // Errors that say what to do: a secret that is not there, a field that is not there.
    let (moto, client) = moto().await;
    let _ = client
        .create_secret()
        .name("app")
        .secret_string(r#"{"password":"p-123456"}"#)
        .send()
        .await
        .unwrap();
    let output = credswap()
        .args(moto_args(&moto))
        .args([
            "run",
            "-s",
            "db=aws:no-such-secret",
            "-e",
            "P=db:password",
            "--",
            "true",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(66), "{}", text(&output).1);
    let output = credswap()
        .args(moto_args(&moto))
        .args([
            "run",
            "-s",
            "db=aws:app",
            "-e",
            "P=db:pasword",
            "--",
            "true",
        ])
        .output()
        .await
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        stderr.contains("no field `pasword`") && stderr.contains("password"),
        "{stderr}"
    );
    assert!(!stderr.contains("p-123456"));
}

/// Rotates `reference`'s credentials with `credswap rotate` against `pg`.
async fn rotate(
    store_args: &[String],
    env: &[(&str, String)],
    reference: &str,
    pg: &PostgresServer,
) -> String {
    let mut command = credswap();
    for (k, v) in env {
        let _ = command.env(k, v);
    }
    let output = command
        .args(store_args)
        .args([
            "rotate",
            reference,
            "--db-host",
            "127.0.0.1",
            "--db-plaintext",
        ])
        .args(["--db-port", &pg.port().to_string()])
        .env("CREDSWAP_ADMIN_USER", PostgresServer::SUPERUSER)
        .env("CREDSWAP_ADMIN_PASSWORD", pg.superuser_password())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(pg.superuser_password()) && !stderr.contains(pg.superuser_password()));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_against_moto_then_status_json_field_by_field() {
    let pg = postgres().await;
    let (moto, client) = moto().await;
    pg.execute("CREATE ROLE orders_app LOGIN PASSWORD 'orders-first-pw'")
        .unwrap();
    let _ = client
        .create_secret()
        .name("prod/orders")
        .secret_string(db_secret(&pg, "orders_app", "orders-first-pw"))
        .send()
        .await
        .unwrap();
    let stdout = rotate(&moto_args(&moto), &[], "aws:prod/orders", &pg).await;
    for step in ["create", "set", "test", "finish", "rotated:"] {
        assert!(stdout.contains(step), "{step} not shown: {stdout}");
    }
    // The new password works, the old one does not.
    let output = run_psql(
        &moto_args(&moto),
        "aws:prod/orders",
        &pg,
        "select current_user",
    )
    .output()
    .await
    .unwrap();
    assert_eq!(text(&output).0.trim(), "orders_app", "{}", text(&output).1);
    let old = std::process::Command::new(psql())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "orders_app",
            "-d",
            "postgres",
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", "orders-first-pw")
        .output()
        .unwrap();
    assert!(!old.status.success(), "the old password still logs in");

    let described = client
        .describe_secret()
        .secret_id("prod/orders")
        .send()
        .await
        .unwrap();
    let stages = described.version_ids_to_stages().unwrap();
    let current = stages
        .iter()
        .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
        .unwrap()
        .0;
    let previous = stages
        .iter()
        .find(|(_, s)| s.iter().any(|s| s == "AWSPREVIOUS"))
        .unwrap()
        .0;
    let output = credswap()
        .args(moto_args(&moto))
        .args(["status", "aws:prod/orders", "--json"])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = &status[0];
    assert_eq!(row["secret"], "aws:prod/orders");
    assert_eq!(row["store"], "aws");
    assert_eq!(row["id"], "prod/orders");
    assert_eq!(row["current"]["id"], current.as_str());
    assert_eq!(row["current"]["stages"], serde_json::json!(["current"]));
    assert!(row["current"]["created"].as_str().unwrap().ends_with('Z'));
    assert!(row["current"]["age_seconds"].as_u64().unwrap() < 3600);
    assert_eq!(row["current"]["lease"], serde_json::Value::Null);
    assert_eq!(row["previous"]["id"], previous.as_str());
    assert_eq!(row["previous"]["stages"], serde_json::json!(["previous"]));
    assert_eq!(row["health"]["state"], "fresh");
    for value in ["orders-first-pw", "password\":"] {
        assert!(!stdout.contains(value), "status printed {value}");
    }
    // The table, and a missing secret beside a good one: its row says why, the exit code too.
    let output = credswap()
        .args(moto_args(&moto))
        .args(["status", "aws:prod/orders", "aws:prod/nothing"])
        .output()
        .await
        .unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(66));
    assert!(
        stdout.contains(current.as_str())
            && stdout.contains("fresh")
            && stdout.contains("not found"),
        "{stdout}"
    );
}

/// A CA, and a certificate for `127.0.0.1` it signed: (CA PEM, server certificate PEM, key PEM).
fn test_ca(name: &str) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_over_tls_to_a_database_that_refuses_plaintext() {
    let (ca, chain, key) = test_ca("credswap test CA");
    let pg = tokio::task::spawn_blocking(move || PostgresServer::start_tls(&chain, &key))
        .await
        .unwrap()
        .expect("start PostgreSQL with TLS");
    let (moto, client) = moto().await;
    pg.execute("CREATE ROLE tls_app LOGIN PASSWORD 'tls-first-pw'")
        .unwrap();
    let _ = client
        .create_secret()
        .name("prod/tls")
        .secret_string(db_secret(&pg, "tls_app", "tls-first-pw"))
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (other_ca, _, _) = test_ca("someone else's CA");
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other_ca).unwrap();
    let rotate_with = |db_args: Vec<String>| {
        let mut command = credswap();
        let _ = command
            .args(moto_args(&moto))
            .args(["rotate", "aws:prod/tls", "--db-host", "127.0.0.1"])
            .args(["--db-port", &pg.port().to_string()])
            .args(db_args)
            .env("CREDSWAP_ADMIN_USER", PostgresServer::SUPERUSER)
            .env("CREDSWAP_ADMIN_PASSWORD", pg.superuser_password());
        command
    };
    let current = || async {
        let described = client
            .describe_secret()
            .secret_id("prod/tls")
            .send()
            .await
            .unwrap();
        let stages = described.version_ids_to_stages().unwrap();
        let current = stages
            .iter()
            .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"));
        current.unwrap().0.clone()
    };
    let before = current().await;

    // Plaintext is refused by the server, and the failed rotation changes nothing.
    let output = rotate_with(vec!["--db-plaintext".into()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_ne!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(current().await, before);
    assert!(
        stderr.contains("no encryption") && stderr.contains("--db-plaintext"),
        "{stderr}"
    );
    // A CA that did not sign the server's certificate: the handshake fails, nothing is sent.
    let output = rotate_with(vec!["--db-ca".into(), other_file.display().to_string()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_ne!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("UnknownIssuer") && stderr.contains("--db-ca"),
        "{stderr}"
    );
    assert_eq!(current().await, before);
    // Not a certificate file, and contradicting flags: usage errors before anything runs.
    let output = rotate_with(vec![
        "--db-ca".into(),
        dir.path().join("missing.pem").display().to_string(),
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output).1);
    assert!(text(&output).1.contains("--db-ca"), "{}", text(&output).1);
    let output = rotate_with(vec![
        "--db-ca".into(),
        ca_file.display().to_string(),
        "--db-plaintext".into(),
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", text(&output).1);

    // The right CA: rotated over TLS, and the new password logs in (over TLS too).
    let output = rotate_with(vec!["--db-ca".into(), ca_file.display().to_string()])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("rotated:"), "{stdout}");
    assert_ne!(current().await, before);
    let output = run_psql(
        &moto_args(&moto),
        "aws:prod/tls",
        &pg,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    )
    .output()
    .await
    .unwrap();
    assert_eq!(text(&output).0.trim(), "t", "{}", text(&output).1);
    for printed in [&stdout, &stderr] {
        assert!(!printed.contains("tls-first-pw") && !printed.contains(pg.superuser_password()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_against_openbao_kv() {
    let pg = postgres().await;
    let bao = openbao().await;
    pg.execute("CREATE ROLE kv_app LOGIN PASSWORD 'kv-app-first-pw'")
        .unwrap();
    let file = bao.work_dir().join("db.json");
    std::fs::write(&file, db_secret(&pg, "kv_app", "kv-app-first-pw")).unwrap();
    let _ = bao
        .cli(&[
            "kv",
            "put",
            "secret/orders",
            &format!("@{}", file.display()),
        ])
        .unwrap();
    let env = [
        ("VAULT_ADDR", bao.addr()),
        ("VAULT_TOKEN", bao.root_token().to_owned()),
    ];
    let stdout = rotate(&[], &env, "vault-kv:secret/orders", &pg).await;
    assert!(stdout.contains("rotated:"), "{stdout}");
    let mut command = run_psql(&[], "vault-kv:secret/orders", &pg, "select current_user");
    for (k, v) in &env {
        let _ = command.env(k, v);
    }
    let output = command.output().await.unwrap();
    assert_eq!(text(&output).0.trim(), "kv_app", "{}", text(&output).1);
    // --if-due skips a fresh secret.
    let mut command = credswap();
    for (k, v) in &env {
        let _ = command.env(k, v);
    }
    let output = command
        .args([
            "rotate",
            "vault-kv:secret/orders",
            "--db-host",
            "127.0.0.1",
            "--db-plaintext",
            "--if-due",
            "1d",
        ])
        .args(["--db-port", &pg.port().to_string()])
        .env("CREDSWAP_ADMIN_USER", PostgresServer::SUPERUSER)
        .env("CREDSWAP_ADMIN_PASSWORD", pg.superuser_password())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("not due"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_refuses_a_terminal_unless_revealed() {
    let script = which("script");
    let binary = env!("CARGO_BIN_EXE_credswap");
    let under_terminal = |extra: &str| {
        std::process::Command::new(&script)
            .args([
                "-qec",
                &format!("{binary} get env:TOKEN {extra}"),
                "/dev/null",
            ])
            .env("TOKEN", "tty-token-value")
            .output()
            .unwrap()
    };
    let refused = under_terminal("");
    let shown = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(64), "{shown}");
    assert!(
        shown.contains("refusing to print a secret to a terminal"),
        "{shown}"
    );
    assert!(!shown.contains("tty-token-value"));
    let revealed = under_terminal("--reveal");
    assert!(revealed.status.success());
    assert!(String::from_utf8_lossy(&revealed.stdout).contains("tty-token-value"));
    // Into a pipe it prints, in each format.
    let output = credswap()
        .env("DB", r#"{"user":"u","pass":"it's"}"#)
        .args(["get", "env:DB", "--format", "env", "--prefix", "DB_"])
        .output()
        .await
        .unwrap();
    assert_eq!(text(&output).0, "DB_PASS='it'\\''s'\nDB_USER='u'\n");
    let output = credswap()
        .env("DB", r#"{"user":"u"}"#)
        .args(["get", "env:DB", "-f", "user"])
        .output()
        .await
        .unwrap();
    assert_eq!(text(&output).0, "u");
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("`{program}` is needed: apt-get install bsdutils (util-linux)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_restarts_the_child_once_per_rotation_never_two_at_once() {
    let (moto, client) = moto().await;
    let _ = client
        .create_secret()
        .name("svc/key")
        .secret_string(r#"{"token":"watch-token-0-a8f3"}"#)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts.log");
    // The child writes to a file, never to run's output: what run prints is its own.
    let script = format!(
        "echo \"start $$ $TOKEN\" >> {log}; trap 'echo \"stop $$\" >> {log}; exit 0' TERM; \
         while :; do sleep 0.05; done",
        log = log.display()
    );
    let mut run = credswap()
        .args(moto_args(&moto))
        .args([
            "--ttl", "1s", "run", "--watch", "--grace", "5s", "--splay", "300ms",
        ])
        .args([
            "-s",
            "svc=aws:svc/key",
            "-e",
            "TOKEN=svc:token",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tokens: Vec<String> = (0..4).map(|n| format!("watch-token-{n}-a8f3")).collect();
    wait_for(&log, &format!("{}\n", tokens[0])).await;
    for token in &tokens[1..] {
        let _ = client
            .put_secret_value()
            .secret_id("svc/key")
            .secret_string(format!(r#"{{"token":"{token}"}}"#))
            .send()
            .await
            .unwrap();
        wait_for(&log, &format!("{token}\n")).await;
    }
    kill("TERM", run.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stdout = String::new();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    let _ = run.stdout.take().unwrap().read_to_string(&mut stdout).await;
    let _ = run.stderr.take().unwrap().read_to_string(&mut stderr).await;

    // start A, stop A, start B, stop B, ...: each start after the previous child stopped.
    let lines: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    for (n, pair) in lines.chunks(2).enumerate() {
        assert_eq!(pair[0][0], "start", "{lines:?}");
        assert_eq!(
            pair[0][2], tokens[n],
            "start {n} had the wrong token: {lines:?}"
        );
        assert_eq!(
            pair[1],
            vec!["stop".to_owned(), pair[0][1].clone()],
            "{lines:?}"
        );
    }
    assert_eq!(stderr.matches("starting it again").count(), 3, "{stderr}");
    for token in &tokens {
        assert!(
            !stdout.contains(token) && !stderr.contains(token),
            "run printed a value: {stdout}{stderr}"
        );
    }
}

async fn wait_for(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?} in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_replaces_values_in_the_childs_output() {
    let output = credswap()
        .env("S", r#"{"host":"db.internal","password":"mask-me-please"}"#)
        .args([
            "run",
            "--mask",
            "-s",
            "s=env:S",
            "-e",
            "P=s:password",
            "-e",
            "H=s:host",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "echo \"p=$P h=$H\"; printf 'mask-me-' >&2; sleep 0.05; echo 'please' >&2",
        ])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(stdout, "p=[MASKED] h=db.internal\n");
    assert_eq!(stderr, "[MASKED]\n");
}

fn dbt() -> PathBuf {
    std::env::var_os("CREDSWAP_DBT")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH")
                .and_then(|path| std::env::split_paths(&path).map(|d| d.join("dbt")).find(|p| p.is_file()))
        })
        .expect("dbt is needed: pip install 'dbt-core~=1.10.0' 'dbt-postgres~=1.9.0' (scripts/test does, and sets CREDSWAP_DBT)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_runs_through_credswap_and_again_after_the_engine_rotates_the_password() {
    let dbt = dbt();
    let pg = postgres().await;
    let (moto, client) = moto().await;
    pg.execute("CREATE ROLE warehouse LOGIN PASSWORD 'warehouse-first-pw'")
        .unwrap();
    pg.execute("GRANT CREATE ON DATABASE postgres TO warehouse")
        .unwrap();
    let _ = client
        .create_secret()
        .name("prod/warehouse")
        .secret_string(db_secret(&pg, "warehouse", "warehouse-first-pw"))
        .send()
        .await
        .unwrap();
    let project = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli_dbt");
    for file in [
        "dbt_project.yml",
        "profiles.yml",
        "models/orders_by_day.sql",
    ] {
        let to = project.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let _ = std::fs::copy(source.join(file), to).unwrap();
    }
    // The one line that replaces a hand-written run_dbt.py.
    let dbt_with = |subcommand: &str| {
        let mut command = credswap();
        let _ = command
            .current_dir(project.path())
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env("DO_NOT_TRACK", "1")
            .env("DBT_VERSION_CHECK", "false")
            .args(moto_args(&moto))
            .args(["run", "-s", "wh=aws:prod/warehouse"])
            .args([
                "-e",
                "DBT_HOST=wh:host",
                "-e",
                "DBT_PORT=wh:port",
                "-e",
                "DBT_USER=wh:username",
            ])
            .args([
                "-e",
                "DBT_PASSWORD=wh:password",
                "-e",
                "DBT_DBNAME=wh:dbname",
                "--",
            ])
            .arg(&dbt)
            .args([subcommand, "--profiles-dir", ".", "--project-dir", "."]);
        command
    };
    for subcommand in ["debug", "run"] {
        let output = dbt_with(subcommand).output().await.unwrap();
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "dbt {subcommand}: {stdout}{stderr}"
        );
    }
    assert_eq!(
        pg.execute("SELECT loaded_by FROM analytics.orders_by_day")
            .unwrap()
            .trim(),
        "warehouse"
    );

    let _ = rotate(&moto_args(&moto), &[], "aws:prod/warehouse", &pg).await;
    let output = dbt_with("run").output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "dbt run after the rotation: {stdout}{stderr}"
    );
    assert!(!stdout.contains("warehouse-first-pw") && !stderr.contains("warehouse-first-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_over_redis_restarts_a_watching_run_long_before_its_ttl() {
    let redis = tokio::task::spawn_blocking(credswap::testkit::RedisServer::start)
        .await
        .unwrap()
        .expect("start Redis");
    let (moto, client) = moto().await;
    let _ = client
        .create_secret()
        .name("svc/push")
        .secret_string(r#"{"token":"push-token-0-77c1"}"#)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts.log");
    let script = format!(
        "echo \"start $$ $TOKEN\" >> {log}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display()
    );
    // A TTL of an hour: only the announcement can make it restart within the test.
    let mut run = credswap()
        .args(moto_args(&moto))
        .args([
            "--ttl",
            "1h",
            "--push-redis",
            &redis.url(),
            "run",
            "--watch",
        ])
        .args([
            "-s",
            "svc=aws:svc/push",
            "-e",
            "TOKEN=svc:token",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    wait_for(&log, "push-token-0-77c1\n").await;
    // The subscriber connects in the background; announce until the child restarts.
    let _ = client
        .put_secret_value()
        .secret_id("svc/push")
        .secret_string(r#"{"token":"push-token-1-77c1"}"#)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("push-token-1-77c1")
    {
        assert!(
            Instant::now() < deadline,
            "the announcement never restarted the child"
        );
        let output = credswap()
            .args(moto_args(&moto))
            .args(["--push-redis", &redis.url(), "notify", "aws:svc/push"])
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stdout.starts_with("announced aws:svc/push at version "),
            "{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    kill("TERM", run.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let starts = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(
        starts, 2,
        "one restart for one new version, however many announcements"
    );
}

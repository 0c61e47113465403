//! Helpers shared by the Vault test binaries: a throwaway OpenBao (and PostgreSQL behind its
//! database engine), sessions, policies, AppRole.
#![allow(dead_code, unreachable_pub)]

use credswap::pg::PgCredentials;
use credswap::provider::{VaultAuth, VaultSession};
use credswap::secrecy::ExposeSecret;
use credswap::testkit::{OpenBaoServer, PostgresServer};

pub async fn openbao() -> OpenBaoServer {
    tokio::task::spawn_blocking(OpenBaoServer::start)
        .await
        .unwrap()
        .expect("start OpenBao")
}

pub async fn root_session(bao: &OpenBaoServer) -> VaultSession {
    VaultSession::connect(
        bao.addr(),
        VaultAuth::Token(bao.root_token().to_owned().into()),
    )
    .await
    .expect("root login")
}

pub struct DatabaseEngine {
    pub bao: OpenBaoServer,
    pub pg: PostgresServer,
}

pub async fn database_engine() -> DatabaseEngine {
    let (bao, pg) = tokio::join!(openbao(), async {
        tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap()
            .expect("start PostgreSQL")
    });
    pg.execute("CREATE ROLE static_user LOGIN PASSWORD 'initial'")
        .unwrap();
    mount_database_engine(&bao, &pg, "4s", "12s");
    DatabaseEngine { bao, pg }
}

pub async fn can_log_in(pg: &PostgresServer, creds: &PgCredentials) -> Result<(), String> {
    let config = format!(
        "host=127.0.0.1 port={} dbname=postgres user={} password={}",
        pg.port(),
        creds.username,
        creds.password.expose_secret()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            e.code()
                .map(|c| c.code().to_owned())
                .unwrap_or(e.to_string())
        })?;
    let _task = tokio::spawn(connection);
    client
        .query_one("SELECT 1", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Mounts OpenBao's database engine on `pg` (as its superuser) with a dynamic role `dyn` whose
/// leases last `default_ttl`, renewable up to `max_ttl`.
pub fn mount_database_engine(
    bao: &OpenBaoServer,
    pg: &PostgresServer,
    default_ttl: &str,
    max_ttl: &str,
) {
    bao.cli(&["secrets", "enable", "database"]).unwrap();
    let url = format!(
        "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let password = format!("password={}", pg.superuser_password());
    bao.cli(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        &url,
        "username=postgres",
        &password,
        "allowed_roles=*",
    ])
    .unwrap();
    bao.cli(&[
        "write",
        "database/roles/dyn",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        &format!("default_ttl={default_ttl}"),
        &format!("max_ttl={max_ttl}"),
    ])
    .unwrap();
}

/// Writes policy `name` with `hcl`.
pub fn policy(bao: &OpenBaoServer, name: &str, hcl: &str) {
    let file = bao.work_dir().join(format!("{name}.hcl"));
    std::fs::write(&file, hcl).unwrap();
    bao.cli(&["policy", "write", name, &file.display().to_string()])
        .unwrap();
}

/// Enables AppRole (once) and creates role `role` with `settings` (`token_policies=...`);
/// returns its login.
pub fn approle(bao: &OpenBaoServer, role: &str, settings: &[&str]) -> VaultAuth {
    let _ = bao.cli(&["auth", "enable", "approle"]);
    let path = format!("auth/approle/role/{role}");
    let mut args = vec!["write", path.as_str()];
    args.extend_from_slice(settings);
    bao.cli(&args).unwrap();
    let role_id = bao
        .cli(&["read", "-field=role_id", &format!("{path}/role-id")])
        .unwrap();
    let secret_id = bao
        .cli(&[
            "write",
            "-f",
            "-field=secret_id",
            &format!("{path}/secret-id"),
        ])
        .unwrap();
    VaultAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id: secret_id.into(),
    }
}

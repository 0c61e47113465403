use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{
    ServerProcess, free_port, is_executable, lookup_user, on_path, random_token, running_as_root,
};

const INSTALL_HINT: &str = "install PostgreSQL with `apt-get install postgresql` (or run \
     scripts/test, which does), or point CREDSWAP_PG_BIN at the directory holding initdb and postgres";

/// A throwaway PostgreSQL server: a fresh cluster in a temp dir, listening on a free loopback port,
/// with `scram-sha-256` password authentication for every connection, stopped and deleted on drop.
///
/// The binaries are found through `CREDSWAP_PG_BIN` (a directory), then `PATH`, then
/// `/usr/lib/postgresql/*/bin` (the newest). When the process runs as root (as in containers), the
/// server runs as the `postgres` system user, since PostgreSQL refuses to run as root.
///
/// ```no_run
/// use credswap::testkit::PostgresServer;
///
/// let pg = PostgresServer::start().unwrap();
/// pg.execute("CREATE ROLE app LOGIN PASSWORD 'first'").unwrap();
/// println!("listening on {}:{}", pg.host(), pg.port());
/// ```
pub struct PostgresServer {
    process: Option<ServerProcess>,
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    /// `-c name=value` settings given at start, kept across restarts.
    settings: Vec<(String, String)>,
    // Last: removed after the server stopped.
    dir: tempfile::TempDir,
}

/// Writes the certificate and key where the server reads them (the key private to the server's
/// user, as PostgreSQL demands) and a `pg_hba.conf` that takes TCP logins over TLS only; returns
/// the settings that turn TLS on.
fn tls_only(
    dir: &Path,
    data: &Path,
    run_as: Option<(u32, u32)>,
    chain: &str,
    key: &str,
) -> Result<Vec<(String, String)>, TestkitError> {
    use std::os::unix::fs::PermissionsExt;
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, chain).map_err(|e| TestkitError::io("write server.crt", e))?;
    std::fs::write(&key_path, key).map_err(|e| TestkitError::io("write server.key", e))?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| TestkitError::io("chmod server.key", e))?;
    if let Some((uid, gid)) = run_as {
        for path in [&cert_path, &key_path] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| TestkitError::io("chown the TLS files", e))?;
        }
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all scram-sha-256\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .map_err(|e| TestkitError::io("write pg_hba.conf", e))?;
    Ok(vec![
        ("ssl".to_owned(), "on".to_owned()),
        ("ssl_cert_file".to_owned(), cert_path.display().to_string()),
        ("ssl_key_file".to_owned(), key_path.display().to_string()),
    ])
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// Where the PostgreSQL server binaries are.
pub fn find_pg_bin() -> Result<PathBuf, TestkitError> {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"));
    if let Some(dir) = std::env::var_os("CREDSWAP_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_both(&dir) {
            return Ok(dir);
        }
        return Err(TestkitError::MissingBinary {
            what: "PostgreSQL (CREDSWAP_PG_BIN has no initdb and postgres)",
            hint: INSTALL_HINT,
        });
    }
    if let Some(initdb) = on_path("initdb") {
        let resolved = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = resolved.parent() {
            if has_both(dir) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(TestkitError::MissingBinary {
            what: "PostgreSQL server (initdb, postgres)",
            hint: INSTALL_HINT,
        })
}

impl PostgresServer {
    /// The superuser's name.
    pub const SUPERUSER: &'static str = "postgres";

    /// Creates a cluster and starts the server; returns once it accepts connections.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with server settings passed as `-c name=value` (they override
    /// the test kit's own, such as `max_connections=300`): `&[("log_statement", "all")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, TestkitError> {
        Self::create(settings, None)
    }

    /// A server that accepts TCP connections **only over TLS**, with `certificate_chain` (PEM,
    /// the server's certificate first) and its `private_key` (PEM): plaintext TCP logins are
    /// rejected by `pg_hba.conf` (`hostnossl … reject`). Clients must trust the issuer of the
    /// chain; for tests, make a CA and a certificate for `127.0.0.1` with `rcgen` or `openssl`.
    pub fn start_tls(certificate_chain: &str, private_key: &str) -> Result<Self, TestkitError> {
        Self::create(&[], Some((certificate_chain, private_key)))
    }

    fn create(settings: &[(&str, &str)], tls: Option<(&str, &str)>) -> Result<Self, TestkitError> {
        let bin = find_pg_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let run_as = if running_as_root() {
            let user = lookup_user("postgres")
                .or_else(|| lookup_user("nobody"))
                .ok_or(TestkitError::Startup {
                    what: "PostgreSQL",
                    detail:
                        "running as root and no `postgres` or `nobody` user to run the server as"
                            .into(),
                })?;
            std::os::unix::fs::chown(dir.path(), Some(user.0), Some(user.1))
                .map_err(|e| TestkitError::io("chown temp dir", e))?;
            Some(user)
        } else {
            None
        };
        let password = random_token(24);
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| TestkitError::io("write pwfile", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(|e| TestkitError::io("chown pwfile", e))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        let _ = initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", Self::SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--no-sync", "--no-instructions", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = run_as {
            let _ = initdb.uid(uid).gid(gid);
        }
        let output = initdb
            .output()
            .map_err(|e| TestkitError::io("run initdb", e))?;
        let _ = std::fs::remove_file(&pwfile);
        if !output.status.success() {
            return Err(TestkitError::Startup {
                what: "PostgreSQL initdb",
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let mut settings: Vec<(String, String)> = settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        if let Some((chain, key)) = tls {
            settings.extend(tls_only(dir.path(), &data, run_as, chain, key)?);
        }
        let mut server = PostgresServer {
            process: None,
            bin,
            data,
            run_as,
            port: 0,
            password,
            settings,
            dir,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        // The port may be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            let port = if self.port == 0 {
                free_port()?
            } else {
                self.port
            };
            let mut command = Command::new(self.bin.join("postgres"));
            let _ = command
                .arg("-D")
                .arg(&self.data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .args(["-c", "password_encryption=scram-sha-256"])
                .env("LC_ALL", "C");
            for (name, value) in &self.settings {
                let _ = command.arg("-c").arg(format!("{name}={value}"));
            }
            if let Some((uid, gid)) = self.run_as {
                let _ = command.uid(uid).gid(gid);
            }
            let log = self.dir.path().join(format!("postgres-{port}.log"));
            let mut process = ServerProcess::spawn("PostgreSQL", command, log)?;
            match process.wait_until(Duration::from_secs(60), |p| {
                p.log_contains("ready to accept connections")
            }) {
                Ok(()) => {
                    self.port = port;
                    self.process = Some(process);
                    return Ok(());
                }
                Err(error) => {
                    let retry_port = self.port == 0;
                    last_error = Some(error);
                    if !retry_port {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "PostgreSQL",
            detail: "could not start".into(),
        }))
    }

    /// The host to connect to (`127.0.0.1`).
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (random per server).
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// A `postgres://` URL for the superuser and database `postgres`.
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/postgres",
            Self::SUPERUSER,
            self.password,
            self.host(),
            self.port
        )
    }

    /// Everything the server has written to its log so far (its current run's log; with
    /// `log_statement=all`, every statement it received).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| std::fs::read_to_string(p.log_path()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The process id of the postmaster, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }

    /// Runs `sql` as the superuser with `psql` (which comes with the server package), and returns
    /// what it printed (unaligned, tuples only). The password goes through the environment, not
    /// the command line.
    pub fn execute(&self, sql: &str) -> Result<String, TestkitError> {
        let psql = self
            .bin
            .join("psql")
            .canonicalize()
            .ok()
            .filter(|p| is_executable(p))
            .or_else(|| on_path("psql"))
            .ok_or(TestkitError::MissingBinary {
                what: "psql",
                hint: "install it with `apt-get install postgresql-client`",
            })?;
        let output = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", self.host(), "-U", Self::SUPERUSER, "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| TestkitError::io("run psql", e))?;
        if !output.status.success() {
            return Err(TestkitError::Sql(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing is lost).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop_with(libc::SIGINT, Duration::from_secs(30));
        }
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port and data, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

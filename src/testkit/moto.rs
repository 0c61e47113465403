use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{ServerProcess, free_port, http_status, is_executable, on_path};

/// A throwaway moto server: the AWS APIs (Secrets Manager among them) in memory, on a free loopback
/// port; stopped on drop. Point an AWS SDK at [`endpoint`](Self::endpoint) with any credentials.
///
/// The binary is `CREDSWAP_MOTO`, else `moto_server` on `PATH` (PyPI's `moto[server]`).
///
/// ```no_run
/// use credswap::testkit::MotoServer;
///
/// let moto = MotoServer::start().unwrap();
/// println!("AWS_ENDPOINT_URL={}", moto.endpoint());
/// ```
#[derive(Debug)]
pub struct MotoServer {
    process: Option<ServerProcess>,
    port: u16,
    requests: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where the `moto_server` binary is.
pub fn find_moto() -> Result<PathBuf, TestkitError> {
    const HINT: &str = "install moto with `pip install 'moto[server]'` (or run scripts/test, which \
                        does), or point CREDSWAP_MOTO at the `moto_server` binary";
    if let Some(path) = std::env::var_os("CREDSWAP_MOTO") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::MissingBinary {
                what: "moto (CREDSWAP_MOTO is not an executable)",
                hint: HINT,
            })
        };
    }
    on_path("moto_server").ok_or(TestkitError::MissingBinary {
        what: "moto (`moto_server`)",
        hint: HINT,
    })
}

impl MotoServer {
    /// Starts the server; returns once it answers HTTP.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = find_moto()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-moto-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut command = Command::new(&binary);
            let _ = command
                .args(["-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .current_dir(dir.path())
                .env("HOME", dir.path())
                // moto's recorder logs every request the server receives: tests count them.
                .env("MOTO_ENABLE_RECORDING", "1")
                .env("MOTO_RECORDER_FILEPATH", dir.path().join("requests.jsonl"));
            let log = dir.path().join(format!("moto-{port}.log"));
            let mut process = ServerProcess::spawn("moto", command, log)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match process.wait_until(Duration::from_secs(60), |_| {
                http_status(addr, "/moto-api/data.json") == Some(200)
            }) {
                Ok(()) => {
                    let requests = dir.path().join("requests.jsonl");
                    let server = MotoServer {
                        process: Some(process),
                        port,
                        requests,
                        _dir: dir,
                    };
                    server.reset_request_log();
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "moto",
            detail: "could not start".into(),
        }))
    }

    /// The endpoint URL, `http://127.0.0.1:PORT` (for `AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many requests for `operation` (the `X-Amz-Target` of JSON APIs, such as
    /// `secretsmanager.GetSecretValue`) the server has received since it started or since
    /// [`reset_request_log`](Self::reset_request_log).
    pub fn request_count(&self, operation: &str) -> usize {
        let log = std::fs::read_to_string(&self.requests).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                entry["headers"].as_object().is_some_and(|headers| {
                    headers.iter().any(|(name, value)| {
                        name.eq_ignore_ascii_case("x-amz-target")
                            && value.as_str() == Some(operation)
                    })
                })
            })
            .count()
    }

    /// Forgets the requests received so far.
    pub fn reset_request_log(&self) {
        let _ = std::fs::write(&self.requests, "");
    }

    /// Kills the server at once (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

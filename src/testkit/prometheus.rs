use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{ServerProcess, free_port, http_status, is_executable, on_path};

const INSTALL_HINT: &str = "install Prometheus with `apt-get install prometheus` (or run \
     scripts/test, which does), or point CREDSWAP_PROMETHEUS at the `prometheus` binary";

/// A throwaway Prometheus server: its TSDB in a temp dir, on a free loopback port, scraping the
/// targets it was given every second and evaluating the rule files every second, stopped on
/// drop.
///
/// The binary is `CREDSWAP_PROMETHEUS`, else `prometheus` on `PATH` (Debian's `prometheus`
/// package, which also has `promtool`). [`query`](Self::query) runs an instant query through the
/// HTTP API and returns its JSON answer.
///
/// ```no_run
/// use credswap::testkit::PrometheusServer;
///
/// let prometheus = PrometheusServer::start("orders", &["127.0.0.1:9464"], &[]).unwrap();
/// let answer = prometheus.query("up").unwrap();
/// assert!(answer.contains(r#""status":"success""#));
/// ```
#[derive(Debug)]
pub struct PrometheusServer {
    process: ServerProcess,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Where the `prometheus` binary is.
pub fn find_prometheus() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("CREDSWAP_PROMETHEUS") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::MissingBinary {
                what: "Prometheus (CREDSWAP_PROMETHEUS is not an executable)",
                hint: INSTALL_HINT,
            })
        };
    }
    on_path("prometheus").ok_or(TestkitError::MissingBinary {
        what: "Prometheus (`prometheus`)",
        hint: INSTALL_HINT,
    })
}

impl PrometheusServer {
    /// Starts a server that scrapes `targets` (`host:port`, path `/metrics`) as job `job` and
    /// loads `rule_files`; returns once it is ready.
    pub fn start(job: &str, targets: &[&str], rule_files: &[&Path]) -> Result<Self, TestkitError> {
        let binary = find_prometheus()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-prometheus-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let targets: Vec<String> = targets.iter().map(|t| quote(t)).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| quote(&p.display().to_string()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: {}\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            quote(job),
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).map_err(|e| TestkitError::io("write config", e))?;
        let mut last_error = None;
        // A free port may be taken between our probe and the server's bind: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut command = Command::new(&binary);
            let _ = command
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path());
            let log = dir.path().join(format!("prometheus-{port}.log"));
            let mut process = ServerProcess::spawn("Prometheus", command, log)?;
            match process.wait_until(Duration::from_secs(60), |_| {
                http_status(addr, "/-/ready") == Some(200)
            }) {
                Ok(()) => {
                    return Ok(PrometheusServer {
                        process,
                        addr,
                        _dir: dir,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "Prometheus",
            detail: "could not start".into(),
        }))
    }

    /// Where its HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The JSON answer of the instant query `promql` (`/api/v1/query`).
    pub fn query(&self, promql: &str) -> Result<String, TestkitError> {
        self.get(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// The body of `GET path` on its HTTP API (`/api/v1/rules`, `/api/v1/targets`, …).
    pub fn get(&self, path: &str) -> Result<String, TestkitError> {
        get(self.addr, path).map_err(|e| TestkitError::io("query Prometheus", e))
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The body of an HTTP/1.0 `GET` (Prometheus answers it without chunking).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header in the answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(std::io::Error::other(format!("HTTP {status}: {body}")));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::url_encode(r#"sum(rate(x{job=~".+"}[1m]))"#),
            "sum%28rate%28x%7Bjob%3D~%22.%2B%22%7D%5B1m%5D%29%29"
        );
    }
}

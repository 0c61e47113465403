//! A real Prometheus scrapes `examples/metrics_server.rs` while it rotates a secret under a pool
//! serving traffic: the alert rules load, every dashboard panel's query returns data, no alert
//! fires on a healthy service, and neither `/metrics` nor `/ready` carries a secret value or id.
//!
//! The example binary is the one `cargo test` builds beside this test (it builds every example);
//! run through `scripts/test` or `cargo test --all-features`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use credswap::testkit::PrometheusServer;
use serde_json::Value;

/// The example's process, killed on drop.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example_binary() -> PathBuf {
    // target/debug/deps/prometheus-HASH -> target/debug/examples/metrics_server
    let test = std::env::current_exe().expect("the test's own path");
    let binary = test
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join("examples")
        .join("metrics_server");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --all-features` builds it (or `cargo build --example \
         metrics_server --all-features`)",
        binary.display()
    );
    binary
}

/// Starts the example; returns it and where it serves.
fn start_example() -> (Example, SocketAddr) {
    let mut child = Command::new(example_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rotate-every",
            "2",
            "--run-for",
            "600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().expect("its stdout");
    let example = Example(child);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = sender.send(addr.parse::<SocketAddr>().expect("an address"));
            }
        }
    });
    // Starting PostgreSQL and moto takes a few seconds, more on a loaded machine.
    let addr = receiver
        .recv_timeout(Duration::from_secs(180))
        .expect("the example serves within three minutes");
    (example, addr)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The series an instant query returns.
fn series(prometheus: &PrometheusServer, promql: &str) -> Vec<Value> {
    let answer: Value = serde_json::from_str(
        &prometheus
            .query(promql)
            .unwrap_or_else(|error| panic!("query {promql} failed: {error}")),
    )
    .expect("JSON");
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(prometheus: &PrometheusServer, promql: &str) -> f64 {
    series(prometheus, promql)
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

/// Every `expr` of every panel target, with Grafana's variables as a test can fill them in.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a plain expr");
            let filled = expr
                .replace("$job", ".+")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h");
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            queries.push((title, filled));
        }
    }
    queries
}

#[test]
fn prometheus_scrapes_the_example_and_every_panel_and_rule_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (example, addr) = start_example();
    let target = addr.to_string();
    let prometheus = PrometheusServer::start(
        "orders-api",
        &[&target],
        &[&root.join("dashboards/alerts.yml")],
    )
    .expect("Prometheus starts");

    // Until the example has rotated a few times and the pool has drained and logged in with new
    // credentials, all seen by Prometheus (bounded: the example rotates every 2 s).
    let deadline = Instant::now() + Duration::from_secs(240);
    let ready = [
        r#"sum(credswap_rotations_finished_total{outcome="done"})"#,
        "sum(credswap_pool_update_latency_seconds_count)",
        "sum(credswap_pool_drain_seconds_count)",
        "sum(credswap_push_apply_latency_seconds_count)",
        "count(count_over_time(credswap_cache_entries[1m]) >= 20)",
        "sum(credswap_http_client_replays_total)",
        r#"sum(credswap_http_server_accepted_total{key="previous"})"#,
    ];
    loop {
        if ready.iter().all(|q| {
            value(&prometheus, q) >= 3.0
                || (q.starts_with("count(") && value(&prometheus, q) >= 1.0)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not rotate and drain within 4 minutes: {:?}\nPrometheus log:\n{}",
            ready
                .iter()
                .map(|q| (q, value(&prometheus, q)))
                .collect::<Vec<_>>(),
            prometheus.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The rules loaded and evaluate cleanly.
    let rules: Value = serde_json::from_str(&prometheus.get("/api/v1/rules").unwrap()).unwrap();
    let loaded: Vec<(String, String)> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(loaded.len(), 9, "{loaded:?}");
    assert!(
        loaded.iter().all(|(_, health)| health == "ok"),
        "{loaded:?}"
    );
    // A healthy service that rotates pages nobody.
    let firing = series(&prometheus, r#"ALERTS{alertstate="firing"}"#);
    assert!(
        firing.is_empty(),
        "alerts fire on a healthy service: {firing:?}"
    );

    // Every panel's query returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("dashboards/credswap.json")).unwrap(),
    )
    .unwrap();
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let empty: Vec<&(String, String)> = queries
        .iter()
        .filter(|(_, q)| series(&prometheus, q).is_empty())
        .collect();
    assert!(empty.is_empty(), "panels without data: {empty:#?}");

    // Nothing served names a value or the secret's id (it was not opted in).
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let (status, ready) = get(addr, "/ready");
    assert_eq!(status, 200, "{ready}");
    let report: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(report["verdict"], "ready", "{report}");
    for text in [&metrics, &ready] {
        assert!(!text.contains("first-password-from-setup"));
        assert!(!text.contains("example/orders/db"));
        assert!(!text.contains("api-key-"), "an API key in what was served");
        assert!(
            !text.to_lowercase().contains("password"),
            "a password label or value"
        );
    }
    drop(prometheus);
    drop(example);
}

//! Rotation under load, as a chart: a pool serves queries at a fixed rate for a set time while the
//! rotation engine rotates its credentials N times; every query's latency and outcome is written
//! to a CSV and drawn as a PNG, with the rotations marked.
//!
//! Scenarios, one after another on one throwaway PostgreSQL: the rotating sqlx pool and the
//! rotating deadpool pool, each with single-user and alternating-users rotation, and a plain sqlx
//! pool on static credentials under the same rotations (of another role) as the baseline. The
//! store is the in-memory one (the engine's rotation store); the database and the engine are real.
//!
//! ```text
//! cargo run --release --example rotation_report --features sqlx,deadpool,rotation,testkit -- \
//!     [--seconds 60] [--rate 200] [--rotations 5] [--out target/rotation-report]
//! ```
//!
//! Writes `OUT/rotation_under_load.csv` (scenario, seconds since start, latency in ms, ok) and
//! `OUT/rotation_under_load.png`, and prints a Markdown table. Text in the chart needs a TrueType
//! font: DejaVu Sans (Debian `fonts-dejavu-core`) or `--font FILE`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credswap::pg::{PgCredentials, RetryAndDrain, RotatingDeadpoolBuilder, RotatingPgPool};
use credswap::rotation::{PostgresTarget, Rotator, Strategy};
use credswap::testkit::PostgresServer;
use credswap::{MemoryProvider, SecretCache};
use futures_util::future::BoxFuture;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use plotters::prelude::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;

type Query = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    Sqlx,
    Deadpool,
    Plain,
}

#[derive(Clone, Copy)]
struct Scenario {
    pool: Pool,
    alternating: bool,
}

impl Scenario {
    fn name(&self) -> String {
        let pool = match self.pool {
            Pool::Sqlx => "sqlx RotatingPgPool",
            Pool::Deadpool => "deadpool RotatingDeadpoolBuilder",
            Pool::Plain => "plain sqlx, static credentials",
        };
        if self.pool == Pool::Plain {
            format!("{pool} (baseline)")
        } else {
            let strategy = if self.alternating {
                "alternating users"
            } else {
                "single user"
            };
            format!("{pool}, {strategy}")
        }
    }

    fn role(&self, n: usize) -> String {
        format!("report_app_{n}")
    }
}

struct Sample {
    at: f64,
    latency_ms: f64,
    ok: bool,
}

struct Run {
    scenario: Scenario,
    samples: Vec<Sample>,
    /// Start and end of each rotation, seconds since the start.
    rotations: Vec<(f64, f64)>,
}

struct Options {
    seconds: u64,
    rate: u64,
    rotations: u64,
    out: PathBuf,
    font: Option<PathBuf>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| {
        value(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
            })
            .unwrap_or(default)
    };
    Options {
        seconds: number("--seconds", 60),
        rate: number("--rate", 200),
        rotations: number("--rotations", 5),
        out: value("--out").map_or_else(|| PathBuf::from("target/rotation-report"), PathBuf::from),
        font: value("--font").map(PathBuf::from),
    }
}

fn secret(pg: &PostgresServer, user: &str, password: &str) -> String {
    serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(), "dbname": "postgres",
        "username": user, "password": password,
    })
    .to_string()
}

async fn run(
    pg: &PostgresServer,
    n: usize,
    scenario: Scenario,
    options: &Options,
    bar: &ProgressBar,
) -> Result<Run, Box<dyn std::error::Error>> {
    let role = scenario.role(n);
    let first = format!("first-{n}");
    pg.execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{first}'"))?;
    let store = Arc::new(MemoryProvider::new());
    let id = format!("report/{role}");
    let _ = store.set(&id, secret(pg, &role, &first).as_str());
    let cache = SecretCache::builder(store.clone())
        .ttl(Duration::from_secs(1))
        .min_refresh_interval(Duration::from_millis(100))
        .build()?;
    let handle = cache.handle::<PgCredentials>(&id).await?;
    // Old credentials' connections go two seconds after each rotation, so new logins happen
    // under every rotation (30 s by default).
    let drain = RetryAndDrain::default().drain_delay(Duration::from_secs(2));
    let query: Query = match scenario.pool {
        Pool::Sqlx => {
            let pool = RotatingPgPool::builder(handle)
                .pool_options(PgPoolOptions::new().max_connections(8))
                .connect_options(PgConnectOptions::new().database("postgres"))
                .retry_and_drain(drain)
                .connect()
                .await?;
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
        }
        Pool::Deadpool => {
            let mut config = tokio_postgres::Config::new();
            let _ = config.host("127.0.0.1").port(pg.port()).dbname("postgres");
            let pool = RotatingDeadpoolBuilder::new(handle)
                .pg_config(config)
                .max_size(8)
                .retry_and_drain(drain)
                .build()?;
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    client
                        .query_one("SELECT 1", &[])
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
        }
        Pool::Plain => {
            let baseline = format!("report_static_{n}");
            pg.execute(&format!("CREATE ROLE {baseline} LOGIN PASSWORD 'static'"))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(
                    PgConnectOptions::new()
                        .host("127.0.0.1")
                        .port(pg.port())
                        .database("postgres")
                        .username(&baseline)
                        .password("static"),
                )
                .await?;
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
        }
    };

    let mut endpoint = tokio_postgres::Config::new();
    let _ = endpoint
        .host("127.0.0.1")
        .port(pg.port())
        .dbname("postgres");
    let target = PostgresTarget::new()
        .connection(endpoint)
        .admin(
            PostgresServer::SUPERUSER,
            pg.superuser_password().to_owned(),
        )
        .allow_plaintext();
    let strategy = if scenario.alternating {
        Strategy::alternating_users()
    } else {
        Strategy::SingleUser
    };
    let rotator = Rotator::builder(store, Arc::new(target))
        .strategy(strategy)
        .build()?;

    let started = Instant::now();
    let length = Duration::from_secs(options.seconds);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (samples, query, rate) = (Arc::clone(&samples), Arc::clone(&query), options.rate);
        tokio::spawn(async move {
            // Open loop: queries start on schedule whether or not earlier ones finished, so a
            // stall shows as latency instead of as fewer queries.
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let mut running = Vec::new();
            while started.elapsed() < length {
                let _ = ticks.tick().await;
                let (samples, query) = (Arc::clone(&samples), Arc::clone(&query));
                running.push(tokio::spawn(async move {
                    let began = Instant::now();
                    let ok = tokio::time::timeout(Duration::from_secs(10), query())
                        .await
                        .is_ok_and(|r| r.is_ok());
                    samples.lock().unwrap().push(Sample {
                        at: began.duration_since(started).as_secs_f64(),
                        latency_ms: began.elapsed().as_secs_f64() * 1e3,
                        ok,
                    });
                }));
            }
            for task in running {
                let _ = task.await;
            }
        })
    };
    let mut rotations = Vec::new();
    for i in 0..options.rotations {
        let at = length.mul_f64((i as f64 + 0.5) / options.rotations as f64);
        while started.elapsed() < at {
            tokio::time::sleep(Duration::from_millis(100)).await;
            bar.set_position(started.elapsed().as_secs());
        }
        let from = started.elapsed().as_secs_f64();
        rotator.rotate(&id).await?;
        rotations.push((from, started.elapsed().as_secs_f64()));
    }
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(started.elapsed().as_secs().min(options.seconds));
        let failures = samples.lock().unwrap().iter().filter(|s| !s.ok).count();
        bar.set_message(format!("{failures} failures"));
    }
    load.await?;
    bar.finish_with_message("done");
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok(Run {
        scenario,
        samples,
        rotations,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Summary {
    queries: usize,
    failures: usize,
    p50: f64,
    p99: f64,
    p99_rotating: f64,
    max: f64,
}

fn summary(run: &Run) -> Summary {
    let mut all: Vec<f64> = run.samples.iter().map(|s| s.latency_ms).collect();
    all.sort_by(f64::total_cmp);
    // Queries that started during a rotation or within 3 s after it (the drain delay and a TTL).
    let mut rotating: Vec<f64> = run
        .samples
        .iter()
        .filter(|s| {
            run.rotations
                .iter()
                .any(|(from, to)| s.at >= *from && s.at <= to + 3.0)
        })
        .map(|s| s.latency_ms)
        .collect();
    rotating.sort_by(f64::total_cmp);
    Summary {
        queries: run.samples.len(),
        failures: run.samples.iter().filter(|s| !s.ok).count(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        p99_rotating: percentile(&rotating, 0.99),
        max: all.last().copied().unwrap_or(0.0),
    }
}

fn font(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let candidates = options.font.iter().cloned().chain(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ]
        .map(PathBuf::from),
    );
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
            return Ok(());
        }
    }
    Err(
        "no TrueType font for the chart's text: install DejaVu Sans (apt-get install \
         fonts-dejavu-core) or pass --font FILE"
            .into(),
    )
}

fn chart(
    runs: &[Run],
    options: &Options,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let row = 260;
    let root = BitMapBackend::new(path, (1400, row * runs.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.latency_ms))
        .fold(1.0f64, f64::max)
        * 1.5;
    for (area, run) in root.split_evenly((runs.len(), 1)).iter().zip(runs) {
        let s = summary(run);
        let title = format!(
            "{}: {} queries, {} failed; p50 {:.2} ms, p99 {:.2} ms, p99 around rotations {:.2} ms, max {:.1} ms",
            run.scenario.name(),
            s.queries,
            s.failures,
            s.p50,
            s.p99,
            s.p99_rotating,
            s.max
        );
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..options.seconds as f64, (0.05f64..top).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("latency, ms")
            .label_style(("sans-serif", 13))
            .draw()?;
        for (from, to) in &run.rotations {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(*from, 0.05), (to.max(from + 0.15), top)],
                RGBColor(255, 200, 120).mix(0.6).filled(),
            )))?;
        }
        chart.draw_series(
            run.samples
                .iter()
                .filter(|s| s.ok)
                .map(|s| Circle::new((s.at, s.latency_ms.max(0.05)), 1, BLUE.mix(0.35).filled())),
        )?;
        chart.draw_series(
            run.samples
                .iter()
                .filter(|s| !s.ok)
                .map(|s| Cross::new((s.at, top / 1.2), 4, RED.stroke_width(2))),
        )?;
    }
    root.present()?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    font(&options)?;
    std::fs::create_dir_all(&options.out)?;
    let pg = tokio::task::spawn_blocking(PostgresServer::start).await??;
    let scenarios = [
        Scenario {
            pool: Pool::Sqlx,
            alternating: false,
        },
        Scenario {
            pool: Pool::Sqlx,
            alternating: true,
        },
        Scenario {
            pool: Pool::Deadpool,
            alternating: false,
        },
        Scenario {
            pool: Pool::Deadpool,
            alternating: true,
        },
        Scenario {
            pool: Pool::Plain,
            alternating: false,
        },
    ];
    let progress = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:<52} [{bar:30}] {pos:>3}/{len}s {msg}")?
        .progress_chars("=> ");
    let mut runs = Vec::new();
    for (n, scenario) in scenarios.into_iter().enumerate() {
        let bar = progress.add(ProgressBar::new(options.seconds));
        bar.set_style(style.clone());
        bar.set_prefix(scenario.name());
        runs.push(run(&pg, n, scenario, &options, &bar).await?);
    }

    let mut csv = String::from("scenario,seconds,latency_ms,ok\n");
    for run in &runs {
        for s in &run.samples {
            // Scenario names hold commas: quoted, as RFC 4180 has it (they hold no quotes).
            let _ = writeln!(
                csv,
                "\"{}\",{:.4},{:.3},{}",
                run.scenario.name(),
                s.at,
                s.latency_ms,
                s.ok
            );
        }
    }
    let csv_path = options.out.join("rotation_under_load.csv");
    std::fs::write(&csv_path, csv)?;
    let png_path = options.out.join("rotation_under_load.png");
    chart(&runs, &options, &png_path)?;

    println!(
        "\n{} s at {} queries/s, {} rotations each (orange: a rotation running)\n",
        options.seconds, options.rate, options.rotations
    );
    println!("| scenario | queries | failures | p50 | p99 | p99 around rotations | max |");
    println!("|---|---|---|---|---|---|---|");
    for run in &runs {
        let s = summary(run);
        println!(
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms |",
            run.scenario.name(),
            s.queries,
            s.failures,
            s.p50,
            s.p99,
            s.p99_rotating,
            s.max
        );
    }
    println!("\nwrote {} and {}", csv_path.display(), png_path.display());
    Ok(())
}

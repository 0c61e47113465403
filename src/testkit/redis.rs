use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{ServerProcess, free_port, is_executable, on_path};

const INSTALL_HINT: &str = "install Redis with `apt-get install redis-server` (or run scripts/test, \
     which does), or point CREDSWAP_REDIS at the `redis-server` binary";

/// A throwaway Redis server: in memory, no persistence, on a free loopback port, stopped on drop.
///
/// The binary is `CREDSWAP_REDIS`, else `redis-server` on `PATH` (Debian's `redis-server`
/// package). [`command`](Self::command) sends a command the way `redis-cli` would (it needs no
/// client binary), for example `CLIENT KILL TYPE pubsub` to cut subscribers off.
///
/// ```no_run
/// use credswap::testkit::RedisServer;
///
/// let redis = RedisServer::start().unwrap();
/// assert_eq!(redis.command(&["PING"]).unwrap(), "PONG");
/// println!("REDIS_URL={}", redis.url());
/// ```
#[derive(Debug)]
pub struct RedisServer {
    process: Option<ServerProcess>,
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

/// Where the `redis-server` binary is.
pub fn find_redis() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("CREDSWAP_REDIS") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::MissingBinary {
                what: "Redis (CREDSWAP_REDIS is not an executable)",
                hint: INSTALL_HINT,
            })
        };
    }
    on_path("redis-server").ok_or(TestkitError::MissingBinary {
        what: "Redis (`redis-server`)",
        hint: INSTALL_HINT,
    })
}

impl RedisServer {
    /// Starts the server; returns once it answers `PING`.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = find_redis()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-redis-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut server = RedisServer {
            process: None,
            binary,
            port: 0,
            dir,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        // A free port may be taken between our probe and the server's bind: try a few. A restart
        // keeps its port, and waits a little between tries instead.
        for _ in 0..5 {
            let port = if self.port == 0 {
                free_port()?
            } else {
                self.port
            };
            let mut command = Command::new(&self.binary);
            let _ = command
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
                // Nothing on disk: no snapshots, no append-only file.
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .args(["--daemonize", "no", "--logfile", ""])
                .current_dir(self.dir.path());
            let log = self.dir.path().join(format!("redis-{port}.log"));
            let mut process = ServerProcess::spawn("Redis", command, log)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match process.wait_until(Duration::from_secs(30), |_| {
                send(addr, &["PING"]).is_ok_and(|reply| reply == "PONG")
            }) {
                Ok(()) => {
                    self.port = port;
                    self.process = Some(process);
                    return Ok(());
                }
                Err(error) => {
                    last_error = Some(error);
                    if self.port != 0 {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "Redis",
            detail: "could not start".into(),
        }))
    }

    /// The URL to connect to, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }

    /// Sends one command (`&["CLIENT", "KILL", "TYPE", "pubsub"]`) as the default user and returns
    /// the reply as text: a status or a string as it is, an integer in decimal, an array one
    /// element per line, a missing value as `(nil)`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Cli`] with Redis's message when it answers with an error;
    /// [`TestkitError::Io`] when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Result<String, TestkitError> {
        send(SocketAddr::from(([127, 0, 0, 1], self.port)), args)
    }

    /// Stops the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop_with(libc::SIGTERM, Duration::from_secs(10));
        }
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (or stops it first).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One command over the Redis protocol (RESP2), on a fresh connection.
fn send(addr: SocketAddr, args: &[&str]) -> Result<String, TestkitError> {
    let io = |context| move |e| TestkitError::io(context, e);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(io("connect to Redis"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("set a read timeout"))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).map_err(io("send to Redis"))?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader).and_then(|reply| {
        reply.map_err(|message| {
            TestkitError::Cli(format!(
                "redis {} failed: {message}",
                args.first().copied().unwrap_or_default()
            ))
        })
    })
}

/// Reads one reply: `Ok(Err(message))` for a Redis error.
fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<Result<String, String>, TestkitError> {
    let mut line = Vec::new();
    let _ = reader
        .read_until(b'\n', &mut line)
        .map_err(|e| TestkitError::io("read from Redis", e))?;
    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
    let (kind, rest) = text.split_at(text.len().min(1));
    let malformed = || TestkitError::Cli(format!("unexpected Redis reply: {text}"));
    match kind {
        "+" | ":" => Ok(Ok(rest.to_owned())),
        "-" => Ok(Err(rest.to_owned())),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| malformed())?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Ok("(nil)".into()));
            };
            let mut data = vec![0; len + 2];
            std::io::Read::read_exact(reader, &mut data)
                .map_err(|e| TestkitError::io("read from Redis", e))?;
            data.truncate(len);
            Ok(Ok(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" => {
            let count: i64 = rest.parse().map_err(|_| malformed())?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                match read_reply(reader)? {
                    Ok(item) => items.push(item),
                    Err(message) => return Ok(Err(message)),
                }
            }
            Ok(Ok(items.join("\n")))
        }
        _ => Err(malformed()),
    }
}

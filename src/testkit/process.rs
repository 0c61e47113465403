//! Child processes that die with their owner, free ports, binary lookup, readiness checks.
#![allow(unsafe_code)] // kill(2) and geteuid(2) through libc; nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestkitError;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::io("bind", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("local_addr", e))?
        .port();
    Ok(port)
}

/// `name` on `PATH`, if it is there and executable.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (PostgreSQL refuses to).
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a system user, read from /etc/passwd.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// A running server process, in its own process group, stopped (with its children) on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    what: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with its output in `log`.
    pub(crate) fn spawn(
        what: &'static str,
        mut command: Command,
        log: PathBuf,
    ) -> Result<Self, TestkitError> {
        let out = std::fs::File::create(&log).map_err(|e| TestkitError::io("create log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| TestkitError::io("clone log", e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| TestkitError::Startup {
                what,
                detail: format!("could not start: {e}"),
            })?;
        Ok(ServerProcess {
            what,
            child: Some(child),
            log,
        })
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the server's output goes.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the server's log (for error messages).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }

    /// Fails when the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), TestkitError> {
        let Some(child) = self.child.as_mut() else {
            return Err(TestkitError::Startup {
                what: self.what,
                detail: "the server was stopped".into(),
            });
        };
        match child.try_wait() {
            Ok(Some(status)) => Err(TestkitError::Startup {
                what: self.what,
                detail: format!("exited with {status}; log:\n{}", self.log_tail()),
            }),
            _ => Ok(()),
        }
    }

    /// Polls `ready` until it is true, failing if the process exits or `timeout` passes.
    pub(crate) fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> bool,
    ) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if ready(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Startup {
                    what: self.what,
                    detail: format!("not ready after {timeout:?}; log:\n{}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the process group, waits up to `grace` for the process to exit, then kills
    /// the group.
    pub(crate) fn stop_with(&mut self, signal: i32, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        let _ = unsafe { libc::kill(-pgid, signal) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // Children of the server (PostgreSQL backends) may outlive it briefly.
                // SAFETY: as above.
                let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        let _ = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Kills the process group at once (a crash, for fault tests).
    pub(crate) fn kill(&mut self) {
        self.stop_with(libc::SIGKILL, Duration::from_secs(5));
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// The HTTP status of `GET path` on `addr`, or `None` when nothing answers.
pub(crate) fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).ok()? {
            0 => break,
            n => read += n,
        }
    }
    let line = std::str::from_utf8(&head[..read]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Random lower-case letters and digits, for passwords and tokens of throwaway servers.
pub(crate) fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

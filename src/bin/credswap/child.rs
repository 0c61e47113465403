//! The child process: started with its environment, signalled, stopped gracefully.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::exit::{CANNOT_EXECUTE, COMMAND_NOT_FOUND, Failure};

/// The signals `run` forwards to its child.
const FORWARDED: &[(i32, &str)] = &[
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGALRM, "ALRM"),
];

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number.
pub fn parse_signal(text: &str) -> Result<i32, Failure> {
    if let Ok(number) = text.parse::<i32>() {
        if (1..32).contains(&number) {
            return Ok(number);
        }
    }
    let name = text
        .trim_start_matches("SIG")
        .trim_start_matches("sig")
        .to_ascii_uppercase();
    FORWARDED
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(s, _)| *s)
        .or(match name.as_str() {
            "KILL" => Some(libc::SIGKILL),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::usage(format!(
                "`{text}` is not a signal (TERM, INT, HUP, QUIT, USR1, USR2, KILL or a number)"
            ))
        })
}

/// Every forwarded signal this process receives, as its number.
pub struct Signals {
    streams: Vec<(i32, Signal)>,
}

impl Signals {
    pub fn install() -> Result<Signals, Failure> {
        let mut streams = Vec::new();
        for (number, _) in FORWARDED {
            let stream = signal(SignalKind::from_raw(*number)).map_err(|e| {
                Failure::new(crate::exit::SOFTWARE, format!("cannot handle signals: {e}"))
            })?;
            streams.push((*number, stream));
        }
        Ok(Signals { streams })
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> i32 {
        let waits = self.streams.iter_mut().map(|(number, stream)| {
            let number = *number;
            Box::pin(async move {
                let _ = stream.recv().await;
                number
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

/// Whether a signal received should be passed on: SIGINT and SIGQUIT typed at a terminal reach
/// the child already (it is in the terminal's foreground process group too), so they are not
/// sent twice when `run` itself is attached to one.
pub fn should_forward(number: i32, interactive: bool) -> bool {
    !(interactive && matches!(number, libc::SIGINT | libc::SIGQUIT))
}

pub fn send(child: &Child, number: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we started and have not reaped yet.
        let _ = unsafe { libc::kill(pid as libc::pid_t, number) };
    }
}

/// Starts `command` with `env` added and `remove` taken away; piped output when masking.
pub fn spawn(
    command: &[String],
    env: &[(String, String)],
    remove: &[String],
    piped: bool,
) -> Result<Child, Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::usage("no command to run"))?;
    let mut cmd = Command::new(program);
    let _ = cmd.args(args);
    for name in remove {
        let _ = cmd.env_remove(name);
    }
    let _ = cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if piped {
        let _ = cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Failure::new(COMMAND_NOT_FOUND, format!("`{program}`: command not found"))
        }
        std::io::ErrorKind::PermissionDenied => {
            Failure::new(CANNOT_EXECUTE, format!("`{program}`: permission denied"))
        }
        _ => Failure::new(
            CANNOT_EXECUTE,
            format!("`{program}` cannot be started: {e}"),
        ),
    })
}

/// The exit code `run` ends with for the child's status: its code, or 128 + the signal.
pub fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Stops `child`: `stop` now, SIGKILL after `grace`; returns once it has exited.
pub async fn stop(child: &mut Child, stop: i32, grace: Duration) -> std::io::Result<ExitStatus> {
    send(child, stop);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGHUP").unwrap(), libc::SIGHUP);
        assert_eq!(parse_signal("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("FOO").is_err());
    }

    #[test]
    fn terminal_interrupts_are_not_sent_twice() {
        assert!(!should_forward(libc::SIGINT, true));
        assert!(should_forward(libc::SIGINT, false));
        assert!(should_forward(libc::SIGTERM, true));
    }
}

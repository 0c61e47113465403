//! Capturing everything a test binary logs, and every printed form of an error, to scan for
//! secret values.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// What the binary's TRACE-level log has said so far.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Installs a TRACE-level subscriber (spans included) writing into a new capture. Once per
    /// test binary.
    pub fn install() -> Capture {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .init();
        capture
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// `error` as a user might print it (`Display`, `Debug`, pretty `Debug`), with its sources.
pub fn printed(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{error} {error:?} {error:#?}");
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(&format!("\n{s} {s:?}"));
        source = s.source();
    }
    out
}

/// Fails, showing the lines, if any of `secrets` appears in `everything`.
pub fn assert_none_of(secrets: &[&str], everything: &str) {
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "secret value {secret} leaked into:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

//! A connection to PostgreSQL that never answers a request for a cleartext password.
//!
//! tokio-postgres answers `AuthenticationCleartextPassword` with the password whenever channel
//! binding is not required, and channel binding needs TLS. Over a plaintext connection the
//! engine therefore reads the server's authentication messages itself, on the way in: a request
//! for the password in clear fails the connection before tokio-postgres sees it, so nothing is
//! sent. Everything after authentication passes through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `AuthenticationCleartextPassword`'s code in an `R` message.
const CLEARTEXT: u32 = 3;
/// `AuthenticationOk`.
const OK: u32 = 0;

/// Where the reader is in the server's messages before authentication ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The type byte and the length: `have` of 5 bytes seen.
    Header { have: usize, header: [u8; 5] },
    /// The code of an `R` message: `have` of 4 bytes seen; `rest` bytes of body follow it.
    Code {
        have: usize,
        code: [u8; 4],
        rest: usize,
    },
    /// Bytes of a body to skip.
    Body { left: usize },
    /// Authentication is over (or failed with an error message): pass everything.
    Done,
}

/// Follows the server's messages until authentication is over.
#[derive(Debug)]
pub(crate) struct AuthWatch {
    reading: Reading,
}

impl Default for AuthWatch {
    fn default() -> Self {
        AuthWatch {
            reading: Reading::Header {
                have: 0,
                header: [0; 5],
            },
        }
    }
}

impl AuthWatch {
    /// Reads `bytes` from the server; `Err` when they ask for a cleartext password.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), ()> {
        for &byte in bytes {
            self.reading = match self.reading {
                Reading::Done => return Ok(()),
                Reading::Header {
                    mut have,
                    mut header,
                } => {
                    header[have] = byte;
                    have += 1;
                    if have < header.len() {
                        Reading::Header { have, header }
                    } else {
                        let length =
                            u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                        let body = (length as usize).saturating_sub(4);
                        match header[0] {
                            b'R' if body >= 4 => Reading::Code {
                                have: 0,
                                code: [0; 4],
                                rest: body - 4,
                            },
                            // An error ends the login; nothing is asked of us after it.
                            b'E' => Reading::Done,
                            _ if body == 0 => Reading::Header {
                                have: 0,
                                header: [0; 5],
                            },
                            _ => Reading::Body { left: body },
                        }
                    }
                }
                Reading::Code {
                    mut have,
                    mut code,
                    rest,
                } => {
                    code[have] = byte;
                    have += 1;
                    if have < code.len() {
                        Reading::Code { have, code, rest }
                    } else {
                        match u32::from_be_bytes(code) {
                            CLEARTEXT => return Err(()),
                            OK => Reading::Done,
                            _ if rest == 0 => Reading::Header {
                                have: 0,
                                header: [0; 5],
                            },
                            _ => Reading::Body { left: rest },
                        }
                    }
                }
                Reading::Body { left } if left > 1 => Reading::Body { left: left - 1 },
                Reading::Body { .. } => Reading::Header {
                    have: 0,
                    header: [0; 5],
                },
            };
        }
        Ok(())
    }
}

/// A stream to the server whose incoming authentication messages are watched: a request for a
/// cleartext password is an I/O error, and `refused` tells the caller why the connection failed.
pub(crate) struct NoCleartext<S> {
    inner: S,
    watch: AuthWatch,
    pub(crate) refused: Arc<AtomicBool>,
}

impl<S> NoCleartext<S> {
    pub(crate) fn new(inner: S) -> Self {
        NoCleartext {
            inner,
            watch: AuthWatch::default(),
            refused: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoCleartext<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.watch.feed(&buf.filled()[before..]).is_err() {
                    this.refused.store(true, Ordering::Release);
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the server asked for the password in cleartext; refused",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoCleartext<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_cleartext_request_is_refused_in_any_split() {
        let mut stream = message(b'v', &[0, 0, 0, 0, 0, 0, 0, 0]);
        stream.extend(message(b'R', &CLEARTEXT.to_be_bytes()));
        for split in 1..stream.len() {
            let mut watch = AuthWatch::default();
            let (a, b) = stream.split_at(split);
            assert!(
                watch.feed(a).and_then(|()| watch.feed(b)).is_err(),
                "{split}"
            );
        }
    }

    #[test]
    fn scram_and_what_follows_authentication_pass() {
        let mut stream = message(b'R', &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0]);
        stream.extend(message(b'R', &[0, 0, 0, 11, b'r', b'=', b'x']));
        stream.extend(message(b'R', &[0, 0, 0, 12, b'v', b'=', b'y']));
        stream.extend(message(b'R', &OK.to_be_bytes()));
        // After authentication, anything, even bytes that would spell a cleartext request.
        stream.extend(message(b'R', &CLEARTEXT.to_be_bytes()));
        let mut watch = AuthWatch::default();
        for byte in &stream {
            watch.feed(std::slice::from_ref(byte)).unwrap();
        }
        // MD5 is not cleartext; an error ends the login.
        let mut md5 = message(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        md5.extend(message(b'E', b"SFATAL\0\0"));
        md5.extend(message(b'R', &CLEARTEXT.to_be_bytes()));
        AuthWatch::default().feed(&md5).unwrap();
    }
}

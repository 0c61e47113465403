//! `--mask`: the child's output with every secret value replaced by `[MASKED]`, also when a
//! value arrives split over two writes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MASK: &[u8] = b"[MASKED]";

/// Values shorter than this are not masked: masking `app` would garble every `happy`.
pub const MIN_LEN: usize = 4;

/// A streaming replacer. Bytes that could be the start of a value are held back until the next
/// write shows whether they are (or until [`flush`](Masker::flush)).
pub struct Masker {
    needles: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    /// Masks `values` of at least [`MIN_LEN`] bytes; longer ones win where two overlap.
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let mut needles: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_LEN)
            .map(String::into_bytes)
            .collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Masker {
            needles,
            held: Vec::new(),
        }
    }

    /// The output for `data`, less what is held back.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(data);
        let input = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'scan: while i < input.len() {
            let rest = &input[i..];
            for needle in &self.needles {
                if rest.starts_with(needle) {
                    out.extend_from_slice(MASK);
                    i += needle.len();
                    continue 'scan;
                }
            }
            if self
                .needles
                .iter()
                .any(|n| n.len() > rest.len() && n.starts_with(rest))
            {
                self.held = rest.to_vec();
                break;
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    /// What is held back, released (no more data is coming, or none came for a while). A held
    /// prefix is part of a value only if more follows, so it is printed as it is.
    pub fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// Copies `from` to `to` through a masker until `from` ends; held bytes go out after 200 ms
/// without new data.
pub async fn copy<R, W>(mut from: R, mut to: W, mut masker: Masker) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 8192];
    loop {
        let read = match tokio::time::timeout(Duration::from_millis(200), from.read(&mut buf)).await
        {
            Ok(read) => read?,
            Err(_) => {
                let held = masker.flush();
                if !held.is_empty() {
                    to.write_all(&held).await?;
                    to.flush().await?;
                }
                continue;
            }
        };
        if read == 0 {
            let held = masker.flush();
            to.write_all(&held).await?;
            return to.flush().await;
        }
        let out = masker.push(&buf[..read]);
        to.write_all(&out).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(values: &[&str], writes: &[&str]) -> String {
        let mut masker = Masker::new(values.iter().map(|v| (*v).to_owned()));
        let mut out = Vec::new();
        for w in writes {
            out.extend(masker.push(w.as_bytes()));
        }
        out.extend(masker.flush());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_are_masked_whole_and_across_writes() {
        assert_eq!(masked(&["hunter2"], &["pw=hunter2 ok"]), "pw=[MASKED] ok");
        assert_eq!(
            masked(&["hunter2"], &["pw=hun", "ter2 ok"]),
            "pw=[MASKED] ok"
        );
        assert_eq!(
            masked(&["hunter2"], &["h", "u", "n", "t", "e", "r", "2"]),
            "[MASKED]"
        );
        assert_eq!(masked(&["hunter2"], &["hunt", "ing"]), "hunting");
        assert_eq!(masked(&["hunter2"], &["ends with hun"]), "ends with hun");
        assert_eq!(
            masked(&["abcd", "abcdef"], &["xabcdefx abcd abc"]),
            "x[MASKED]x [MASKED] abc"
        );
        assert_eq!(masked(&[], &["nothing"]), "nothing");
    }

    #[test]
    fn a_prefix_that_turns_out_not_to_be_a_value_is_printed_in_order() {
        assert_eq!(
            masked(&["secret"], &["sec", "ond secret"]),
            "second [MASKED]"
        );
    }
}

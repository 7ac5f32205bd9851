//! Streamed response bodies (a policy's codes export: a million lines):
//! read chunk by chunk, each within an idle deadline rather than one
//! deadline for the whole body, so memory stays constant and a long
//! transfer is never cut off while a stalled one still fails.

use crate::client::transport_error;
use crate::error::{CtlError, CtlResult};
use bytes::Bytes;
use reqwest::Response;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The longest a streamed body may go without sending anything.
pub const IDLE: Duration = Duration::from_secs(30);

/// The next chunk of `resp`, or None at its end.
async fn next_chunk(resp: &mut Response, base: &str) -> CtlResult<Option<Bytes>> {
    match tokio::time::timeout(IDLE, resp.chunk()).await {
        Ok(chunk) => chunk.map_err(|e| transport_error(base, e)),
        Err(_) => Err(CtlError::unreachable(
            format!("gateway at {base}"),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data for {} s", IDLE.as_secs()),
            ),
        )),
    }
}

/// The transfer ended inside a line: the server stopped mid-body.
fn cut_short(base: &str) -> CtlError {
    CtlError::Other(anyhow::anyhow!(
        "gateway at {base}: the body ended inside a line (transfer cut short)"
    ))
}

/// Copies a body of lines to `out`, telling `progress` the lines copied so
/// far after each chunk; returns how many lines it copied.
pub async fn copy_lines<W: AsyncWrite + Unpin>(
    mut resp: Response,
    base: &str,
    out: &mut W,
    mut progress: impl FnMut(u64),
) -> CtlResult<u64> {
    let (mut lines, mut ends_line) = (0u64, true);
    while let Some(chunk) = next_chunk(&mut resp, base).await? {
        if chunk.is_empty() {
            continue;
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| CtlError::other("cannot write the export", e))?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        ends_line = chunk.ends_with(b"\n");
        progress(lines);
    }
    if !ends_line {
        return Err(cut_short(base));
    }
    out.flush()
        .await
        .map_err(|e| CtlError::other("cannot write the export", e))?;
    Ok(lines)
}

/// Calls `line` with each line of a body (without its newline), reading
/// it chunk by chunk.
pub async fn for_each_line(
    mut resp: Response,
    base: &str,
    mut line: impl FnMut(&str) -> CtlResult<()>,
) -> CtlResult<()> {
    let mut lines = Lines::default();
    while let Some(chunk) = next_chunk(&mut resp, base).await? {
        lines.feed(&chunk, &mut line)?;
    }
    if !lines.finished() {
        return Err(cut_short(base));
    }
    Ok(())
}

/// Splits chunks into lines, keeping the part of a line a chunk ends in
/// until the next chunk completes it.
#[derive(Default)]
pub struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        line: &mut impl FnMut(&str) -> CtlResult<()>,
    ) -> CtlResult<()> {
        while let Some(n) = chunk.iter().position(|&b| b == b'\n') {
            self.carry.extend_from_slice(&chunk[..n]);
            let text = std::str::from_utf8(&self.carry)
                .map_err(|e| CtlError::other("a streamed line is not utf-8", e))?;
            line(text.trim_end_matches('\r'))?;
            self.carry.clear();
            chunk = &chunk[n + 1..];
        }
        self.carry.extend_from_slice(chunk);
        Ok(())
    }

    /// Whether the body ended at the end of a line.
    pub fn finished(&self) -> bool {
        self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str]) -> (Vec<String>, bool) {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines
                .feed(c.as_bytes(), &mut |l: &str| {
                    out.push(l.to_owned());
                    Ok(())
                })
                .unwrap();
        }
        (out, lines.finished())
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let (lines, done) = split(&["code,st", "atus\nAB", "CD,UNREDEEMED\r\n", "EF,REDEEMED\n"]);
        assert_eq!(lines, ["code,status", "ABCD,UNREDEEMED", "EF,REDEEMED"]);
        assert!(done);
    }

    #[test]
    fn a_body_ending_inside_a_line_is_not_finished() {
        let (lines, done) = split(&["code,status\nAB"]);
        assert_eq!(lines, ["code,status"]);
        assert!(!done);
        assert!(split(&[]).1, "an empty body ends no line short");
    }
}

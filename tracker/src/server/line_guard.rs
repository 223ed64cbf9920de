//! Over-long request lines and heads get a bencoded failure reason, not actix's bare status.
//!
//! actix-web answers a request whose URI is over 65,534 bytes with an empty `400` and a head
//! over 128 KiB with an empty `431`, before any handler runs: a client that sent a 64 KiB query
//! learns nothing. [`LineGuard`] sits between the socket and actix's HTTP/1 dispatcher and
//! watches the bytes it reads: a line longer than its limit (the query limit plus room for the
//! rest of the request line), or a request head longer than [`MAX_HEAD`], makes it answer with
//! a bencoded failure reason itself (status 200, as every tracker error; `Connection: close`)
//! and end the connection. Requests within the limits pass through untouched, so
//! `http.max_query_len` still gets its own "query string too long" from the handler.
//!
//! The tracker's port serves only `GET`s: a body (which would be counted as head lines here) is
//! never accepted there anyway.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes of one request head (request line and headers); actix's own limit is 128 KiB.
pub const MAX_HEAD: usize = 64 * 1024;

/// Longest URI actix accepts (the `http` crate's limit), less room for the method and version.
const MAX_URI_LINE: usize = 65_534 - 64;

/// Longest request line for a query limit of `max_query_len`: the query, the path and the
/// method and version around it, and never past what actix accepts.
pub fn line_limit(max_query_len: usize) -> usize {
    max_query_len.saturating_add(1024).min(MAX_URI_LINE)
}

/// Where the guard is.
#[derive(Debug)]
enum State {
    /// Passing bytes through: the length of the current line and of the current head.
    Reading {
        line: usize,
        head: usize,
        /// Lines of the current head so far (0: in the request line).
        lines: usize,
    },
    /// Writing the failure answer (`written` bytes of it so far).
    Refusing { answer: Vec<u8>, written: usize },
    /// The answer is out: reads see the end of the stream.
    Done,
}

/// A stream that passes reads and writes through, answering an over-long line or head itself
/// (see the module docs).
#[derive(Debug)]
pub struct LineGuard<T> {
    inner: T,
    line_limit: usize,
    state: State,
}

impl<T> LineGuard<T> {
    pub fn new(inner: T, line_limit: usize) -> Self {
        LineGuard {
            inner,
            line_limit,
            state: State::Reading {
                line: 0,
                head: 0,
                lines: 0,
            },
        }
    }

    /// Scans bytes just read; `Some(reason)` when they break a limit.
    fn scan(&mut self, bytes: &[u8]) -> Option<&'static str> {
        let State::Reading { line, head, lines } = &mut self.state else {
            return None;
        };
        for &b in bytes {
            *head += 1;
            if b == b'\n' {
                // A blank line (`\r\n` or `\n` alone) ends the head: the next request starts.
                if *line <= 1 {
                    *head = 0;
                    *lines = 0;
                } else {
                    *lines += 1;
                }
                *line = 0;
                continue;
            }
            *line += 1;
            if *line > self.line_limit {
                return Some(if *lines == 0 {
                    "request line too long (query string too long)"
                } else {
                    "request header line too long"
                });
            }
            if *head > MAX_HEAD {
                return Some("request head too long");
            }
        }
        None
    }
}

/// The answer to an over-long request: a bencoded failure reason.
fn answer(reason: &str) -> Vec<u8> {
    let body = crate::protocol::bencode::failure(reason);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for LineGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Reading { .. } => {
                    let before = buf.filled().len();
                    let read = Pin::new(&mut this.inner).poll_read(cx, buf);
                    if let Poll::Ready(Ok(())) = &read {
                        if let Some(reason) = this.scan(&buf.filled()[before..]) {
                            // Nothing of this read reaches actix: it sees the stream end once
                            // the answer is out.
                            buf.set_filled(before);
                            this.state = State::Refusing {
                                answer: answer(reason),
                                written: 0,
                            };
                            continue;
                        }
                    }
                    return read;
                }
                State::Refusing { answer, written } => {
                    while *written < answer.len() {
                        match Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                            Poll::Ready(Ok(n)) => *written += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    // Best effort: the client is told, then the stream ends either way.
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                    this.state = State::Done;
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LineGuard<T> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: usize) -> LineGuard<()> {
        LineGuard::new((), limit)
    }

    #[test]
    fn lines_and_heads_within_the_limits_pass_across_reads() {
        let mut g = guard(40);
        assert_eq!(g.scan(b"GET /announce?a=1 HT"), None);
        assert_eq!(g.scan(b"TP/1.1\r\nHost: x\r\n\r\n"), None);
        // Pipelined requests: each head counts from its own start, so many small requests on
        // one connection are never taken for one long head.
        for _ in 0..10_000 {
            assert_eq!(g.scan(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        }
        // A line split over reads counts as one.
        let mut g = guard(40);
        assert_eq!(g.scan(&[b'k'; 30]), None);
        assert!(g.scan(&[b'k'; 30]).is_some());
    }

    #[test]
    fn an_over_long_line_or_head_is_refused_with_its_reason() {
        let mut g = guard(100);
        let long = format!("GET /announce?{} HTTP/1.1\r\n", "k".repeat(200));
        assert_eq!(
            g.scan(long.as_bytes()),
            Some("request line too long (query string too long)")
        );
        let mut g = guard(100);
        let header = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(200));
        assert_eq!(
            g.scan(header.as_bytes()),
            Some("request header line too long")
        );
        let mut g = guard(100);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(b"X-Header: value-value-value\r\n");
        }
        assert_eq!(g.scan(&head), Some("request head too long"));
        assert_eq!(line_limit(8192), 9216);
        assert_eq!(line_limit(usize::MAX), MAX_URI_LINE);
        let a = answer("request head too long");
        assert!(a.ends_with(b"d14:failure reason21:request head too longe"));
    }
}

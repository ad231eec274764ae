//! The shell's side of [`Hold`]: reading request heads before hyper, offering the plain `GET`s
//! to the hold, writing held answers, and handing everything else to hyper with the bytes
//! already read ([`Prefixed`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri, header};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use super::limits::{Activity, CloseRequest};
use super::{Held, Hold, Shell};

/// Largest request head the shell parses itself; a larger one goes to hyper.
const HEAD_MAX: usize = 4096;
/// Most headers the shell parses itself.
const HEADERS_MAX: usize = 32;

/// Answers the requests on `io` for as long as each is one `hold` takes. Returns the
/// connection and the bytes read of the first request it does not take, for hyper — or `None`
/// once the connection is done with (closed by the client, no whole head within the read
/// timeout, asked to close between requests). A held request is answered before the
/// connection closes; so is one the client had begun to send when it was asked to close.
pub(super) async fn serve<I>(
    mut io: I,
    hold: &dyn Hold,
    shell: &Shell,
    activity: &Activity,
    close: &mut CloseRequest,
) -> Option<(I, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut closing = false;
    loop {
        // As under hyper: a whole head within the read timeout, or the connection closes.
        let offered = loop {
            tokio::select! {
                read = tokio::time::timeout(shell.read_timeout, read_head(&mut io, &mut buf, hold, shell)) => {
                    break read.ok()?.ok()?;
                }
                () = close.asked(), if !closing => {
                    if buf.is_empty() {
                        return None;
                    }
                    closing = true;
                }
            }
        };
        let Some((len, held)) = offered else {
            return Some((io, buf.freeze()));
        };
        activity.busy();
        buf.advance(len);
        if buf.is_empty() {
            // The held poll keeps no buffer.
            buf = BytesMut::new();
        }
        let started =
            tracing::enabled!(tracing::Level::DEBUG).then(crate::core::clock::Stopwatch::start);
        let answer = wait(&mut io, held, &mut buf).await?;
        // Idle from here, as under hyper once it has the whole answer: asked to close while
        // writing it, the connection closes after.
        activity.idle();
        let status = answer.status();
        io.write_all(&encode(&answer)).await.ok()?;
        io.flush().await.ok()?;
        drop(answer);
        if let Some(started) = started {
            tracing::debug!(
                route = "held",
                status = status.as_u16(),
                latency_ms = started.elapsed_secs() * 1000.0,
                "finished processing request"
            );
        }
        if closing || close.was_asked() {
            let _ = io.shutdown().await;
            return None;
        }
    }
}

/// Reads into `buf` until it starts with a whole request head, and offers it ([`offer`]): its
/// length and what `hold` made of it, or `None` for one the shell leaves to hyper (declined,
/// larger than [`HEAD_MAX`], or not parsable — hyper answers that), or `Err` when the
/// connection ends or fails first.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    hold: &dyn Hold,
    shell: &Shell,
) -> Result<Option<(usize, Held)>, ()> {
    loop {
        if !buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut request = httparse::Request::new(&mut slots);
            match request.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Ok(offer(&request, hold, shell).map(|held| (len, held)));
                }
                Ok(httparse::Status::Partial) if buf.len() < HEAD_MAX => {}
                _ => return Ok(None),
            }
        }
        buf.reserve(1024);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(_) => {}
        }
    }
}

/// Offers a parsed request head to `hold`, if it is one the shell may answer.
fn offer(request: &httparse::Request<'_, '_>, hold: &dyn Hold, shell: &Shell) -> Option<Held> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        // The message's framing and the connection's fate are hyper's business.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONNECTION
                && value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| !t.trim_ascii().eq_ignore_ascii_case(b"keep-alive")))
        {
            return None;
        }
        headers.append(name, value);
    }
    let target = request.path?;
    if !target.starts_with('/') {
        return None;
    }
    let uri: Uri = target.parse().ok()?;
    if !shell.allowed_hosts.is_empty()
        && !crate::edge::hosts::is_allowed(&shell.allowed_hosts, &uri, &headers)
    {
        return None; // the router's host check answers it
    }
    hold.hold(&uri, &headers)
}

/// Waits for `held`, watching the connection meanwhile: `None` if the client hangs up (or
/// sends more than a request head's worth ahead). Bytes it sends ahead — a pipelined request —
/// are kept in `buf`.
async fn wait<I: AsyncRead + Unpin>(
    io: &mut I,
    mut held: Held,
    buf: &mut BytesMut,
) -> Option<Response<Bytes>> {
    let mut ahead = [0u8; 64];
    loop {
        tokio::select! {
            answer = &mut held => return Some(answer),
            read = io.read(&mut ahead) => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&ahead[..n]);
                    if buf.len() > HEAD_MAX {
                        return None;
                    }
                }
            },
        }
    }
}

/// An answer as HTTP/1.1 bytes: status line, its headers, `date`, `content-length` (but on a
/// 304 or 204), the body.
fn encode(answer: &Response<Bytes>) -> Vec<u8> {
    let status = answer.status();
    let body = answer.body();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in answer.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(http_date(time::OffsetDateTime::now_utc()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status != StatusCode::NOT_MODIFIED && status != StatusCode::NO_CONTENT {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if status != StatusCode::NOT_MODIFIED && status != StatusCode::NO_CONTENT {
        out.extend_from_slice(body);
    }
    out
}

/// `at` as an HTTP date (IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A connection whose first bytes were read already: reads give them first.
pub(super) struct Prefixed<I> {
    read: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub(super) fn new(read: Bytes, io: I) -> Self {
        Prefixed { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        let at = time::macros::datetime!(1994-11-06 08:49:37 UTC);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn answers_are_framed_like_hyper_frames_them() {
        let mut ok = Response::new(Bytes::from_static(b"jws"));
        ok.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"7\""));
        let text = String::from_utf8(encode(&ok)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\netag: \"7\"\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("\r\ncontent-length: 3\r\n\r\njws"), "{text}");
        let mut not_modified = Response::new(Bytes::new());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        let text = String::from_utf8(encode(&not_modified)).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert!(text.ends_with("GMT\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn bytes_read_ahead_are_read_again_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), b);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}

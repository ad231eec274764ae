//! HTTP/1.1 to one origin, for the ingest node's push path.
//!
//! Every push a node forwards is the same exchange with the same origin: a `POST` with a
//! known body, and a small answer read whole. [`OriginPool`] does exactly that on connections
//! kept by the thread that opened them (one pool per serving event loop,
//! [`crate::edge::server::current_worker`]), inside the task of the push itself: the request
//! head is written with the body in one `writev`, the answer is parsed with `httparse` (the
//! parser hyper uses) from a buffer the connection keeps. No connection task, no dispatch
//! channel, no per-request `http::Request` to build and take apart — on the node's hot path
//! those cost more than the key check (docs/architecture.md, "How an ingest node moves a
//! push"). Everything else the node sends (the read proxy, the sync loop) goes through hyper's
//! pooled client ([`crate::edge::client::http_client`]); connections here are dialled by the
//! same connector (TCP_NODELAY, connect timeout, the same TLS configuration).
//!
//! The framing rules followed (RFC 9112): 1xx interim answers are skipped; 204 and 304 have no
//! body; `Transfer-Encoding` ending in `chunked` is decoded (trailers read and dropped) and wins
//! over `Content-Length`; otherwise `Content-Length` (conflicting values refused), otherwise
//! the body runs to the end of the connection. A connection is reused only after an HTTP/1.1
//! answer read exactly to its end without `Connection: close`; before reuse it is checked for
//! having been closed (or written to) while idle, so a push is not written to a connection
//! the event loop has seen the upstream hang up.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::http::{self, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf as _, Bytes, BytesMut};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::client::connector;

/// Connections kept open per pool, past which a finished one is closed.
const MAX_IDLE: usize = 256;
/// Largest answer head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Headers parsed for without allocating.
const FEW_HEADERS: usize = 16;
/// What a connection's read buffer starts at; it grows for larger answers.
const READ_BUFFER: usize = 4096;

type Tls = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;
type Io = Either<TcpStream, Box<Tls>>;

/// HTTP/1.1 connections to one origin; see the module documentation.
pub struct OriginPool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    origin: http::Uri,
    /// The `Host` header every request carries.
    host: String,
    /// Idle connections, the most recently used at the back.
    idle: Mutex<std::collections::VecDeque<Conn>>,
}

struct Conn {
    io: Io,
    /// Bytes read and not yet parsed; empty between exchanges.
    buf: BytesMut,
    /// The last request head written, kept for its allocation.
    head: Vec<u8>,
}

/// Why an exchange through an [`OriginPool`] failed. Never carries request headers or bodies.
#[derive(Debug)]
pub enum PoolError {
    Connect(String),
    /// The connection failed before any of the request was written: the upstream has none of it.
    Unsent(String),
    /// Writing the request or reading the answer failed; the upstream may have the request.
    Exchange(String),
    /// The answer broke HTTP/1.1 framing or a limit.
    Answer(String),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(why) => write!(f, "connecting: {why}"),
            PoolError::Unsent(why) | PoolError::Exchange(why) => write!(f, "{why}"),
            PoolError::Answer(why) => write!(f, "reading the response: {why}"),
        }
    }
}

impl std::error::Error for PoolError {}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The headers `keep` selected (framing headers are never among them).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What an exchange sends: `POST target` with `headers` (besides `Host` and `Content-Length`,
/// which the pool writes) and `body`.
pub struct Post<'a, H> {
    pub target: &'a str,
    pub headers: H,
    pub body: &'a [u8],
}

/// Which answer headers a caller wants, by lower-case name.
pub type Keep = fn(&str) -> bool;

impl OriginPool {
    /// A pool for `origin` (`scheme://host[:port]`, any path ignored).
    pub fn new(
        origin: &http::Uri,
        connect_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            anyhow::bail!("{origin} has no scheme and host");
        };
        Ok(OriginPool {
            connector: connector(connect_timeout, tls),
            origin: http::Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()?,
            host: authority.as_str().to_owned(),
            idle: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// Sends `post` on an idle connection, or a new one, and reads the answer whole (its body
    /// at most `max_body` bytes). A connection the upstream closed while idle is never used;
    /// one that fails before taking the first byte of the request is replaced once, since
    /// nothing can have reached the upstream.
    pub async fn post<'h, H>(
        &self,
        post: Post<'_, H>,
        max_body: usize,
        keep: Keep,
    ) -> Result<Answer, PoolError>
    where
        H: IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    {
        let mut headers = Some(post.headers);
        // Written once, into the buffer of the first connection tried.
        let mut written: Option<Vec<u8>> = None;
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let head = match (written.take(), headers.take()) {
                (Some(head), _) => head,
                (None, Some(headers)) => {
                    let mut head = std::mem::take(&mut conn.head);
                    self.head(&mut head, post.target, headers, post.body.len());
                    head
                }
                (None, None) => unreachable!("the head is written before the first attempt"),
            };
            let sent = write(&mut conn.io, &head, post.body).await;
            conn.head = head;
            match sent {
                Ok(()) => {}
                Err(WriteError::Unsent(err)) if reused && !retried => {
                    tracing::trace!(error = %err, "an idle upstream connection could not take a request; using a new one");
                    retried = true;
                    written = Some(std::mem::take(&mut conn.head));
                    continue;
                }
                Err(WriteError::Unsent(err)) => {
                    return Err(PoolError::Unsent(format!("sending the request: {err}")));
                }
                Err(WriteError::Partial(err)) => {
                    return Err(PoolError::Exchange(format!(
                        "the connection failed mid-request: {err}"
                    )));
                }
            }
            let (answer, reusable) = read_answer(&mut conn, max_body, keep).await?;
            if reusable {
                self.put_idle(conn);
            }
            return Ok(answer);
        }
    }

    /// Writes the request head into `head`: request line, `Host`, `headers`, `Content-Length`.
    fn head<'h>(
        &self,
        head: &mut Vec<u8>,
        target: &str,
        headers: impl IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        len: usize,
    ) {
        head.clear();
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(self.host.as_bytes());
        for (name, value) in headers {
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
        }
        head.extend_from_slice(b"\r\ncontent-length: ");
        head.extend_from_slice(itoa(len, &mut [0; 20]));
        head.extend_from_slice(b"\r\n\r\n");
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop_back() {
            if still_open(&mut conn.io) {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Steady load reuses the newest; the oldest, left from a burst, may have been closed
        // by the upstream since. One is looked at per exchange, so none lingers half-closed.
        if let Some(oldest) = idle.front_mut()
            && !still_open(&mut oldest.io)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, PoolError> {
        use tower::Service as _;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let io = match connector
            .call(self.origin.clone())
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?
        {
            MaybeHttpsStream::Http(tcp) => Either::Left(tcp.into_inner()),
            MaybeHttpsStream::Https(tls) => Either::Right(Box::new(tls.into_inner())),
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUFFER),
            head: Vec::with_capacity(512),
        })
    }
}

/// Whether an idle connection can take a request: nothing to read — no end of stream, no
/// reset, no bytes nobody asked for. A TLS session ticket or key update is taken in by rustls
/// without counting as data. Costs no system call unless the socket has signalled readiness:
/// it sees what the event loop has seen (as hyper's own pool does), so an end of stream still
/// on its way in is found by the exchange, and that push is spooled. Run outside tokio's
/// cooperative budget, which would otherwise answer "not ready" without looking.
fn still_open(io: &mut Io) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut look = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut byte);
        Poll::Ready(Pin::new(&mut *io).poll_read(cx, &mut buf).is_pending())
    })));
    matches!(look.as_mut().poll(&mut cx), Poll::Ready(true))
}

/// Why writing a request failed.
enum WriteError {
    /// Not a byte was taken: the request can go out on another connection.
    Unsent(std::io::Error),
    /// Part of the request is out; it can't be sent again.
    Partial(std::io::Error),
}

/// Writes `head` and `body`, both in one `writev` when the socket takes them, then flushes.
async fn write(io: &mut Io, head: &[u8], body: &[u8]) -> Result<(), WriteError> {
    let (mut head, mut body) = (head, body);
    let mut sent = 0usize;
    let result: std::io::Result<()> = async {
        while !head.is_empty() || !body.is_empty() {
            let n = if head.is_empty() {
                io.write(body).await?
            } else {
                io.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                    .await?
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            sent += n;
            if n < head.len() {
                head = &head[n..];
            } else {
                body = &body[n - head.len()..];
                head = &[];
            }
        }
        io.flush().await
    }
    .await;
    result.map_err(|err| {
        if sent == 0 {
            WriteError::Unsent(err)
        } else {
            WriteError::Partial(err)
        }
    })
}

/// How an answer's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one answer from `conn`: the head (skipping 1xx interim answers), then the body.
/// Returns the answer and whether the connection can carry another request.
async fn read_answer(
    conn: &mut Conn,
    max_body: usize,
    keep: Keep,
) -> Result<(Answer, bool), PoolError> {
    let (status, headers, framing, mut reusable) = loop {
        match parse_head(&conn.buf, keep)? {
            Some((len, head)) => {
                conn.buf.advance(len);
                match head {
                    Head::Interim => continue,
                    Head::Final {
                        status,
                        headers,
                        framing,
                        reusable,
                    } => break (status, headers, framing, reusable),
                }
            }
            None => {
                if conn.buf.len() >= MAX_HEAD {
                    return Err(PoolError::Answer(format!(
                        "the answer's head is over {MAX_HEAD} bytes"
                    )));
                }
                if fill(conn).await? == 0 {
                    return Err(if conn.buf.is_empty() {
                        PoolError::Exchange(
                            "the upstream closed the connection without answering".into(),
                        )
                    } else {
                        early_end()
                    });
                }
            }
        }
    };
    let too_large = || PoolError::Answer(format!("the body is over {max_body} bytes"));
    let body = match framing {
        Framing::Length(len) => {
            if len > max_body {
                return Err(too_large());
            }
            while conn.buf.len() < len {
                conn.buf.reserve(len - conn.buf.len());
                if fill(conn).await? == 0 {
                    return Err(early_end());
                }
            }
            let body = Bytes::copy_from_slice(&conn.buf[..len]);
            conn.buf.advance(len);
            body
        }
        Framing::Chunked => read_chunked(conn, max_body).await?,
        Framing::UntilClose => {
            reusable = false;
            while fill(conn).await? > 0 {
                if conn.buf.len() > max_body {
                    return Err(too_large());
                }
            }
            conn.buf.split().freeze()
        }
    };
    // Bytes past the answer were never asked for: the connection is out of step.
    if !conn.buf.is_empty() {
        reusable = false;
    }
    Ok((
        Answer {
            status,
            headers,
            body,
        },
        reusable,
    ))
}

/// The upstream closed the connection part-way through an answer.
fn early_end() -> PoolError {
    PoolError::Exchange("the upstream closed the connection mid-answer".into())
}

/// Reads more bytes into `conn.buf`; 0 at the end of the stream.
async fn fill(conn: &mut Conn) -> Result<usize, PoolError> {
    if conn.buf.capacity() - conn.buf.len() < 1024 {
        conn.buf.reserve(READ_BUFFER);
    }
    conn.io
        .read_buf(&mut conn.buf)
        .await
        .map_err(|e| PoolError::Exchange(format!("reading the response: {e}")))
}

enum Head {
    Interim,
    Final {
        status: StatusCode,
        headers: HeaderMap,
        framing: Framing,
        reusable: bool,
    },
}

/// Parses an answer head from the start of `buf`: its length and meaning, or `None` if more
/// bytes are needed. Room for [`FEW_HEADERS`] first (what answers carry; the slots are
/// initialised on every parse), for [`MAX_HEADERS`] only when that is not enough.
fn parse_head(buf: &[u8], keep: Keep) -> Result<Option<(usize, Head)>, PoolError> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    match parse_head_in(buf, keep, &mut few) {
        Err(None) => {
            let mut many = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_head_in(buf, keep, &mut many).map_err(|e| {
                e.unwrap_or_else(|| {
                    PoolError::Answer(format!("the answer has over {MAX_HEADERS} headers"))
                })
            })
        }
        Err(Some(err)) => Err(err),
        Ok(parsed) => Ok(parsed),
    }
}

/// [`parse_head`] with `slots` for the headers; `Err(None)` when they are too few.
fn parse_head_in<'b>(
    buf: &'b [u8],
    keep: Keep,
    slots: &mut [httparse::Header<'b>],
) -> Result<Option<(usize, Head)>, Option<PoolError>> {
    let mut answer = httparse::Response::new(slots);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(None),
        Err(err) => {
            return Err(Some(PoolError::Answer(format!(
                "not an HTTP/1 answer: {err}"
            ))));
        }
    };
    let code = answer.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| PoolError::Answer(format!("status {code} is out of range")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Some(PoolError::Answer(
            "the upstream switched protocols".into(),
        )));
    }
    if status.is_informational() {
        return Ok(Some((len, Head::Interim)));
    }
    let mut reusable = answer.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = None;
    let mut headers = HeaderMap::new();
    for header in answer.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values (`0, 0`) is one length; anything else is refused.
            for value in header.value.split(|&b| b == b',') {
                let value = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| PoolError::Answer("a Content-Length is not a number".into()))?;
                if length.is_some_and(|l| l != value) {
                    return Err(Some(PoolError::Answer(
                        "the answer has conflicting Content-Length headers".into(),
                    )));
                }
                length = Some(value);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: only `chunked` there frames the body.
            let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            if header
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                reusable = false;
            }
        } else if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
            && keep(name.as_str())
            && let Ok(value) = HeaderValue::from_bytes(header.value)
        {
            headers.append(name, value);
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), length) => {
                // Both framings at once is how requests get smuggled: answer, then close.
                if length.is_some() {
                    reusable = false;
                }
                Framing::Chunked
            }
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    Ok(Some((
        len,
        Head::Final {
            status,
            headers,
            framing,
            reusable,
        },
    )))
}

/// Decodes a chunked body from `conn`, up to `max_body` bytes; trailers are read and dropped.
async fn read_chunked(conn: &mut Conn, max_body: usize) -> Result<Bytes, PoolError> {
    let mut body = BytesMut::new();
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(&conn.buf) {
                Ok(httparse::Status::Complete(found)) => break found,
                Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {
                    if fill(conn).await? == 0 {
                        return Err(early_end());
                    }
                }
                _ => return Err(PoolError::Answer("a chunk size is malformed".into())),
            }
        };
        conn.buf.advance(consumed);
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max_body - body.len())
            .ok_or_else(|| PoolError::Answer(format!("the body is over {max_body} bytes")))?;
        if size == 0 {
            break;
        }
        while conn.buf.len() < size + 2 {
            if fill(conn).await? == 0 {
                return Err(early_end());
            }
        }
        body.extend_from_slice(&conn.buf[..size]);
        if &conn.buf[size..size + 2] != b"\r\n" {
            return Err(PoolError::Answer("a chunk does not end in CRLF".into()));
        }
        conn.buf.advance(size + 2);
    }
    // Trailer lines, up to the empty line that ends the message.
    loop {
        match conn.buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                conn.buf.advance(2);
                return Ok(body.freeze());
            }
            Some(end) => conn.buf.advance(end + 2),
            None if conn.buf.len() < MAX_HEAD => {
                if fill(conn).await? == 0 {
                    return Err(early_end());
                }
            }
            None => return Err(PoolError::Answer("the trailers are too long".into())),
        }
    }
}

/// `n` in decimal, written into `buf`.
fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests;

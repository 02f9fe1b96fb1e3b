//! The admin endpoint: a small HTTP/1.1 server on its own thread, and the
//! client the `status` and `dlq` commands use.
//!
//! The server thread never touches broker state: it turns each request into
//! an [`AdminRequest`] on a channel, and the IO loop (which owns the core)
//! answers on the request's reply channel. Requests are small and bounded;
//! one connection is served at a time, each with a read timeout, so a slow
//! or hostile client can delay the admin endpoint but never the broker.
//!
//! Routes: `GET /status`, `GET /dlq`, `POST /dlq/retry?id=PRODUCER/ORDER`,
//! `POST /dlq/retry?all=1`, `GET /metrics` (Prometheus text).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use orderly_common::OrderKey;

/// Bytes of one request (request line and headers) at most.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Dead letters one `/dlq` response lists at most.
pub const DLQ_LIST_MAX: usize = 10_000;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server waits for the IO loop to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the IO loop is asked.
#[derive(Debug)]
pub enum Query {
    Status,
    DeadLetters,
    Retry(Option<OrderKey>),
    Metrics,
}

/// A query and where to send the answer: (HTTP status, content type, body).
#[derive(Debug)]
pub struct AdminRequest {
    pub query: Query,
    pub reply: Sender<(u16, &'static str, String)>,
}

/// Failures of the admin endpoint or client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin address {addr}: {error} (choose another with --admin, or --admin off)")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error(
        "cannot reach the broker's admin endpoint at {addr}: {error} (is the broker running with --admin {addr}?)"
    )]
    Connect { addr: String, error: std::io::Error },
    #[error("the admin endpoint at {addr} answered {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    #[error("the admin endpoint at {addr} sent a malformed response")]
    Malformed { addr: String },
}

/// The running admin server thread.
pub struct AdminServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves until dropped; requests arrive on the
    /// returned receiver.
    pub fn start(addr: SocketAddr) -> Result<(AdminServer, Receiver<AdminRequest>), AdminError> {
        let listener = TcpListener::bind(addr).map_err(|source| AdminError::Bind { addr, error: source })?;
        let addr = listener.local_addr().map_err(|source| AdminError::Bind { addr, error: source })?;
        listener.set_nonblocking(true).map_err(|source| AdminError::Bind { addr, error: source })?;
        let (sender, receiver) = bounded(16);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || serve(listener, sender, thread_stop))
            .map_err(|source| AdminError::Bind { addr, error: source })?;
        Ok((AdminServer { addr, stop, thread: Some(thread) }, receiver))
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, requests: Sender<AdminRequest>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = handle(stream, &requests) {
                    tracing::debug!(%error, "admin request failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => {
                tracing::warn!(%error, "admin endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn handle(stream: TcpStream, requests: &Sender<AdminRequest>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(REQUEST_BYTES_MAX as u64));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded by `take`); bodies are not used.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let (status, content_type, body) = match route(&request_line) {
        Ok(query) => ask(requests, query),
        Err((status, message)) => (status, "text/plain", message),
    };
    respond(stream, status, content_type, &body)
}

fn route(request_line: &str) -> Result<Query, (u16, String)> {
    let mut parts = request_line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m, t),
        _ => return Err((400, "malformed request line\n".into())),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/status") => Ok(Query::Status),
        ("GET", "/dlq") => Ok(Query::DeadLetters),
        ("GET", "/metrics") => Ok(Query::Metrics),
        ("POST", "/dlq/retry") => parse_retry(query),
        (_, "/status" | "/dlq" | "/metrics" | "/dlq/retry") => Err((405, format!("{method} not allowed on {path}\n"))),
        _ => Err((404, format!("no route {path}; try /status, /dlq, /metrics or POST /dlq/retry\n"))),
    }
}

fn parse_retry(query: &str) -> Result<Query, (u16, String)> {
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("all", "1" | "true")) => return Ok(Query::Retry(None)),
            Some(("id", value)) => {
                let id = percent_decode(value).ok_or((400, "id is not valid percent-encoded UTF-8\n".to_string()))?;
                let key = parse_order_ref(&id).map_err(|e| (400, format!("{e}\n")))?;
                return Ok(Query::Retry(Some(key)));
            }
            _ => {}
        }
    }
    Err((400, "give id=PRODUCER/ORDER or all=1\n".into()))
}

/// Parses `PRODUCER/ORDER-ID` (the order id may itself contain `/`).
pub fn parse_order_ref(text: &str) -> Result<OrderKey, String> {
    let (producer, id) =
        text.split_once('/').ok_or_else(|| format!("{text:?} is not PRODUCER/ORDER-ID (e.g. shop-1/order-42)"))?;
    let key = OrderKey::new(producer, id);
    key.validate().map_err(|e| format!("{text:?}: {e}"))?;
    Ok(key)
}

fn ask(requests: &Sender<AdminRequest>, query: Query) -> (u16, &'static str, String) {
    let (reply, answer) = bounded(1);
    if requests.send_timeout(AdminRequest { query, reply }, REPLY_TIMEOUT).is_err() {
        return (503, "text/plain", "broker busy\n".into());
    }
    answer.recv_timeout(REPLY_TIMEOUT).unwrap_or((503, "text/plain", "broker did not answer in time\n".into()))
}

fn respond(mut stream: TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// `%XX` decoding for query values (`+` stays `+`).
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `%XX` encoding of everything but unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sends one request to a broker's admin endpoint and returns the body of a
/// 200 response.
pub fn request(addr: &str, method: &str, path: &str) -> Result<String, AdminError> {
    let connect = |source| AdminError::Connect { addr: addr.to_owned(), error: source };
    let target = addr.parse::<SocketAddr>().map_err(|e| connect(std::io::Error::other(e)))?;
    let mut stream = TcpStream::connect_timeout(&target, REPLY_TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT * 2)).map_err(connect)?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(connect)?;
    let mut response = String::new();
    stream.take(64 * 1024 * 1024).read_to_string(&mut response).map_err(connect)?;
    let malformed = || AdminError::Malformed { addr: addr.to_owned() };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(malformed)?;
    if status != 200 {
        return Err(AdminError::Status { addr: addr.to_owned(), status, body: body.trim().to_owned() });
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("GET /status HTTP/1.1\r\n"), Ok(Query::Status)));
        assert!(matches!(route("POST /dlq/retry?all=1 HTTP/1.1"), Ok(Query::Retry(None))));
        let Ok(Query::Retry(Some(key))) = route("POST /dlq/retry?id=shop%2Fo%2F1 HTTP/1.1") else { panic!() };
        assert_eq!(key, OrderKey::new("shop", "o/1"));
        assert!(matches!(route("DELETE /dlq HTTP/1.1"), Err((405, _))));
        assert!(matches!(route("GET /nope HTTP/1.1"), Err((404, _))));
        assert!(matches!(route("garbage"), Err((400, _))));
        assert!(matches!(route("POST /dlq/retry?id=%ZZ HTTP/1.1"), Err((400, _))));
    }

    #[test]
    fn percent_round_trip() {
        for text in ["a/b c", "é%", "plain-1.2_3"] {
            assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Some(text));
        }
    }
}

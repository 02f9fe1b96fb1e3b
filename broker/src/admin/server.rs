//! The admin HTTP server: one thread, one connection at a time. It never
//! touches broker state: each request becomes an [`AdminRequest`] on a
//! channel, answered by the IO loop (which owns the core).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{parse_order_ref, percent_decode, AdminError, AdminRequest, Query, REPLY_TIMEOUT, REQUEST_BYTES_MAX};

/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests waiting for the IO loop at most; more wait in the listen queue.
const REQUESTS_QUEUED_MAX: usize = 16;

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
        let listener = TcpListener::bind(addr).map_err(|source| AdminError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| AdminError::Bind { addr, source })?;
        let (sender, receiver) = bounded(REQUESTS_QUEUED_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || serve(listener, sender, thread_stop))
            .map_err(|source| AdminError::Bind { addr, source })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_common::OrderKey;

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
}

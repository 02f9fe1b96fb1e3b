//! A small read-only HTTP/1 endpoint (`GET`/`HEAD` only) on a thread of its
//! own, for `/metrics`, `/healthz` and the like: hyper's server on a
//! current-thread tokio runtime, with bounded connections, a header
//! timeout, no keep-alive and a whole-connection cap. The worker's
//! `--metrics` and `orderly-producer relay --metrics` serve through it.
//! What to answer is the caller's [`Route`]; this crate only carries
//! requests to it and answers other methods with 405.
//!
//! [`metrics`] registers and encodes the Prometheus families they serve.
//!
//! A crate of its own (not part of `orderly-cli`) because the worker
//! library serves through it and must carry no CLI crate.

pub mod metrics;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

/// Connections served at once; more wait in the listen queue. A scrape is
/// one short request, so a few are plenty.
const CONNECTIONS_MAX: usize = 16;
/// How long a connection may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection's whole life: one request, answered and written.
const CONNECTION_DURATION_MAX: Duration = Duration::from_secs(10);
/// Request head bytes read at most (hyper's smallest buffer is 8 KiB).
const REQUEST_BYTES_MAX: usize = 8192;
/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    /// 200 with `body` of `content_type`.
    pub fn ok(content_type: &'static str, body: String) -> Answer {
        Answer { status: 200, content_type, body }
    }

    /// 404 naming the paths that are served.
    pub fn not_found(path: &str, served: &str) -> Answer {
        Answer { status: 404, content_type: "text/plain", body: format!("no {path} here: try {served}\n") }
    }
}

/// What the endpoint answers to `GET path` (and `HEAD path`).
pub type Route = dyn Fn(&str) -> Answer + Send + Sync;

/// A failure to start the endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {what} on {addr}: is the address right and the port free?")]
pub struct HttpError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The running endpoint; stops when dropped.
pub struct HttpServer {
    /// Where it listens (the port chosen when port 0 was asked for).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and answers requests with `route` from a thread named
    /// `what` until dropped; `what` also names the endpoint in errors and
    /// logs ("worker metrics": "cannot serve worker metrics on ...").
    pub fn start(addr: SocketAddr, what: &'static str, route: Arc<Route>) -> Result<HttpServer, HttpError> {
        let error = |addr| move |source| HttpError { what, addr, source };
        let listener = TcpListener::bind(addr).map_err(error(addr))?;
        let addr = listener.local_addr().map_err(error(addr))?;
        listener.set_nonblocking(true).map_err(error(addr))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(error(addr))?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(what.into())
            .spawn(move || runtime.block_on(serve(listener, what, route, stopped)))
            .map_err(error(addr))?;
        Ok(HttpServer { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves until `stopped` fires; the runtime, dropped with the thread,
/// cancels every connection task.
async fn serve(listener: TcpListener, what: &'static str, route: Arc<Route>, stopped: oneshot::Receiver<()>) {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => drop(tokio::spawn(accept_loop(listener, what, route))),
        Err(error) => tracing::error!(%error, endpoint = what, "http endpoint: cannot register the listener"),
    }
    let _ = stopped.await;
}

/// Accepts while a connection slot is free; each connection is a task.
async fn accept_loop(listener: tokio::net::TcpListener, what: &'static str, route: Arc<Route>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // E.g. out of file descriptors: wait rather than spin.
                tracing::warn!(%error, endpoint = what, "http endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let route = Arc::clone(&route);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let route = Arc::clone(&route);
                async move { Ok::<_, std::convert::Infallible>(answer(&*route, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(REQUEST_BYTES_MAX)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_DURATION_MAX, connection).await {
                tracing::debug!(%error, endpoint = what, "http connection failed");
            }
            drop(slot);
        });
    }
}

fn answer<B>(route: &Route, request: &Request<B>) -> Response<Full<Bytes>> {
    let answer = match request.method().as_str() {
        "GET" | "HEAD" => route(request.uri().path()),
        method => Answer {
            status: 405,
            content_type: "text/plain",
            body: format!("{method} is not served here: only GET and HEAD\n"),
        },
    };
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::OK);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn routes_gets_and_refuses_other_methods() {
        let route: Arc<Route> = Arc::new(|path: &str| match path {
            "/metrics" => Answer::ok(PROMETHEUS_TEXT, "up 1\n".into()),
            path => Answer::not_found(path, "GET /metrics"),
        });
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), "test-http", route).unwrap();
        let ok = get(server.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("version=0.0.4") && ok.ends_with("up 1\n"), "{ok}");
        let missing = get(server.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("try GET /metrics"), "{missing}");
        let head = get(server.addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "a HEAD answer has no body: {head}");
        let post = get(server.addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let taken = HttpServer::start(server.addr, "test-http", Arc::new(|p: &str| Answer::not_found(p, "")));
        assert!(taken.err().unwrap().to_string().contains("port free"));
    }
}

//! The admin HTTP server: hyper's HTTP/1.1 server on a current-thread
//! tokio runtime that the admin thread owns.
//!
//! Why hyper: it is the HTTP implementation the Rust ecosystem runs on
//! (well kept, fuzzed), it reads headers with a timeout and a size bound,
//! and under tokio each connection is a task, so idle, slow or non-reading
//! clients cost a task each and block no one. tiny_http has no read or
//! write timeouts; axum would add routing we do not need (one table, see
//! `guard`) for more to compile. One current-thread runtime keeps the
//! threads design: this thread never touches broker state; it sends an
//! [`AdminRequest`] over the channel and awaits the IO loop's answer.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

use super::dashboard::{self, Asset};
use super::guard::{self, Head, Route};
use super::{AdminConfig, AdminError, AdminRequest, Answer, Query, REPLY_TIMEOUT, REQUEST_BYTES_MAX};

/// How long a connection may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing a response may take once the IO loop has answered
/// (a client that does not read is dropped then).
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's whole life: one request (no keep-alive), read, answered
/// and written. Past it the connection is closed whatever it is doing.
const CONNECTION_DURATION_MAX: Duration = HEADER_READ_TIMEOUT
    .saturating_add(REPLY_TIMEOUT)
    .saturating_add(REPLY_TIMEOUT)
    .saturating_add(RESPONSE_WRITE_TIMEOUT);
/// Connections served at once; more wait in the listen queue. Each costs a
/// task and at most a request head of memory, and lives a bounded time.
const CONNECTIONS_MAX: usize = 64;
/// Requests waiting for the IO loop at most.
const REQUESTS_QUEUED_MAX: usize = 16;
/// How often a request retries a full queue to the IO loop.
const QUEUE_RETRY_INTERVAL: Duration = Duration::from_millis(10);

const _: () = assert!(REQUEST_BYTES_MAX >= 8192, "hyper's read buffer is 8 KiB at least");
const _: () = assert!(REQUESTS_QUEUED_MAX <= CONNECTIONS_MAX);
const _: () = assert!(CONNECTION_DURATION_MAX.as_secs() >= 20);

type Body = Full<Bytes>;

/// The running admin server thread.
pub struct AdminServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `config.addr` and serves until dropped; requests arrive on
    /// the returned receiver.
    pub fn start(config: AdminConfig) -> Result<(AdminServer, Receiver<AdminRequest>), AdminError> {
        config.validate()?;
        let bind_err = |addr| move |source| AdminError::Bind { addr, source };
        let listener = TcpListener::bind(config.addr).map_err(bind_err(config.addr))?;
        let addr = listener.local_addr().map_err(bind_err(config.addr))?;
        listener.set_nonblocking(true).map_err(bind_err(addr))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(bind_err(addr))?;
        let (sender, receiver) = bounded(REQUESTS_QUEUED_MAX);
        let (stop, stopped) = oneshot::channel();
        let config = Arc::new(AdminConfig { addr, ..config });
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || runtime.block_on(serve(listener, config, sender, stopped)))
            .map_err(bind_err(addr))?;
        Ok((AdminServer { addr, stop: Some(stop), thread: Some(thread) }, receiver))
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves until `stopped` fires (the server is dropped); the runtime,
/// dropped with this thread, then cancels every task.
async fn serve(
    listener: TcpListener,
    config: Arc<AdminConfig>,
    requests: Sender<AdminRequest>,
    stopped: oneshot::Receiver<()>,
) {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => drop(tokio::spawn(accept_loop(listener, config, requests))),
        Err(error) => tracing::error!(%error, "admin endpoint: cannot register the listener"),
    }
    let _ = stopped.await;
}

/// Accepts while a connection slot is free; each connection is a task.
async fn accept_loop(listener: tokio::net::TcpListener, config: Arc<AdminConfig>, requests: Sender<AdminRequest>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Some((stream, slot)) = accept(&listener, &slots).await else { continue };
        let (config, requests) = (Arc::clone(&config), requests.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (config, requests) = (Arc::clone(&config), requests.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&config, &requests, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(REQUEST_BYTES_MAX)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DURATION_MAX, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "admin connection failed"),
                Err(_) => tracing::debug!("admin connection closed: it took too long"),
            }
            drop(slot);
        });
    }
}

/// One connection and the slot it holds; `None` after a failed accept.
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = Arc::clone(slots).acquire_owned().await.expect("the semaphore is never closed");
    match listener.accept().await {
        Ok((stream, _peer)) => Some((stream, slot)),
        Err(error) => {
            // E.g. out of file descriptors: wait rather than spin.
            tracing::warn!(%error, "admin endpoint: accept failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        }
    }
}

async fn handle(config: &AdminConfig, requests: &Sender<AdminRequest>, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let head = Head {
        method: request.method().as_str(),
        path: request.uri().path(),
        query: request.uri().query().unwrap_or(""),
        host: headers.get(HOST).map(HeaderValue::as_bytes),
        origin: headers.get(ORIGIN).map(HeaderValue::as_bytes),
        authorization: headers.get(AUTHORIZATION).map(HeaderValue::as_bytes),
    };
    let route = match guard::check(config, &head) {
        Ok(route) => route,
        Err(refusal) => {
            tracing::debug!(status = refusal.status, reason = refusal.message.trim_end(), "admin request refused");
            let mut response = respond(Answer {
                status: refusal.status,
                content_type: "text/plain",
                body: refusal.message,
                headers: vec![],
            });
            if refusal.status == 401 {
                response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
    };
    respond(match route {
        Route::Loop(query) => ask(requests, query).await,
        Route::Health => health(requests).await,
        Route::Ready => ask(requests, Query::Ready).await,
        Route::Asset(asset) => page(asset),
    })
}

/// A dashboard file, with the headers that confine what the page may do.
fn page(asset: &Asset) -> Answer {
    let headers = dashboard::ASSET_HEADERS.iter().map(|&(name, value)| (name, value.to_owned())).collect();
    Answer { status: 200, content_type: asset.content_type, body: asset.body.to_owned(), headers }
}

/// `/healthz`: 200 when the IO loop answers (the admin starts only after
/// recovery, so an answer also means recovery is done). `/readyz` is the
/// loop's own answer ([`Query::Ready`]): it knows the journal's state.
async fn health(requests: &Sender<AdminRequest>) -> Answer {
    let answer = ask(requests, Query::Status).await;
    if answer.status != 200 {
        return Answer { status: 503, ..answer };
    }
    Answer::text(200, "ok")
}

/// Hands `query` to the IO loop and awaits its answer, without blocking the
/// runtime: a full queue is retried, the answer awaited, both bounded.
async fn ask(requests: &Sender<AdminRequest>, query: Query) -> Answer {
    let (reply, answer) = oneshot::channel();
    let mut request = AdminRequest { query, reply };
    let queued = tokio::time::timeout(REPLY_TIMEOUT, async {
        loop {
            match requests.try_send(request) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => request = back,
                Err(TrySendError::Disconnected(_)) => return false,
            }
            tokio::time::sleep(QUEUE_RETRY_INTERVAL).await;
        }
    });
    if !matches!(queued.await, Ok(true)) {
        return Answer::text(503, "broker busy");
    }
    match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
        Ok(Ok(answer)) => answer,
        _ => Answer::text(503, "broker did not answer in time"),
    }
}

fn respond(answer: Answer) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    for (name, value) in answer.headers {
        // The loop's values are digits or percent-encoded: always valid.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

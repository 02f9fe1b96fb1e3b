//! The admin endpoint: an HTTP/1.1 server on its own thread (`server`),
//! the checks every request passes first (`guard`), the client the
//! `status` and `dlq` commands use (`client`), and the JSON both speak
//! ([`schema`]).
//!
//! The server thread never touches broker state: it turns each request into
//! an [`AdminRequest`] on a channel, and the IO loop (which owns the core)
//! answers on the request's reply channel. Connections are served
//! concurrently, each bounded in size and time, so a slow or hostile
//! client delays neither the broker nor other admin clients.
//!
//! Routes: `GET /status`, `GET /dlq?after=&limit=` (an array; the total in
//! `X-Orderly-Total`), `GET /dlq/page?after=&limit=` (an object),
//! `GET /orders/show?id=PRODUCER/ORDER`, `GET /dlq/show?id=`,
//! `POST /dlq/retry?id=|all=1`, `POST /dlq/delete?id=|all=1`, `GET
//! /metrics` (Prometheus text), `GET /healthz` and `GET /readyz`; in a
//! group, `POST /group/add?id=&intake=&fanout=&control=&peer=&admin=` and
//! `POST /group/remove?id=` (the leader changes the members); the
//! dashboard at `GET /` and `/dashboard` with its files under
//! `/dashboard/` (`dashboard`). Who may call which: see `guard` and
//! docs/SECURITY.md.

mod client;
mod dashboard;
mod guard;
pub mod schema;
mod server;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orderly_common::ids::IdError;
use orderly_common::OrderKey;

pub use self::client::{page_query, request, AdminClient};
pub use self::guard::bound_to_loopback;
pub use self::schema::{DeadLetters, DeleteReport, IntakeClosedReport, OrderView, RetryReport, StatusReport};
pub use self::server::AdminServer;
pub use self::token::{AdminToken, TOKEN_CHARS_MIN};

/// Bytes of one request (request line and headers) at most. hyper's read
/// buffer cannot be smaller than 8 KiB.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Dead letters one `/dlq` or `/dlq/page` response lists at most, and
/// how many they list when no `limit` is given.
pub const DLQ_LIST_MAX: usize = 10_000;
/// `GET /dlq`'s header with the number of dead letters in all.
pub const TOTAL_HEADER: &str = "x-orderly-total";
/// `GET /dlq`'s header, present when more remain: the `after` value
/// (percent-encoded `PRODUCER/ORDER`) that asks for the next page.
pub const NEXT_AFTER_HEADER: &str = "x-orderly-next-after";
/// How long the server waits for the IO loop to answer (and the client
/// for a connection).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoint is told: where to listen, the token, and the
/// host names (besides IP literals and `localhost`) clients may use.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    pub token: Option<AdminToken>,
    pub host_names: Vec<String>,
}

impl AdminConfig {
    /// Refuses, before anything starts, to listen beyond loopback without
    /// a token: every endpoint but the probes would be open to the network.
    pub fn validate(&self) -> Result<(), AdminError> {
        if !self.addr.ip().is_loopback() && self.token.is_none() {
            return Err(AdminError::OpenBeyondLoopback { addr: self.addr });
        }
        Ok(())
    }
}

/// What the IO loop is asked.
#[derive(Debug)]
pub enum Query {
    Status,
    /// Dead letters in key order after `after`, at most `limit`: a JSON
    /// array with the paging in headers (`/dlq`) or a
    /// [`crate::core::DeadLetterPage`] (`/dlq/page`, `page`).
    DeadLetters {
        after: Option<OrderKey>,
        limit: usize,
        page: bool,
    },
    Retry(Option<OrderKey>),
    /// One sealed order and its handler view ([`OrderView`]); with
    /// `dead_only`, not found unless it is a dead letter.
    Show {
        key: OrderKey,
        dead_only: bool,
    },
    /// Delete one dead letter, or all with `None` ([`DeleteReport`]).
    Delete(Option<OrderKey>),
    Metrics,
    /// `/readyz`: 200 or 503 with the check that failed (see
    /// `io::metrics::readiness`).
    Ready,
    /// A group's leader: add this member (`POST /group/add`,
    /// [`schema::MembershipReport`]).
    GroupAdd(orderly_replication::MemberRecord),
    /// A group's leader: remove member N (`POST /group/remove?id=N`).
    GroupRemove(u64),
}

impl Query {
    /// Whether answering changes state (the leader's business in a group;
    /// the answer waits for the change to be recorded).
    pub fn changes(&self) -> bool {
        matches!(self, Query::Retry(_) | Query::Delete(_) | Query::GroupAdd(_) | Query::GroupRemove(_))
    }
}

/// The IO loop's answer to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers: a name from this module's constants and a value
    /// of visible ASCII.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// 200 with `value` as pretty JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Answer {
        let body = serde_json::to_string_pretty(value).expect("admin responses serialize") + "\n";
        Answer { status: 200, content_type: "application/json", body, headers: Vec::new() }
    }

    /// Plain text (a line; the newline is added).
    pub fn text(status: u16, line: impl Into<String>) -> Answer {
        Answer { status, content_type: "text/plain", body: line.into() + "\n", headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// A query and where to send the answer. The reply is a oneshot the
/// server's async task awaits; the IO loop's `send` never blocks.
#[derive(Debug)]
pub struct AdminRequest {
    pub query: Query,
    pub reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Failures of the admin endpoint or client. The message says what was
/// being done; an IO or JSON cause is the source, printed once by `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin address {addr} (choose another with --admin, or --admin off)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the broker's admin endpoint at {addr} (is the broker running with --admin {addr}?)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin endpoint at {addr} answered {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    #[error(
        "refusing to serve the admin endpoint on {addr} without a token: beyond loopback it needs \
         --admin-token FILE (a secret of 16 or more characters, mode 0600), or keep it on 127.0.0.1"
    )]
    OpenBeyondLoopback { addr: SocketAddr },
    #[error("admin token file {path}: {detail}")]
    Token { path: PathBuf, detail: String },
    #[error(transparent)]
    TokenFile(#[from] orderly_security::keys::KeyError),
    #[error("the admin endpoint at {addr} sent a malformed response")]
    Malformed { addr: String },
    #[error("the admin endpoint at {addr} sent {what} this client cannot read")]
    Schema {
        addr: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Text that is not an order reference (`PRODUCER/ORDER-ID`).
#[derive(Debug, thiserror::Error)]
pub enum OrderRefError {
    #[error("{text:?} is not PRODUCER/ORDER-ID (e.g. shop-1/order-42)")]
    NoSlash { text: String },
    /// One line for a person and for an HTTP 400 body alike, so the id
    /// error is part of the message rather than a source.
    #[error("{text:?}: {error}")]
    BadId { text: String, error: IdError },
}

/// `PRODUCER/ORDER-ID` as it is written in a query or on a command line,
/// unescaped (for a terminal, print the key's `Display`, which escapes).
pub fn order_ref(key: &OrderKey) -> String {
    format!("{}/{}", key.producer, key.id)
}

/// Parses `PRODUCER/ORDER-ID` (the order id may itself contain `/`).
pub fn parse_order_ref(text: &str) -> Result<OrderKey, OrderRefError> {
    let (producer, id) = text.split_once('/').ok_or_else(|| OrderRefError::NoSlash { text: text.to_owned() })?;
    let key = OrderKey::new(producer, id);
    key.validate().map_err(|error| OrderRefError::BadId { text: text.to_owned(), error })?;
    Ok(key)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for text in ["a/b c", "é%", "plain-1.2_3"] {
            assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Some(text));
        }
    }

    #[test]
    fn order_refs_name_what_is_wrong() {
        assert_eq!(parse_order_ref("shop/o/1").unwrap(), OrderKey::new("shop", "o/1"));
        assert!(parse_order_ref("shop").unwrap_err().to_string().contains("is not PRODUCER/ORDER-ID"));
        assert!(parse_order_ref("sh op/1").unwrap_err().to_string().starts_with("\"sh op/1\": "));
    }

    #[test]
    fn a_connect_error_s_cause_is_printed_once() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused by test");
        let error = AdminError::Connect { addr: "127.0.0.1:1".into(), source: cause };
        let shown = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(shown.matches("connection refused by test").count(), 1, "{shown}");
    }
}

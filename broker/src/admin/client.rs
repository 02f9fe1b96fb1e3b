//! The admin client behind `orderly-broker status` and `dlq`: one HTTP
//! request per call, answers parsed into the [`super::schema`] types.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde::de::DeserializeOwned;

use super::schema::{DeadLetters, RetryReport, StatusReport};
use super::{percent_encode, AdminError, REPLY_TIMEOUT};

/// Bytes of one response read at most.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Sends one request to a broker's admin endpoint and returns the body of a
/// 200 response (the raw text, for `--json`).
pub fn request(addr: &str, method: &str, path: &str) -> Result<String, AdminError> {
    let connect = |source| AdminError::Connect { addr: addr.to_owned(), source };
    let target = addr.parse::<SocketAddr>().map_err(|e| connect(std::io::Error::other(e)))?;
    let mut stream = TcpStream::connect_timeout(&target, REPLY_TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT * 2)).map_err(connect)?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(connect)?;
    let mut response = String::new();
    stream.take(RESPONSE_BYTES_MAX).read_to_string(&mut response).map_err(connect)?;
    let malformed = || AdminError::Malformed { addr: addr.to_owned() };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(malformed)?;
    if status != 200 {
        return Err(AdminError::Status { addr: addr.to_owned(), status, body: body.trim().to_owned() });
    }
    Ok(body.to_owned())
}

/// Parses a body fetched from `addr`; `what` names it in the error.
fn parse<T: DeserializeOwned>(addr: &str, what: &'static str, body: &str) -> Result<T, AdminError> {
    serde_json::from_str(body).map_err(|source| AdminError::Schema { addr: addr.to_owned(), what, source })
}

/// `GET /status`.
pub fn fetch_status(addr: &str) -> Result<StatusReport, AdminError> {
    parse(addr, "a status", &request(addr, "GET", "/status")?)
}

/// `GET /dlq`.
pub fn fetch_dead_letters(addr: &str) -> Result<DeadLetters, AdminError> {
    parse(addr, "a dead-letter list", &request(addr, "GET", "/dlq")?)
}

/// `POST /dlq/retry`: one order (`PRODUCER/ORDER-ID`, checked by the
/// caller) or, with `None`, every dead letter.
pub fn retry(addr: &str, order: Option<&str>) -> Result<RetryReport, AdminError> {
    let path = match order {
        Some(order) => format!("/dlq/retry?id={}", percent_encode(order)),
        None => "/dlq/retry?all=1".to_owned(),
    };
    parse(addr, "a retry report", &request(addr, "POST", &path)?)
}

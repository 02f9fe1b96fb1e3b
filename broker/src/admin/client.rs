//! The admin client behind `orderly-broker status` and `dlq`: one HTTP
//! request per call, answers parsed into the [`super::schema`] types.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde::de::DeserializeOwned;

use orderly_common::OrderKey;

use super::schema::{DeadLetterPage, DeadLetters, DeleteReport, OrderView, RetryReport, StatusReport};
use super::{order_ref, percent_encode, AdminError, AdminToken, REPLY_TIMEOUT};

/// Bytes of one response read at most.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// A broker's admin endpoint as the commands reach it: its address and,
/// with `--admin-token`, the token sent on every request.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub addr: String,
    pub token: Option<AdminToken>,
}

impl AdminClient {
    /// Sends one request and returns the body of a 200 response (the raw
    /// text, for `--json`).
    pub fn request(&self, method: &str, path: &str) -> Result<String, AdminError> {
        let addr = self.addr.as_str();
        let connect = |source| AdminError::Connect { addr: addr.to_owned(), source };
        let target = addr.parse::<SocketAddr>().map_err(|e| connect(std::io::Error::other(e)))?;
        let mut stream = TcpStream::connect_timeout(&target, REPLY_TIMEOUT).map_err(connect)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT * 2)).map_err(connect)?;
        let authorization = match &self.token {
            Some(token) => format!("Authorization: {}\r\n", token.header_value()),
            None => String::new(),
        };
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n")
            .map_err(connect)?;
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

    /// Parses a body fetched from the endpoint; `what` names it in the error.
    fn parse<T: DeserializeOwned>(&self, what: &'static str, body: &str) -> Result<T, AdminError> {
        serde_json::from_str(body).map_err(|source| AdminError::Schema { addr: self.addr.clone(), what, source })
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<StatusReport, AdminError> {
        self.parse("a status", &self.request("GET", "/status")?)
    }

    /// `GET /dlq`.
    pub fn dead_letters(&self) -> Result<DeadLetters, AdminError> {
        self.parse("a dead-letter list", &self.request("GET", "/dlq")?)
    }

    /// `GET /dlq/page`: dead letters in key order after `after`, at most
    /// `limit` (the endpoint's maximum when `None`), with the total.
    pub fn dead_letters_page(
        &self,
        after: Option<&OrderKey>,
        limit: Option<usize>,
    ) -> Result<DeadLetterPage, AdminError> {
        self.parse("a dead-letter page", &self.request("GET", &format!("/dlq/page{}", page_query(after, limit)))?)
    }

    /// `GET /orders/show` (any sealed order) or, with `dead_only`,
    /// `GET /dlq/show`. An unknown order is [`AdminError::Status`] 404.
    pub fn show(&self, key: &OrderKey, dead_only: bool) -> Result<OrderView, AdminError> {
        let route = if dead_only { "/dlq/show" } else { "/orders/show" };
        let path = format!("{route}?id={}", percent_encode(&order_ref(key)));
        self.parse("an order", &self.request("GET", &path)?)
    }

    /// `POST /dlq/delete`: one dead letter or, with `None`, all of them.
    pub fn delete(&self, which: Option<&OrderKey>) -> Result<DeleteReport, AdminError> {
        let path = match which {
            Some(key) => format!("/dlq/delete?id={}", percent_encode(&order_ref(key))),
            None => "/dlq/delete?all=1".to_owned(),
        };
        self.parse("a delete report", &self.request("POST", &path)?)
    }

    /// `POST /dlq/retry`: one order (`PRODUCER/ORDER-ID`, checked by the
    /// caller) or, with `None`, every dead letter.
    pub fn retry(&self, order: Option<&str>) -> Result<RetryReport, AdminError> {
        let path = match order {
            Some(order) => format!("/dlq/retry?id={}", percent_encode(order)),
            None => "/dlq/retry?all=1".to_owned(),
        };
        self.parse("a retry report", &self.request("POST", &path)?)
    }
}

/// `?after=…&limit=…` for the dead-letter routes (empty when neither).
pub fn page_query(after: Option<&OrderKey>, limit: Option<usize>) -> String {
    let mut params = Vec::new();
    if let Some(after) = after {
        params.push(format!("after={}", percent_encode(&order_ref(after))));
    }
    if let Some(limit) = limit {
        params.push(format!("limit={limit}"));
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

/// One request without a token (the read-only endpoints on loopback).
pub fn request(addr: &str, method: &str, path: &str) -> Result<String, AdminError> {
    AdminClient { addr: addr.to_owned(), token: None }.request(method, path)
}

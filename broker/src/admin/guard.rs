//! What every admin request passes before it reaches the IO loop: its Host,
//! its Origin, its route and its token. Pure functions of the request's
//! head and the endpoint's settings, so each rule is tested here alone.
//!
//! The rules (docs/SECURITY.md, "The admin endpoint"):
//! - `Host` must name this endpoint: an IP literal, `localhost`, or a name
//!   given with `--admin-host`. DNS rebinding puts the attacker's own name
//!   in `Host`, so it is refused even though the connection is local.
//! - An `Origin`, when sent, must be this endpoint's own
//!   (`http://` + the `Host`). Browsers send one on every cross-site POST
//!   and on scripted reads; the admin serves no pages, so any web page's
//!   request is refused, and `curl` or Prometheus (which send none) pass.
//! - `POST` (it changes state) needs the bearer token, always; the reads
//!   need it unless the endpoint is bound to loopback; `/healthz` and
//!   `/readyz` never do.

use std::net::{IpAddr, SocketAddr};

use super::{parse_order_ref, percent_decode, AdminConfig, Query};

/// A refused request: the HTTP status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal { status, message: message.into() + "\n" }
}

/// What a request asks for, once routed.
#[derive(Debug)]
pub enum Route {
    /// `/healthz`: 200 when the IO loop answers.
    Health,
    /// `/readyz`: 200 when the loop answers and intake is open.
    Ready,
    /// A query for the IO loop.
    Loop(Query),
}

/// The request's head, as far as the rules need it.
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub host: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Probe,
    Read,
    Change,
}

/// Checks a request in order (Host, Origin, route, token) and returns what
/// it asks for, or why it is refused.
pub fn check(config: &AdminConfig, head: &Head) -> Result<Route, Refusal> {
    let host = check_host(config, head.host)?;
    check_origin(host, head.origin)?;
    let access = access(head.method, head.path)?;
    check_token(config, access, head.authorization)?;
    match head.path {
        "/healthz" => Ok(Route::Health),
        "/readyz" => Ok(Route::Ready),
        "/status" => Ok(Route::Loop(Query::Status)),
        "/dlq" => Ok(Route::Loop(Query::DeadLetters)),
        "/metrics" => Ok(Route::Loop(Query::Metrics)),
        _ => parse_retry(head.query).map(Route::Loop),
    }
}

/// Returns the Host header's text when it names this endpoint.
fn check_host<'a>(config: &AdminConfig, host: Option<&'a [u8]>) -> Result<&'a str, Refusal> {
    let Some(host) = host else { return Err(refuse(400, "no Host header")) };
    let text = std::str::from_utf8(host).map_err(|_| refuse(400, "the Host header is not text"))?;
    let name = host_name(text).to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let known = name == "localhost"
        || name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
        || config.host_names.iter().any(|n| n.eq_ignore_ascii_case(name));
    if !known {
        return Err(refuse(
            403,
            format!("Host {name:?} is not a name of this admin endpoint (add it with --admin-host if it is)"),
        ));
    }
    Ok(text)
}

/// The host part of a `Host` value: without the port, brackets kept for
/// IPv6 (`[::1]:5573` → `[::1]`).
fn host_name(text: &str) -> &str {
    if text.starts_with('[') {
        return text.find(']').map_or(text, |end| &text[..=end]);
    }
    text.rsplit_once(':').map_or(text, |(name, _port)| name)
}

fn check_origin(host: &str, origin: Option<&[u8]>) -> Result<(), Refusal> {
    let Some(origin) = origin else { return Ok(()) };
    let own = format!("http://{host}");
    if origin.eq_ignore_ascii_case(own.as_bytes()) {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(origin);
    Err(refuse(403, format!("requests from web pages are refused (Origin {shown:?} is not {own:?})")))
}

fn access(method: &str, path: &str) -> Result<Access, Refusal> {
    match (method, path) {
        ("GET", "/healthz" | "/readyz") => Ok(Access::Probe),
        ("GET", "/status" | "/dlq" | "/metrics") => Ok(Access::Read),
        ("POST", "/dlq/retry") => Ok(Access::Change),
        (_, "/healthz" | "/readyz" | "/status" | "/dlq" | "/metrics" | "/dlq/retry") => {
            Err(refuse(405, format!("{method} not allowed on {path}")))
        }
        _ => Err(refuse(
            404,
            format!("no route {path}; try /status, /dlq, /metrics, /healthz, /readyz or POST /dlq/retry"),
        )),
    }
}

fn check_token(config: &AdminConfig, access: Access, authorization: Option<&[u8]>) -> Result<(), Refusal> {
    let needed = match access {
        Access::Probe => false,
        Access::Read => !bound_to_loopback(config.addr),
        Access::Change => true,
    };
    if !needed {
        return Ok(());
    }
    let Some(token) = &config.token else {
        return Err(refuse(403, "this needs the admin token: start the broker with --admin-token FILE"));
    };
    match authorization {
        Some(header) if token.matches_header(header) => Ok(()),
        Some(_) => Err(refuse(401, "wrong admin token")),
        None => Err(refuse(401, "this needs the admin token (--admin-token FILE, sent as Authorization: Bearer)")),
    }
}

/// Whether only this host can connect.
pub fn bound_to_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn parse_retry(query: &str) -> Result<Query, Refusal> {
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("all", "1" | "true")) => return Ok(Query::Retry(None)),
            Some(("id", value)) => {
                let id = percent_decode(value).ok_or_else(|| refuse(400, "id is not valid percent-encoded UTF-8"))?;
                let key = parse_order_ref(&id).map_err(|e| refuse(400, e.to_string()))?;
                return Ok(Query::Retry(Some(key)));
            }
            _ => {}
        }
    }
    Err(refuse(400, "give id=PRODUCER/ORDER or all=1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminToken;
    use orderly_common::OrderKey;

    const TOKEN: &str = "0123456789abcdef-token";

    fn config(addr: &str, token: bool) -> AdminConfig {
        AdminConfig {
            addr: addr.parse().unwrap(),
            token: token.then(|| AdminToken::new(TOKEN).unwrap()),
            host_names: vec!["broker.internal".into()],
        }
    }

    fn head<'a>(method: &'a str, target: &'a str) -> Head<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Head { method, path, query, host: Some(b"127.0.0.1:5573"), origin: None, authorization: None }
    }

    fn status(config: &AdminConfig, head: &Head) -> u16 {
        check(config, head).map_or_else(|r| r.status, |_| 200)
    }

    #[test]
    fn routes() {
        let c = config("127.0.0.1:5573", true);
        let bearer = format!("Bearer {TOKEN}");
        let post = |target| Head { authorization: Some(bearer.as_bytes()), ..head("POST", target) };
        assert!(matches!(check(&c, &head("GET", "/status")), Ok(Route::Loop(Query::Status))));
        assert!(matches!(check(&c, &head("GET", "/healthz")), Ok(Route::Health)));
        assert!(matches!(check(&c, &post("/dlq/retry?all=1")), Ok(Route::Loop(Query::Retry(None)))));
        let Ok(Route::Loop(Query::Retry(Some(key)))) = check(&c, &post("/dlq/retry?id=shop%2Fo%2F1")) else { panic!() };
        assert_eq!(key, OrderKey::new("shop", "o/1"));
        assert_eq!(status(&c, &head("DELETE", "/dlq")), 405);
        assert_eq!(status(&c, &head("GET", "/nope")), 404);
        assert_eq!(status(&c, &post("/dlq/retry?id=%ZZ")), 400);
    }

    #[test]
    fn hosts_must_name_this_endpoint() {
        let c = config("0.0.0.0:5573", true);
        for ok in ["127.0.0.1:5573", "localhost", "LOCALHOST:1", "[::1]:5573", "10.1.2.3:5573", "broker.internal:80"] {
            assert_eq!(status(&c, &Head { host: Some(ok.as_bytes()), ..head("GET", "/healthz") }), 200, "{ok}");
        }
        for bad in ["evil.example", "evil.example:5573", "localhost.evil.example", "127.0.0.1.evil.example"] {
            assert_eq!(status(&c, &Head { host: Some(bad.as_bytes()), ..head("GET", "/healthz") }), 403, "{bad}");
        }
        assert_eq!(status(&c, &Head { host: None, ..head("GET", "/healthz") }), 400);
    }

    #[test]
    fn only_the_endpoint_s_own_origin_passes() {
        let c = config("127.0.0.1:5573", false);
        let with = |origin: &'static str| Head { origin: Some(origin.as_bytes()), ..head("GET", "/status") };
        assert_eq!(status(&c, &with("http://127.0.0.1:5573")), 200);
        for bad in ["http://evil.example", "null", "https://127.0.0.1:5573", "http://127.0.0.1:5574"] {
            assert_eq!(status(&c, &with(bad)), 403, "{bad}");
        }
    }

    #[test]
    fn tokens_guard_changes_always_and_reads_beyond_loopback() {
        let right = format!("Bearer {TOKEN}");
        let with = |method, path, auth: Option<&'static [u8]>| Head { authorization: auth, ..head(method, path) };
        let loopback = config("127.0.0.1:5573", true);
        assert_eq!(status(&loopback, &with("GET", "/status", None)), 200);
        assert_eq!(status(&loopback, &with("POST", "/dlq/retry?all=1", None)), 401);
        assert_eq!(status(&loopback, &with("POST", "/dlq/retry?all=1", Some(b"Bearer wrong-token-0123456"))), 401);
        let ok = Head { authorization: Some(right.as_bytes()), ..head("POST", "/dlq/retry?all=1") };
        assert_eq!(status(&loopback, &ok), 200);
        assert_eq!(status(&config("127.0.0.1:5573", false), &with("POST", "/dlq/retry?all=1", None)), 403);
        let open = config("0.0.0.0:5573", true);
        for path in ["/status", "/dlq", "/metrics"] {
            assert_eq!(status(&open, &with("GET", path, None)), 401, "{path}");
        }
        for path in ["/healthz", "/readyz"] {
            assert_eq!(status(&open, &with("GET", path, None)), 200, "{path}");
        }
        let read = Head { authorization: Some(right.as_bytes()), ..head("GET", "/status") };
        assert_eq!(status(&open, &read), 200);
    }
}

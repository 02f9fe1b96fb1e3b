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
//!   and on scripted reads; the only page allowed is the endpoint's own
//!   dashboard, any other web page's request is refused, and `curl` or
//!   Prometheus (which send none) pass.
//! - `POST` (it changes state) and the `show` routes (they reveal what
//!   orders hold) need the bearer token, always; the other reads need it
//!   unless the endpoint is bound to loopback; `/healthz` and `/readyz`
//!   never do, nor do the dashboard's files (`/`, `/dashboard/…`): they
//!   hold no data, and a browser cannot send a token when it opens a
//!   page. The page's own requests then follow the rules above.

use std::net::{IpAddr, SocketAddr};

use orderly_common::OrderKey;

use super::dashboard::{self, Asset};
use super::{parse_order_ref, percent_decode, AdminConfig, Query, DLQ_LIST_MAX};

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
    /// `/readyz`: 200 when the loop says it is ready (journal, disk,
    /// intake, group role; see `io::metrics::readiness`), else 503.
    Ready,
    /// One of the dashboard's embedded files.
    Asset(&'static Asset),
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
    /// The dashboard's static files: no data, no token.
    Page,
    Read,
    /// Shows what an order holds: the token, always, like a change.
    Reveal,
    Change,
}

/// Every route and who may call it; the one table `access` reads.
const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Probe),
    ("GET", "/readyz", Access::Probe),
    ("GET", "/", Access::Page),
    ("GET", "/dashboard", Access::Page),
    ("GET", "/dashboard/app.js", Access::Page),
    ("GET", "/dashboard/style.css", Access::Page),
    ("GET", "/status", Access::Read),
    ("GET", "/dlq", Access::Read),
    ("GET", "/dlq/page", Access::Read),
    ("GET", "/metrics", Access::Read),
    ("GET", "/orders/show", Access::Reveal),
    ("GET", "/dlq/show", Access::Reveal),
    ("POST", "/dlq/retry", Access::Change),
    ("POST", "/dlq/delete", Access::Change),
    ("POST", "/group/add", Access::Change),
    ("POST", "/group/remove", Access::Change),
];

/// Checks a request in order (Host, Origin, route, token) and returns what
/// it asks for, or why it is refused.
pub fn check(config: &AdminConfig, head: &Head) -> Result<Route, Refusal> {
    let host = check_host(config, head.host)?;
    check_origin(host, head.origin)?;
    let access = access(head.method, head.path)?;
    check_token(config, access, head.authorization)?;
    let query = head.query;
    let query = match head.path {
        "/healthz" => return Ok(Route::Health),
        "/readyz" => return Ok(Route::Ready),
        path if access == Access::Page => {
            return dashboard::asset(path).map(Route::Asset).ok_or_else(|| refuse(404, format!("no file {path}")));
        }
        "/status" => Query::Status,
        "/metrics" => Query::Metrics,
        "/dlq" => parse_page(query, false)?,
        "/dlq/page" => parse_page(query, true)?,
        "/orders/show" => Query::Show { key: parse_id(query)?, dead_only: false },
        "/dlq/show" => Query::Show { key: parse_id(query)?, dead_only: true },
        "/dlq/retry" => Query::Retry(parse_which(query)?),
        "/dlq/delete" => Query::Delete(parse_which(query)?),
        "/group/add" => Query::GroupAdd(parse_member(query)?),
        "/group/remove" => Query::GroupRemove(parse_member_id(query)?),
        // `access` admitted only the routes above; a route added to
        // ROUTES without a line here is refused rather than misrouted.
        path => return Err(refuse(404, format!("no route {path}"))),
    };
    Ok(Route::Loop(query))
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
    if let Some((_, _, access)) = ROUTES.iter().find(|(m, p, _)| *m == method && *p == path) {
        return Ok(*access);
    }
    if ROUTES.iter().any(|(_, p, _)| *p == path) {
        return Err(refuse(405, format!("{method} not allowed on {path}")));
    }
    let routes: Vec<String> = ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    Err(refuse(404, format!("no route {path}; try {}", routes.join(", "))))
}

fn check_token(config: &AdminConfig, access: Access, authorization: Option<&[u8]>) -> Result<(), Refusal> {
    let needed = match access {
        Access::Probe | Access::Page => false,
        Access::Read => !bound_to_loopback(config.addr),
        Access::Reveal | Access::Change => true,
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

/// The decoded value of the first `name=` in a query string.
fn param(query: &str, name: &str) -> Result<Option<String>, Refusal> {
    let Some(value) = query.split('&').find_map(|pair| pair.split_once('=').filter(|(n, _)| *n == name)) else {
        return Ok(None);
    };
    let decoded =
        percent_decode(value.1).ok_or_else(|| refuse(400, format!("{name} is not valid percent-encoded UTF-8")))?;
    Ok(Some(decoded))
}

fn order_key(text: &str) -> Result<OrderKey, Refusal> {
    parse_order_ref(text).map_err(|e| refuse(400, e.to_string()))
}

/// `id=N`, a group member's id (at least 1).
fn parse_member_id(query: &str) -> Result<u64, Refusal> {
    let id = param(query, "id")?.ok_or_else(|| refuse(400, "give id=N, the member's id"))?;
    id.parse::<u64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| refuse(400, format!("id {id:?} is not a member id (1 and up)")))
}

/// A member's id and endpoints, as its group file table has them.
fn parse_member(query: &str) -> Result<orderly_replication::MemberRecord, Refusal> {
    let key = |name: &str| {
        param(query, name)?
            .ok_or_else(|| refuse(400, format!("give {name}= (the member's {name}, as in the group file)")))
    };
    let record = orderly_replication::MemberRecord {
        id: parse_member_id(query)?,
        intake: key("intake")?,
        fanout: key("fanout")?,
        control: key("control")?,
        peer: key("peer")?,
        admin: key("admin")?,
        public_key: param(query, "public_key")?,
    };
    record.member().map_err(|e| refuse(400, format!("member {}: {e}", record.id)))?;
    Ok(record)
}

/// `id=PRODUCER/ORDER`.
fn parse_id(query: &str) -> Result<OrderKey, Refusal> {
    let id = param(query, "id")?.ok_or_else(|| refuse(400, "give id=PRODUCER/ORDER (percent-encoded)"))?;
    order_key(&id)
}

/// `id=PRODUCER/ORDER` (`Some`) or `all=1` (`None`).
fn parse_which(query: &str) -> Result<Option<OrderKey>, Refusal> {
    if matches!(param(query, "all")?.as_deref(), Some("1" | "true")) {
        return Ok(None);
    }
    match param(query, "id")? {
        Some(id) => order_key(&id).map(Some),
        None => Err(refuse(400, "give id=PRODUCER/ORDER or all=1")),
    }
}

/// `after=PRODUCER/ORDER` and `limit=N`, both optional; a limit above
/// [`DLQ_LIST_MAX`] is taken as that (the headers say where to go on).
fn parse_page(query: &str, page: bool) -> Result<Query, Refusal> {
    let after = param(query, "after")?.map(|text| order_key(&text)).transpose()?;
    let limit = match param(query, "limit")? {
        None => DLQ_LIST_MAX,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => n.min(DLQ_LIST_MAX),
            _ => return Err(refuse(400, format!("limit {text:?} is not a positive whole number"))),
        },
    };
    Ok(Query::DeadLetters { after, limit, page })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminToken;

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
        assert_eq!(status(&c, &head("GET", "/dlq/delete?all=1")), 405);
        assert_eq!(status(&c, &head("GET", "/nope")), 404);
        assert_eq!(status(&c, &post("/dlq/retry?id=%ZZ")), 400);
        assert!(matches!(check(&c, &post("/dlq/delete?all=1")), Ok(Route::Loop(Query::Delete(None)))));
        let Ok(Route::Loop(Query::Delete(Some(key)))) = check(&c, &post("/dlq/delete?id=shop%2Fo%2F1")) else {
            panic!()
        };
        assert_eq!(key, OrderKey::new("shop", "o/1"));
        assert_eq!(status(&c, &post("/dlq/delete")), 400);
    }

    #[test]
    fn pages_and_shows_parse_their_queries() {
        let c = config("127.0.0.1:5573", true);
        let bearer = format!("Bearer {TOKEN}");
        let Ok(Route::Loop(Query::DeadLetters { after: None, limit: DLQ_LIST_MAX, page: false })) =
            check(&c, &head("GET", "/dlq"))
        else {
            panic!()
        };
        let Ok(Route::Loop(Query::DeadLetters { after: Some(after), limit: 2, page: true })) =
            check(&c, &head("GET", "/dlq/page?limit=2&after=shop%2Fo1"))
        else {
            panic!()
        };
        assert_eq!(after, OrderKey::new("shop", "o1"));
        let Ok(Route::Loop(Query::DeadLetters { limit, .. })) = check(&c, &head("GET", "/dlq?limit=99999999")) else {
            panic!()
        };
        assert_eq!(limit, DLQ_LIST_MAX, "a larger limit is clamped");
        for bad in ["/dlq?limit=0", "/dlq?limit=x", "/dlq?after=noslash", "/dlq/page?after=%ZZ"] {
            assert_eq!(status(&c, &head("GET", bad)), 400, "{bad}");
        }
        let show = |target| Head { authorization: Some(bearer.as_bytes()), ..head("GET", target) };
        let Ok(Route::Loop(Query::Show { key, dead_only: true })) = check(&c, &show("/dlq/show?id=shop%2Fa%2Fb"))
        else {
            panic!()
        };
        assert_eq!(key, OrderKey::new("shop", "a/b"));
        assert!(matches!(
            check(&c, &show("/orders/show?id=s%2F1")),
            Ok(Route::Loop(Query::Show { dead_only: false, .. }))
        ));
        assert_eq!(status(&c, &show("/orders/show")), 400);
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

    #[test]
    fn the_dashboard_s_files_need_no_token_and_unknown_ones_are_404() {
        let open = config("0.0.0.0:5573", true);
        for path in ["/", "/dashboard", "/dashboard/app.js", "/dashboard/style.css"] {
            let Ok(Route::Asset(asset)) = check(&open, &head("GET", path)) else { panic!("{path}") };
            assert!(!asset.body.is_empty(), "{path}");
        }
        for path in ["/dashboard/nope.js", "/dashboard/", "/index.html"] {
            assert_eq!(status(&open, &head("GET", path)), 404, "{path}");
        }
        assert_eq!(status(&open, &head("POST", "/")), 405);
        // Host and Origin are checked before the route, for the page too.
        assert_eq!(status(&open, &Head { host: Some(b"evil.example"), ..head("GET", "/") }), 403);
        assert_eq!(status(&open, &Head { origin: Some(b"http://evil.example"), ..head("GET", "/") }), 403);
    }

    #[test]
    fn showing_or_deleting_orders_needs_the_token_even_on_loopback() {
        let right = format!("Bearer {TOKEN}");
        let loopback = config("127.0.0.1:5573", true);
        let without_token = config("127.0.0.1:5573", false);
        for (method, path) in
            [("GET", "/orders/show?id=s%2F1"), ("GET", "/dlq/show?id=s%2F1"), ("POST", "/dlq/delete?all=1")]
        {
            assert_eq!(status(&loopback, &head(method, path)), 401, "{path}");
            let wrong = Head { authorization: Some(b"Bearer wrong-token-0123456"), ..head(method, path) };
            assert_eq!(status(&loopback, &wrong), 401, "{path}");
            let ok = Head { authorization: Some(right.as_bytes()), ..head(method, path) };
            assert_eq!(status(&loopback, &ok), 200, "{path}");
            assert_eq!(status(&without_token, &head(method, path)), 403, "{path}");
        }
        // Listing stays a read: open on loopback.
        assert_eq!(status(&loopback, &head("GET", "/dlq/page?limit=1")), 200);
    }
}

//! Identifiers: peer ids (producers, workers), order keys, and the topics
//! derived from them.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::{ORDER_ID_BYTES_MAX, PEER_ID_BYTES_MAX};
use crate::text::Escaped;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} {value:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'")]
    BadChar { what: &'static str, value: String, bad: char },
}

/// Checks a producer or worker id: 1..=64 bytes of `[A-Za-z0-9._-]`.
///
/// The charset matters: ids become ZeroMQ topics (`w/<id>/`), file names and
/// log fields, so a `/` or a control character must never get in.
pub fn validate_peer_id(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > PEER_ID_BYTES_MAX {
        return Err(IdError::TooLong { what, len: value.len(), max: PEER_ID_BYTES_MAX });
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(IdError::BadChar { what, value: value.to_owned(), bad });
    }
    Ok(())
}

/// Checks an order id: 1..=256 bytes of any UTF-8.
pub fn validate_order_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what: "order id" });
    }
    if value.len() > ORDER_ID_BYTES_MAX {
        return Err(IdError::TooLong { what: "order id", len: value.len(), max: ORDER_ID_BYTES_MAX });
    }
    Ok(())
}

/// The idempotency key of an order: producer id plus the producer's order id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderKey {
    pub producer: String,
    pub id: String,
}

impl OrderKey {
    pub fn new(producer: impl Into<String>, id: impl Into<String>) -> Self {
        Self { producer: producer.into(), id: id.into() }
    }

    pub fn validate(&self) -> Result<(), IdError> {
        validate_peer_id("producer id", &self.producer)?;
        validate_order_id(&self.id)
    }
}

/// `producer/id` for logs and terminals, the id escaped (see
/// [`crate::text`]): ids are any UTF-8 and come from the network. Never a
/// file name, topic or journal key: those use the fields themselves.
impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The producer id is validated ([A-Za-z0-9._-]), but a key built
        // in code skips validation: escape both.
        write!(f, "{}/{}", Escaped(&self.producer), Escaped(&self.id))
    }
}

/// Topic of messages for one worker. The trailing `/` stops `w/a/` from
/// prefix-matching `w/ab/` (SUB filters are byte prefixes).
pub fn worker_topic(worker: &str) -> Vec<u8> {
    format!("w/{worker}/").into_bytes()
}

/// Topic of confirms and rejects for one producer.
pub fn producer_topic(producer: &str) -> Vec<u8> {
    format!("p/{producer}/").into_bytes()
}

/// Topic every worker subscribes to: broker heartbeats.
pub const BROADCAST_TOPIC: &[u8] = b"b/";

/// Makes an id safe as one path component: bytes outside `[A-Za-z0-9_-]`
/// and a leading `.` become `%XX`, so distinct ids map to distinct names and
/// no id can climb out of its directory.
pub fn file_safe(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (index, byte) in id.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || (byte == b'.' && index > 0);
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids() {
        assert!(validate_peer_id("worker id", "w-1.a_b").is_ok());
        assert!(matches!(validate_peer_id("worker id", ""), Err(IdError::Empty { .. })));
        assert!(matches!(validate_peer_id("worker id", "a/b"), Err(IdError::BadChar { bad: '/', .. })));
        assert!(matches!(validate_peer_id("worker id", &"x".repeat(65)), Err(IdError::TooLong { .. })));
    }

    #[test]
    fn file_safe_names() {
        assert_eq!(file_safe("order-1"), "order-1");
        assert_eq!(file_safe("../x"), "%2E.%2Fx");
        assert_eq!(file_safe(".."), "%2E.");
        assert_eq!(file_safe("a.json"), "a.json");
        assert_eq!(file_safe("a%b"), "a%25b");
        assert_eq!(file_safe("é"), "%C3%A9");
        assert_ne!(file_safe("a/b"), file_safe("a%2Fb"));
    }

    #[test]
    fn order_key_display_escapes_the_id() {
        assert_eq!(OrderKey::new("p1", "o-1").to_string(), "p1/o-1");
        assert_eq!(OrderKey::new("p1", "o\nFORGED \x1b[2J").to_string(), "p1/o\\nFORGED \\x1b[2J");
    }

    #[test]
    fn topics_do_not_prefix_match() {
        assert!(!worker_topic("w10").starts_with(&worker_topic("w1")));
    }
}

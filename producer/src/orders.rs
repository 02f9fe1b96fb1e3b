//! Orders as the producer holds them: an id and the items' bytes, read
//! from JSON lines or generated for benchmarks.

use orderly_common::ids::{validate_order_id, IdError};
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_BYTES_MAX, ORDER_ITEMS_MAX};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One order: its id and its items, each the exact bytes to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The order id (1–256 bytes of UTF-8), unique per producer: with the
    /// producer id it is the key the broker deduplicates on.
    pub id: String,
    /// The items, in order; each is delivered byte for byte.
    pub items: Vec<Vec<u8>>,
}

impl Order {
    /// An order with these items.
    pub fn new(id: impl Into<String>, items: Vec<Vec<u8>>) -> Self {
        Order { id: id.into(), items }
    }
}

/// Why a JSON line is not an order.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Not JSON, or not an object with `id` and `items`.
    #[error("line {line}: not a JSON object like {{\"id\": \"o-1\", \"items\": [...]}}: {detail}")]
    Json {
        /// Input line (from 1).
        line: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// A bad order id. (The cause is in the message, not a `source`: the
    /// CLI prints `to_string()` per skipped line, and `{:#}` must not
    /// repeat it.)
    #[error("line {line}: {error}")]
    Id {
        /// Input line (from 1).
        line: usize,
        /// What is wrong with the id.
        error: IdError,
    },
    /// Too many items.
    #[error("line {line}: order {id:?} has {count} items; the limit is {ORDER_ITEMS_MAX}")]
    TooManyItems {
        /// Input line (from 1).
        line: usize,
        /// The order id.
        id: String,
        /// Items in the order.
        count: usize,
    },
    /// An item above the item size limit.
    #[error("line {line}: order {id:?} item {index} is {len} bytes; the limit is {ITEM_BYTES_MAX}")]
    ItemTooLarge {
        /// Input line (from 1).
        line: usize,
        /// The order id.
        id: String,
        /// The item's index (from 0).
        index: usize,
        /// The item's bytes.
        len: usize,
    },
    /// An order above the order size limit.
    #[error("line {line}: order {id:?} is {len} bytes; the limit is {ORDER_BYTES_MAX}")]
    OrderTooLarge {
        /// Input line (from 1).
        line: usize,
        /// The order id.
        id: String,
        /// The order's item bytes.
        len: usize,
    },
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// Parses one JSON line (`line` is 1-based, for messages). Each item keeps
/// the exact text the producer wrote, so the worker sees the same bytes.
pub fn parse_line(text: &str, line: usize) -> Result<Order, OrderError> {
    let parsed: Line = serde_json::from_str(text).map_err(|e| OrderError::Json { line, detail: e.to_string() })?;
    validate_order_id(&parsed.id).map_err(|error| OrderError::Id { line, error })?;
    let id = parsed.id.into_owned();
    if parsed.items.len() > ORDER_ITEMS_MAX as usize {
        return Err(OrderError::TooManyItems { line, id, count: parsed.items.len() });
    }
    let mut total = 0;
    let mut items = Vec::with_capacity(parsed.items.len());
    for (index, raw) in parsed.items.iter().enumerate() {
        let bytes = raw.get().as_bytes();
        if bytes.len() > ITEM_BYTES_MAX {
            return Err(OrderError::ItemTooLarge { line, id, index, len: bytes.len() });
        }
        total += bytes.len();
        items.push(bytes.to_vec());
    }
    if total > ORDER_BYTES_MAX {
        return Err(OrderError::OrderTooLarge { line, id, len: total });
    }
    Ok(Order { id, items })
}

/// A generated order for benchmarks: `items` JSON strings of exactly
/// `item_bytes` bytes each (quotes included, minimum 2).
pub fn generate(index: u64, items: u32, item_bytes: usize) -> Order {
    let fill = item_bytes.saturating_sub(2);
    let item: Vec<u8> = std::iter::once(b'"')
        .chain((0..fill).map(|i| b'a' + ((index as usize + i) % 26) as u8))
        .chain(std::iter::once(b'"'))
        .collect();
    Order { id: format!("bench-{index}"), items: vec![item; items as usize] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_items_byte_for_byte() {
        let order = parse_line(r#"{"id": "o-1", "items": [ {"a": 1,  "b":[2]}, "x", 3.50 ]}"#, 1).unwrap();
        assert_eq!(order.id, "o-1");
        assert_eq!(order.items, vec![br#"{"a": 1,  "b":[2]}"#.to_vec(), b"\"x\"".to_vec(), b"3.50".to_vec()]);
    }

    #[test]
    fn names_the_line_and_the_problem() {
        let err = parse_line("{\"items\": []}", 7).unwrap_err().to_string();
        assert!(err.starts_with("line 7:") && err.contains("id"), "{err}");
        let err = parse_line(r#"{"id": "", "items": []}"#, 2).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(parse_line("not json", 1).is_err());
    }

    #[test]
    fn generated_items_have_the_requested_size() {
        let order = generate(3, 10, 100);
        assert_eq!(order.items.len(), 10);
        assert!(order.items.iter().all(|i| i.len() == 100));
        assert!(serde_json::from_slice::<String>(&order.items[0]).is_ok());
    }
}

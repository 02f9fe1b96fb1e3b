//! Orders as the producer holds them: an id and the items' bytes, read
//! from JSON lines or generated for benchmarks.

use orderly_common::ids::{validate_order_id, IdError};
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_BYTES_MAX, ORDER_ITEMS_MAX};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One order: its id and its items, each the exact bytes to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub items: Vec<Vec<u8>>,
}

/// Why a JSON line is not an order.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("line {line}: not a JSON object like {{\"id\": \"o-1\", \"items\": [...]}}: {detail}")]
    Json { line: usize, detail: String },
    #[error("line {line}: {source}")]
    Id { line: usize, source: IdError },
    #[error("line {line}: order {id:?} has {count} items; the limit is {ORDER_ITEMS_MAX}")]
    TooManyItems { line: usize, id: String, count: usize },
    #[error("line {line}: order {id:?} item {index} is {len} bytes; the limit is {ITEM_BYTES_MAX}")]
    ItemTooLarge { line: usize, id: String, index: usize, len: usize },
    #[error("line {line}: order {id:?} is {len} bytes; the limit is {ORDER_BYTES_MAX}")]
    OrderTooLarge { line: usize, id: String, len: usize },
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
    validate_order_id(&parsed.id).map_err(|source| OrderError::Id { line, source })?;
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

//! The JSON object a handler receives for one order (on an exec handler's
//! stdin, in a sink's file), defined once: the worker renders dispatches
//! with it and `orderly-broker dlq show` renders stored orders with it, so
//! what an operator sees is byte for byte what a handler got.
//!
//! `{"producer":"…","id":"…","attempt":N,"redelivered":B,"items":[…]}`:
//! each item is embedded as the producer sent it (it must be JSON itself).

use serde_json::value::RawValue;

use crate::OrderKey;

/// An item that is not JSON, so the order has no handler view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {index} is not valid JSON: {detail}")]
pub struct NotJson {
    /// The item's position in the order, from 0.
    pub index: usize,
    /// The item's length in bytes.
    pub len: usize,
    /// What the JSON parser said.
    pub detail: String,
}

/// Renders an order as handlers receive it. Fails, naming the item, if an
/// item is not valid JSON.
pub fn order_json<I: AsRef<[u8]>>(
    key: &OrderKey,
    attempt: u32,
    redelivered: bool,
    items: &[I],
) -> Result<Vec<u8>, NotJson> {
    let items_len: usize = items.iter().map(|i| i.as_ref().len() + 1).sum();
    let mut out = Vec::with_capacity(items_len + 128);
    // Strings through serde_json so quotes and control characters are escaped.
    let producer = serde_json::Value::from(key.producer.as_str());
    let id = serde_json::Value::from(key.id.as_str());
    let head = format!(
        "{{\"producer\":{producer},\"id\":{id},\"attempt\":{attempt},\"redelivered\":{redelivered},\"items\":["
    );
    out.extend_from_slice(head.as_bytes());
    for (index, item) in items.iter().enumerate() {
        let item = item.as_ref();
        // Validate only: the original bytes are embedded, whitespace and
        // all. JSON whitespace is valid inside an array, so this stays JSON.
        if let Err(e) = serde_json::from_slice::<&RawValue>(item) {
            return Err(NotJson { index, len: item.len(), detail: e.to_string() });
        }
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_embeds_items_byte_for_byte() {
        let items: &[&[u8]] = &[b"{\"b\": 1,  \"a\":2}", b" [1, 2.50] \n", b"\"tab\\t\""];
        let json = order_json(&OrderKey::new("p1", "o\"1\n"), 2, true, items).expect("valid items");
        let text = String::from_utf8(json.clone()).expect("utf-8");
        for item in items {
            assert!(text.contains(std::str::from_utf8(item).expect("utf-8")), "{text}");
        }
        let value: serde_json::Value = serde_json::from_slice(&json).expect("the whole object is JSON");
        assert_eq!(value["producer"], "p1");
        assert_eq!(value["id"], "o\"1\n");
        assert_eq!(value["attempt"], 2);
        assert_eq!(value["redelivered"], true);
        assert_eq!(value["items"][1][1], 2.5);
    }

    #[test]
    fn exact_bytes_for_a_plain_order() {
        let json = order_json(&OrderKey::new("shop", "o/1"), 1, false, &[b"{\"n\":1}".as_slice(), b"2"]).unwrap();
        assert_eq!(json, br#"{"producer":"shop","id":"o/1","attempt":1,"redelivered":false,"items":[{"n":1},2]}"#);
        let empty: &[&[u8]] = &[];
        let json = order_json(&OrderKey::new("shop", "e"), 1, false, empty).unwrap();
        assert!(json.ends_with(b"\"items\":[]}"));
    }

    #[test]
    fn a_non_json_item_is_named_with_its_length() {
        let error = order_json(&OrderKey::new("p1", "o"), 1, false, &[b"{}".as_slice(), b"{not json"]).unwrap_err();
        assert_eq!((error.index, error.len), (1, 9));
        assert!(error.to_string().starts_with("item 1 is not valid JSON: "), "{error}");
    }
}

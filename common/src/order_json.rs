//! The JSON object a handler receives for one order (on an exec handler's
//! stdin, as a serve handler's line, in a sink's file), defined once: the
//! worker renders dispatches with it and `orderly-broker dlq show` renders
//! stored orders with it, so what an operator sees is byte for byte what a
//! handler got.
//!
//! `{"producer":"…","id":"…","attempt":N,"redelivered":B,"items":[…]}`:
//! each item that is JSON text is embedded as the producer sent it, byte
//! for byte. An item that is not (any bytes, invalid UTF-8 included) is
//! written as `{"base64":"<standard base64, padded>"}` in its place, and
//! the object then ends with `"base64_items":[i,…]`, the positions of the
//! items so written, ascending. The field is absent when every item is
//! JSON, so such orders render exactly as before it existed.

use serde_json::value::RawValue;

use crate::OrderKey;

/// Name of the trailing field listing the base64-wrapped items.
pub const BASE64_ITEMS_FIELD: &str = "base64_items";

/// Renders an order as handlers receive it (see the module docs). Never
/// fails: an item that is not JSON is wrapped in base64.
pub fn order_json<I: AsRef<[u8]>>(key: &OrderKey, attempt: u32, redelivered: bool, items: &[I]) -> Vec<u8> {
    // Base64 makes 4 bytes of 3; the wrapper adds 14.
    let items_len: usize = items.iter().map(|i| i.as_ref().len() * 4 / 3 + 16).sum();
    let mut out = Vec::with_capacity(items_len + 128);
    write_order_json(&mut out, key, attempt, redelivered, items);
    out
}

/// [`order_json`] appended to `out` (a serve handler's line buffer), so a
/// caller that batches orders allocates nothing per order.
pub fn write_order_json<I: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    key: &OrderKey,
    attempt: u32,
    redelivered: bool,
    items: &[I],
) {
    out.extend_from_slice(b"{\"producer\":");
    write_json_string(out, &key.producer);
    out.extend_from_slice(b",\"id\":");
    write_json_string(out, &key.id);
    out.extend_from_slice(format!(",\"attempt\":{attempt},\"redelivered\":{redelivered},\"items\":[").as_bytes());
    let mut wrapped: Vec<usize> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item = item.as_ref();
        if index > 0 {
            out.push(b',');
        }
        // Validate only: the original bytes are embedded, whitespace and
        // all. JSON whitespace is valid inside an array, so this stays JSON.
        if serde_json::from_slice::<&RawValue>(item).is_ok() {
            out.extend_from_slice(item);
        } else {
            out.extend_from_slice(b"{\"base64\":\"");
            base64_encode_into(out, item);
            out.extend_from_slice(b"\"}");
            wrapped.push(index);
        }
    }
    out.push(b']');
    if !wrapped.is_empty() {
        out.extend_from_slice(format!(",\"{BASE64_ITEMS_FIELD}\":[").as_bytes());
        for (n, index) in wrapped.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(index.to_string().as_bytes());
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// A JSON string through serde_json, so quotes and control characters are
/// escaped exactly as before.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing a string to a Vec cannot fail");
}

/// Appends the standard base64 of `bytes`, with `=` padding (RFC 4648 §4),
/// by the `base64` crate (IO-free, on common's allowlist).
pub fn base64_encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine as _;
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).expect("an item's base64 length fits in usize");
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .expect("the buffer was sized by encoded_len");
    debug_assert_eq!(written, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_embeds_items_byte_for_byte() {
        let items: &[&[u8]] = &[b"{\"b\": 1,  \"a\":2}", b" [1, 2.50] \n", b"\"tab\\t\""];
        let json = order_json(&OrderKey::new("p1", "o\"1\n"), 2, true, items);
        let text = String::from_utf8(json.clone()).expect("utf-8");
        for item in items {
            assert!(text.contains(std::str::from_utf8(item).expect("utf-8")), "{text}");
        }
        assert!(!text.contains(BASE64_ITEMS_FIELD), "{text}");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("the whole object is JSON");
        assert_eq!(value["producer"], "p1");
        assert_eq!(value["id"], "o\"1\n");
        assert_eq!(value["attempt"], 2);
        assert_eq!(value["redelivered"], true);
        assert_eq!(value["items"][1][1], 2.5);
    }

    #[test]
    fn exact_bytes_for_a_plain_order() {
        let json = order_json(&OrderKey::new("shop", "o/1"), 1, false, &[b"{\"n\":1}".as_slice(), b"2"]);
        assert_eq!(json, br#"{"producer":"shop","id":"o/1","attempt":1,"redelivered":false,"items":[{"n":1},2]}"#);
        let empty: &[&[u8]] = &[];
        let json = order_json(&OrderKey::new("shop", "e"), 1, false, empty);
        assert!(json.ends_with(b"\"items\":[]}"));
    }

    #[test]
    fn a_non_json_item_is_wrapped_in_base64_and_listed() {
        let items: &[&[u8]] = &[b"{}", b"\xff\x00\x01", b"{not json", b"{\"base64\":\"AAAA\"}", b""];
        let json = order_json(&OrderKey::new("p1", "o"), 1, false, items);
        let expected = concat!(
            r#"{"producer":"p1","id":"o","attempt":1,"redelivered":false,"#,
            r#""items":[{},{"base64":"/wAB"},{"base64":"e25vdCBqc29u"},{"base64":"AAAA"},{"base64":""}],"#,
            r#""base64_items":[1,2,4]}"#
        );
        assert_eq!(String::from_utf8(json.clone()).expect("utf-8"), expected);
        // An item that really is `{"base64":…}` is not listed: index 3 stays JSON.
        let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(value[BASE64_ITEMS_FIELD], serde_json::json!([1, 2, 4]));
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let vectors: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (b"\xfb\xff\xbf", "+/+/"),
        ];
        for (bytes, text) in vectors {
            let mut out = Vec::new();
            base64_encode_into(&mut out, bytes);
            assert_eq!(out, text.as_bytes(), "{bytes:?}");
        }
    }

    #[test]
    fn write_appends_to_what_is_there() {
        let mut out = b"x".to_vec();
        write_order_json(&mut out, &OrderKey::new("p", "i"), 1, false, &[b"1"]);
        assert_eq!(out[1..], order_json(&OrderKey::new("p", "i"), 1, false, &[b"1"])[..]);
    }
}

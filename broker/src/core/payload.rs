//! An order's items held in RAM: one allocation for the whole order instead
//! of a `Vec` of items with one heap buffer each (the profile of 0.4 put
//! allocation at ~18 % of the broker's samples). Built once from the
//! decoded items, read by dispatch (serialized straight from it) and by
//! the journal copy of a spilled order.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_bytes::ByteBuf;
use thin_vec::ThinVec;

/// Bytes of one item end offset in the buffer's index.
const END_BYTES: usize = std::mem::size_of::<u32>();

const _: () = assert!((orderly_common::limits::ORDER_BYTES_MAX as u64) < u32::MAX as u64 / 2);

/// An order's items in one buffer: the item count `n` (u32), `n` item end
/// offsets into the data (u32 each, native endian), then the items' bytes
/// back to back. A `ThinVec` (length and capacity in its heap block): 8
/// bytes in the order where a `Box<[u8]>` took 16, paid by every order
/// of a backlog (issue 20); sized exactly, so no spare capacity.
/// Offsets fit in u32: an order's bytes are bounded far below 4 GiB
/// (`limits::ORDER_BYTES_MAX`, asserted below).

#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    buf: ThinVec<u8>,
}

impl Payload {
    /// Copies `items` into one buffer.
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]> + Clone) -> Self {
        let (count, bytes) = items.clone().into_iter().fold((0usize, 0usize), |(n, b), d| (n + 1, b + d.len()));
        let header = END_BYTES * (count + 1);
        let mut buf = ThinVec::with_capacity(header + bytes);
        buf.extend_from_slice(&to_u32(count).to_ne_bytes());
        let mut end = 0usize;
        for item in items.clone() {
            end += item.len();
            buf.extend_from_slice(&to_u32(end).to_ne_bytes());
        }
        for item in items {
            buf.extend_from_slice(item);
        }
        debug_assert_eq!(buf.len(), header + bytes);
        Payload { buf }
    }

    /// Copies decoded items (`Event` payloads, sealed partial orders).
    pub fn from_bufs<'a>(items: impl IntoIterator<Item = &'a ByteBuf, IntoIter: Clone>) -> Self {
        Self::from_items(items.into_iter().map(|d| d.as_slice()))
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.read_u32(0) as usize
    }

    /// The items' bytes, without the index.
    pub fn bytes(&self) -> u64 {
        (self.buf.len() - self.data_start()) as u64
    }

    /// The items, in order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        let data = &self.buf[self.data_start()..];
        (0..self.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.read_u32(i) as usize };
            &data[start..self.read_u32(i + 1) as usize]
        })
    }

    /// A copy as separate items (snapshots, status: not the hot path).
    pub fn to_vec(&self) -> Vec<ByteBuf> {
        self.items().map(|d| ByteBuf::from(d.to_vec())).collect()
    }

    fn data_start(&self) -> usize {
        END_BYTES * (self.len() + 1)
    }

    /// The u32 at index slot `slot` (0: the count, i: item i-1's end).
    fn read_u32(&self, slot: usize) -> u32 {
        let at = slot * END_BYTES;
        u32::from_ne_bytes(self.buf[at..at + END_BYTES].try_into().expect("four bytes"))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("an order's payload is bounded far below 4 GiB")
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} items, {} bytes)", self.len(), self.bytes())
    }
}

/// As a sequence of byte strings: the same encoding as `Vec<ByteBuf>`, so
/// a dispatch is encoded straight from it.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for item in self.items() {
            seq.serialize_element(serde_bytes::Bytes::new(item))?;
        }
        seq.end()
    }
}

impl orderly_common::protocol::ItemsOut for Payload {
    fn encoded_bytes(&self) -> usize {
        let framing = orderly_common::protocol::ITEM_FRAMING_BYTES;
        self.bytes() as usize + framing * (self.len() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_as_they_went_in() {
        let items: Vec<ByteBuf> = [&b"ab"[..], b"", b"cde"].iter().map(|d| ByteBuf::from(d.to_vec())).collect();
        let payload = Payload::from_bufs(&items);
        assert_eq!(payload.len(), 3);
        assert_eq!(payload.bytes(), 5);
        assert_eq!(payload.items().collect::<Vec<_>>(), [&b"ab"[..], b"", b"cde"]);
        assert_eq!(payload.to_vec(), items);
        // Encoded like the items it was built from.
        let encoded = rmp_serde::to_vec(&payload).unwrap();
        assert_eq!(encoded, rmp_serde::to_vec(&items).unwrap());
        use orderly_common::protocol::ItemsOut;
        assert!(payload.encoded_bytes() >= encoded.len());
    }

    #[test]
    fn an_order_without_items_is_empty() {
        let payload = Payload::from_items(std::iter::empty());
        assert_eq!((payload.len(), payload.bytes(), payload.items().count()), (0, 0, 0));
    }
}

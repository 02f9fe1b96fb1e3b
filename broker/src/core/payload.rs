//! An order's items held in RAM: one allocation for the whole order instead
//! of a `Vec` of items with one heap buffer each (the profile of 0.4 put
//! allocation at ~18 % of the broker's samples). Built once, from the
//! intake frame or a journal record, and shared: the order and the event
//! that records it hold the same buffer, so a whole order is copied once
//! from the frame and encoded from it into the journal; dispatch is
//! serialized straight from it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_bytes::ByteBuf;
use triomphe::{Arc, HeaderSlice, HeaderWithLength, ThinArc, UniqueArc};

/// Bytes of one item end offset in the buffer's index.
const END_BYTES: usize = std::mem::size_of::<u32>();

const _: () = assert!((orderly_common::limits::ORDER_BYTES_MAX as u64) < u32::MAX as u64 / 2);

/// An order's items in one buffer: the items' bytes back to back, then
/// `n` item end offsets into the data (u32 each, native endian), then the
/// item count `n` (u32). The index comes last so that a partial order's
/// items, appended to one buffer as they arrive ([`PartialItems`]), are
/// sealed by adding it. A `triomphe::ThinArc`: 8 bytes in the order (its
/// reference count and length in the heap block: 16 bytes, as `ThinVec`'s
/// length and capacity were), exactly sized, filled with bulk copies
/// (`ThinVec` 0.2 copied byte by byte, 6.9 % of the per-item profile), and
/// shared without a copy between the order and its `Accepted` record.
/// Immutable once built.
/// Offsets fit in u32: an order's bytes are bounded far below 4 GiB
/// (`limits::ORDER_BYTES_MAX`, asserted above; a decoded record is checked).
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    buf: ThinArc<(), u8>,
}

/// Fills a payload's fresh block front to back (see [`Payload::build`]).
struct Filler<'a> {
    block: &'a mut [MaybeUninit<u8>],
    /// Bytes `0..written` are initialized.
    written: usize,
}

impl Filler<'_> {
    /// Appends `bytes` (a slice index past the block's end panics).
    fn put(&mut self, bytes: &[u8]) {
        let to = &mut self.block[self.written..self.written + bytes.len()];
        // A plain loop over two slices: compiled to one `memcpy`.
        for (to, from) in to.iter_mut().zip(bytes) {
            to.write(*from);
        }
        self.written += bytes.len();
    }
}

impl Payload {
    /// A payload of `len` bytes written by `fill`, which must write all of
    /// them (checked).
    fn build(len: usize, fill: impl FnOnce(&mut Filler<'_>)) -> Self {
        let header = HeaderWithLength::new((), len);
        let mut block = UniqueArc::<HeaderSlice<_, [MaybeUninit<u8>]>>::from_header_and_uninit_slice(header, len);
        let mut filler = Filler { block: &mut block.slice, written: 0 };
        fill(&mut filler);
        assert_eq!(filler.written, len, "a payload's every byte is written");
        // SAFETY: `Filler::put` initializes bytes `0..written` in order and
        // cannot pass the block's end; `written == len` was just checked,
        // so every byte of the slice is initialized (and the header was
        // written by `from_header_and_uninit_slice`).
        let block = unsafe { block.assume_init_slice_with_header() };
        Payload { buf: Arc::into_thin(block.shareable()) }
    }

    /// Copies `items` into one buffer.
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]> + Clone) -> Self {
        let (count, bytes) = items.clone().into_iter().fold((0usize, 0usize), |(n, b), d| (n + 1, b + d.len()));
        Self::build(bytes + END_BYTES * (count + 1), |filler| {
            for item in items.clone() {
                filler.put(item);
            }
            // The index from a second pass (no list of ends to allocate).
            let mut end = 0;
            for item in items {
                end += item.len();
                filler.put(&to_u32(end).to_ne_bytes());
            }
            filler.put(&to_u32(count).to_ne_bytes());
        })
    }

    /// Copies decoded items (tests, snapshots).
    pub fn from_bufs<'a>(items: impl IntoIterator<Item = &'a ByteBuf, IntoIter: Clone>) -> Self {
        Self::from_items(items.into_iter().map(|d| d.as_slice()))
    }

    /// `data` (the items back to back, item `i` ending at `ends[i]`) and
    /// its index, copied into a payload.
    fn seal(data: &[u8], ends: &[u32]) -> Self {
        debug_assert_eq!(ends.last().map_or(0, |&end| end as usize), data.len());
        Self::build(data.len() + END_BYTES * (ends.len() + 1), |filler| {
            filler.put(data);
            for end in ends {
                filler.put(&end.to_ne_bytes());
            }
            filler.put(&to_u32(ends.len()).to_ne_bytes());
        })
    }

    /// The whole block: data, index, count.
    fn block(&self) -> &[u8] {
        &self.buf.slice
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.read_u32(self.block().len() - END_BYTES) as usize
    }

    /// Whether it has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items' bytes, without the index.
    pub fn bytes(&self) -> u64 {
        self.data_end() as u64
    }

    /// The items, in order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        let index = self.data_end();
        let data = &self.block()[..index];
        (0..self.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.read_u32(index + (i - 1) * END_BYTES) as usize };
            &data[start..self.read_u32(index + i * END_BYTES) as usize]
        })
    }

    /// A copy as separate items (status, tests: not the hot path).
    pub fn to_vec(&self) -> Vec<ByteBuf> {
        self.items().map(|d| ByteBuf::from(d.to_vec())).collect()
    }

    /// Where the index starts: the items' bytes end.
    fn data_end(&self) -> usize {
        self.block().len() - END_BYTES * (self.len() + 1)
    }

    /// The u32 at byte `at`.
    fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.block()[at..at + END_BYTES].try_into().expect("four bytes"))
    }
}

/// No items (a copy whose items are still to be read from the journal).
impl Default for Payload {
    fn default() -> Self {
        Payload::from_items(std::iter::empty())
    }
}

/// Items made one by one (tests, snapshots: not the hot path).
impl FromIterator<ByteBuf> for Payload {
    fn from_iter<I: IntoIterator<Item = ByteBuf>>(items: I) -> Self {
        Payload::from_bufs(&items.into_iter().collect::<Vec<_>>())
    }
}

impl From<Vec<ByteBuf>> for Payload {
    fn from(items: Vec<ByteBuf>) -> Self {
        Payload::from_bufs(&items)
    }
}

/// The same items as a list of separate ones.
impl PartialEq<[ByteBuf]> for Payload {
    fn eq(&self, other: &[ByteBuf]) -> bool {
        self.len() == other.len() && self.items().zip(other).all(|(a, b)| a == b.as_slice())
    }
}

/// Items' room a partial order's run takes at its first item (see
/// [`PartialItems`]); trimmed when it seals.
const RUN_ITEMS_RESERVED: usize = 8;

/// Bytes reserved that way at most: two items' charged overhead
/// (`limits::ITEM_OVERHEAD_BYTES`). Partial orders are bounded by the bytes
/// they are charged (`partial_bytes_max`), not by their buffers' capacity,
/// so the room held beyond the items stays that small (a large first item
/// reserves only its own size).
const RUN_BYTES_RESERVED_MAX: usize = 2 * orderly_common::limits::ITEM_OVERHEAD_BYTES as usize;

/// A partial order's items as they arrive: the run `0..n` that came in
/// order (the normal case) appended to one buffer in [`Payload`]'s layout,
/// so sealing it adds the index instead of copying each item; items after
/// a gap wait in a map until the gap is filled. Without a per-item
/// allocation for items in order.
#[derive(Debug, Default)]
pub struct PartialItems {
    /// Items `0..ends.len()`, back to back (a `Vec`: bulk copies; a
    /// partial order is transient, so its 16 bytes more than a `ThinVec`
    /// are not paid by a backlog).
    run: Vec<u8>,
    /// Where each item of `run` ends.
    ends: Vec<u32>,
    /// Items past a gap (every key above `ends.len()`: the item at
    /// `ends.len()` joins the run as soon as it arrives).
    after_gap: BTreeMap<u32, ByteBuf>,
}

impl PartialItems {
    /// How many items are held.
    pub fn len(&self) -> usize {
        self.ends.len() + self.after_gap.len()
    }

    /// Whether item `seq` is held.
    pub fn contains(&self, seq: u32) -> bool {
        (seq as usize) < self.ends.len() || self.after_gap.contains_key(&seq)
    }

    /// The first item held at or after `seq`.
    pub fn first_from(&self, seq: u32) -> Option<u32> {
        if (seq as usize) < self.ends.len() {
            return Some(seq);
        }
        self.after_gap.range(seq..).next().map(|(&s, _)| s)
    }

    /// The first item not held, below `count` (the run's end, as items
    /// past it never include it).
    pub fn first_missing(&self, count: u32) -> Option<u32> {
        let next = to_u32(self.ends.len());
        (next < count).then_some(next)
    }

    /// Stores item `seq`; the length of the item it replaces, if any (a
    /// replay of an item it holds).
    pub fn insert(&mut self, seq: u32, data: &[u8]) -> Option<usize> {
        let next = self.ends.len();
        match (seq as usize).cmp(&next) {
            std::cmp::Ordering::Equal => {
                self.push(data);
                // The gap it closed: items waiting behind it join the run.
                while let Some(waiting) = self.after_gap.remove(&to_u32(self.ends.len())) {
                    self.push(&waiting);
                }
                None
            }
            std::cmp::Ordering::Greater => {
                self.after_gap.insert(seq, ByteBuf::from(data.to_vec())).map(|old| old.len())
            }
            std::cmp::Ordering::Less => Some(self.replace(seq as usize, data)),
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.ends.is_empty() {
            // Room for a few items like the first, so that a small order
            // grows its buffers once or twice, not at every doubling.
            let bytes = data.len().saturating_mul(RUN_ITEMS_RESERVED).min(RUN_BYTES_RESERVED_MAX);
            self.run.reserve(bytes.max(data.len()));
            self.ends.reserve(RUN_ITEMS_RESERVED);
        }
        self.run.extend_from_slice(data);
        self.ends.push(to_u32(self.run.len()));
    }

    /// Replaces item `i` of the run (only a replay does): rare, so simply
    /// rebuilt. Returns the old item's length.
    fn replace(&mut self, i: usize, data: &[u8]) -> usize {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        if end - start == data.len() {
            self.run[start..end].copy_from_slice(data);
            return data.len();
        }
        let tail: Vec<u8> = self.run[end..].to_vec();
        self.run.truncate(start);
        self.run.extend_from_slice(data);
        self.run.extend_from_slice(&tail);
        let shift = data.len() as i64 - (end - start) as i64;
        for e in &mut self.ends[i..] {
            *e = u32::try_from(i64::from(*e) + shift).expect("an order's payload is bounded far below 4 GiB");
        }
        end - start
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    /// The items held, with their numbers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let run = (0..self.ends.len()).map(|i| (to_u32(i), &self.run[self.start(i)..self.ends[i] as usize]));
        run.chain(self.after_gap.iter().map(|(&s, d)| (s, d.as_slice())))
    }

    /// The items as one payload, when they are exactly `0..n` (a sealed
    /// order): the run and its index, copied once into the payload's block.
    pub fn into_payload(self) -> Payload {
        assert!(self.after_gap.is_empty(), "a sealed order's items are all in its run");
        Payload::seal(&self.run, &self.ends)
    }
}

impl FromIterator<(u32, ByteBuf)> for PartialItems {
    fn from_iter<I: IntoIterator<Item = (u32, ByteBuf)>>(items: I) -> Self {
        let mut partial = PartialItems::default();
        for (seq, data) in items {
            partial.insert(seq, &data);
        }
        partial
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

/// Elements (items, or an item's bytes sent as integers) preallocated for
/// at most, whatever a record's sequence claims (as `serde_bytes` caps it).
const DECODE_PREALLOCATED_MAX: usize = 4096;

/// As a `Vec<ByteBuf>` is decoded, accepting the same and refusing the
/// same with the same errors ("expected a sequence", an item "expected
/// byte array"), so a record written by any version decodes as before;
/// but straight into one buffer: items borrowed from the record where the
/// decoder can lend them (`rmp_serde::from_slice`), then copied once.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a sequence") // `Vec`'s
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(DECODE_PREALLOCATED_MAX));
        while let Some(DecodedItem(item)) = seq.next_element()? {
            items.push(item);
        }
        let bytes: usize = items.iter().map(|d| d.len()).sum();
        if u32::try_from(bytes + END_BYTES * (items.len() + 1)).is_err() {
            return Err(de::Error::custom(format_args!(
                "an order of {bytes} bytes in {} items: more than one payload can index (4 GiB)",
                items.len()
            )));
        }
        Ok(Payload::from_items(items.iter().map(|d| &d[..])))
    }
}

/// One item of a decoded payload, as `serde_bytes::ByteBuf` decodes it
/// (`deserialize_byte_buf`, the same visits accepted), borrowed when it can be.
struct DecodedItem<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for DecodedItem<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(ItemVisitor).map(DecodedItem)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Cow<'de, [u8]>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("byte array") // `ByteBuf`'s
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v.as_bytes()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.into_bytes()))
    }

    /// An array of integers, as `ByteBuf` takes it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(DECODE_PREALLOCATED_MAX));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(Cow::Owned(bytes))
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

    /// MessagePack bodies where a record's items go: every form a
    /// `Vec<ByteBuf>` takes or refuses.
    fn item_lists() -> Vec<(&'static str, Vec<u8>)> {
        let mut bin = vec![0x92, 0xc4, 0x02, b'a', b'b', 0xc4, 0x00];
        let big: Vec<u8> = (0..=255u8).collect();
        let mut big_bin = vec![0x91, 0xc5, 0x01, 0x00];
        big_bin.extend(&big);
        let as_ints = rmp_serde::to_vec(&vec![vec![1u8, 2, 255]]).unwrap();
        let cases = vec![
            ("bin items", std::mem::take(&mut bin)),
            ("a 256-byte item", big_bin),
            ("no items", vec![0x90]),
            ("str items", rmp_serde::to_vec(&["xy", ""]).unwrap()),
            ("an item as integers", as_ints),
            ("mixed forms", vec![0x93, 0xc4, 0x01, b'a', 0xa1, b'b', 0x91, 0x07]),
            ("an integer item", vec![0x92, 0xc4, 0x00, 0x05]),
            ("a nil item", vec![0x91, 0xc0]),
            ("a map item", vec![0x91, 0x80]),
            ("an item integer above a byte", vec![0x91, 0x91, 0xcd, 0x01, 0x2c]),
            ("a negative item integer", vec![0x91, 0x91, 0xff]),
            ("nil for the list", vec![0xc0]),
            ("an integer for the list", vec![0x07]),
            ("a map for the list", vec![0x81, 0xa1, b'k', 0x90]),
            ("bin for the list", vec![0xc4, 0x01, b'a']),
            ("a truncated item", vec![0x91, 0xc4, 0x05, b'a']),
            ("a truncated list", vec![0x92, 0xc4, 0x00]),
            ("nothing", vec![]),
        ];
        cases
    }

    /// A decoded payload takes and refuses what `Vec<ByteBuf>` does, with
    /// the same errors, from a slice (items borrowed) and from a reader
    /// (items copied): a record of any version decodes as before.
    #[test]
    fn decodes_exactly_as_a_list_of_byte_strings() {
        fn shown<T>(result: Result<T, rmp_serde::decode::Error>) -> Result<T, String> {
            result.map_err(|e| e.to_string())
        }
        for (what, body) in item_lists() {
            let old = shown(rmp_serde::from_slice::<Vec<ByteBuf>>(&body));
            let new = shown(rmp_serde::from_slice::<Payload>(&body)).map(|p| p.to_vec());
            assert_eq!(new, old, "{what}, from a slice");
            let old = shown(rmp_serde::from_read::<_, Vec<ByteBuf>>(&body[..]));
            let new = shown(rmp_serde::from_read::<_, Payload>(&body[..])).map(|p| p.to_vec());
            assert_eq!(new, old, "{what}, from a reader");
            if let Ok(items) = old {
                // And it encodes back to what a list of those items is.
                let payload = rmp_serde::from_slice::<Payload>(&body).unwrap();
                assert_eq!(rmp_serde::to_vec(&payload).unwrap(), rmp_serde::to_vec(&items).unwrap(), "{what}");
            }
        }
    }

    /// A copy of a payload is the same block: the order and its record
    /// share it.
    #[test]
    fn a_clone_shares_the_block() {
        let payload = Payload::from_items([&b"abc"[..], b"d"]);
        let copy = payload.clone();
        assert!(std::ptr::eq(payload.block(), copy.block()));
        assert_eq!(copy, payload);
        assert!(payload == *[ByteBuf::from(b"abc".to_vec()), ByteBuf::from(b"d".to_vec())].as_slice());
        assert!(payload != *[ByteBuf::from(b"abc".to_vec())].as_slice());
    }

    #[test]
    fn items_in_order_become_the_payload_and_gaps_are_filled() {
        let items: [&[u8]; 5] = [b"a", b"", b"cd", b"efg", b"h"];
        let mut partial = PartialItems::default();
        // Out of order: 0, 3, 1, 4, then 2 closes the gap.
        for seq in [0u32, 3, 1, 4] {
            assert_eq!(partial.insert(seq, items[seq as usize]), None);
        }
        assert!(partial.contains(3) && !partial.contains(2));
        assert_eq!((partial.first_missing(5), partial.first_from(2), partial.len()), (Some(2), Some(3), 4));
        assert_eq!(partial.insert(2, items[2]), None);
        assert_eq!((partial.first_missing(5), partial.first_from(5), partial.len()), (None, None, 5));
        // A replay of a held item replaces it.
        assert_eq!(partial.insert(1, b"bb"), Some(0));
        assert_eq!(partial.insert(1, b""), Some(2));
        let listed: Vec<(u32, &[u8])> = partial.iter().collect();
        assert_eq!(listed, items.iter().enumerate().map(|(i, d)| (i as u32, *d)).collect::<Vec<_>>());
        let payload = partial.into_payload();
        assert_eq!(payload, Payload::from_items(items));
        assert_eq!(payload.items().collect::<Vec<_>>(), items);
    }

    #[test]
    fn an_order_without_items_is_empty() {
        let payload = Payload::from_items(std::iter::empty());
        assert_eq!((payload.len(), payload.bytes(), payload.items().count()), (0, 0, 0));
        assert_eq!(PartialItems::default().into_payload(), payload);
    }
}

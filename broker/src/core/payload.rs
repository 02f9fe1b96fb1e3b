//! An order's items held in RAM: one allocation for the whole order instead
//! of a `Vec` of items with one heap buffer each (the profile of 0.4 put
//! allocation at ~18 % of the broker's samples). Built once from the
//! decoded items, read by dispatch (serialized straight from it) and by
//! the journal copy of a spilled order.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_bytes::ByteBuf;
use thin_vec::ThinVec;

/// Bytes of one item end offset in the buffer's index.
const END_BYTES: usize = std::mem::size_of::<u32>();

const _: () = assert!((orderly_common::limits::ORDER_BYTES_MAX as u64) < u32::MAX as u64 / 2);

/// An order's items in one buffer: the items' bytes back to back, then
/// `n` item end offsets into the data (u32 each, native endian), then the
/// item count `n` (u32). The index comes last so that a partial order's
/// items, appended to one buffer as they arrive ([`PartialItems`]), become
/// the payload without being copied again. A `ThinVec` (length and
/// capacity in its heap block): 8 bytes in the order where a `Box<[u8]>`
/// took 16, paid by every order of a backlog (issue 20); sized exactly, so
/// no spare capacity. Offsets fit in u32: an order's bytes are bounded far
/// below 4 GiB (`limits::ORDER_BYTES_MAX`, asserted below).
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    buf: ThinVec<u8>,
}

impl Payload {
    /// Copies `items` into one buffer.
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]> + Clone) -> Self {
        let (count, bytes) = items.clone().into_iter().fold((0usize, 0usize), |(n, b), d| (n + 1, b + d.len()));
        let mut buf = ThinVec::with_capacity(bytes + END_BYTES * (count + 1));
        for item in items.clone() {
            buf.extend_from_slice(item);
        }
        // The index from a second pass (no list of ends to allocate).
        let mut end = 0;
        for item in items {
            end += item.len();
            buf.extend_from_slice(&to_u32(end).to_ne_bytes());
        }
        buf.extend_from_slice(&to_u32(count).to_ne_bytes());
        debug_assert_eq!(buf.len(), buf.capacity());
        Payload { buf }
    }

    /// Copies decoded items (`Event` payloads).
    pub fn from_bufs<'a>(items: impl IntoIterator<Item = &'a ByteBuf, IntoIter: Clone>) -> Self {
        Self::from_items(items.into_iter().map(|d| d.as_slice()))
    }

    /// Appends the index to `data` (the items back to back, item `i`
    /// ending at `ends[i]`) and trims spare capacity.
    fn seal(mut data: ThinVec<u8>, ends: &[u32]) -> Self {
        debug_assert_eq!(ends.last().map_or(0, |&end| end as usize), data.len());
        data.reserve_exact(END_BYTES * (ends.len() + 1));
        for end in ends {
            data.extend_from_slice(&end.to_ne_bytes());
        }
        data.extend_from_slice(&to_u32(ends.len()).to_ne_bytes());
        data.shrink_to_fit();
        Payload { buf: data }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.read_u32(self.buf.len() - END_BYTES) as usize
    }

    /// The items' bytes, without the index.
    pub fn bytes(&self) -> u64 {
        self.data_end() as u64
    }

    /// The items, in order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        let index = self.data_end();
        let data = &self.buf[..index];
        (0..self.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.read_u32(index + (i - 1) * END_BYTES) as usize };
            &data[start..self.read_u32(index + i * END_BYTES) as usize]
        })
    }

    /// A copy as separate items (snapshots, status: not the hot path).
    pub fn to_vec(&self) -> Vec<ByteBuf> {
        self.items().map(|d| ByteBuf::from(d.to_vec())).collect()
    }

    /// Where the index starts: the items' bytes end.
    fn data_end(&self) -> usize {
        self.buf.len() - END_BYTES * (self.len() + 1)
    }

    /// The u32 at byte `at`.
    fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.buf[at..at + END_BYTES].try_into().expect("four bytes"))
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
    /// Items `0..ends.len()`, back to back.
    run: ThinVec<u8>,
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
    /// order): the run's buffer becomes the payload's.
    pub fn into_payload(self) -> Payload {
        assert!(self.after_gap.is_empty(), "a sealed order's items are all in its run");
        Payload::seal(self.run, &self.ends)
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

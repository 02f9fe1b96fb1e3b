//! The sealed-order table: a slab of entries addressed by a `u32` slot,
//! found by key through a hash table of slots, each key stored once.
//!
//! A million pending orders must fit in a few dozen MiB (issue 20), so:
//! - the entries sit densely in fixed chunks (no per-order allocation but
//!   the order id's own; empty hash buckets hold 4 bytes, not a whole
//!   entry; growing copies nothing, so the peak is not 1.5 times the need);
//! - the key is stored once, in its entry: the producer id interned (a
//!   `u32`, its name kept once per producer), the order id inline up to
//!   15 bytes (`ecow::EcoString`, 16 bytes where `compact_str`'s 24 cost
//!   8 MB more a million orders; the benchmark's ids are 12), on the heap
//!   beyond;
//! - the queues hold a [`Handle`] (slot and generation, 8 bytes): a handle
//!   left in a queue after its order left is *stale* and finds nothing,
//!   even once the slot holds another order;
//! - each value carries its key's compaction anchor ([`Anchored`]: the
//!   journal segment of the key's latest anchoring record, see
//!   `crate::compaction`), so the anchors need no second table of the same
//!   keys, and a value that can tell its anchor from what it holds anyway
//!   (a sealed order: its payload's record) pays nothing for it. An entry
//!   that leaves with an anchor *releases* it, for the anchor counts to
//!   take ([`Table::drain_released`]); one that moves to another table
//!   takes its anchor along ([`Table::take`]).

use std::hash::BuildHasher;
use std::num::NonZeroU64;

use ecow::EcoString;
use hashbrown::{hash_table, HashTable};
use orderly_common::OrderKey;

use super::HashMap;

/// Where an order is in the table. Stale once the order leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Handle {
    slot: u32,
    generation: u32,
}

/// Slots in the table at most: a slot is a `u32`, and `u32::MAX` stays
/// free so that a count of slots fits one too.
pub(crate) const SLOTS_MAX: usize = u32::MAX as usize - 1;

/// An order's key, borrowed from the table: the one the dispatch
/// encoders take too.
pub(crate) use orderly_common::protocol::OrderKeyRef as KeyRef;

#[derive(Debug)]
struct Entry<T> {
    /// Inline when short: no allocation per order, no heap block.
    id: EcoString,
    producer: u32,
    /// Bumped when the slot is freed, so old handles go stale.
    generation: u32,
    /// `None` while the slot is free.
    value: Option<T>,
}

/// A value that carries its key's compaction anchor: the journal segment
/// of the key's latest anchoring record; `None` until that record is
/// written (or never, for a core without a journal).
pub(crate) trait Anchored {
    fn anchor(&self) -> Option<NonZeroU64>;
    /// Anchors it in `anchor` (`None`: unanchored). Returns the anchor it
    /// gives up: the one it had, or `anchor` itself when it keeps the one
    /// its own record gives it (a sealed order whose payload one record
    /// holds, which is never newer: keeping it keeps more, never less).
    fn set_anchor(&mut self, anchor: Option<NonZeroU64>) -> Option<NonZeroU64>;
}

/// A producer id and how many entries use it (freed at zero, so ids of
/// producers long gone do not pile up).
#[derive(Debug)]
struct Producer {
    name: Box<str>,
    entries: u32,
}

/// The table. See the module docs.
#[derive(Debug)]
pub(crate) struct Table<T> {
    entries: Chunks<Entry<T>>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    /// Slots of the used entries, by the hash of their key.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    producers: Vec<Producer>,
    free_producers: Vec<u32>,
    producer_slots: HashMap<Box<str>, u32>,
    /// Anchors of entries that left, until the anchor counts take them.
    released: Vec<NonZeroU64>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            entries: Chunks::default(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            producers: Vec::new(),
            free_producers: Vec::new(),
            producer_slots: HashMap::default(),
            released: Vec::new(),
        }
    }
}

/// Entries a chunk holds: 2^14, a few MiB at most per chunk.
const CHUNK_SHIFT: u32 = 14;
const CHUNK_LEN: usize = 1 << CHUNK_SHIFT;

/// A `Vec` in fixed chunks: growing never copies (a doubling `Vec` holds
/// its old and new buffers at once).
#[derive(Debug)]
struct Chunks<E> {
    chunks: Vec<Vec<E>>,
    len: usize,
}

impl<E> Default for Chunks<E> {
    fn default() -> Self {
        Chunks { chunks: Vec::new(), len: 0 }
    }
}

impl<E> Chunks<E> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, e: E) {
        if self.len.is_multiple_of(CHUNK_LEN) {
            self.chunks.push(Vec::with_capacity(CHUNK_LEN));
        }
        self.chunks.last_mut().expect("a chunk with room").push(e);
        self.len += 1;
    }

    fn get(&self, i: usize) -> Option<&E> {
        self.chunks.get(i >> CHUNK_SHIFT).and_then(|c| c.get(i & (CHUNK_LEN - 1)))
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut E> {
        self.chunks.get_mut(i >> CHUNK_SHIFT).and_then(|c| c.get_mut(i & (CHUNK_LEN - 1)))
    }

    fn iter(&self) -> impl Iterator<Item = &E> {
        self.chunks.iter().flatten()
    }
}

impl<E> std::ops::Index<usize> for Chunks<E> {
    type Output = E;
    fn index(&self, i: usize) -> &E {
        &self.chunks[i >> CHUNK_SHIFT][i & (CHUNK_LEN - 1)]
    }
}

impl<E> std::ops::IndexMut<usize> for Chunks<E> {
    fn index_mut(&mut self, i: usize) -> &mut E {
        &mut self.chunks[i >> CHUNK_SHIFT][i & (CHUNK_LEN - 1)]
    }
}

/// Bytes of one slab entry holding a `T` (the size tests bound it).
#[cfg(test)]
pub(super) fn entry_bytes<T>() -> usize {
    std::mem::size_of::<Entry<T>>()
}

fn hash_key(hasher: &foldhash::fast::RandomState, producer: &str, id: &str) -> u64 {
    hasher.hash_one((producer, id))
}

/// Whether an indexed slot holds `key`.
fn matches<'a, T>(
    entries: &'a Chunks<Entry<T>>,
    producers: &'a [Producer],
    key: &'a OrderKey,
) -> impl Fn(&u32) -> bool + 'a {
    move |&slot| {
        let e = &entries[slot as usize];
        e.id == key.id.as_str() && *producers[e.producer as usize].name == *key.producer
    }
}

/// The hash of an indexed slot's key, for the index to grow.
fn rehash<'a, T>(
    entries: &'a Chunks<Entry<T>>,
    producers: &'a [Producer],
    hasher: &'a foldhash::fast::RandomState,
) -> impl Fn(&u32) -> u64 + 'a {
    move |&slot| {
        let e = &entries[slot as usize];
        hash_key(hasher, &producers[e.producer as usize].name, &e.id)
    }
}

impl<T> Table<T> {
    /// Orders in the table.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Makes room for `orders` more orders at once.
    pub fn reserve(&mut self, orders: usize) {
        let orders = orders.min(SLOTS_MAX - self.len());
        self.index.reserve(orders, rehash(&self.entries, &self.producers, &self.hasher));
    }

    fn find(&self, key: &OrderKey) -> Option<u32> {
        let hash = hash_key(&self.hasher, &key.producer, &key.id);
        self.index.find(hash, matches(&self.entries, &self.producers, key)).copied()
    }

    pub fn contains_key(&self, key: &OrderKey) -> bool {
        self.find(key).is_some()
    }

    pub fn get(&self, key: &OrderKey) -> Option<&T> {
        let slot = self.find(key)?;
        self.entries[slot as usize].value.as_ref()
    }

    pub fn get_mut(&mut self, key: &OrderKey) -> Option<&mut T> {
        let slot = self.find(key)?;
        self.entries[slot as usize].value.as_mut()
    }

    /// The handle of a known order.
    pub fn handle(&self, key: &OrderKey) -> Option<Handle> {
        let slot = self.find(key)?;
        Some(Handle { slot, generation: self.entries[slot as usize].generation })
    }

    fn entry(&self, handle: Handle) -> Option<&Entry<T>> {
        self.entries.get(handle.slot as usize).filter(|e| e.generation == handle.generation && e.value.is_some())
    }

    /// The order `handle` names, unless it left.
    pub fn by_handle(&self, handle: Handle) -> Option<&T> {
        self.entry(handle).and_then(|e| e.value.as_ref())
    }

    pub fn by_handle_mut(&mut self, handle: Handle) -> Option<&mut T> {
        self.entries
            .get_mut(handle.slot as usize)
            .filter(|e| e.generation == handle.generation)
            .and_then(|e| e.value.as_mut())
    }

    /// The key of the order `handle` names, unless it left.
    pub fn key(&self, handle: Handle) -> Option<KeyRef<'_>> {
        self.entry(handle).map(|e| self.key_ref(e))
    }

    fn key_ref<'a>(&'a self, e: &'a Entry<T>) -> KeyRef<'a> {
        KeyRef { producer: &self.producers[e.producer as usize].name, id: &e.id }
    }

    /// Adds an order that is not in the table yet, unanchored.
    pub fn insert(&mut self, key: &OrderKey, value: T) -> Handle {
        self.renew(key, |old| {
            assert!(old.is_none(), "order table: {key} is already in it");
            value
        })
    }

    /// Puts `key` and `value` in `slot`: the last free one, or one past
    /// the end.
    fn fill(&mut self, slot: u32, key: &OrderKey, value: T) -> Handle {
        let producer = self.intern(&key.producer);
        let id = EcoString::from(key.id.as_str());
        if self.free.last() == Some(&slot) {
            self.free.pop();
            let e = &mut self.entries[slot as usize];
            (e.id, e.producer, e.value) = (id, producer, Some(value));
        } else {
            self.entries.push(Entry { id, producer, generation: 0, value: Some(value) });
        }
        Handle { slot, generation: self.entries[slot as usize].generation }
    }

    /// Sets `key`'s value to `value(the old one)`, or adds it: one probe. A
    /// key it holds gets a new handle (its old ones go stale).
    pub fn renew(&mut self, key: &OrderKey, value: impl FnOnce(Option<T>) -> T) -> Handle {
        let full = self.len() >= SLOTS_MAX;
        let hash = hash_key(&self.hasher, &key.producer, &key.id);
        // The slot a new key takes: its entry is filled in after the index
        // has it (one probe both checks and inserts).
        let slot = self.free.last().copied().unwrap_or(self.entries.len() as u32);
        let (entries, producers, hasher) = (&self.entries, &self.producers, &self.hasher);
        match self.index.entry(hash, matches(entries, producers, key), rehash(entries, producers, hasher)) {
            hash_table::Entry::Occupied(occupied) => {
                let slot = *occupied.get();
                let e = &mut self.entries[slot as usize];
                e.generation = e.generation.wrapping_add(1);
                let old = e.value.take();
                e.value = Some(value(old));
                Handle { slot, generation: e.generation }
            }
            hash_table::Entry::Vacant(vacant) => {
                assert!(!full, "order table: more than {SLOTS_MAX} orders");
                vacant.insert(slot);
                self.fill(slot, key, value(None))
            }
        }
    }

    /// Takes an order out with the handle it had (its anchor is the
    /// caller's to carry on or release): one probe. Its handles go stale.
    pub fn take(&mut self, key: &OrderKey) -> Option<(Handle, T)> {
        let hash = hash_key(&self.hasher, &key.producer, &key.id);
        let found = self.index.find_entry(hash, matches(&self.entries, &self.producers, key));
        let (slot, _) = found.ok()?.remove();
        let e = &mut self.entries[slot as usize];
        let handle = Handle { slot, generation: e.generation };
        let value = e.value.take().expect("an indexed slot holds an order");
        e.id = EcoString::new();
        e.generation = e.generation.wrapping_add(1);
        let producer = e.producer;
        self.release(producer);
        self.free.push(slot);
        Some((handle, value))
    }
}

impl<T: Anchored> Table<T> {
    /// Takes an order out; its handles go stale and its anchor is released.
    pub fn remove(&mut self, key: &OrderKey) -> Option<T> {
        let (_, value) = self.take(key)?;
        self.released.extend(value.anchor());
        Some(value)
    }

    /// Anchors `key` in `segment`: the anchor it gives up (see
    /// [`Anchored::set_anchor`]), if the table holds it (`Some(None)`: it
    /// had none). The old anchor is the caller's to count out.
    pub fn set_anchor(&mut self, key: &OrderKey, segment: NonZeroU64) -> Option<Option<NonZeroU64>> {
        Some(self.get_mut(key)?.set_anchor(Some(segment)))
    }

    /// Gives the order `handle` names an anchor carried from elsewhere; an
    /// anchor it gives up is released. False if the handle is stale.
    pub fn carry_anchor(&mut self, handle: Handle, anchor: Option<NonZeroU64>) -> bool {
        let Some(value) = self.by_handle_mut(handle) else { return false };
        if let Some(old) = value.set_anchor(anchor) {
            self.released.push(old);
        }
        true
    }

    /// The anchors of entries that left since the last call.
    pub fn drain_released(&mut self) -> std::vec::Drain<'_, NonZeroU64> {
        self.released.drain(..)
    }

    /// The keys anchored in `segment`, in no particular order.
    pub fn anchored_in(&self, segment: NonZeroU64) -> impl Iterator<Item = KeyRef<'_>> {
        self.entries
            .iter()
            .filter(move |e| e.value.as_ref().is_some_and(|v| v.anchor() == Some(segment)))
            .map(|e| self.key_ref(e))
    }
}

impl<T> Table<T> {
    /// Every order with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (KeyRef<'_>, &T)> {
        self.entries.iter().filter_map(|e| e.value.as_ref().map(|v| (self.key_ref(e), v)))
    }

    /// Every order with its handle and key, in no particular order.
    pub fn iter_handles(&self) -> impl Iterator<Item = (Handle, KeyRef<'_>, &T)> {
        self.entries.iter().enumerate().filter_map(|(slot, e)| {
            let handle = Handle { slot: slot as u32, generation: e.generation };
            e.value.as_ref().map(|v| (handle, self.key_ref(e), v))
        })
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|e| e.value.as_ref())
    }

    /// Every key, owned, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = OrderKey> + '_ {
        self.iter().map(|(k, _)| k.to_key())
    }

    fn intern(&mut self, producer: &str) -> u32 {
        let slot = match self.producer_slots.get(producer) {
            Some(&slot) => slot,
            None => {
                let p = Producer { name: producer.into(), entries: 0 };
                let slot = match self.free_producers.pop() {
                    Some(slot) => {
                        self.producers[slot as usize] = p;
                        slot
                    }
                    None => {
                        self.producers.push(p);
                        (self.producers.len() - 1) as u32
                    }
                };
                self.producer_slots.insert(producer.into(), slot);
                slot
            }
        };
        self.producers[slot as usize].entries += 1;
        slot
    }

    fn release(&mut self, producer: u32) {
        let p = &mut self.producers[producer as usize];
        p.entries -= 1;
        if p.entries == 0 {
            self.producer_slots.remove(&p.name);
            p.name = Box::default();
            self.free_producers.push(producer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' values carry no anchor.
    impl Anchored for i32 {
        fn anchor(&self) -> Option<NonZeroU64> {
            None
        }
        fn set_anchor(&mut self, anchor: Option<NonZeroU64>) -> Option<NonZeroU64> {
            anchor
        }
    }

    impl Anchored for u64 {
        fn anchor(&self) -> Option<NonZeroU64> {
            None
        }
        fn set_anchor(&mut self, anchor: Option<NonZeroU64>) -> Option<NonZeroU64> {
            anchor
        }
    }

    fn key(producer: &str, id: &str) -> OrderKey {
        OrderKey::new(producer, id)
    }

    #[test]
    fn finds_what_it_holds_and_not_what_left() {
        let mut t = Table::default();
        let a = t.insert(&key("p", "a"), 1);
        let b = t.insert(&key("q", "a"), 2);
        assert_eq!((t.get(&key("p", "a")), t.get(&key("q", "a")), t.len()), (Some(&1), Some(&2), 2));
        assert_eq!(t.key(a).map(KeyRef::to_key), Some(key("p", "a")));
        assert_eq!(t.remove(&key("p", "a")), Some(1));
        assert_eq!((t.get(&key("p", "a")), t.by_handle(a), t.key(a)), (None, None, None));
        // The freed slot is reused; the old handle stays stale.
        let c = t.insert(&key("p", "c"), 3);
        assert_eq!(c.slot, a.slot);
        assert_eq!((t.by_handle(a), t.by_handle(c), t.by_handle(b)), (None, Some(&3), Some(&2)));
        assert_eq!(t.handle(&key("p", "c")), Some(c));
        assert_eq!(t.remove(&key("p", "a")), None);
    }

    #[test]
    fn ids_short_and_long_are_found_alike() {
        let mut t = Table::default();
        let short = key("p", &"s".repeat(EcoString::INLINE_LIMIT));
        let long = key("p", &"l".repeat(300));
        t.insert(&short, 1);
        t.insert(&long, 2);
        // Only the longer than 15 bytes takes a heap block: an inline id's
        // bytes lie within its entry.
        let inline = |e: &Entry<i32>| {
            let (at, entry) = (e.id.as_ptr() as usize, e as *const Entry<i32> as usize);
            (entry..entry + std::mem::size_of::<Entry<i32>>()).contains(&at)
        };
        assert_eq!(EcoString::INLINE_LIMIT, 15);
        assert!(inline(&t.entries[0]) && !inline(&t.entries[1]));
        assert_eq!((t.get(&short), t.get(&long)), (Some(&1), Some(&2)));
        assert_eq!(t.remove(&long), Some(2));
        assert_eq!((t.get(&long), t.get(&short)), (None, Some(&1)));
    }

    #[test]
    fn producer_ids_are_kept_once_and_freed_with_their_last_order() {
        let mut t = Table::default();
        for i in 0..100 {
            t.insert(&key("p", &i.to_string()), i);
        }
        assert_eq!(t.producers.len(), 1);
        for i in 0..100 {
            assert_eq!(t.remove(&key("p", &i.to_string())), Some(i));
        }
        assert!(t.producer_slots.is_empty());
        t.insert(&key("r", "x"), 0);
        assert_eq!((t.producers.len(), t.producers[0].name.as_ref()), (1, "r"));
        let mut keys: Vec<OrderKey> = t.keys().collect();
        keys.sort();
        assert_eq!(keys, vec![key("r", "x")]);
    }

    #[test]
    fn agrees_with_a_hash_map_through_growth_and_churn() {
        let mut t = Table::default();
        let mut model = std::collections::HashMap::new();
        let mut rng = orderly_common::rng::SplitMix64::new(7);
        for i in 0..20_000u64 {
            let k = key(&format!("p{}", rng.next_u64() % 5), &(rng.next_u64() % 3_000).to_string());
            if rng.next_u64().is_multiple_of(3) {
                assert_eq!(t.remove(&k), model.remove(&k), "remove {k}");
            } else if let std::collections::hash_map::Entry::Vacant(entry) = model.entry(k.clone()) {
                t.insert(&k, i);
                entry.insert(i);
            }
        }
        assert_eq!(t.len(), model.len());
        for (k, v) in &model {
            assert_eq!(t.get(k), Some(v));
        }
        assert_eq!(t.iter().count(), model.len());
    }
}

//! Intake messages borrowed from their frame ([`IntakeRef`]): ids and item
//! bytes are slices of the received frame, so the broker copies an item
//! once, from the wire into its own buffers, instead of allocating a
//! `String` per id and a `ByteBuf` per item first (issue 20).
//!
//! The fields are `Cow`s deserialized as the owned types were (serde's
//! borrowed `Cow<str>`; for items, [`ItemData`]'s visitor, which takes what
//! `ByteBuf` took and refuses with its words): every input the owned
//! messages of 0.5.1 took is taken, every refusal is the same error. Only
//! what `rmp_serde` cannot hand out as a slice is copied — an item sent as
//! an array of integers, which PROTOCOL.md does not allow (`bin`) but the
//! decoder has always accepted.

use std::borrow::Cow;

use serde::Deserialize;
use serde_bytes::ByteBuf;

use super::{decode_envelope, invalid, DecodeError, Finish, IntakeMsg, Item, Items, Orders, ProducerHello, WholeOrder};
use crate::ids::{validate_order_id, validate_peer_id};
use crate::limits::{INTAKE_FRAME_BYTES_MAX, ITEM_BYTES_MAX, ORDERS_PER_MESSAGE_MAX, ORDER_ITEMS_MAX};

/// One item's bytes, borrowed from the frame when it was sent as `bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemData<'a>(pub Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for ItemData<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(ItemDataVisitor)
    }
}

/// `serde_bytes`' `Cow<[u8]>` visitor with `ByteBuf`'s words: the same
/// inputs are taken (borrowed where the frame holds them), and a refusal
/// says "expected byte array", as the owned decode of 0.5.1 did, where the
/// `Cow` visitor says "expected a byte array".
struct ItemDataVisitor;

impl<'de> serde::de::Visitor<'de> for ItemDataVisitor {
    type Value = ItemData<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("byte array")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Borrowed(v)))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Borrowed(v.as_bytes())))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Owned(v.to_vec())))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Owned(v.as_bytes().to_vec())))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Owned(v)))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(ItemData(Cow::Owned(v.into_bytes())))
    }

    /// An array of integers: `ByteBuf`'s own reading of it, refusals included.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let bytes = ByteBuf::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(ItemData(Cow::Owned(bytes.into_vec())))
    }
}

impl std::ops::Deref for ItemData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for ItemData<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A [`super::Begin`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BeginRef<'a> {
    #[serde(borrow)]
    pub producer: Cow<'a, str>,
    #[serde(borrow)]
    pub order: Cow<'a, str>,
}

/// An [`Item`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemRef<'a> {
    #[serde(borrow)]
    pub producer: Cow<'a, str>,
    #[serde(borrow)]
    pub order: Cow<'a, str>,
    pub seq: u32,
    #[serde(borrow)]
    pub data: ItemData<'a>,
}

/// An [`Items`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemsRef<'a> {
    #[serde(borrow)]
    pub producer: Cow<'a, str>,
    #[serde(borrow)]
    pub order: Cow<'a, str>,
    #[serde(default)]
    pub begin: bool,
    pub first: u32,
    #[serde(borrow)]
    pub data: Vec<ItemData<'a>>,
    #[serde(default)]
    pub finish: Option<u32>,
}

/// An [`Orders`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrdersRef<'a> {
    #[serde(borrow)]
    pub producer: Cow<'a, str>,
    #[serde(borrow)]
    pub orders: Vec<WholeOrderRef<'a>>,
}

/// A [`WholeOrder`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WholeOrderRef<'a> {
    #[serde(borrow)]
    pub order: Cow<'a, str>,
    #[serde(borrow)]
    pub data: Vec<ItemData<'a>>,
}

/// A [`Finish`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FinishRef<'a> {
    #[serde(borrow)]
    pub producer: Cow<'a, str>,
    #[serde(borrow)]
    pub order: Cow<'a, str>,
    pub count: u32,
}

/// An [`IntakeMsg`] borrowed from its frame: what the broker decodes on
/// its hot path. `Hello` stays owned (once per producer start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeRef<'a> {
    Hello(ProducerHello),
    Begin(BeginRef<'a>),
    Item(ItemRef<'a>),
    Items(ItemsRef<'a>),
    Orders(OrdersRef<'a>),
    Finish(FinishRef<'a>),
}

/// Items as owned buffers (an owned message; a journal record's items).
pub fn owned_items(data: &[ItemData<'_>]) -> Vec<ByteBuf> {
    data.iter().map(|d| ByteBuf::from(d.to_vec())).collect()
}

fn borrowed_items(data: &[ByteBuf]) -> Vec<ItemData<'_>> {
    data.iter().map(|d| ItemData(Cow::Borrowed(d.as_slice()))).collect()
}

impl<'a> IntakeRef<'a> {
    /// Decodes and validates one intake body, borrowing from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let msg: IntakeRef<'a> = decode_envelope(bytes, INTAKE_FRAME_BYTES_MAX)?;
        msg.validate()?;
        Ok(msg)
    }

    pub fn producer(&self) -> &str {
        match self {
            IntakeRef::Hello(m) => &m.producer,
            IntakeRef::Begin(m) => &m.producer,
            IntakeRef::Item(m) => &m.producer,
            IntakeRef::Items(m) => &m.producer,
            IntakeRef::Orders(m) => &m.producer,
            IntakeRef::Finish(m) => &m.producer,
        }
    }

    /// An owned copy.
    pub fn to_owned_msg(&self) -> IntakeMsg {
        match self {
            IntakeRef::Hello(m) => IntakeMsg::Hello(m.clone()),
            IntakeRef::Begin(m) => {
                IntakeMsg::Begin(super::Begin { producer: m.producer.to_string(), order: m.order.to_string() })
            }
            IntakeRef::Item(m) => IntakeMsg::Item(Item {
                producer: m.producer.to_string(),
                order: m.order.to_string(),
                seq: m.seq,
                data: ByteBuf::from(m.data.to_vec()),
            }),
            IntakeRef::Items(m) => IntakeMsg::Items(Items {
                producer: m.producer.to_string(),
                order: m.order.to_string(),
                begin: m.begin,
                first: m.first,
                data: owned_items(&m.data),
                finish: m.finish,
            }),
            IntakeRef::Orders(m) => IntakeMsg::Orders(Orders {
                producer: m.producer.to_string(),
                orders: m
                    .orders
                    .iter()
                    .map(|o| WholeOrder { order: o.order.to_string(), data: owned_items(&o.data) })
                    .collect(),
            }),
            IntakeRef::Finish(m) => IntakeMsg::Finish(Finish {
                producer: m.producer.to_string(),
                order: m.order.to_string(),
                count: m.count,
            }),
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        validate_peer_id("producer id", self.producer())?;
        match self {
            IntakeRef::Hello(_) => Ok(()),
            IntakeRef::Begin(m) => Ok(validate_order_id(&m.order)?),
            IntakeRef::Item(m) => {
                validate_order_id(&m.order)?;
                if m.data.len() > ITEM_BYTES_MAX {
                    return invalid("item data", format!("{} bytes; the limit is {ITEM_BYTES_MAX}", m.data.len()));
                }
                if m.seq >= ORDER_ITEMS_MAX {
                    return invalid("item seq", format!("{}; the limit is {}", m.seq, ORDER_ITEMS_MAX - 1));
                }
                Ok(())
            }
            IntakeRef::Items(m) => {
                validate_order_id(&m.order)?;
                let end = u64::from(m.first) + m.data.len() as u64;
                if end > u64::from(ORDER_ITEMS_MAX) {
                    return invalid("items", format!("items up to {end}; the limit is {ORDER_ITEMS_MAX} per order"));
                }
                validate_item_bytes(&m.data)?;
                if m.finish.is_some_and(|count| count > ORDER_ITEMS_MAX) {
                    return invalid("finish count", format!("{:?}; the limit is {ORDER_ITEMS_MAX}", m.finish));
                }
                Ok(())
            }
            IntakeRef::Orders(m) => {
                if m.orders.is_empty() || m.orders.len() > ORDERS_PER_MESSAGE_MAX {
                    let len = m.orders.len();
                    return invalid("orders", format!("{len} orders; it must be 1..={ORDERS_PER_MESSAGE_MAX}"));
                }
                for order in &m.orders {
                    validate_order_id(&order.order)?;
                    validate_whole_items(&order.data)?;
                }
                Ok(())
            }
            IntakeRef::Finish(m) => {
                validate_order_id(&m.order)?;
                if m.count > ORDER_ITEMS_MAX {
                    return invalid("finish count", format!("{}; the limit is {ORDER_ITEMS_MAX}", m.count));
                }
                Ok(())
            }
        }
    }
}

/// The items of one whole order: how many, and each one's size.
fn validate_whole_items(data: &[ItemData<'_>]) -> Result<(), DecodeError> {
    if data.len() > ORDER_ITEMS_MAX as usize {
        return invalid("items", format!("{} items; the limit is {ORDER_ITEMS_MAX} per order", data.len()));
    }
    validate_item_bytes(data)
}

/// Each item within `ITEM_BYTES_MAX`.
fn validate_item_bytes(data: &[ItemData<'_>]) -> Result<(), DecodeError> {
    if let Some(big) = data.iter().find(|d| d.len() > ITEM_BYTES_MAX) {
        return invalid("item data", format!("{} bytes; the limit is {ITEM_BYTES_MAX}", big.len()));
    }
    Ok(())
}

impl IntakeMsg {
    /// The message borrowed (the broker core's one entry point takes this
    /// form; the owned one is what tests, the simulation and fuzzing build).
    pub fn as_ref_msg(&self) -> IntakeRef<'_> {
        fn s(s: &str) -> Cow<'_, str> {
            Cow::Borrowed(s)
        }
        match self {
            IntakeMsg::Hello(m) => IntakeRef::Hello(m.clone()),
            IntakeMsg::Begin(m) => IntakeRef::Begin(BeginRef { producer: s(&m.producer), order: s(&m.order) }),
            IntakeMsg::Item(m) => IntakeRef::Item(ItemRef {
                producer: s(&m.producer),
                order: s(&m.order),
                seq: m.seq,
                data: ItemData(Cow::Borrowed(m.data.as_slice())),
            }),
            IntakeMsg::Items(m) => IntakeRef::Items(ItemsRef {
                producer: s(&m.producer),
                order: s(&m.order),
                begin: m.begin,
                first: m.first,
                data: borrowed_items(&m.data),
                finish: m.finish,
            }),
            IntakeMsg::Orders(m) => IntakeRef::Orders(OrdersRef {
                producer: s(&m.producer),
                orders: m
                    .orders
                    .iter()
                    .map(|o| WholeOrderRef { order: s(&o.order), data: borrowed_items(&o.data) })
                    .collect(),
            }),
            IntakeMsg::Finish(m) => {
                IntakeRef::Finish(FinishRef { producer: s(&m.producer), order: s(&m.order), count: m.count })
            }
        }
    }
}

//! Intake messages borrowed from their frame ([`IntakeRef`]): ids and item
//! bytes are slices of the received frame, so the broker copies an item
//! once, from the wire into its own buffers, instead of allocating a
//! `String` per id and a `ByteBuf` per item first (issue 20).
//!
//! The fields are `Cow`s deserialized with the same visitors as the owned
//! types (serde's borrowed `Cow<str>`, `serde_bytes`' `Cow<[u8]>`): every
//! input the owned messages took is taken, every refusal is the same
//! error. Only what `rmp_serde` cannot hand out as a slice is copied — an
//! item sent as an array of integers, which PROTOCOL.md does not allow
//! (`bin`) but the decoder has always accepted.

use std::borrow::Cow;

use serde::Deserialize;
use serde_bytes::ByteBuf;

use super::{decode_envelope, invalid, DecodeError, Finish, IntakeMsg, Item, Items, Orders, ProducerHello, WholeOrder};
use crate::ids::{validate_order_id, validate_peer_id};
use crate::limits::{INTAKE_FRAME_BYTES_MAX, ITEM_BYTES_MAX, ORDERS_PER_MESSAGE_MAX, ORDER_ITEMS_MAX};

/// One item's bytes, borrowed from the frame when it was sent as `bin`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ItemData<'a>(#[serde(borrow, with = "serde_bytes")] pub Cow<'a, [u8]>);

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

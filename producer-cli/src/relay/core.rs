//! The relay's sans-IO core: which claimed rows go out as which orders,
//! and what each broker answer means for the rows. No database, no
//! socket, no clock: `relay::run` feeds it rows and answers and carries
//! out the marks it hands back.

use std::collections::{HashMap, HashSet};

use orderly_common::ids::validate_order_id;
use orderly_common::limits::{ITEM_BYTES_MAX, ORDER_BYTES_MAX, ORDER_ITEMS_MAX};
use orderly_producer::{Order, Outcome, RejectReason};
use serde_json::value::RawValue;

/// One outbox row as claimed: its key, the application's order id, the
/// items column as JSON text (an array, one element per item) and how many
/// times it was claimed, this claim included (above 1: a resend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) order_id: String,
    pub(crate) items: String,
    pub(crate) attempts: u32,
}

/// What the store must write after rows were claimed or answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Rows the broker confirmed: never sent again.
    pub(crate) confirmed: Vec<i64>,
    /// Rows that can never be sent (bad row, or the broker refused the
    /// order for good), with the reason, for the operator.
    pub(crate) rejected: Vec<(i64, String)>,
    /// Rows to give back at once (the broker was at a limit): the next
    /// claim takes them again.
    pub(crate) released: Vec<i64>,
}

impl Marks {
    pub(crate) fn is_empty(&self) -> bool {
        self.confirmed.is_empty() && self.rejected.is_empty() && self.released.is_empty()
    }
}

/// Rows in flight, keyed by order id: several rows may carry one order id
/// (an application that wrote it twice); one order answers them all.
#[derive(Debug)]
pub(crate) struct RelayCore {
    window: usize,
    by_order: HashMap<String, Vec<i64>>,
    rows: HashSet<i64>,
}

impl RelayCore {
    /// A core that keeps at most `window` rows in flight.
    pub(crate) fn new(window: usize) -> Self {
        assert!(window > 0, "the window is validated by the flags");
        RelayCore { window, by_order: HashMap::new(), rows: HashSet::new() }
    }

    /// Rows the next claim may take.
    pub(crate) fn room(&self) -> usize {
        self.window.saturating_sub(self.rows.len())
    }

    /// Rows sent and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.rows.len()
    }

    /// The keys of the rows in flight (their claims are renewed while they
    /// wait for an answer).
    pub(crate) fn rows_in_flight(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.rows.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Takes claimed rows: the orders to send now, and bad rows as
    /// rejections. A row already in flight (claimed again after its lease
    /// ran out while this relay still waits for its answer) is skipped; a
    /// row whose order id is in flight joins that order's answer.
    pub(crate) fn claimed(&mut self, rows: Vec<Row>) -> (Vec<Order>, Marks) {
        let mut orders = Vec::new();
        let mut marks = Marks::default();
        for row in rows {
            if self.rows.contains(&row.id) {
                continue;
            }
            if let Some(ids) = self.by_order.get_mut(&row.order_id) {
                ids.push(row.id);
                self.rows.insert(row.id);
                continue;
            }
            match to_order(&row) {
                Ok(order) => {
                    self.by_order.insert(row.order_id.clone(), vec![row.id]);
                    self.rows.insert(row.id);
                    orders.push(order);
                }
                Err(reason) => marks.rejected.push((row.id, reason)),
            }
        }
        (orders, marks)
    }

    /// The broker's answer to an order: its rows are confirmed, rejected
    /// or (at a broker limit) released for a later claim. An answer for an
    /// order not in flight (a late duplicate) marks nothing.
    pub(crate) fn answered(&mut self, order_id: &str, outcome: &Outcome) -> Marks {
        let mut marks = Marks::default();
        let Some(ids) = self.by_order.remove(order_id) else { return marks };
        for id in &ids {
            self.rows.remove(id);
        }
        match outcome {
            Outcome::Confirmed => marks.confirmed = ids,
            Outcome::Rejected(error) if matches!(error.reason, RejectReason::LimitReached { .. }) => {
                marks.released = ids
            }
            Outcome::Rejected(error) => marks.rejected = ids.into_iter().map(|id| (id, error.to_string())).collect(),
        }
        marks
    }

    /// Forgets orders the producer did not take (it failed to send them):
    /// their rows come back when their claim's lease runs out.
    pub(crate) fn forget(&mut self, order_ids: &[String]) {
        for order_id in order_ids {
            for id in self.by_order.remove(order_id).unwrap_or_default() {
                self.rows.remove(&id);
            }
        }
    }
}

/// A row as an order: the items column's elements, each as its exact JSON
/// text, within the protocol's limits. The error says what is wrong with
/// the row, for its `error` column.
fn to_order(row: &Row) -> Result<Order, String> {
    validate_order_id(&row.order_id).map_err(|error| format!("row {}: {error}", row.id))?;
    let items: Vec<&RawValue> = serde_json::from_str(&row.items).map_err(|error| {
        format!("row {}: items is not a JSON array ({error}): write e.g. '[{{\"sku\": \"A1\"}}]'", row.id)
    })?;
    if items.len() > ORDER_ITEMS_MAX as usize {
        return Err(format!("row {}: {} items; the limit is {ORDER_ITEMS_MAX}", row.id, items.len()));
    }
    let mut total = 0;
    let mut bytes = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item = item.get().as_bytes();
        if item.len() > ITEM_BYTES_MAX {
            return Err(format!("row {}: item {index} is {} bytes; the limit is {ITEM_BYTES_MAX}", row.id, item.len()));
        }
        total += item.len();
        bytes.push(item.to_vec());
    }
    if total > ORDER_BYTES_MAX {
        return Err(format!("row {}: the items are {total} bytes; the limit is {ORDER_BYTES_MAX}", row.id));
    }
    Ok(Order::new(row.order_id.clone(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderly_producer::RejectError;

    fn row(id: i64, order_id: &str, items: &str) -> Row {
        Row { id, order_id: order_id.into(), items: items.into(), attempts: 1 }
    }

    #[test]
    fn rows_become_orders_item_by_item() {
        let mut core = RelayCore::new(10);
        let (orders, marks) = core.claimed(vec![row(1, "o-1", r#"[{"sku": "A1"}, 2, "x"]"#)]);
        assert!(marks.is_empty());
        assert_eq!(
            orders,
            vec![Order::new("o-1", vec![br#"{"sku": "A1"}"#.to_vec(), b"2".to_vec(), b"\"x\"".to_vec()])]
        );
        assert_eq!((core.room(), core.in_flight()), (9, 1));
    }

    #[test]
    fn bad_rows_are_rejected_with_the_reason() {
        let mut core = RelayCore::new(10);
        let (orders, marks) = core.claimed(vec![row(1, "o-1", "{}"), row(2, "", "[]"), row(3, "o-3", "[1,")]);
        assert!(orders.is_empty());
        let reasons: Vec<_> = marks.rejected.iter().map(|(id, _)| *id).collect();
        assert_eq!(reasons, [1, 2, 3]);
        assert!(marks.rejected[0].1.contains("not a JSON array"), "{:?}", marks.rejected);
        assert_eq!(core.in_flight(), 0);
    }

    #[test]
    fn a_row_claimed_again_is_not_sent_twice_and_one_answer_marks_every_row_of_the_order() {
        let mut core = RelayCore::new(10);
        let (orders, _) = core.claimed(vec![row(1, "o-1", "[1]")]);
        assert_eq!(orders.len(), 1);
        let (orders, _) = core.claimed(vec![row(1, "o-1", "[1]"), row(2, "o-1", "[1]")]);
        assert!(orders.is_empty());
        let marks = core.answered("o-1", &Outcome::Confirmed);
        assert_eq!(marks.confirmed, [1, 2]);
        assert_eq!(core.in_flight(), 0);
        // A late duplicate answer marks nothing.
        assert!(core.answered("o-1", &Outcome::Confirmed).is_empty());
    }

    #[test]
    fn a_limit_releases_the_rows_other_rejections_are_final() {
        let mut core = RelayCore::new(10);
        core.claimed(vec![row(1, "o-1", "[1]"), row(2, "o-2", "[1]")]);
        let limit =
            RejectError { reason: RejectReason::LimitReached { detail: "full".into() }, order_id: "o-1".into() };
        assert_eq!(core.answered("o-1", &Outcome::Rejected(limit)).released, [1]);
        let refused = RejectError { reason: RejectReason::UnknownOrder, order_id: "o-2".into() };
        assert_eq!(core.answered("o-2", &Outcome::Rejected(refused)).rejected.len(), 1);
    }

    #[test]
    fn the_window_bounds_the_claims_and_forgotten_orders_free_it() {
        let mut core = RelayCore::new(2);
        core.claimed(vec![row(1, "a", "[]"), row(2, "b", "[]")]);
        assert_eq!(core.room(), 0);
        core.forget(&["a".to_string()]);
        assert_eq!(core.room(), 1);
    }
}

//! Workers' control messages: heartbeats (registration, the welcome
//! handshake, reconciling what a worker holds), acks, nacks and byes, and
//! what a failed delivery attempt leads to.

use std::collections::{BTreeMap, BTreeSet};

use orderly_common::ids::worker_topic;
use orderly_common::limits::{RETRY_DELAY_MS_MAX, WORKERS_MAX};
use orderly_common::protocol::{ControlMsg, FanoutMsg, Heartbeat, Nack, Welcome};
use orderly_common::OrderKey;

use super::{Core, Event, Handle, LostWhy, Millis, Notice, Outbound, Worker, WorkerId, FOREIGN_KEYS_PER_WORKER_MAX};

impl Core {
    /// Handles one decoded control message.
    pub fn handle_control(&mut self, msg: ControlMsg, now_ms: Millis) {
        self.now_ms = now_ms;
        match msg {
            ControlMsg::Heartbeat(hb) => self.on_heartbeat(hb, now_ms),
            ControlMsg::Ack(ack) => {
                self.touch(&ack.worker, ack.incarnation, now_ms);
                self.unlist(&ack.worker, &ack.order);
                self.on_ack(&ack.worker, ack.order);
            }
            ControlMsg::Acks(acks) => {
                self.touch(&acks.worker, acks.incarnation, now_ms);
                for ack in acks.acks {
                    self.unlist(&acks.worker, &ack.order);
                    self.on_ack(&acks.worker, ack.order);
                }
            }
            ControlMsg::Nack(nack) => {
                self.touch(&nack.worker, nack.incarnation, now_ms);
                self.unlist(&nack.worker, &nack.order);
                self.on_nack(nack);
            }
            ControlMsg::Bye(bye) => {
                if self.workers.get(bye.worker.as_str()).is_some_and(|w| w.incarnation == bye.incarnation) {
                    self.remove_worker(&bye.worker, LostWhy::Bye);
                }
            }
        }
        self.pump();
        self.after_input();
    }

    /// A POSACK from the worker holding the order's current dispatch
    /// retires it; so does a late one from the worker of the latest
    /// dispatch while none is current (requeued, or dead-lettered in the
    /// meantime: it was processed after all). Any other worker never
    /// received the order: its ack is refused and counted, or any worker
    /// key could delete any order.
    fn on_ack(&mut self, worker: &str, key: OrderKey) {
        // One probe: the handle, then the order by it.
        let handle = self.orders.handle(&key);
        match handle.and_then(|h| self.orders.by_handle(h)) {
            Some(order) if order.held_by(worker) => {
                // Timed only when this dispatch is current (not a late ack).
                if let Some(held) = self.workers.get(worker).zip(handle).and_then(|(w, h)| w.in_flight.get(&h)) {
                    self.timings.handler.observe_ms(self.now_ms.saturating_sub(held.sent_ms));
                }
                self.record(Event::Acked { key })
            }
            Some(_) => self.counters.acks_refused += 1,
            None => self.counters.duplicate_acks += 1,
        }
    }

    /// Only a nack of the current attempt on the worker that holds it
    /// counts: older ones were overtaken by a requeue. One from a worker
    /// that never held the order (nor held its latest dispatch) is refused.
    fn on_nack(&mut self, nack: Nack) {
        let Some(order) = self.orders.get(&nack.order) else {
            self.counters.stale_nacks += 1;
            return;
        };
        if !order.held_by(&nack.worker) {
            self.counters.acks_refused += 1;
            return;
        }
        let current = order.attempts() == nack.attempt && order.in_flight_to() == Some(nack.worker.as_str());
        if !current {
            self.counters.stale_nacks += 1;
        } else if nack.returned {
            self.counters.orders_returned += 1;
            let reason = format!("worker {} returned it unrun: {}", nack.worker, nack.reason);
            if let Some(w) = self.workers.get_mut(nack.worker.as_str()) {
                w.returning = true;
            }
            self.give_back(nack.order, reason);
        } else if !nack.retry {
            let reason = format!("worker {} refused it: {}", nack.worker, nack.reason);
            let at_unix_ms = self.now_unix_ms();
            self.record(Event::DeadLettered { key: nack.order, reason, at_unix_ms });
        } else {
            let reason = format!("worker {} failed it: {}", nack.worker, nack.reason);
            let delay_ms = match nack.delay_ms {
                Some(asked) => asked.min(RETRY_DELAY_MS_MAX),
                None => self.backoff_ms(&nack.order),
            };
            self.fail(nack.order, reason, delay_ms);
        }
    }

    /// A worker acked or nacked `key`: it no longer holds it.
    fn unlist(&mut self, worker: &str, key: &orderly_common::OrderKey) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.foreign.remove(key);
        }
    }

    fn on_heartbeat(&mut self, hb: Heartbeat, now_ms: Millis) {
        let known = self.workers.get(hb.worker.as_str()).map(|w| w.incarnation);
        if known.is_some_and(|inc| inc != hb.incarnation) {
            // Restarted under the same id: what the old process held is lost.
            self.remove_worker(&hb.worker, LostWhy::Restart);
        }
        if !self.workers.contains_key(hb.worker.as_str()) && !self.register_worker(&hb, now_ms) {
            return;
        }
        self.note_broken(&hb);
        let orders = &self.orders;
        let worker = self.workers.get_mut(hb.worker.as_str()).expect("registered above");
        worker.last_seen_ms = now_ms;
        worker.capacity = hb.capacity;
        worker.dispatches_max = hb.dispatches_max;
        worker.draining = hb.draining;
        worker.returning = false;
        // What it holds besides our dispatches fills its slots all the same.
        let ours = |key: &OrderKey| orders.handle(key).is_some_and(|h| worker.in_flight.contains_key(&h));
        let foreign = hb.in_flight.iter().filter(|key| !ours(key)).take(FOREIGN_KEYS_PER_WORKER_MAX).cloned().collect();
        worker.foreign = foreign;
        if worker.ready {
            self.reconcile(&hb, now_ms);
        } else if hb.welcome == Some(worker.nonce) {
            worker.ready = true;
            let notice = Notice::WorkerJoined { worker: hb.worker.clone(), capacity: hb.capacity };
            self.notify(notice);
        } else {
            // Not echoed yet: the welcome may have gone out before the
            // subscription existed (slow joiner), so send it again.
            let body = FanoutMsg::Welcome(Welcome { nonce: worker.nonce, orders_max: 0 }).encode();
            self.outbound.push_back(Outbound::new(worker.topic.clone(), body));
        }
    }

    /// A new worker, not ready until it echoes its welcome nonce. False
    /// (and counted) when `WORKERS_MAX` are known already.
    fn register_worker(&mut self, hb: &Heartbeat, now_ms: Millis) -> bool {
        if self.workers.len() >= WORKERS_MAX {
            self.counters.workers_refused += 1;
            return false;
        }
        let nonce = self.next_nonce();
        let worker = Worker {
            incarnation: hb.incarnation,
            capacity: hb.capacity,
            in_flight: BTreeMap::new(),
            foreign: BTreeSet::new(),
            broken: None,
            last_seen_ms: now_ms,
            draining: false,
            nonce,
            ready: false,
            returning: false,
            dispatches_max: hb.dispatches_max,
            topic: worker_topic(&hb.worker).into(),
        };
        self.workers.insert(WorkerId::from(hb.worker.as_str()), worker);
        true
    }

    /// Requeues orders the worker should hold but does not list: the
    /// dispatch was lost (PUB drops at its high-water mark) or refused. Only
    /// dispatches older than (liveness + 1) heartbeat intervals are judged,
    /// so one still on its way is not mistaken for a lost one.
    fn reconcile(&mut self, hb: &Heartbeat, now_ms: Millis) {
        let Some(worker) = self.workers.get(hb.worker.as_str()) else { return };
        // A heartbeat is judged by when it arrives, not when it was written,
        // so allow as much delay as liveness itself does (plus one interval).
        let grace_ms = self.config.heartbeat_interval_ms * (u64::from(self.config.heartbeat_liveness) + 1);
        let listed: BTreeSet<Handle> = hb.in_flight.iter().filter_map(|key| self.orders.handle(key)).collect();
        let lost: Vec<OrderKey> = worker
            .in_flight
            .iter()
            .filter(|(handle, h)| now_ms >= h.sent_ms + grace_ms && !listed.contains(handle))
            .filter_map(|(&handle, _)| self.orders.key(handle).map(|k| k.to_key()))
            .collect();
        let extended_ms = now_ms + self.config.ack_timeout_ms;
        let cap_ms = self.config.attempt_timeout_ms;
        if let Some(worker) = self.workers.get_mut(hb.worker.as_str()) {
            for handle in &listed {
                if let Some(h) = worker.in_flight.get_mut(handle) {
                    // Listed or not, an attempt ends at the time cap.
                    h.deadline_ms = h.deadline_ms.max(extended_ms).min(h.sent_ms + cap_ms);
                }
            }
        }
        for key in lost {
            self.give_back(key, format!("worker {} does not hold it (dispatch lost or refused)", hb.worker));
        }
    }

    /// A heartbeat's `broken`: noticed when it changes.
    fn note_broken(&mut self, hb: &Heartbeat) {
        let Some(worker) = self.workers.get_mut(hb.worker.as_str()) else { return };
        if worker.broken == hb.broken {
            return;
        }
        worker.broken = hb.broken.clone();
        let notice = match &hb.broken {
            Some(reason) => Notice::WorkerBroken { worker: hb.worker.clone(), reason: reason.clone() },
            None => Notice::WorkerRecovered { worker: hb.worker.clone() },
        };
        self.notify(notice);
    }

    fn touch(&mut self, worker: &str, incarnation: u64, now_ms: Millis) {
        if let Some(w) = self.workers.get_mut(worker) {
            if w.incarnation == incarnation {
                w.last_seen_ms = now_ms;
            }
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce_next = self.nonce_next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.nonce_next
    }

    /// The worker is gone: its orders are requeued at once (an attempt
    /// spent, but no delay: the worker failed, maybe not the order).
    pub(super) fn remove_worker(&mut self, id: &str, why: LostWhy) {
        let Some(worker) = self.workers.remove(id) else { return };
        let requeued = worker.in_flight.len();
        let keys: Vec<OrderKey> =
            worker.in_flight.into_keys().filter_map(|handle| self.orders.key(handle).map(|k| k.to_key())).collect();
        for key in keys {
            self.fail(key, format!("worker {} ({id})", why.as_str()), 0);
        }
        self.notify(Notice::WorkerLost { worker: id.to_owned(), why, requeued });
    }

    /// A delivery attempt failed: requeue after `delay_ms`, or dead-letter
    /// once attempts are used up.
    pub(super) fn fail(&mut self, key: OrderKey, reason: String, delay_ms: u64) {
        let attempts = self.orders.get(&key).map_or(0, |o| o.attempts());
        if attempts >= self.config.max_attempts {
            let reason = format!("{reason}; gave up after {attempts} attempts");
            let at_unix_ms = self.now_unix_ms();
            self.record(Event::DeadLettered { key, reason, at_unix_ms });
        } else {
            self.record(Event::Requeued { key, reason, refunded: false, delay_ms });
        }
    }

    /// The worker never ran the current attempt (returned it, or never
    /// received it): requeued at once, the attempt not spent, so refusals
    /// and losses alone never dead-letter an order.
    fn give_back(&mut self, key: OrderKey, reason: String) {
        self.record(Event::Requeued { key, reason, refunded: true, delay_ms: 0 });
    }

    /// The backoff after `key`'s latest attempt failed:
    /// `initial × 2^(attempts−1)`, at most `retry_delay_max_ms`, drawn
    /// uniformly from its upper half (jitter, so failures do not return in
    /// lockstep). 0 with `retry_delay_initial_ms` 0.
    pub(super) fn backoff_ms(&mut self, key: &OrderKey) -> u64 {
        let initial = self.config.retry_delay_initial_ms;
        if initial == 0 {
            return 0;
        }
        let attempts = self.orders.get(key).map_or(1, |o| o.attempts().max(1));
        let factor = 1u64.checked_shl(attempts - 1).unwrap_or(u64::MAX);
        let full = initial.saturating_mul(factor).min(self.config.retry_delay_max_ms);
        self.rng.between(full / 2, full).max(1)
    }
}

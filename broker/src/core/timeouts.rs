//! Time passing: the broker's heartbeat, silent workers, ack deadlines,
//! expired partial orders and the dedup window.

use orderly_common::ids::BROADCAST_TOPIC;
use orderly_common::protocol::{BrokerHeartbeat, FanoutMsg, RejectReason};
use orderly_common::OrderKey;

use super::{Core, Event, LostWhy, Millis, Outbound, WorkerId};

impl Core {
    /// Advances time: broker heartbeats, dead workers, expired partials.
    pub fn handle_timeout(&mut self, now_ms: Millis) {
        self.now_ms = now_ms;
        if now_ms >= self.heartbeat_due_ms {
            self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
            self.broadcast_heartbeat();
        }
        self.expire_workers(now_ms);
        self.expire_deadlines(now_ms);
        if now_ms >= self.partial_sweep_due_ms {
            self.partial_sweep_due_ms = now_ms + self.config.heartbeat_interval_ms;
            self.sweep_recent(now_ms);
            self.expire_partials(now_ms);
        }
        self.pump();
        self.after_input();
    }

    fn broadcast_heartbeat(&mut self) {
        let body = FanoutMsg::Heartbeat(BrokerHeartbeat {
            incarnation: self.config.incarnation,
            interval_ms: self.config.heartbeat_interval_ms,
            member: self.group_view.member,
            leader: self.group_view.leader,
            term: self.group_view.term,
        })
        .encode();
        self.outbound.push_back(Outbound::new(BROADCAST_TOPIC.to_vec(), body));
    }

    /// Workers silent for `worker_timeout_ms` are dead: their orders move.
    fn expire_workers(&mut self, now_ms: Millis) {
        let timeout = self.config.worker_timeout_ms();
        let dead: Vec<WorkerId> =
            self.workers.iter().filter(|(_, w)| now_ms >= w.last_seen_ms + timeout).map(|(id, _)| id.clone()).collect();
        for id in dead {
            self.counters.workers_expired += 1;
            self.remove_worker(&id, LostWhy::Silence);
        }
    }

    /// In-flight orders past their ack deadline, or held for the whole
    /// attempt time cap (heartbeats extend the deadline up to it), count as
    /// a failed attempt.
    fn expire_deadlines(&mut self, now_ms: Millis) {
        let cap_ms = self.config.attempt_timeout_ms;
        let orders = &self.orders;
        let overdue: Vec<(OrderKey, WorkerId, bool)> = self
            .workers
            .iter()
            .flat_map(|(id, w)| {
                w.in_flight.iter().filter(|(_, h)| now_ms >= h.deadline_ms).filter_map(move |(&handle, h)| {
                    let key = orders.key(handle)?.to_key();
                    Some((key, id.clone(), now_ms >= h.sent_ms + cap_ms))
                })
            })
            .collect();
        for (key, worker, capped) in overdue {
            let reason = if capped {
                self.counters.attempt_timeouts += 1;
                format!("worker {worker} held it longer than the attempt time cap of {cap_ms} ms")
            } else {
                self.counters.ack_timeouts += 1;
                format!("no ack from worker {worker} within {} ms", self.config.ack_timeout_ms)
            };
            let delay_ms = self.backoff_ms(&key);
            self.fail(key, reason, delay_ms);
        }
    }

    /// Partial orders older than `partial_age_max_ms` are dropped (and
    /// their producers told): a producer that never finishes cannot hold
    /// a partial slot for ever.
    fn expire_partials(&mut self, now_ms: Millis) {
        if self.disk_paused_since.is_some() {
            return; // their producers are blocked by us (see `set_disk_paused`)
        }
        let age_max = self.config.partial_age_max_ms;
        let expired: Vec<(OrderKey, u64)> = self
            .partials
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.began_ms) > age_max)
            .map(|(k, p)| ((**k).clone(), now_ms - p.began_ms))
            .collect();
        for (key, age_ms) in expired {
            self.drop_partial(key, RejectReason::Expired { age_ms });
        }
    }

    /// Records `Forgotten` for keys past the dedup window (or beyond the
    /// key bound, oldest first).
    fn sweep_recent(&mut self, now_ms: Millis) {
        while let Some(&handle) = self.recent_order.front() {
            // A stale handle (forgotten, or remembered again since) is
            // dropped; the current one is its key's.
            if let Some(remembered) = self.recent.by_handle(handle) {
                let expired = now_ms.saturating_sub(remembered.at_ms()) >= self.config.dedup_window_ms;
                let over = self.recent.len() > self.config.dedup_keys_max;
                if !(expired || over) {
                    break;
                }
            }
            self.recent_order.pop_front();
            if let Some(key) = self.recent.key(handle) {
                let key = key.to_key();
                self.record(Event::Forgotten { key });
            }
        }
    }
}

impl Core {
    /// The IO loop tells whether it is not reading intake because the
    /// journal's disk is full. Partial orders do not age meanwhile: their
    /// remaining items wait unread in the broker's own queue, so expiring
    /// them would blame producers for the broker's disk. When reading
    /// resumes, every partial's age is shifted by the pause. Only the disk:
    /// a pause by the core's own bounds (say, `partial_orders_max`) must
    /// still let partial orders expire, or slots held by producers that
    /// never finish would never free.
    pub fn set_disk_paused(&mut self, paused: bool, now_ms: Millis) {
        match (self.disk_paused_since, paused) {
            (None, true) => self.disk_paused_since = Some(now_ms),
            (Some(since), false) => {
                self.disk_paused_since = None;
                let paused_ms = now_ms.saturating_sub(since);
                for partial in self.partials.values_mut() {
                    partial.began_ms = partial.began_ms.saturating_add(paused_ms).min(now_ms);
                }
            }
            _ => {}
        }
    }
}

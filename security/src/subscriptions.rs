//! Which fanout topics a key may subscribe to.
//!
//! The fanout socket is an XPUB in manual mode under CURVE: every
//! subscription a client sends is checked here against the role and id of
//! the key that sent it, and only exact topics pass (SUB filters are byte
//! prefixes, so `""` or `w/` would match everyone's messages).

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};

use crate::authorized::Role;

/// True when a key bound to `role` and `id` may subscribe to `topic`: its
/// own topic exactly, or the broadcast topic exactly.
pub fn may_subscribe(role: Role, id: &str, topic: &[u8]) -> bool {
    if topic == BROADCAST_TOPIC {
        return true;
    }
    let own = match role {
        Role::Worker => worker_topic(id),
        Role::Producer => producer_topic(id),
        // Broker keys never reach the fanout (ZAP refuses them there).
        Role::Broker => return false,
    };
    topic == own.as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_own_topics_and_the_broadcast() {
        assert!(may_subscribe(Role::Worker, "w1", b"w/w1/"));
        assert!(may_subscribe(Role::Worker, "w1", b"b/"));
        assert!(may_subscribe(Role::Producer, "shop", b"p/shop/"));
        assert!(may_subscribe(Role::Producer, "shop", b"b/"));
        for refused in [&b""[..], b"w/", b"w/w1", b"w/w2/", b"w/w1/x", b"p/", b"p/w1/", b"b", b"b/x"] {
            assert!(!may_subscribe(Role::Worker, "w1", refused), "{:?}", String::from_utf8_lossy(refused));
        }
        // The role comes from the key: a producer whose id is a worker's
        // id may not read that worker's topic.
        assert!(!may_subscribe(Role::Producer, "w1", b"w/w1/"));
        assert!(!may_subscribe(Role::Worker, "shop", b"p/shop/"));
    }
}

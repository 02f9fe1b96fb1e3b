//! The authorized-keys file: one client key per line with its role and id.
//!
//! ```text
//! # public key (Z85)                         role      id
//! rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7   producer  shop-1
//! Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID   worker    w1
//! E%Jxj8C0bq.bQm6*0?Q$3l}xFU9SSZ0Rbo5ZeBo[   broker    2
//! ```
//!
//! A `broker` key belongs to another member of a broker group; its id is
//! that member's id (a number from 1, as raft numbers members).

use std::collections::HashMap;
use std::path::Path;

use orderly_common::ids::validate_peer_id;

use crate::keys::{decode, KEY_BYTES};

/// Lines in an authorized-keys file, at most.
pub const AUTHORIZED_KEYS_MAX: usize = 100_000;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May push to intake and subscribe to its own confirms.
    Producer,
    /// May push to control and subscribe to its orders.
    Worker,
    /// Another member of the broker group: may connect to the peer socket
    /// only. Its id is the member id.
    Broker,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Producer => 1,
            Role::Worker => 2,
            Role::Broker => 4,
        }
    }

    /// The role named `name` (as in the authorized-keys file).
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "producer" => Some(Role::Producer),
            "worker" => Some(Role::Worker),
            "broker" => Some(Role::Broker),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Broker => "broker",
        }
    }
}

/// A bad authorized-keys file.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizedError {
    #[error("cannot read authorized keys {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} line {line}: {detail}")]
    Line { path: String, line: usize, detail: String },
}

/// The keys the broker admits, each bound to a role and an id.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    by_key: HashMap<[u8; KEY_BYTES], (Role, String)>,
    /// id → roles bound to it (bit per role), for the per-message check.
    roles_by_id: HashMap<String, u8>,
}

impl AuthorizedKeys {
    pub fn load(path: &Path) -> Result<AuthorizedKeys, AuthorizedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| AuthorizedError::Read { path: path.display().to_string(), error })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<AuthorizedKeys, AuthorizedError> {
        let mut keys = AuthorizedKeys::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |detail: String| AuthorizedError::Line { path: path.to_owned(), line: index + 1, detail };
            if keys.by_key.len() >= AUTHORIZED_KEYS_MAX {
                return Err(bad(format!("more than {AUTHORIZED_KEYS_MAX} keys")));
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, role, id] = fields[..] else {
                return Err(bad("expected `PUBLIC-KEY ROLE ID` (role: producer, worker or broker)".into()));
            };
            let key = decode(key).ok_or_else(|| bad(format!("{key:?} is not a Z85 public key (40 characters)")))?;
            let Some(role) = Role::from_name(role) else {
                return Err(bad(format!("role {role:?} is not producer, worker or broker")));
            };
            validate_peer_id("id", id).map_err(|e| bad(e.to_string()))?;
            if role == Role::Broker && broker_member_id(id).is_none() {
                return Err(bad(format!("a broker's id is its member id, a number from 1; {id:?} is not")));
            }
            if keys.by_key.insert(key, (role, id.to_owned())).is_some() {
                return Err(bad("this key is listed twice".into()));
            }
            *keys.roles_by_id.entry(id.to_owned()).or_default() |= role.bit();
        }
        Ok(keys)
    }

    /// The role and id bound to a public key.
    pub fn lookup(&self, key: &[u8]) -> Option<&(Role, String)> {
        let key: &[u8; KEY_BYTES] = key.try_into().ok()?;
        self.by_key.get(key)
    }

    /// True when some key binds `id` in `role` (checked per message, so a
    /// key removed by a reload stops working on open connections too).
    pub fn admits(&self, role: Role, id: &str) -> bool {
        self.roles_by_id.get(id).is_some_and(|roles| roles & role.bit() != 0)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The member id of a broker key's id text: a number from 1 (raft's 0
/// means "no member"), in plain decimal so each member has one spelling.
pub fn broker_member_id(id: &str) -> Option<u64> {
    let number: u64 = id.parse().ok()?;
    (number > 0 && number.to_string() == id).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{encode, KeyPair};

    #[test]
    fn parses_and_names_bad_lines() {
        let a = KeyPair::generate().unwrap();
        let text = format!("# comment\n{} producer shop-1\n\n", encode(&a.public));
        let keys = AuthorizedKeys::parse(&text, "ak").unwrap();
        assert_eq!(keys.lookup(&a.public), Some(&(Role::Producer, "shop-1".to_string())));
        assert!(keys.admits(Role::Producer, "shop-1") && !keys.admits(Role::Worker, "shop-1"));
        let err = AuthorizedKeys::parse("nonsense producer p\n", "ak").unwrap_err().to_string();
        assert!(err.starts_with("ak line 1:"), "{err}");
        let err = AuthorizedKeys::parse(&format!("{} admin x\n", encode(&a.public)), "ak").unwrap_err().to_string();
        assert!(err.contains("admin"), "{err}");
    }

    #[test]
    fn broker_keys_carry_a_member_id() {
        let a = KeyPair::generate().unwrap();
        let keys = AuthorizedKeys::parse(&format!("{} broker 2\n", encode(&a.public)), "ak").unwrap();
        assert_eq!(keys.lookup(&a.public), Some(&(Role::Broker, "2".to_string())));
        for bad in ["0", "02", "b2", "-1", "18446744073709551616"] {
            let err = AuthorizedKeys::parse(&format!("{} broker {bad}\n", encode(&a.public)), "ak").unwrap_err();
            assert!(err.to_string().contains("member id"), "{bad}: {err}");
        }
        assert_eq!(broker_member_id("18446744073709551615"), Some(u64::MAX));
    }
}

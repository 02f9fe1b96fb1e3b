//! CURVE (RFC 26) keys, the authorized-keys file, and the ZAP (RFC 27)
//! handler that admits only authorized keys and binds each to its role and
//! id. Shared by the three binaries.

pub mod authorized;
pub mod keys;
pub mod subscriptions;
pub mod zap;

pub use authorized::{AuthorizedKeys, Role};
pub use keys::{KeyError, KeyPair};
pub use subscriptions::may_subscribe;

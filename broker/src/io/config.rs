//! What the broker is told to do: the validated settings `run` takes.

use std::path::{Path, PathBuf};

use orderly_common::Endpoint;

use crate::core::CoreConfig;

/// The journal's directory inside the broker's data directory.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// Everything the broker needs to run, validated.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub intake: Endpoint,
    pub fanout: Endpoint,
    pub control: Endpoint,
    pub data_dir: PathBuf,
    pub journal: orderly_journal::Options,
    pub core: CoreConfig,
    /// How often a status line is logged.
    pub status_interval_ms: u64,
    /// The admin HTTP endpoint (address, token, host names); `None`
    /// turns it off.
    pub admin: Option<crate::admin::AdminConfig>,
    /// CURVE on all three sockets, with a ZAP handler; `None` is plaintext.
    pub curve: Option<CurveConfig>,
    /// Allow plaintext on endpoints reachable from other machines.
    pub allow_insecure: bool,
    /// Run as one member of a replicated group (`--group`); `None`: a
    /// single broker.
    pub group: Option<GroupSettings>,
}

/// `--group FILE --node-id ID`: the group and which member this is. The
/// member's endpoints (intake, fanout, control, admin) are the ones above,
/// taken from the group file.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub group: orderly_replication::Group,
    pub node_id: u64,
    /// `--join`: a new member of a running group; on a new data directory
    /// it starts with no voters and waits for the leader's log.
    pub join: bool,
}

/// The Raft log's directory inside a group member's data directory.
pub fn raft_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("raft")
}

/// The broker's CURVE server key and the clients it admits.
#[derive(Debug, Clone)]
pub struct CurveConfig {
    pub keys: orderly_security::KeyPair,
    pub authorized_keys: PathBuf,
}

//! The IO loop's failures. Each message says what was being done; the
//! cause is the error's source, so `{:#}` prints it once.

use std::path::{Path, PathBuf};

use orderly_journal::JournalError;

use crate::admin::AdminError;
use crate::core::codec::EventDecodeError;

/// Failures of the IO loop.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the {socket} socket to {endpoint} (is another broker running, or the port taken?)")]
    Bind {
        socket: &'static str,
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    #[error("ZeroMQ {during} failed")]
    Zmq {
        during: &'static str,
        #[source]
        source: zmq::Error,
    },
    #[error(
        "another broker is using the data directory {0} (its journal is locked); stop it or choose another --data-dir"
    )]
    Locked(PathBuf),
    /// The damage comes first and the repair advice after it, so the
    /// journal's error is part of the message (it is not a source: the
    /// advice would otherwise end up before the damage).
    #[error("{cause}\nThe journal is damaged where recovery may not cut it off. See the damage with\n  orderly-broker journal verify --data-dir {data_dir}\nthen cut it off (nothing is deleted; later data is moved to a quarantine directory) with\n  orderly-broker journal repair --data-dir {data_dir}", data_dir = data_dir.display())]
    Corrupt { data_dir: PathBuf, cause: JournalError },
    #[error("journal {during} failed")]
    Journal {
        during: &'static str,
        #[source]
        source: JournalError,
    },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("refusing to bind {endpoint} without CURVE: anyone who can reach it could read and inject orders. Configure --curve-secret-key and --authorized-keys (see docs/SECURITY.md), bind a loopback address, or pass --allow-insecure")]
    Insecure { endpoint: String },
    #[error(transparent)]
    Authorized(#[from] orderly_security::authorized::AuthorizedError),
    #[error(transparent)]
    BadRecord(#[from] EventDecodeError),
    #[error("raft: {0}")]
    Raft(#[from] orderly_replication::NodeError),
    #[error("raft storage: {0}")]
    RaftStorage(#[from] orderly_replication::StorageError),
    #[error("peer transport: {0}")]
    Peer(#[from] orderly_peer::PeerError),
    #[error("group: {0}")]
    Group(String),
}

impl BrokerError {
    pub(super) fn from_open(data_dir: &Path, error: JournalError) -> BrokerError {
        match error {
            JournalError::Locked { .. } => BrokerError::Locked(data_dir.to_path_buf()),
            e @ (JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. }) => {
                BrokerError::Corrupt { data_dir: data_dir.to_path_buf(), cause: e }
            }
            source => BrokerError::Journal { during: "open", source },
        }
    }
}

pub(super) fn journal_err(during: &'static str) -> impl FnOnce(JournalError) -> BrokerError {
    move |source| BrokerError::Journal { during, source }
}

pub(super) fn zmq_err(during: &'static str) -> impl FnOnce(zmq::Error) -> BrokerError {
    move |source| BrokerError::Zmq { during, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_printed_once() {
        let error = BrokerError::Bind {
            socket: "intake",
            endpoint: "tcp://127.0.0.1:5570".into(),
            source: zmq::Error::EADDRINUSE,
        };
        let cause = zmq::Error::EADDRINUSE.to_string();
        let shown = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(shown.matches(&cause).count(), 1, "{shown}");
        assert!(shown.starts_with("cannot bind the intake socket to tcp://127.0.0.1:5570"), "{shown}");
    }
}

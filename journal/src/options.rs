//! How the journal is tuned: fsync policy, segment size, limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{JournalError, ParseFsyncPolicyError};
use crate::format::RECORD_HEADER_BYTES;
use crate::limits::{
    BATCH_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX, SEGMENT_BYTES_TARGET_DEFAULT, ZERO_AHEAD_BYTES_DEFAULT,
    ZERO_AHEAD_BYTES_MAX,
};

/// When `commit` fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every commit that wrote something fsyncs: after `commit` returns `Ok`,
    /// every appended record is durable. The only policy under which a commit
    /// may be acknowledged to a producer.
    Always,
    /// A commit fsyncs when at least this long has passed since the last
    /// fsync; a crash may lose up to that much (plus idle time, unless the
    /// caller commits or `sync`s on a timer).
    Interval(Duration),
    /// Never fsync records (the OS writes back when it likes). For tests and
    /// benchmarks. New segments are still fsynced: that is rare and keeps the
    /// directory consistent.
    Never,
}

const FSYNC_ALWAYS: &str = "always";
const FSYNC_NEVER: &str = "never";
const FSYNC_INTERVAL_PREFIX: &str = "interval:";

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    /// Parses `always`, `never` or `interval:MS` (milliseconds, at least 1).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseFsyncPolicyError { input: input.to_string() };
        match input {
            FSYNC_ALWAYS => Ok(FsyncPolicy::Always),
            FSYNC_NEVER => Ok(FsyncPolicy::Never),
            _ => {
                let millis = input.strip_prefix(FSYNC_INTERVAL_PREFIX).ok_or_else(error)?;
                // Only plain digits: `u64::from_str` would also take a `+`.
                if millis.is_empty() || !millis.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(error());
                }
                let millis: u64 = millis.parse().map_err(|_| error())?;
                if millis == 0 {
                    return Err(error());
                }
                Ok(FsyncPolicy::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str(FSYNC_ALWAYS),
            FsyncPolicy::Never => f.write_str(FSYNC_NEVER),
            FsyncPolicy::Interval(interval) => write!(f, "{FSYNC_INTERVAL_PREFIX}{}", interval.as_millis()),
        }
    }
}

/// Tuning of one open journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub fsync: FsyncPolicy,
    /// The next batch goes to a new segment once the active one holds at
    /// least this many bytes (a segment may exceed it by one batch).
    pub segment_bytes_target: u64,
    /// Largest record body accepted on append and on read; at most
    /// [`RECORD_BYTES_MAX`].
    pub record_bytes_max: u32,
    /// Largest number of bytes (framing included) buffered between commits;
    /// at least one largest record.
    pub batch_bytes_max: u64,
    /// A small commit that writes past the zeros already written in the
    /// active segment also writes zeros up to this many bytes past its end
    /// (never past the preallocated length), in the same write
    /// ([`ZERO_AHEAD_BYTES_DEFAULT`] says why). 0: never. The bytes on
    /// disk mean the same either way: preallocated space reads as zeros.
    pub zero_ahead_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::Always,
            segment_bytes_target: SEGMENT_BYTES_TARGET_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            zero_ahead_bytes: ZERO_AHEAD_BYTES_DEFAULT,
        }
    }
}

impl Options {
    /// Checks how the fields relate; `Journal::open` calls it.
    pub fn validate(&self) -> Result<(), JournalError> {
        let invalid = |reason: String| Err(JournalError::InvalidOptions { reason });
        if self.record_bytes_max > RECORD_BYTES_MAX {
            return invalid(format!("record_bytes_max {} is above {RECORD_BYTES_MAX}", self.record_bytes_max));
        }
        let record_framed_max = RECORD_HEADER_BYTES as u64 + u64::from(self.record_bytes_max);
        if self.batch_bytes_max < record_framed_max {
            return invalid(format!(
                "batch_bytes_max {} cannot hold one record of record_bytes_max {} (+{RECORD_HEADER_BYTES} framing)",
                self.batch_bytes_max, self.record_bytes_max
            ));
        }
        if self.zero_ahead_bytes > ZERO_AHEAD_BYTES_MAX {
            return invalid(format!("zero_ahead_bytes {} is above {ZERO_AHEAD_BYTES_MAX}", self.zero_ahead_bytes));
        }
        if let FsyncPolicy::Interval(interval) = self.fsync {
            if interval.is_zero() {
                return invalid("fsync interval must be positive (use \"always\")".to_string());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_displays_back() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().expect("valid policy");
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!("interval:5".parse(), Ok(FsyncPolicy::Interval(Duration::from_millis(5))));
        for bad in ["", "Always", "interval:", "interval:0", "interval:+5", "interval:-1", "interval:1s", "sometimes"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn options_validate_their_limits() {
        assert!(Options::default().validate().is_ok());
        let too_big = Options { record_bytes_max: RECORD_BYTES_MAX + 1, ..Options::default() };
        assert!(matches!(too_big.validate(), Err(JournalError::InvalidOptions { .. })));
        let small_batch = Options { batch_bytes_max: 10, ..Options::default() };
        assert!(small_batch.validate().is_err());
        let zeros = Options { zero_ahead_bytes: crate::limits::ZERO_AHEAD_BYTES_MAX + 1, ..Options::default() };
        assert!(zeros.validate().is_err());
        let zero_interval = Options { fsync: FsyncPolicy::Interval(Duration::ZERO), ..Options::default() };
        assert!(zero_interval.validate().is_err());
    }
}

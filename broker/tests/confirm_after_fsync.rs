//! A confirm never precedes the fsync of its records: the end of every
//! broker turn (`persist_then_publish`) driven with a journal double that
//! records the order of calls. (The real binary is covered by
//! `tests/scenarios/broker_crash.sh`: every order confirmed before a
//! kill -9 is delivered after the restart.)

use std::cell::RefCell;
use std::rc::Rc;

use orderly_broker::compaction::Anchors;
use orderly_broker::core::{Core, CoreConfig};
use orderly_broker::io::{persist_then_publish, BrokerError, EventLog, Recorder};
use orderly_common::protocol::{Begin, FanoutMsg, Finish, IntakeMsg, Item};
use orderly_journal::{CommitInfo, JournalError, RecordAt};
use serde_bytes::ByteBuf;

#[derive(Clone, Default)]
struct Calls(Rc<RefCell<Vec<String>>>);

impl Calls {
    fn push(&self, call: impl Into<String>) {
        self.0.borrow_mut().push(call.into());
    }
    fn list(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Records appends and commits; a commit is where the real journal fsyncs.
struct JournalDouble {
    calls: Calls,
    seq: u64,
    fail_commit: bool,
}

impl EventLog for JournalDouble {
    fn append(&mut self, _body: &[u8]) -> Result<RecordAt, JournalError> {
        self.seq += 1;
        self.calls.push("append");
        Ok(RecordAt { seq: self.seq, segment: 1, offset: self.seq * 100 })
    }

    fn commit_lazily(&mut self) -> Result<CommitInfo, JournalError> {
        self.calls.push("commit (lazy)");
        Ok(CommitInfo { records: 0, bytes: 0, fsynced: false, rolled: false, segment_id: 1 })
    }

    fn read_at(&mut self, _at: RecordAt) -> Result<Vec<u8>, JournalError> {
        unreachable!("orders under the payload cache are dispatched from RAM")
    }

    fn commit(&mut self) -> Result<CommitInfo, JournalError> {
        if self.fail_commit {
            self.calls.push("commit failed");
            return Err(JournalError::Io { path: "double".into(), source: std::io::Error::other("disk full") });
        }
        self.calls.push("commit+fsync");
        Ok(CommitInfo { records: 0, bytes: 0, fsynced: true, rolled: false, segment_id: 1 })
    }
}

fn send_order(core: &mut Core, order: &str) {
    let p = || "p".to_string();
    core.handle_intake(IntakeMsg::Begin(Begin { producer: p(), order: order.into() }), 1);
    let data = ByteBuf::from(b"1".to_vec());
    core.handle_intake(IntakeMsg::Item(Item { producer: p(), order: order.into(), seq: 0, data }), 1);
    core.handle_intake(IntakeMsg::Finish(Finish { producer: p(), order: order.into(), count: 1 }), 1);
}

fn turn(core: &mut Core, fail_commit: bool) -> (Calls, Result<(), BrokerError>) {
    let calls = Calls::default();
    let mut recorder = Recorder::new(JournalDouble { calls: calls.clone(), seq: 0, fail_commit }, Anchors::default());
    let publish_calls = calls.clone();
    let result = persist_then_publish(core, &mut recorder, |out| {
        match FanoutMsg::decode(&out.body) {
            Ok(FanoutMsg::Confirm(c)) => publish_calls.push(format!("publish confirm {}", c.order)),
            Ok(FanoutMsg::Confirms(c)) => {
                for order in c.orders {
                    publish_calls.push(format!("publish confirm {order}"));
                }
            }
            _ => publish_calls.push("publish other"),
        }
        Ok(())
    });
    (calls, result.map(drop))
}

#[test]
fn every_confirm_follows_the_commit_of_its_records() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    send_order(&mut core, "a");
    send_order(&mut core, "b");
    let (calls, result) = turn(&mut core, false);
    result.unwrap();
    let calls = calls.list();
    let commit = calls.iter().position(|c| c == "commit+fsync").expect("a commit");
    let last_append = calls.iter().rposition(|c| c == "append").expect("appends");
    assert!(last_append < commit, "every record is appended before the commit: {calls:?}");
    for order in ["a", "b"] {
        let confirm = calls.iter().position(|c| *c == format!("publish confirm {order}")).expect("confirmed");
        assert!(commit < confirm, "confirm of {order} before the fsync: {calls:?}");
    }
}

#[test]
fn a_failed_commit_publishes_nothing() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    send_order(&mut core, "a");
    let (calls, result) = turn(&mut core, true);
    assert!(result.is_err());
    assert!(!calls.list().iter().any(|c| c.starts_with("publish")), "{:?}", calls.list());
}

#[test]
fn a_turn_that_confirms_nothing_commits_lazily() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    // A Begin alone is recorded but promises nothing yet.
    core.handle_intake(IntakeMsg::Begin(Begin { producer: "p".into(), order: "x".into() }), 1);
    let (calls, result) = turn(&mut core, false);
    result.unwrap();
    assert_eq!(calls.list(), vec!["append".to_string(), "commit (lazy)".to_string()]);
}

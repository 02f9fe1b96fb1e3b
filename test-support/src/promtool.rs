//! `promtool` (Debian's `prometheus` package, installed by
//! scripts/setup.sh) on a scrape or on the repository's monitoring files.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Running;

/// How long one promtool run may take.
pub const PROMTOOL_WAIT: Duration = Duration::from_secs(20);

/// `promtool check metrics` on `text`: its exit status and what it said.
/// Without promtool the test fails, naming the setup script.
pub fn promtool_check(text: &str) -> (bool, String) {
    promtool(&["check", "metrics"], Some(text), Path::new("."))
}

/// `promtool ARGS` in `dir`, with `input` on its stdin, bounded by
/// [`PROMTOOL_WAIT`] (killed past it): its exit status and what it said.
pub fn promtool(args: &[&str], input: Option<&str>, dir: &Path) -> (bool, String) {
    let spawned = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => Running(child),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run scripts/setup.sh (it installs Debian's `prometheus` package, \
             which ships promtool), then rerun this test"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    // Dropped (closed) after the write: promtool reads to the end.
    let mut stdin = child.0.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to promtool");
    }
    drop(stdin);
    let status = child.exit_within(PROMTOOL_WAIT, &format!("promtool {args:?}"));
    let mut said = String::new();
    let _ = child.0.stdout.take().expect("stdout").read_to_string(&mut said);
    let _ = child.0.stderr.take().expect("stderr").read_to_string(&mut said);
    (status.success(), said)
}

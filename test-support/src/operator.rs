//! The operator mistakes every orderly CLI answers alike (the same
//! `orderly-cli` code parses their log levels and config files): a table
//! of [`Case`]s that each binary's tests run against itself with
//! [`check`], so a CLI that drifts from the others fails its own tests.

use std::ffi::OsString;
use std::path::Path;

/// One command line, what it must exit with and what stderr must say.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case is about (named when it fails).
    pub what: &'static str,
    pub args: Vec<OsString>,
    /// Environment variables set for this case.
    pub env: Vec<(&'static str, &'static str)>,
    pub code: i32,
    /// Each must appear in stderr.
    pub stderr: Vec<String>,
}

/// A config file key given a string where the CLI wants something else.
#[derive(Debug, Clone, Copy)]
pub struct WrongType<'a> {
    /// The whole file (other keys the CLI needs before it reads `key` included).
    pub toml: &'a str,
    pub key: &'a str,
    /// The string `key` is given in `toml`.
    pub value: &'a str,
}

/// A bad `--log-level` after `command` (e.g. `["run"]`): bad usage (exit
/// 2) naming the flag, the value and the levels there are.
pub fn bad_log_level(command: &[&str]) -> Case {
    Case {
        what: "a log level that is not a level",
        args: args(command, &["--log-level", "inof"]),
        env: Vec::new(),
        code: 2,
        stderr: vec![
            "--log-level".to_owned(),
            "\"inof\" is not a level".to_owned(),
            "error, warn, info, debug, trace or off".to_owned(),
        ],
    }
}

/// A bad `RUST_LOG` with `command_line` (one that gets as far as logging):
/// as much an error as a bad `--log-level`, naming the variable.
pub fn bad_rust_log(command_line: &[&str]) -> Case {
    Case {
        what: "a RUST_LOG that is not a level",
        args: args(command_line, &[]),
        env: vec![("RUST_LOG", "inof")],
        code: 2,
        stderr: vec!["RUST_LOG=inof".to_owned(), "not a level".to_owned()],
    }
}

/// `--config` naming a file that does not exist in `dir`: bad usage naming
/// the file.
pub fn missing_config(command: &[&str], dir: &Path) -> Case {
    let missing = dir.join("no-such-config.toml");
    let mut args = args(command, &["--config"]);
    args.push(missing.clone().into());
    Case { what: "a missing config file", args, env: Vec::new(), code: 2, stderr: vec![missing.display().to_string()] }
}

/// `--config` with `wrong.toml`, written to a file in `dir`: bad usage
/// naming the file, the key and what it found.
pub fn wrong_type_in_config(command: &[&str], dir: &Path, wrong: WrongType) -> Case {
    let path = dir.join("wrong-type.toml");
    std::fs::write(&path, wrong.toml).expect("write the config file");
    let mut args = args(command, &["--config"]);
    args.push(path.clone().into());
    Case {
        what: "a wrong type in the config file",
        args,
        env: Vec::new(),
        code: 2,
        stderr: vec![format!("{}: key \"{}\": found a string \"{}\"", path.display(), wrong.key, wrong.value)],
    }
}

/// The cases every CLI shares: [`bad_log_level`], [`missing_config`] and
/// [`wrong_type_in_config`] after `command`; files go in `dir`.
pub fn shared_cases(command: &[&str], dir: &Path, wrong: WrongType) -> Vec<Case> {
    vec![bad_log_level(command), missing_config(command, dir), wrong_type_in_config(command, dir, wrong)]
}

/// Runs each case with a fresh command from `cli` (the binary, with its
/// environment cleaned and a timeout set) and checks its exit code and
/// stderr; a failure names the case and shows what the CLI said.
pub fn check(cli: impl Fn() -> assert_cmd::Command, cases: &[Case]) {
    for case in cases {
        let mut command = cli();
        command.args(&case.args);
        for (key, value) in &case.env {
            command.env(key, value);
        }
        let output = command.output().unwrap_or_else(|error| panic!("{}: cannot run: {error}", case.what));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(case.code),
            "{}: {:?} should exit {}; stderr:\n{stderr}",
            case.what,
            case.args,
            case.code
        );
        for wanted in &case.stderr {
            assert!(
                stderr.contains(wanted.as_str()),
                "{}: {:?}: stderr lacks {wanted:?}:\n{stderr}",
                case.what,
                case.args
            );
        }
    }
}

fn args(command: &[&str], more: &[&str]) -> Vec<OsString> {
    command.iter().chain(more).map(OsString::from).collect()
}

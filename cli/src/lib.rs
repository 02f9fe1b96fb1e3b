//! Command-line plumbing shared by `orderly-broker`, `orderly-worker` and
//! `orderly-producer`: config files merged under flags and environment
//! variables, logging set-up, and the exit codes every binary uses. Only
//! the binaries depend on this crate; the libraries never do.
//!
//! Precedence: command-line flag > `ORDERLY_*` environment variable >
//! config file > built-in default. clap resolves the first two and the
//! defaults; [`merge_config_file`] slots the file in between by appending
//! `--flag value` for every file key whose value would otherwise come from
//! a default.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

mod logging;
pub mod systemd;
mod units;

pub use logging::{filter as log_filter, init_logging, init_logging_with, parse_log_level, LogFormat, LEVELS};
pub use units::{DurationArg, SizeArg, TimeUnit};

/// Exit codes, chosen so scripts can tell failures apart.
pub mod exit {
    /// Work done.
    pub const OK: u8 = 0;
    /// Runtime failure (IO, broker unreachable, ...).
    pub const FAILURE: u8 = 1;
    /// Bad usage or configuration (clap also uses 2).
    pub const USAGE: u8 = 2;
    /// The broker rejected at least one order.
    pub const REJECTED: u8 = 3;
    /// Gave up waiting (confirms, backpressure).
    pub const TIMEOUT: u8 = 4;

    /// The exit code of a run that failed with `error`: a config file that
    /// cannot be used anywhere in its cause chain is bad usage, like a bad
    /// flag ([`USAGE`]); anything else a runtime [`FAILURE`].
    pub fn of_error(error: &(dyn std::error::Error + 'static)) -> u8 {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if error.is::<super::ConfigError>() {
                return USAGE;
            }
            cause = error.source();
        }
        FAILURE
    }
}

/// A writer whose writes always succeed: errors (EBADF, EPIPE, ENOSPC) are
/// dropped with the bytes. For diagnostics only, where losing a line is
/// better than failing or, through `eprintln!`, panicking.
#[derive(Debug)]
pub struct IgnoreErrors<W>(pub W);

impl<W: std::io::Write> std::io::Write for IgnoreErrors<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes a line to stderr and ignores failure: `eprintln!` for paths that
/// must outlive a closed stderr (progress lines, periodic stats).
#[macro_export]
macro_rules! eprintln_lossy {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Writes a line to stdout and ignores failure: `println!` for long-running
/// paths (a closed or broken stdout must not panic them).
#[macro_export]
macro_rules! println_lossy {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// Reads the config file at `path` and merges it into `args` (see
/// [`merge_config_file`]); the error names the file.
pub fn merge_config_path(
    command: Command,
    args: Vec<OsString>,
    subcommand: &str,
    path: &std::path::Path,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    merge_config_file(command, args, subcommand, &text)
        .map_err(|error| ConfigError::InFile { path: path.display().to_string(), error: Box::new(error) })
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path} (given with --config or the *_CONFIG variable): check the path")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    InFile {
        path: String,
        #[source]
        error: Box<ConfigError>,
    },
    #[error("config file is not valid TOML: {0}")]
    Toml(String),
    #[error("config file key {key:?} is not a setting of `{command}`; see `--help` for the flags (write them with '_' for '-')")]
    UnknownKey { key: String, command: String },
    #[error("key {key:?}: {detail}")]
    BadValue { key: String, detail: String },
    /// Settings that do not go together (what, and what to do).
    #[error("{0}")]
    Usage(String),
}

/// Returns `args` with settings from `file_text` (TOML, one key per flag,
/// `-` written as `_`) appended where neither a flag nor the environment
/// gave a value. `subcommand` names the subcommand the file configures.
pub fn merge_config_file(
    command: Command,
    args: Vec<OsString>,
    subcommand: &str,
    file_text: &str,
) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = file_text.parse().map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
    // Flags and environment alone may lack what the file completes (a
    // `requires` met by a file key): those checks wait for the final parse.
    let mut command = command.ignore_errors(true);
    let matches = command.try_get_matches_from_mut(args.clone()).map_err(|e| ConfigError::Toml(e.to_string()))?;
    let (sub_command, sub_matches) = match (command.find_subcommand(subcommand), matches.subcommand_matches(subcommand))
    {
        (Some(c), Some(m)) => (c.clone(), m.clone()),
        _ => return Ok(args),
    };
    let mut out = args;
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = sub_command
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && a.get_long().is_some())
            .ok_or_else(|| ConfigError::UnknownKey { key: key.clone(), command: subcommand.to_owned() })?;
        if given_explicitly(&sub_matches, &id) || chosen_otherwise(&sub_command, &sub_matches, &id) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        let mut values = Vec::new();
        append_value(&mut values, &key, &long, arg.get_action(), &value)?;
        check_values(arg, &key, &value, &values)?;
        out.extend(values);
    }
    Ok(out)
}

/// Whether the command line (or environment) chose another member of an
/// exclusive group `id` is in (the worker's handler: `--noop` against the
/// file's `exec`): the command line's choice wins over the file's.
fn chosen_otherwise(command: &Command, matches: &ArgMatches, id: &str) -> bool {
    command.get_groups().filter(|group| !(*group).clone().is_multiple()).any(|group| {
        let members: Vec<&str> = group.get_args().map(|a| a.as_str()).collect();
        members.contains(&id) && members.iter().any(|other| *other != id && given_explicitly(matches, other))
    })
}

/// Runs the flag's own parser over each value the file gives it, so a bad
/// value is reported against the file and key rather than as a flag the
/// user never typed.
fn check_values(arg: &clap::Arg, key: &str, value: &toml::Value, appended: &[OsString]) -> Result<(), ConfigError> {
    if !arg.get_action().takes_values() {
        return Ok(());
    }
    let found = match value {
        toml::Value::String(s) => format!("found a string {s:?}"),
        toml::Value::Integer(i) => format!("found an integer {i}"),
        toml::Value::Float(f) => format!("found a float {f}"),
        toml::Value::Boolean(b) => format!("found a boolean {b}"),
        toml::Value::Array(_) => "found an array".to_owned(),
        other => format!("found a {}", other.type_str()),
    };
    // Every other item is the `--flag` itself.
    for item in appended.iter().skip(1).step_by(2) {
        let values: Vec<OsString> = match arg.get_value_delimiter() {
            Some(delimiter) => item.to_string_lossy().split(delimiter).map(OsString::from).collect(),
            None => vec![item.clone()],
        };
        for single in values {
            // The flag alone, with its parser (clap's `parse_ref` is private).
            let check = Command::new("check").arg(
                clap::Arg::new("value")
                    .long("value")
                    .value_parser(arg.get_value_parser().clone())
                    .action(ArgAction::Set)
                    .allow_hyphen_values(true),
            );
            if let Err(error) = check.try_get_matches_from([OsString::from("check"), "--value".into(), single]) {
                let example = arg
                    .get_default_values()
                    .first()
                    .map(|d| format!(" (the default: {key} = {})", toml_example(&d.to_string_lossy())))
                    .unwrap_or_default();
                return Err(ConfigError::BadValue {
                    key: key.to_owned(),
                    detail: format!("{found}: {}{example}", reason_of(&error)),
                });
            }
        }
    }
    Ok(())
}

/// A default value as it would be written in TOML.
fn toml_example(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text.parse::<f64>().is_ok() || text == "true" || text == "false" {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// The reason in a clap value error, without its `error:` prefix, the
/// flag it names (the file has keys, not flags) and the usage lines.
fn reason_of(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("invalid value ").and_then(|rest| rest.split_once(" for ")) {
        Some((_, rest)) => rest.split_once(": ").map_or(rest, |(_, reason)| reason).to_owned(),
        None => line.to_owned(),
    }
}

fn given_explicitly(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

fn append_value(
    out: &mut Vec<OsString>,
    key: &str,
    long: &str,
    action: &ArgAction,
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let bad = |detail: &str| ConfigError::BadValue { key: key.to_owned(), detail: detail.to_owned() };
    match (action, value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => out.push(long.into()),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
        (ArgAction::SetTrue, _) => return Err(bad("expected true or false")),
        (_, toml::Value::String(s)) => out.extend([long.into(), s.into()]),
        (_, toml::Value::Integer(i)) => out.extend([long.into(), i.to_string().into()]),
        (_, toml::Value::Float(f)) => out.extend([long.into(), f.to_string().into()]),
        (_, toml::Value::Boolean(b)) => out.extend([long.into(), b.to_string().into()]),
        (_, toml::Value::Array(items)) => {
            for item in items {
                append_value(out, key, long, action, item)?;
            }
        }
        _ => return Err(bad("expected a string, number, boolean or array")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        #[command(group(clap::ArgGroup::new("handler").multiple(false).args(["exec", "noop"])))]
        Run {
            #[arg(long)]
            exec: Option<String>,
            #[arg(long)]
            noop: bool,
            #[arg(long, default_value_t = 1000, value_parser = DurationArg::ms().range(10..=60_000))]
            heartbeat_interval_ms: u64,
            #[arg(long, default_value = "a")]
            alpha: String,
            #[arg(long, env = "ORDERLY_TEST_BETA_UNSET_VAR", default_value_t = 1)]
            beta_count: u32,
            #[arg(long)]
            flag: bool,
            #[arg(long, env = "ORDERLY_TEST_KEY_FROM_ENV", requires = "peer")]
            key: Option<String>,
            #[arg(long, requires = "key")]
            peer: Option<String>,
        },
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_fills_defaults_but_not_flags() {
        use clap::CommandFactory;
        let args = os(&["x", "run", "--alpha", "cli"]);
        let merged =
            merge_config_file(Cli::command(), args, "run", "alpha = 'file'\nbeta_count = 7\nflag = true").unwrap();
        let Cmd::Run { alpha, beta_count, flag, .. } = Cli::try_parse_from(merged).unwrap().command;
        assert_eq!((alpha.as_str(), beta_count, flag), ("cli", 7, true));
    }

    /// A flag (or variable) whose `requires` only the file meets: the
    /// systemd member unit sets its secret key, the file its authorized keys.
    #[test]
    fn the_file_may_meet_a_flags_requirement() {
        use clap::CommandFactory;
        let args = os(&["x", "run", "--key", "k"]);
        let merged = merge_config_file(Cli::command(), args, "run", "peer = 'p'").unwrap();
        let Cmd::Run { key, peer, .. } = Cli::try_parse_from(merged).unwrap().command;
        assert_eq!((key.as_deref(), peer.as_deref()), (Some("k"), Some("p")));
        // Unmet by the file too: the final parse still refuses it.
        let merged = merge_config_file(Cli::command(), os(&["x", "run", "--key", "k"]), "run", "alpha = 'f'").unwrap();
        assert!(Cli::try_parse_from(merged).is_err());
    }

    /// The file's handler gives way to the command line's; two handlers on
    /// the command line stay an error.
    #[test]
    fn the_command_lines_choice_in_a_group_wins_over_the_files() {
        use clap::CommandFactory;
        let merged = merge_config_file(Cli::command(), os(&["x", "run", "--noop"]), "run", "exec = 'x'").unwrap();
        let Cmd::Run { exec, noop, .. } = Cli::try_parse_from(merged).unwrap().command;
        assert_eq!((exec, noop), (None, true));
        let merged = merge_config_file(Cli::command(), os(&["x", "run"]), "run", "exec = 'x'").unwrap();
        let Cmd::Run { exec, .. } = Cli::try_parse_from(merged).unwrap().command;
        assert_eq!(exec.as_deref(), Some("x"));
        assert!(Cli::try_parse_from(["x", "run", "--noop", "--exec", "y"]).is_err());
    }

    #[test]
    fn a_bad_value_names_the_key_and_what_was_found() {
        use clap::CommandFactory;
        let err =
            merge_config_file(Cli::command(), os(&["x", "run"]), "run", "heartbeat_interval_ms = 'soon'").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("key \"heartbeat_interval_ms\": found a string \"soon\""), "{text}");
        assert!(
            text.contains("not a duration") && text.contains("the default: heartbeat_interval_ms = 1000"),
            "{text}"
        );
        let err = merge_config_file(Cli::command(), os(&["x", "run"]), "run", "beta_count = 1.5").unwrap_err();
        assert!(err.to_string().contains("key \"beta_count\": found a float 1.5"), "{err}");
        // Human forms and bare numbers from the file.
        for (text, ms) in [("heartbeat_interval_ms = '2s'", 2000), ("heartbeat_interval_ms = 250", 250)] {
            let merged = merge_config_file(Cli::command(), os(&["x", "run"]), "run", text).unwrap();
            let Cmd::Run { heartbeat_interval_ms, .. } = Cli::try_parse_from(merged).unwrap().command;
            assert_eq!(heartbeat_interval_ms, ms, "{text}");
        }
    }

    #[test]
    fn a_missing_file_is_named_and_bad_usage() {
        use clap::CommandFactory;
        let path = std::path::Path::new("/nonexistent/orderly/broker.toml");
        let err = merge_config_path(Cli::command(), os(&["x", "run"]), "run", path).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/orderly/broker.toml"), "{err}");
        assert_eq!(exit::of_error(&err), exit::USAGE);
    }

    #[test]
    fn unknown_keys_are_named() {
        use clap::CommandFactory;
        let err = merge_config_file(Cli::command(), os(&["x", "run"]), "run", "gamma = 1").unwrap_err();
        assert!(err.to_string().contains("\"gamma\""), "{err}");
    }

    /// A writer that fails like a closed or broken stderr.
    struct Closed;

    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(32)) // EPIPE
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(9)) // EBADF
        }
    }

    #[test]
    fn ignore_errors_swallows_write_failures() {
        use std::io::Write;
        let mut writer = IgnoreErrors(Closed);
        assert_eq!(writer.write(b"a line\n").unwrap(), 7);
        writer.write_all(b"another\n").unwrap();
        writer.flush().unwrap();
        writeln!(writer, "formatted {}", 1).unwrap();
        let mut bytes = IgnoreErrors(Vec::new());
        bytes.write_all(b"kept").unwrap();
        assert_eq!(bytes.0, b"kept");
    }

    #[test]
    fn a_subscriber_writing_to_a_closed_stderr_logs_on() {
        let subscriber =
            tracing_subscriber::fmt().with_writer(|| IgnoreErrors(Closed)).log_internal_errors(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..3 {
                tracing::info!(n, "a line nobody reads");
            }
        });
    }

    #[test]
    fn a_config_error_anywhere_in_the_chain_is_bad_usage() {
        #[derive(Debug, thiserror::Error)]
        #[error("while starting")]
        struct Outer(#[source] ConfigError);
        let config = ConfigError::Toml("bad".into());
        assert_eq!(exit::of_error(&Outer(config)), exit::USAGE);
        let io = std::io::Error::other("disk");
        assert_eq!(exit::of_error(&io), exit::FAILURE);
    }
}

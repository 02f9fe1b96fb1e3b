//! Logging to stderr, as text or JSON lines, under a filter that is
//! checked before anything starts: a level that is not a level (`inof`)
//! would otherwise be read as a target name and silence every line.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::{ConfigError, IgnoreErrors};

/// The levels a log filter may name, as help and errors list them.
pub const LEVELS: &str = "error, warn, info, debug, trace or off";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields (the
    /// message among them) — for journald, Loki, Elasticsearch and jq.
    Json,
}

/// A clap value parser for `--log-level`: a level (`info`) or tracing
/// directives (`warn,orderly_broker=debug`), where a bare word must be a
/// level (EnvFilter alone takes `inof` for a target name and logs nothing).
pub fn parse_log_level(text: &str) -> Result<String, String> {
    check_filter(text).map(|()| text.to_owned())
}

fn check_filter(text: &str) -> Result<(), String> {
    let example = "e.g. `info` or `warn,orderly_broker=debug`";
    if text.trim().is_empty() {
        return Err(format!("empty: give one of {LEVELS}, or directives ({example})"));
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && !is_level(directive) {
            return Err(format!(
                "{directive:?} is not a level: give one of {LEVELS}, or TARGET=LEVEL directives ({example})"
            ));
        }
        if let Err(error) = EnvFilter::builder().parse(directive) {
            return Err(format!("{directive:?} is not a log directive ({error}): levels are {LEVELS} ({example})"));
        }
        if let Some((_, level)) = directive.rsplit_once('=') {
            if !is_level(level.trim()) {
                return Err(format!("{level:?} in {directive:?} is not a level: give one of {LEVELS}"));
            }
        }
    }
    Ok(())
}

fn is_level(word: &str) -> bool {
    ["error", "warn", "info", "debug", "trace", "off"].iter().any(|level| word.eq_ignore_ascii_case(level))
}

/// The filter in force: `RUST_LOG` when set (it wins, as documented),
/// else `level`. An invalid `RUST_LOG` is bad usage too, named as such.
pub fn filter(level: &str) -> Result<EnvFilter, ConfigError> {
    let (text, from) = match std::env::var("RUST_LOG") {
        // An empty RUST_LOG (`RUST_LOG=` in a unit or shell) counts as unset.
        Ok(value) if !value.trim().is_empty() => (value, "RUST_LOG"),
        Ok(_) | Err(std::env::VarError::NotPresent) => (level.to_owned(), "--log-level"),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(ConfigError::Usage("RUST_LOG is not UTF-8: unset it or give a level".to_owned()))
        }
    };
    check_filter(&text).map_err(|reason| ConfigError::Usage(format!("{from}={text}: {reason}")))?;
    EnvFilter::builder().parse(&text).map_err(|error| ConfigError::Usage(format!("{from}={text}: {error}")))
}

/// Sets up logging to stderr in `format` under `level` (unless `RUST_LOG`
/// is set), plus `extra` (a tracing layer of the caller's), which sees
/// events under its own filter. Colours only when stderr is a terminal.
///
/// A closed stderr never stops the process: log lines go through
/// [`IgnoreErrors`] (a broken pipe loses the line, not the process), and
/// tracing-subscriber's fallback of `eprintln!`ing its own write errors,
/// which panics when stderr fails, is turned off. (A stderr closed at
/// start, `2>&-`, is /dev/null by then: Rust's runtime reopens closed
/// standard descriptors there, so fd 2 is never reused for a file.)
pub fn init_logging_with(
    level: &str,
    format: LogFormat,
    extra: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> Result<(), ConfigError> {
    let filter = filter(level)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = || IgnoreErrors(std::io::stderr());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).log_internal_errors(false).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(writer)
            .log_internal_errors(false)
            .boxed(),
    };
    // The filter is the fmt layer's own, so `extra` sees what it asks for
    // even under `--log-level warn`.
    let layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        std::iter::once(fmt.with_filter(filter).boxed()).chain(extra).collect();
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

/// [`init_logging_with`] without an extra layer.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), ConfigError> {
    init_logging_with(level, format, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_pass_misspellings_do_not() {
        for good in ["info", "WARN", "off", "warn,orderly_broker=debug", "orderly_worker=trace", "debug, zmq=off"] {
            assert_eq!(parse_log_level(good), Ok(good.to_owned()), "{good}");
        }
        for bad in ["inof", "", " ", "warn,orderly_broker", "orderly_broker=loud", "verbose"] {
            let error = parse_log_level(bad).unwrap_err();
            assert!(error.contains(LEVELS), "{bad:?}: {error}");
        }
    }
}

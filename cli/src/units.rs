//! Durations and byte sizes in human form for flags, environment
//! variables and config files: `30s`, `1m30s`, `500ms` (humantime) and
//! `8GiB`, `512MiB`, `64KB` (bytesize). A bare number keeps the unit the
//! flag's name says: `--ack-timeout-ms 30000` is 30 s, `--drain-timeout-secs
//! 30` is 30 s, `--pending-bytes-max 1024` is 1 KiB.
//!
//! Size units: `KiB`, `MiB`, `GiB`, `TiB` are binary (1024, 1024², ...);
//! `KB`, `MB`, `GB`, `TB` (and `K`, `M`, `G`, `T`) are decimal (1000,
//! 1000², ...), as bytesize reads them; case does not matter.

use std::ffi::OsStr;
use std::ops::RangeInclusive;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// The unit a duration flag's name gives (`_ms` or `_secs`): a bare number
/// is counted in it, and a human duration is converted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Milliseconds,
    Seconds,
}

impl TimeUnit {
    fn per_second(self) -> u128 {
        match self {
            TimeUnit::Milliseconds => 1000,
            TimeUnit::Seconds => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TimeUnit::Milliseconds => "milliseconds",
            TimeUnit::Seconds => "seconds",
        }
    }

    fn short(self) -> &'static str {
        match self {
            TimeUnit::Milliseconds => "ms",
            TimeUnit::Seconds => "s",
        }
    }
}

/// A clap value parser for a duration flag: a whole number in the flag's
/// unit, or a humantime duration (`30s`, `1m30s`, `500ms`), giving a whole
/// number in the flag's unit within `range`.
#[derive(Debug, Clone)]
pub struct DurationArg {
    unit: TimeUnit,
    range: RangeInclusive<u64>,
}

impl DurationArg {
    /// A `*_ms` flag.
    pub fn ms() -> Self {
        DurationArg { unit: TimeUnit::Milliseconds, range: 0..=u64::MAX }
    }

    /// A `*_secs` flag.
    pub fn secs() -> Self {
        DurationArg { unit: TimeUnit::Seconds, range: 0..=u64::MAX }
    }

    /// Only values in `range` (in the flag's unit) are accepted.
    pub fn range(self, range: RangeInclusive<u64>) -> Self {
        DurationArg { range, ..self }
    }

    /// The value of `text` in the flag's unit, or what is wrong with it
    /// and an example of a right value.
    pub fn parse_str(&self, text: &str) -> Result<u64, String> {
        let text = text.trim();
        let unit = self.unit;
        let value = match text.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let duration = humantime::parse_duration(text).map_err(|error| {
                    format!(
                        "{text:?} is not a duration ({error}): give a whole number of {} or a duration with \
                         its unit, e.g. \"30s\", \"1m30s\", \"500ms\"",
                        unit.name()
                    )
                })?;
                let nanos = duration.as_nanos();
                let per_unit = 1_000_000_000 / unit.per_second();
                if nanos % per_unit != 0 {
                    return Err(format!(
                        "{text:?} is not a whole number of {}: this setting counts in {}",
                        unit.name(),
                        unit.name()
                    ));
                }
                u64::try_from(nanos / per_unit).map_err(|_| format!("{text:?} is too long a duration"))?
            }
        };
        check_range(value, &self.range, unit.short(), &|n| human_duration(n, unit))?;
        Ok(value)
    }
}

/// A clap value parser for a byte-size flag: a whole number of bytes, or a
/// size with its unit (`8GiB`, `512MiB`, `64KB`), within `range`.
#[derive(Debug, Clone)]
pub struct SizeArg {
    range: RangeInclusive<u64>,
}

impl SizeArg {
    /// Any number of bytes.
    pub fn bytes() -> Self {
        SizeArg { range: 0..=u64::MAX }
    }

    /// Only sizes in `range` (bytes) are accepted.
    pub fn range(self, range: RangeInclusive<u64>) -> Self {
        SizeArg { range }
    }

    /// The size `text` gives, in bytes, or what is wrong with it and an
    /// example of a right value.
    pub fn parse_str(&self, text: &str) -> Result<u64, String> {
        let text = text.trim();
        // bytesize reads a leading '-' or '+' as no number at all; a fraction
        // of a byte is rounded down by it, which is fine for limits.
        let starts_with_digit = text.chars().next().is_some_and(|c| c.is_ascii_digit());
        let bytes = match text.parse::<bytesize::ByteSize>() {
            Ok(size) if starts_with_digit => size.as_u64(),
            _ => {
                return Err(format!(
                    "{text:?} is not a size: give a whole number of bytes or a size with its unit, e.g. \
                     \"8GiB\", \"512MiB\" (binary: KiB, MiB, GiB, TiB) or \"64KB\" (decimal: KB, MB, GB, TB)"
                ))
            }
        };
        if bytes == u64::MAX && text.parse::<u64>().is_err() {
            return Err(format!("{text:?} is more bytes than fit in 64 bits"));
        }
        check_range(bytes, &self.range, "bytes", &|n| bytesize::ByteSize(n).display().iec().to_string())?;
        Ok(bytes)
    }
}

fn check_range(
    value: u64,
    range: &RangeInclusive<u64>,
    unit: &str,
    human: &dyn Fn(u64) -> String,
) -> Result<(), String> {
    let (min, max) = (*range.start(), *range.end());
    if value < min {
        return Err(format!("{value} {unit} is less than the least allowed, {min} {unit} ({})", human(min)));
    }
    if value > max {
        return Err(format!("{value} {unit} is more than the most allowed, {max} {unit} ({})", human(max)));
    }
    Ok(())
}

fn human_duration(n: u64, unit: TimeUnit) -> String {
    let duration = match unit {
        TimeUnit::Milliseconds => std::time::Duration::from_millis(n),
        TimeUnit::Seconds => std::time::Duration::from_secs(n),
    };
    humantime::format_duration(duration).to_string()
}

/// clap's side: the flag's name in front of the reason, exit code 2.
fn clap_error(cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr, reason: String) -> clap::Error {
    let flag = arg.map_or_else(|| "the value".to_owned(), |a| a.to_string());
    let message = format!("invalid value {:?} for {flag}: {reason}", value.to_string_lossy());
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).with_cmd(cmd)
}

impl TypedValueParser for DurationArg {
    type Value = u64;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<u64, clap::Error> {
        let text = value.to_str().ok_or_else(|| clap_error(cmd, arg, value, "not UTF-8".to_owned()))?;
        self.parse_str(text).map_err(|reason| clap_error(cmd, arg, value, reason))
    }
}

impl TypedValueParser for SizeArg {
    type Value = u64;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<u64, clap::Error> {
        let text = value.to_str().ok_or_else(|| clap_error(cmd, arg, value, "not UTF-8".to_owned()))?;
        self.parse_str(text).map_err(|reason| clap_error(cmd, arg, value, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_both_forms() {
        let ms = DurationArg::ms();
        assert_eq!(ms.parse_str("30000"), Ok(30_000), "a bare number keeps the flag's unit");
        assert_eq!(ms.parse_str("30s"), Ok(30_000));
        assert_eq!(ms.parse_str("1m30s"), Ok(90_000));
        assert_eq!(ms.parse_str("500ms"), Ok(500));
        assert_eq!(ms.parse_str(" 2h "), Ok(7_200_000));
        let secs = DurationArg::secs();
        assert_eq!(secs.parse_str("30"), Ok(30));
        assert_eq!(secs.parse_str("1m30s"), Ok(90));
        assert_eq!(secs.parse_str("1d"), Ok(86_400));
    }

    #[test]
    fn bad_durations_say_what_is_wrong_and_give_an_example() {
        let ms = DurationArg::ms();
        for bad in ["", "abc", "30 parsecs", "-5", "1.5"] {
            let error = ms.parse_str(bad).unwrap_err();
            assert!(error.contains("not a duration") && error.contains("\"30s\""), "{bad}: {error}");
        }
        let error = DurationArg::secs().parse_str("1500ms").unwrap_err();
        assert!(error.contains("not a whole number of seconds"), "{error}");
        let error = ms.parse_str("1us").unwrap_err();
        assert!(error.contains("not a whole number of milliseconds"), "{error}");
        let bounded = DurationArg::ms().range(10..=60_000);
        let error = bounded.parse_str("2m").unwrap_err();
        assert!(error.contains("120000 ms is more than the most allowed, 60000 ms (1m)"), "{error}");
        let error = bounded.parse_str("5").unwrap_err();
        assert!(error.contains("less than the least allowed, 10 ms"), "{error}");
        assert_eq!(bounded.parse_str("1m"), Ok(60_000));
    }

    #[test]
    fn sizes_in_both_forms_binary_and_decimal() {
        let size = SizeArg::bytes();
        assert_eq!(size.parse_str("8589934592"), Ok(8 << 30), "a bare number is bytes");
        assert_eq!(size.parse_str("8GiB"), Ok(8 << 30));
        assert_eq!(size.parse_str("512MiB"), Ok(512 << 20));
        assert_eq!(size.parse_str("512 mib"), Ok(512 << 20));
        assert_eq!(size.parse_str("64KB"), Ok(64_000));
        assert_eq!(size.parse_str("64KiB"), Ok(65_536));
        assert_eq!(size.parse_str("1GB"), Ok(1_000_000_000));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong_and_give_an_example() {
        let size = SizeArg::bytes();
        for bad in ["", "lots", "8 GiBs", "-1", "GiB", "99999999999EiB"] {
            let error = size.parse_str(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        assert!(size.parse_str("lots").unwrap_err().contains("\"8GiB\""));
        let error = SizeArg::bytes().range(4096..=u64::MAX).parse_str("1KiB").unwrap_err();
        assert!(error.contains("1024 bytes is less than the least allowed, 4096 bytes (4.0 KiB)"), "{error}");
    }

    #[test]
    fn clap_names_the_flag() {
        let cmd = clap::Command::new("x").arg(
            clap::Arg::new("ack_timeout_ms").long("ack-timeout-ms").value_parser(DurationArg::ms().range(100..=1000)),
        );
        let matches = cmd.clone().try_get_matches_from(["x", "--ack-timeout-ms", "1s"]).unwrap();
        assert_eq!(matches.get_one::<u64>("ack_timeout_ms"), Some(&1000));
        let error = cmd.try_get_matches_from(["x", "--ack-timeout-ms", "soon"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert!(error.to_string().contains("for --ack-timeout-ms"), "{error}");
    }
}

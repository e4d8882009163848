//! Units as people type and read them: durations on command lines
//! (`500ms`, `2s`, `1m30s`, parsed by `humantime`) and byte sizes in tables
//! (`512B`, `1.5Ki`, `3Gi`, the binary units of kubectl's quantities).
//!
//! Every binary of the workspace parses its duration flags and prints its
//! sizes through this module, so `--probe-interval 2s` means the same to the
//! agent as `--health-interval 2s` to the router, and a tmpfs of 3 GiB reads
//! `3Gi` whichever tool shows it.

use std::time::Duration;

/// Parses a duration flag: a number with a unit, units may be combined
/// (`500ms`, `2s`, `1m`, `1h30m`; `humantime`'s syntax). A bare number
/// without a unit is rejected, so `--timeout 5` cannot silently mean five
/// nanoseconds or five hours.
///
/// # Errors
///
/// The message names what was wrong and shows what to write instead, e.g.
/// `time unit needed, for example 5sec or 5ms: write e.g. 500ms, 2s or 1m`;
/// it is meant to be printed by clap as the flag's error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}: write e.g. 500ms, 2s or 1m"))
}

/// [`parse_duration`] for flags where zero makes no sense (intervals,
/// timeouts): a zero duration is refused, saying so, instead of a loop that
/// panics ("period must be non-zero") or a request that can never succeed.
///
/// # Errors
///
/// [`parse_duration`]'s, or `must be more than 0 …` for a zero duration.
pub fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!(
            "must be more than 0 (got {text:?}): write e.g. 500ms, 2s or 1m"
        ));
    }
    Ok(duration)
}

/// A byte count in binary units as kubectl prints quantities: bytes below
/// 1 KiB as is (`512B`), else the largest unit that keeps the number at or
/// above 1, rounded to one decimal below 10 (`1.5Ki`) and to a whole number
/// from 10 on (`12Mi`); a whole value drops the decimal (`3Gi`, never
/// `3.0Gi`). Units go up to `Ei`, so every `u64` fits.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let rounded = (value * 10.0).round() / 10.0;
    if rounded < 10.0 && rounded.fract() != 0.0 {
        format!("{rounded:.1}{}", UNITS[unit])
    } else {
        format!("{:.0}{}", value.round(), UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["5", "", "2 parsecs", "-1s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.ends_with("write e.g. 500ms, 2s or 1m"), "{bad}: {err}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(42), "42B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1Ki");
        assert_eq!(format_bytes(1536), "1.5Ki");
        assert_eq!(format_bytes(20 * 1024 * 1024 + 1), "20Mi");
        assert_eq!(format_bytes(256 << 20), "256Mi");
        assert_eq!(format_bytes(512 * 1024 * 1024), "512Mi");
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5Gi");
        // Whole values carry no decimal: "3Gi", not "3.0Gi".
        assert_eq!(format_bytes(3 << 30), "3Gi");
        // 9.96Mi rounds to 10: no decimal from 10 on.
        assert_eq!(format_bytes(10_443_000), "10Mi");
        assert_eq!(format_bytes(u64::MAX), "16Ei");
    }

    #[test]
    fn zero_is_refused_where_it_makes_no_sense() {
        assert_eq!(
            parse_nonzero_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        let refused = parse_nonzero_duration("0s").unwrap_err();
        assert!(refused.contains("must be more than 0"), "{refused}");
        assert!(parse_nonzero_duration("abc").is_err());
    }
}

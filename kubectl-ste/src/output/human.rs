//! Human-readable numbers for tables: ages, percentages, counts. Byte
//! sizes are [`ste_core::units::format_bytes`], shared with the agent.

use std::time::Duration;

/// An age as kubectl prints it (apimachinery's `HumanDuration`): `45s`,
/// `3m20s`, `15m`, `5h30m`, `2d4h`, `30d`, `2y45d`.
pub fn age(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `part` of `whole` in percent with one decimal; `-` when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part / whole)
    }
}

/// `n` and the noun, singular for exactly one: `1 key`, `0 keys`,
/// `3 members` (kubectl's own summaries do the same).
pub fn count(n: impl Into<u64>, singular: &str, plural: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_singular_for_one_only() {
        assert_eq!(count(0u64, "key", "keys"), "0 keys");
        assert_eq!(count(1u64, "key", "keys"), "1 key");
        assert_eq!(count(3u64, "member", "members"), "3 members");
    }

    #[test]
    fn ages_like_kubectl() {
        let s = Duration::from_secs;
        assert_eq!(age(s(0)), "0s");
        assert_eq!(age(s(119)), "119s");
        assert_eq!(age(s(200)), "3m20s");
        assert_eq!(age(s(240)), "4m");
        assert_eq!(age(s(15 * 60 + 7)), "15m");
        assert_eq!(age(s(5 * 3600 + 30 * 60)), "5h30m");
        assert_eq!(age(s(20 * 3600)), "20h");
        assert_eq!(age(s(52 * 3600)), "2d4h");
        assert_eq!(age(s(30 * 86400)), "30d");
        assert_eq!(age(s((2 * 365 + 45) * 86400)), "2y45d");
        assert_eq!(age(s(10 * 365 * 86400)), "10y");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(1.0, 3.0), "33.3%");
        assert_eq!(percent(1.0, 0.0), "-");
    }
}

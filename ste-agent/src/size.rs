//! Byte sizes written the way Kubernetes writes resource quantities
//! (`512Mi`, `1Gi`, `300M`, `268435456`), so a size in a DaemonSet manifest
//! and on the agent's command line read the same.

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from a Kubernetes-style quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// One mebibyte (2^20 bytes), the unit of `Mi`.
pub const MIB: u64 = 1 << 20;
/// One gibibyte (2^30 bytes), the unit of `Gi`.
pub const GIB: u64 = 1 << 30;

/// Why a size string was rejected; the message tells the user what to write.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid size {input:?}: write a whole number with an optional unit suffix \
     (Ki, Mi, Gi, Ti or K, M, G, T), e.g. 512Mi or 1Gi"
)]
pub struct SizeError {
    input: String,
}

const UNITS: [(&str, u64); 8] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || SizeError {
            input: input.to_owned(),
        };
        let trimmed = input.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, suffix) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(error());
        }
        let number: u64 = digits.parse().map_err(|_| error())?;
        let multiplier = if suffix.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(unit, _)| *unit == suffix)
                .map(|(_, m)| *m)
                .ok_or_else(error)?
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(error)
    }
}

impl fmt::Display for ByteSize {
    /// Prints the largest binary unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, m) in UNITS[..4].iter().rev() {
            if self.0 >= *m && self.0.is_multiple_of(*m) {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!("512Mi".parse(), Ok(ByteSize(512 * MIB)));
        assert_eq!("1Gi".parse(), Ok(ByteSize(GIB)));
        assert_eq!("300M".parse(), Ok(ByteSize(300_000_000)));
        assert_eq!("268435456".parse(), Ok(ByteSize(256 * MIB)));
        assert_eq!(" 2Ti ".parse(), Ok(ByteSize(2 << 40)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in [
            "",
            "Mi",
            "12mb",
            "1.5Gi",
            "-1Gi",
            "1 Gi",
            "99999999999999999999",
            "99999999Ti",
        ] {
            let err = bad.parse::<ByteSize>().unwrap_err().to_string();
            assert!(err.contains("e.g. 512Mi"), "{bad}: {err}");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(512 * MIB).to_string(), "512Mi");
        assert_eq!(ByteSize(GIB).to_string(), "1Gi");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}

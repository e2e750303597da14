//! Byte sizes in recipes: an integer number of bytes or a string with a binary unit
//! (`64MiB`). Decimal units (`MB`) are rejected because `64MB` is ambiguous: users mean
//! MiB as often as 10^6 bytes, and the image sizes must be exact.

use std::fmt;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ByteSize(pub u64);

/// Binary units accepted in size strings, with their multiplier.
const UNITS: [(&str, u64); 3] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)];

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The number is followed by something that is not `KiB`, `MiB` or `GiB`.
    #[error("expected a number with a binary unit")]
    Unit {
        /// A corrected spelling when the intent is clear (`64MB` -> `64MiB`).
        suggestion: Option<String>,
    },
    /// The number does not fit in 64 bits once multiplied out.
    #[error("size is too large")]
    Overflow,
    /// A negative integer.
    #[error("size cannot be negative")]
    Negative,
}

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Builds a size from a TOML integer (bytes).
    pub fn from_integer(value: i64) -> Result<Self, SizeError> {
        u64::try_from(value)
            .map(Self)
            .map_err(|_| SizeError::Negative)
    }

    /// Parses `"<digits>[ ]<unit>"` where unit is `KiB`, `MiB` or `GiB`.
    pub fn parse(text: &str) -> Result<Self, SizeError> {
        let trimmed = text.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, rest) = trimmed.split_at(digits_end);
        let unit = rest.trim_start();
        if digits.is_empty() {
            return Err(SizeError::Unit { suggestion: None });
        }
        let Some(&(_, multiplier)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(SizeError::Unit {
                suggestion: suggest_unit(unit).map(|u| format!("{digits}{u}")),
            });
        };
        let number: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or(SizeError::Overflow)
    }
}

/// Maps a near-miss unit (`M`, `MB`, `mb`, `Mi`, `mib`) to the binary unit the user meant.
fn suggest_unit(unit: &str) -> Option<&'static str> {
    let lower = unit.to_ascii_lowercase();
    let candidates = ["", "b", "i", "ib"];
    for (name, _) in UNITS {
        let prefix = name[..1].to_ascii_lowercase();
        if let Some(tail) = lower.strip_prefix(&prefix)
            && candidates.contains(&tail)
        {
            return Some(name);
        }
    }
    None
}

impl fmt::Display for ByteSize {
    /// The largest exact binary unit: `64MiB`, `1536KiB`, `1000` (bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, multiplier) in UNITS.iter().rev() {
            if self.0 != 0 && self.0.is_multiple_of(*multiplier) {
                return write!(f, "{}{name}", self.0 / multiplier);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1 GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("4KiB"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::from_integer(512), Ok(ByteSize(512)));
    }

    #[test]
    fn rejects_decimal_units_with_a_suggestion() {
        let err = ByteSize::parse("64MB").unwrap_err();
        assert_eq!(
            err,
            SizeError::Unit {
                suggestion: Some("64MiB".into())
            }
        );
        assert_eq!(err.to_string(), "expected a number with a binary unit");
        assert_eq!(
            ByteSize::parse("2g"),
            Err(SizeError::Unit {
                suggestion: Some("2GiB".into())
            })
        );
    }

    #[test]
    fn rejects_garbage_without_suggestion() {
        assert_eq!(
            ByteSize::parse("lots"),
            Err(SizeError::Unit { suggestion: None })
        );
        assert_eq!(
            ByteSize::parse("12"),
            Err(SizeError::Unit { suggestion: None })
        );
        assert_eq!(
            ByteSize::parse("5TiB"),
            Err(SizeError::Unit { suggestion: None })
        );
    }

    #[test]
    fn rejects_overflow_and_negative() {
        assert_eq!(
            ByteSize::parse("99999999999999999999GiB"),
            Err(SizeError::Overflow)
        );
        assert_eq!(ByteSize::parse("17179869184GiB"), Err(SizeError::Overflow));
        assert_eq!(ByteSize::from_integer(-1), Err(SizeError::Negative));
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(ByteSize::mib(256).to_string(), "256MiB");
        assert_eq!(ByteSize(1536 * 1024).to_string(), "1536KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(0).to_string(), "0");
    }
}

//! Durations and sizes as people write them in flags and configuration (`30d`, `10GiB`).

use std::fmt;

/// A value that is not a duration or size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(String);

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnitError {}

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(UnitError(format!($($arg)*)))
    };
}

/// A duration (`90s`, `15m`, `1h`, `7d`) in microseconds.
pub fn parse_duration_flag(text: &str) -> Result<i64, UnitError> {
    match kubetrail_query::parse_duration_micros(text) {
        Some(micros) if micros > 0 => Ok(micros),
        _ => bail!("{text:?} is not a duration such as 15m, 1h or 7d"),
    }
}

/// A size in bytes: a number with an optional unit, decimal (`KB`, `MB`, `GB`, `TB`) or binary
/// (`KiB`, `MiB`, `GiB`, `TiB`).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => bail!("{text:?} is not a size such as 500MB or 10GiB (unknown unit {unit:?})"),
    };
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok((n * multiplier as f64) as u64),
        _ => bail!("{text:?} is not a size such as 500MB or 10GiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5 kb").unwrap(), 1_500);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(
            parse_size("10 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_size("GB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_flag("1h").unwrap(), 3_600_000_000);
        assert!(parse_duration_flag("soon").is_err());
    }
}

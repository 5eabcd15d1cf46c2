//! Audit timestamps.
//!
//! kube-apiserver writes `requestReceivedTimestamp` and `stageTimestamp` as `MicroTime`
//! (`2006-01-02T15:04:05.000000Z`, UTC, exactly six fractional digits) and the removed
//! v1beta1/v1alpha1 `timestamp` and `metadata.creationTimestamp` as second-precision RFC 3339.
//! Every event carries two of them, so parsing sits on the hot path: the exact shapes the API
//! server writes are parsed by hand, anything else RFC 3339 allows (offsets, other precisions)
//! goes through chrono. Precision beyond microseconds is truncated, as Go's MicroTime does.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

/// A point in time as microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp, truncating sub-microsecond precision.
    pub fn parse(text: &str) -> Option<Self> {
        parse_fast_utc(text.as_bytes()).or_else(|| {
            let parsed = DateTime::parse_from_rfc3339(text).ok()?;
            Some(Timestamp(parsed.with_timezone(&Utc).timestamp_micros()))
        })
    }

    /// The chrono representation, for formatting and calendar arithmetic.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// Writes the MicroTime form kube-apiserver uses: `2006-01-02T15:04:05.000000Z`.
    pub fn write_micro_time(self, out: &mut Vec<u8>) {
        use std::io::Write;
        let dt = self.to_datetime();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_datetime().format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the only shapes the API server writes.
fn parse_fast_utc(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let micros = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if !fraction.is_empty() && fraction.len() <= 9 => {
            let mut micros = 0u32;
            for i in 0..6 {
                let d = match fraction.get(i) {
                    Some(c) if c.is_ascii_digit() => u32::from(c - b'0'),
                    Some(_) => return None,
                    None => 0,
                };
                micros = micros * 10 + d;
            }
            if !fraction.iter().all(u8::is_ascii_digit) {
                return None;
            }
            micros
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = date.and_hms_micro_opt(hour, minute, second, micros)?;
    Some(Timestamp(time.and_utc().timestamp_micros()))
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn check(input: &str, expected: Option<&str>) {
        let got = Timestamp::parse(input).map(|t| t.to_string());
        assert_eq!(got.as_deref(), expected, "parsing {input:?}");
    }

    #[test]
    fn micro_time_round_trips() {
        check(
            "2026-11-21T05:16:47.376914Z",
            Some("2026-11-21T05:16:47.376914Z"),
        );
    }

    #[test]
    fn second_precision_of_v1beta1() {
        check("2017-09-11T19:55:05Z", Some("2017-09-11T19:55:05.000000Z"));
    }

    #[test]
    fn nanoseconds_are_truncated_not_rounded() {
        check(
            "2026-01-01T00:00:00.123456999Z",
            Some("2026-01-01T00:00:00.123456Z"),
        );
    }

    #[test]
    fn short_fractions_are_scaled() {
        check(
            "2026-01-01T00:00:00.5Z",
            Some("2026-01-01T00:00:00.500000Z"),
        );
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        check(
            "2026-01-01T02:00:00.000001+02:00",
            Some("2026-01-01T00:00:00.000001Z"),
        );
    }

    #[test]
    fn garbage_is_rejected() {
        check("yesterday", None);
        check("2026-13-01T00:00:00Z", None);
        check("2026-01-01T00:00:00.Z", None);
        check("2026-01-01T00:00:00.12a4Z", None);
    }
}

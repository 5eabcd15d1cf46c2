//! Monitors over audit events: definitions read from YAML with line numbers ([`spec`]),
//! conditions ([`condition`]), calendars ([`calendar`]), partial aggregates per time bucket
//! merged into windows ([`window`]), alert state per group ([`state`]) and the evaluation of a
//! monitor over the store ([`evaluate`]) — the same code live in `serve` ([`live`]) and over
//! history in `kubetrail monitor test`, live fed by the stream of accepted events
//! ([`stream`]) — and notifications: what each channel receives
//! ([`notify`]), the durable outbox ([`outbox`]) and its delivery ([`deliver`]); and live
//! detections, which share the channels and the outbox ([`detect`]).
//! `docs/monitors.md` is the user's guide.

pub mod calendar;
pub mod condition;
pub mod deliver;
pub mod detect;
pub mod evaluate;
pub mod history;
pub mod live;
pub mod notify;
pub mod outbox;
pub mod spec;
pub mod state;
pub mod stream;
pub mod template;
pub mod window;

/// Now, µs since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Times (µs since the epoch) as RFC 3339 text in JSON.
pub mod rfc3339 {
    use chrono::{SecondsFormat, TimeZone, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// The RFC 3339 text of a time, with microseconds when it has them.
    pub fn format(micros: i64) -> String {
        let time = Utc.timestamp_micros(micros).single().unwrap_or_default();
        let precision = if micros % 1_000_000 == 0 {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Micros
        };
        time.to_rfc3339_opts(precision, true)
    }

    /// Serializes as RFC 3339.
    pub fn serialize<S: Serializer>(micros: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*micros))
    }

    /// Reads RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_micros())
            .map_err(serde::de::Error::custom)
    }
}

/// A duration in µs, the way monitors write them: `5m`, `90s`, `2h`, `7d`, `1.5s`, `250ms`.
pub fn format_duration(micros: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (86_400_000_000, "d"),
        (3_600_000_000, "h"),
        (60_000_000, "m"),
        (1_000_000, "s"),
        (1_000, "ms"),
    ];
    for (unit, name) in UNITS {
        if micros != 0 && micros % unit == 0 {
            return format!("{}{name}", micros / unit);
        }
    }
    if micros.abs() >= 1_000_000 {
        return format!("{:.3}s", micros as f64 / 1e6);
    }
    if micros.abs() >= 1_000 {
        return format!("{:.1}ms", micros as f64 / 1e3);
    }
    format!("{micros}µs")
}

/// A monitor value for people: integers without decimals, others with at most three
/// significant decimals, durations (µs) as durations.
pub fn format_value(value: f64, duration: bool) -> String {
    if value.is_infinite() {
        return if value > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    if duration {
        let (scaled, unit) = if value.abs() >= 1e6 {
            (value / 1e6, "s")
        } else if value.abs() >= 1e3 {
            (value / 1e3, "ms")
        } else {
            (value, "µs")
        };
        return format!("{}{unit}", format_value(scaled, false));
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_values_read_well() {
        assert_eq!(format_duration(300_000_000), "5m");
        assert_eq!(format_duration(1_500_000), "1500ms");
        assert_eq!(format_duration(250_000), "250ms");
        assert_eq!(format_value(51.0, false), "51");
        assert_eq!(format_value(2.0 / 3.0, false), "0.667");
        assert_eq!(format_value(1_200_000.0, true), "1.2s");
    }
}

//! Calendars: when a monitor is active (`active:`) and when its notifications are held
//! (`mute:`). An interval has Alertmanager's `time_intervals` semantics — `times`, `weekdays`,
//! `days_of_month`, `months`, `years`, all optional and all required to match, in an IANA
//! `location` (UTC by default) — or is a one-off range `from:`/`to:` (RFC 3339). A calendar
//! matches when any of its intervals does; an empty one has no say.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use kubetrail_policy::yaml::{Line, Node};

/// A list of intervals; empty means "not restricted".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calendar {
    /// The intervals.
    pub intervals: Vec<TimeInterval>,
}

impl Calendar {
    /// Whether the calendar has intervals at all.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Whether `micros` (µs since the epoch) falls in one of the intervals.
    pub fn contains(&self, micros: i64) -> bool {
        self.intervals.iter().any(|i| i.contains(micros))
    }

    /// Whether the events of the time bucket `[start, start + width)` count: recurring
    /// intervals change at whole minutes, so a bucket of at most a minute aligned to minutes
    /// is wholly in or out of them and its start decides; one-off ranges can start at any
    /// second and count for every bucket they overlap (their events are also filtered by time
    /// in the query, see [`Calendar::ranges_only`]).
    pub fn counts_bucket(&self, start: i64, width: i64) -> bool {
        self.intervals.iter().any(|i| match i {
            TimeInterval::Range { from, to } => *from < start + width && start < *to,
            TimeInterval::Recurring { .. } => i.contains(start),
        })
    }

    /// The one-off ranges, when the calendar has nothing else (then a query can select
    /// exactly their events).
    pub fn ranges_only(&self) -> Option<Vec<(i64, i64)>> {
        self.intervals
            .iter()
            .map(|i| match i {
                TimeInterval::Range { from, to } => Some((*from, *to)),
                TimeInterval::Recurring { .. } => None,
            })
            .collect()
    }
}

/// One interval.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeInterval {
    /// Recurring, as Alertmanager's `time_intervals`.
    Recurring {
        /// Minutes of the day, `[start, end)`.
        times: Vec<(u32, u32)>,
        /// Weekdays, 0 = Sunday, inclusive ranges.
        weekdays: Vec<(u32, u32)>,
        /// Days of month, inclusive; negative counts from the month's end.
        days_of_month: Vec<(i32, i32)>,
        /// Months 1–12, inclusive.
        months: Vec<(u32, u32)>,
        /// Years, inclusive.
        years: Vec<(i32, i32)>,
        /// The time zone.
        location: Tz,
    },
    /// From `from` (inclusive) to `to` (exclusive), µs since the epoch.
    Range {
        /// Start.
        from: i64,
        /// End.
        to: i64,
    },
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl TimeInterval {
    /// Reads an interval, or says what is wrong at which line.
    pub fn from_yaml(node: &Node) -> Result<TimeInterval, (Line, String)> {
        let Node::Map(entries) = node else {
            return Err((
                node.line(),
                "an interval is a mapping: times, weekdays, days_of_month, months, years, location, or from and to".into(),
            ));
        };
        let find = |name: &str| entries.iter().find(|(k, _)| k.name == name);
        for (key, _) in entries {
            if !matches!(
                key.name.as_str(),
                "times"
                    | "weekdays"
                    | "days_of_month"
                    | "months"
                    | "years"
                    | "location"
                    | "from"
                    | "to"
            ) {
                return Err((
                    key.line,
                    format!(
                        "{}: unknown key; an interval has times, weekdays, days_of_month, months, years, location, or from and to",
                        key.name
                    ),
                ));
            }
        }
        if find("from").is_some() || find("to").is_some() {
            let time = |name: &str| -> Result<i64, (Line, String)> {
                let (key, value) = find(name).ok_or((
                    node.line(),
                    format!("a one-off range needs `from:` and `to:` (missing {name})"),
                ))?;
                let text = scalar(value).ok_or((key.line, format!("{name}: an RFC 3339 time")))?;
                DateTime::parse_from_rfc3339(text.trim())
                    .map(|t| t.with_timezone(&Utc).timestamp_micros())
                    .map_err(|e| {
                        (key.line, format!("{name}: {text:?} is not an RFC 3339 time ({e}), e.g. 2026-12-20T00:00:00Z"))
                    })
            };
            let (from, to) = (time("from")?, time("to")?);
            if to <= from {
                return Err((node.line(), "`to:` must be after `from:`".into()));
            }
            return Ok(TimeInterval::Range { from, to });
        }
        let list = |name: &str| -> Vec<(Line, String)> {
            match find(name).map(|(_, v)| v) {
                Some(Node::Seq(items)) => items
                    .iter()
                    .filter_map(|i| scalar(i).map(|s| (i.line(), s.to_owned())))
                    .collect(),
                Some(v) => scalar(v)
                    .map(|s| vec![(v.line(), s.to_owned())])
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        };
        let mut times = Vec::new();
        if let Some((key, value)) = find("times") {
            let items: Vec<&Node> = match value {
                Node::Seq(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let Node::Map(t) = item else {
                    return Err((
                        key.line,
                        "times: a list of {start_time: HH:MM, end_time: HH:MM}".into(),
                    ));
                };
                let get = |n: &str| {
                    t.iter()
                        .find(|(k, _)| k.name == n)
                        .and_then(|(_, v)| scalar(v))
                };
                let parse = |n: &str| -> Result<u32, (Line, String)> {
                    let text =
                        get(n).ok_or((item.line(), format!("times: {n} is missing (HH:MM)")))?;
                    minutes(text).ok_or((
                        item.line(),
                        format!("times: {n} {text:?} is not HH:MM (00:00 to 24:00)"),
                    ))
                };
                let (start, end) = (parse("start_time")?, parse("end_time")?);
                if end <= start {
                    return Err((item.line(), "times: end_time must be after start_time (split intervals that cross midnight in two)".into()));
                }
                times.push((start, end));
            }
        }
        let weekdays = ranges(
            &list("weekdays"),
            |s| {
                WEEKDAYS
                    .iter()
                    .position(|d| *d == s.to_ascii_lowercase())
                    .map(|i| i as u32)
            },
            "weekdays: write names like `monday` or ranges like `monday:friday`",
        )?;
        let months = ranges(
            &list("months"),
            |s| {
                MONTHS
                    .iter()
                    .position(|m| *m == s.to_ascii_lowercase())
                    .map(|i| i as u32 + 1)
                    .or_else(|| s.parse().ok().filter(|m| (1..=12).contains(m)))
            },
            "months: write names like `january`, numbers 1-12, or ranges like `june:august`",
        )?;
        let days_of_month = ranges(
            &list("days_of_month"),
            |s| {
                s.parse::<i32>()
                    .ok()
                    .filter(|d| *d != 0 && (-31..=31).contains(d))
            },
            "days_of_month: write 1 to 31, -1 for the last day, or ranges like `1:5`",
        )?;
        let years = ranges(
            &list("years"),
            |s| s.parse::<i32>().ok(),
            "years: write years like 2026 or ranges like `2026:2027`",
        )?;
        let location = match find("location") {
            None => Tz::UTC,
            Some((key, value)) => {
                let text = scalar(value).unwrap_or_default();
                if text == "Local" {
                    Tz::UTC
                } else {
                    text.parse::<Tz>().map_err(|_| {
                        (
                            key.line,
                            format!(
                                "location: {text:?} is not an IANA time zone, e.g. Europe/Berlin"
                            ),
                        )
                    })?
                }
            }
        };
        Ok(TimeInterval::Recurring {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }

    /// Whether `micros` falls in the interval.
    pub fn contains(&self, micros: i64) -> bool {
        match self {
            TimeInterval::Range { from, to } => (*from..*to).contains(&micros),
            TimeInterval::Recurring {
                times,
                weekdays,
                days_of_month,
                months,
                years,
                location,
            } => {
                let Some(utc) = Utc.timestamp_micros(micros).single() else {
                    return false;
                };
                let local = utc.with_timezone(location);
                let minute = local.hour() * 60 + local.minute();
                let in_ranges = |ranges: &[(u32, u32)], v: u32| {
                    ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&v))
                };
                let day_ok = days_of_month.is_empty() || {
                    let last = days_in_month(local.year(), local.month()) as i32;
                    let day = local.day() as i32;
                    let resolve = |d: i32| if d < 0 { last + 1 + d } else { d };
                    days_of_month
                        .iter()
                        .any(|(a, b)| (resolve(*a)..=resolve(*b)).contains(&day))
                };
                (times.is_empty() || times.iter().any(|(a, b)| (*a..*b).contains(&minute)))
                    && in_ranges(weekdays, local.weekday().num_days_from_sunday())
                    && in_ranges(months, local.month())
                    && day_ok
                    && (years.is_empty()
                        || years.iter().any(|(a, b)| (*a..=*b).contains(&local.year())))
            }
        }
    }
}

fn scalar(node: &Node) -> Option<&str> {
    match node {
        Node::Str(s, _) | Node::Number(s, _) => Some(s),
        _ => None,
    }
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn ranges<T: Copy + PartialOrd>(
    items: &[(Line, String)],
    parse: impl Fn(&str) -> Option<T>,
    help: &str,
) -> Result<Vec<(T, T)>, (Line, String)> {
    items
        .iter()
        .map(|(line, text)| {
            let (a, b) = text.split_once(':').unwrap_or((text, text));
            match (parse(a.trim()), parse(b.trim())) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err((*line, format!("{text:?}: {help}"))),
            }
        })
        .collect()
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_policy::yaml;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    fn interval(text: &str) -> TimeInterval {
        TimeInterval::from_yaml(&yaml::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn office_hours_in_a_time_zone() {
        let office = interval(
            "times: [{start_time: '09:00', end_time: '17:00'}]\nweekdays: ['monday:friday']\nlocation: Europe/Berlin\n",
        );
        // 2026-12-02 is a Wednesday; Berlin is UTC+1 in December.
        assert!(office.contains(at("2026-12-02T08:00:00Z")));
        assert!(!office.contains(at("2026-12-02T07:59:59Z")));
        assert!(!office.contains(at("2026-12-02T16:00:00Z")));
        assert!(!office.contains(at("2026-12-05T10:00:00Z")), "Saturday");
    }

    #[test]
    fn days_months_years_and_ranges() {
        let last_days = interval("days_of_month: ['-2:-1']\nmonths: [february]\nyears: ['2028']\n");
        assert!(last_days.contains(at("2028-02-28T12:00:00Z")));
        assert!(last_days.contains(at("2028-02-29T12:00:00Z")));
        assert!(!last_days.contains(at("2028-02-27T12:00:00Z")));
        assert!(!last_days.contains(at("2027-02-28T12:00:00Z")));
        let freeze = interval("from: 2026-12-20T00:00:00Z\nto: 2027-01-04T00:00:00Z\n");
        assert!(freeze.contains(at("2026-12-24T12:00:00Z")));
        assert!(!freeze.contains(at("2027-01-04T00:00:00Z")));
    }

    #[test]
    fn mistakes_are_explained() {
        for (text, needle) in [
            ("weekdays: [funday]\n", "weekdays"),
            (
                "times: [{start_time: '17:00', end_time: '09:00'}]\n",
                "after start_time",
            ),
            ("location: Mars/Olympus\n", "IANA"),
            ("from: yesterday\nto: 2027-01-04T00:00:00Z\n", "RFC 3339"),
            ("hours: [1]\n", "unknown key"),
        ] {
            let err = TimeInterval::from_yaml(&yaml::parse(text).unwrap()).unwrap_err();
            assert!(err.1.contains(needle), "{text}: {err:?}");
        }
    }
}

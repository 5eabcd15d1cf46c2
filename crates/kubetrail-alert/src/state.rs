//! Alert state per group: OK → Pending (`for`) → Firing → Resolved (back to OK).
//!
//! * A group enters Pending when its value meets the warning or alert condition, and fires
//!   once the condition has held for `for` (at once without `for`).
//! * Firing has a level, warn or alert; it moves between them as the value does.
//! * Once firing, the group resolves only when the recovery condition holds (`recover:`;
//!   without it, when neither condition holds), and only after `keep_firing_for` of that:
//!   a value hovering at the threshold does not flap.
//! * A value of None (no events, for an aggregate that has no value without events) counts as
//!   recovered.

use serde::{Deserialize, Serialize};

use crate::condition::Comparison;

/// The level of a firing alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The `warn:` condition holds.
    Warn,
    /// The `alert:` condition holds.
    Alert,
}

/// The state of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GroupState {
    /// Nothing to report.
    Ok,
    /// The condition holds, for less than `for`.
    Pending {
        /// Since when (µs).
        since: i64,
        /// The level it would fire at.
        level: Level,
    },
    /// Firing.
    Firing {
        /// Since when (µs).
        since: i64,
        /// The level.
        level: Level,
        /// When the condition last held (µs): `keep_firing_for` counts from there.
        last_held: i64,
    },
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Entered Pending.
    Pending,
    /// Started firing, or changed level while firing.
    Firing,
    /// Resolved after firing.
    Resolved,
    /// Left Pending without firing.
    Ok,
    /// Cannot be evaluated: the ingest watermark has stayed behind the next window for longer
    /// than `no_data_after` (the monitored clusters stopped sending, or ingest is stuck). Not
    /// the same as zero events, which are evaluated. When data comes back the group returns to
    /// the state it had (its transition is that state's).
    NoData,
    /// Cannot be evaluated: querying the store has failed for a minute.
    Error,
}

/// A monitor's conditions.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    /// `alert:`.
    pub alert: Comparison,
    /// `warn:`.
    pub warn: Option<Comparison>,
    /// `recover:`.
    pub recover: Option<Comparison>,
    /// `for`, µs.
    pub pending_for: i64,
    /// `keep_firing_for`, µs.
    pub keep_firing_for: i64,
}

impl Conditions {
    /// The level the value meets, if any.
    pub fn level(&self, value: Option<f64>) -> Option<Level> {
        let value = value?;
        if self.alert.holds(value) {
            Some(Level::Alert)
        } else if self.warn.is_some_and(|w| w.holds(value)) {
            Some(Level::Warn)
        } else {
            None
        }
    }

    fn recovered(&self, value: Option<f64>) -> bool {
        match (value, self.recover) {
            (None, _) => true,
            (Some(v), Some(recover)) => recover.holds(v),
            (Some(v), None) => self.level(Some(v)).is_none(),
        }
    }
}

impl GroupState {
    /// The state after an evaluation at `at` gave `value`, with the change if there is one.
    pub fn next(
        &self,
        conditions: &Conditions,
        value: Option<f64>,
        at: i64,
    ) -> (GroupState, Option<Change>) {
        let level = conditions.level(value);
        match (self, level) {
            (GroupState::Ok, None) => (GroupState::Ok, None),
            (GroupState::Ok, Some(level)) => {
                if conditions.pending_for == 0 {
                    (
                        GroupState::Firing {
                            since: at,
                            level,
                            last_held: at,
                        },
                        Some(Change::Firing),
                    )
                } else {
                    (
                        GroupState::Pending { since: at, level },
                        Some(Change::Pending),
                    )
                }
            }
            (GroupState::Pending { .. }, None) => (GroupState::Ok, Some(Change::Ok)),
            (GroupState::Pending { since, .. }, Some(level)) => {
                if at - since >= conditions.pending_for {
                    (
                        GroupState::Firing {
                            since: at,
                            level,
                            last_held: at,
                        },
                        Some(Change::Firing),
                    )
                } else {
                    (
                        GroupState::Pending {
                            since: *since,
                            level,
                        },
                        None,
                    )
                }
            }
            (
                GroupState::Firing {
                    since,
                    level: current,
                    last_held,
                },
                _,
            ) => {
                if !conditions.recovered(value) {
                    // Inside the hysteresis band the level stays what it was.
                    let level = level.unwrap_or(*current);
                    let change = (level != *current).then_some(Change::Firing);
                    (
                        GroupState::Firing {
                            since: *since,
                            level,
                            last_held: at,
                        },
                        change,
                    )
                } else if at - last_held < conditions.keep_firing_for {
                    (self.clone(), None)
                } else {
                    (GroupState::Ok, Some(Change::Resolved))
                }
            }
        }
    }

    /// The firing level, if firing.
    pub fn firing(&self) -> Option<Level> {
        match self {
            GroupState::Firing { level, .. } => Some(*level),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(
        alert: &str,
        warn: Option<&str>,
        recover: Option<&str>,
        pending_for: i64,
        keep: i64,
    ) -> Conditions {
        Conditions {
            alert: Comparison::parse(alert).unwrap(),
            warn: warn.map(|w| Comparison::parse(w).unwrap()),
            recover: recover.map(|r| Comparison::parse(r).unwrap()),
            pending_for,
            keep_firing_for: keep,
        }
    }

    /// Runs values through the machine, one per minute; the changes with their minute.
    fn run(c: &Conditions, values: &[Option<f64>]) -> Vec<(usize, Change, Option<Level>)> {
        let mut state = GroupState::Ok;
        let mut out = Vec::new();
        for (minute, value) in values.iter().enumerate() {
            let (next, change) = state.next(c, *value, minute as i64 * 60_000_000);
            if let Some(change) = change {
                out.push((minute, change, next.firing()));
            }
            state = next;
        }
        out
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let c = conditions("> 50", None, None, 120_000_000, 0);
        let changes = run(
            &c,
            &[Some(10.0), Some(60.0), Some(70.0), Some(80.0), Some(5.0)],
        );
        assert_eq!(
            changes,
            vec![
                (1, Change::Pending, None),
                (3, Change::Firing, Some(Level::Alert)),
                (4, Change::Resolved, None)
            ]
        );
        // A blip shorter than `for` never fires.
        let changes = run(&c, &[Some(60.0), Some(5.0), Some(60.0)]);
        assert_eq!(
            changes,
            vec![
                (0, Change::Pending, None),
                (1, Change::Ok, None),
                (2, Change::Pending, None)
            ]
        );
    }

    #[test]
    fn hysteresis_and_keep_firing_for_stop_flapping() {
        let flapping = [
            Some(60.0),
            Some(45.0),
            Some(55.0),
            Some(48.0),
            Some(30.0),
            Some(20.0),
        ];
        let plain = conditions("> 50", None, None, 0, 0);
        assert_eq!(
            run(&plain, &flapping).len(),
            4,
            "without hysteresis it flaps"
        );
        let band = conditions("> 50", None, Some("< 40"), 0, 0);
        assert_eq!(
            run(&band, &flapping),
            vec![
                (0, Change::Firing, Some(Level::Alert)),
                (4, Change::Resolved, None)
            ]
        );
        let keep = conditions("> 50", None, None, 0, 120_000_000);
        assert_eq!(
            run(
                &keep,
                &[
                    Some(60.0),
                    Some(10.0),
                    Some(60.0),
                    Some(10.0),
                    Some(10.0),
                    Some(10.0)
                ]
            ),
            vec![
                (0, Change::Firing, Some(Level::Alert)),
                (4, Change::Resolved, None)
            ]
        );
    }

    #[test]
    fn levels_escalate_and_no_value_recovers() {
        let c = conditions("> 100", Some("> 50"), None, 0, 0);
        assert_eq!(
            run(&c, &[Some(60.0), Some(120.0), Some(70.0), None]),
            vec![
                (0, Change::Firing, Some(Level::Warn)),
                (1, Change::Firing, Some(Level::Alert)),
                (2, Change::Firing, Some(Level::Warn)),
                (3, Change::Resolved, None)
            ]
        );
    }
}

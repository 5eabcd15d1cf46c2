//! Evaluating one monitor over the store, window after window, in event time.
//!
//! The same code runs live (`serve`, up to the ingest watermark) and over history
//! (`monitor test`, up to the end of the range): [`MonitorEval::advance`] fetches the
//! partials of the buckets it has not read yet in one query, then evaluates every window
//! that ends at or before the watermark, in order, and reports the transitions. A window
//! `[t - window, t)` is evaluated at `t`, a multiple of `every` since the epoch. Live, the
//! buckets after a monitor's start come from the stream of accepted events instead
//! ([`crate::stream`], [`MonitorEval::absorb`]); only what precedes it is queried.
//!
//! History a monitor needs before its first window — the past window of `change`, the known
//! groups of `new_value` and `absence`, the seasonal baseline of `anomaly` — is read from the
//! store when the monitor starts ([`MonitorEval::warm_up`]): no cold start.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use kubetrail_query::{
    AggFunc, CompareOp, CompileOptions, DataFusionDialect, Expr, Field, FieldKind, Literal,
    Partials, Pipe, Query, QueryLimits, compile_partials,
};
use kubetrail_store::QueryEngine;
use serde::{Deserialize, Serialize};

use crate::condition::Comparison;
use crate::spec::{Direction, Kind, MonitorSpec, Seasonality, gcd};
use crate::state::{Change, Conditions, GroupState, Level};
use crate::stream::{Drained, FeedSpec};
use crate::window::{Buckets, GroupKey, Partial, empty_value};

/// A change of a group's state, as `monitor test -o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The monitor.
    pub monitor: String,
    /// The group: its `by` fields and their values.
    pub group: BTreeMap<String, String>,
    /// pending, firing, resolved or ok (pending cancelled).
    pub state: Change,
    /// The level, when firing.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub level: Option<Level>,
    /// The evaluation time: the end of the window (µs since the epoch; RFC 3339 in JSON).
    #[serde(with = "crate::rfc3339")]
    pub at: i64,
    /// The value of the window (for change monitors, the change).
    pub value: Option<f64>,
    /// The threshold the value was compared with.
    pub threshold: Option<f64>,
}

/// How a monitor is doing as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "snake_case")]
pub enum Health {
    /// Evaluating.
    Ok,
    /// More groups than `max_groups`: only the highest values are evaluated.
    Capped {
        /// How many groups the last window had.
        groups: usize,
    },
    /// Its query failed; evaluation is retried at the next round.
    Error {
        /// The error.
        message: String,
    },
}

/// What is kept of a group between windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The state.
    #[serde(flatten)]
    pub state: GroupState,
    /// The last value.
    pub value: Option<f64>,
    /// The threshold of the last value.
    pub threshold: Option<f64>,
}

impl GroupRecord {
    /// A group with nothing to report.
    pub fn ok() -> GroupRecord {
        GroupRecord {
            state: GroupState::Ok,
            value: None,
            threshold: None,
        }
    }
}

/// What a window says about one group.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// What the state machine compares with the conditions.
    indicator: Option<f64>,
    /// The value people see (the count of a new value, the value behind an anomaly score).
    shown: Option<f64>,
    /// The threshold people see.
    threshold: Option<f64>,
}

impl Reading {
    fn new(indicator: Option<f64>, shown: Option<f64>, threshold: Option<f64>) -> Reading {
        Reading {
            indicator,
            shown,
            threshold,
        }
    }

    /// A value compared as it is.
    fn plain(value: Option<f64>, threshold: Option<f64>) -> Reading {
        Reading::new(value, value, threshold)
    }

    /// For keeping the groups that matter most when there are too many.
    fn rank(&self) -> f64 {
        self.indicator.unwrap_or(f64::MIN)
    }
}

/// One monitor being evaluated.
pub struct MonitorEval {
    /// The definition.
    pub spec: Arc<MonitorSpec>,
    /// Its query, restricted to the active ranges when it has only one-off ranges.
    query: Query,
    plan: Partials,
    conditions: Conditions,
    bucket: i64,
    buckets: Buckets,
    fetched_to: i64,
    /// Buckets from here on come from the live stream ([`crate::stream`]), not the store.
    stream_from: Option<i64>,
    /// Events of the streamed buckets, by bucket and group, for notifications.
    samples: BTreeMap<i64, HashMap<GroupKey, Vec<Box<str>>>>,
    /// The end of the next window to evaluate (µs).
    pub next_eval: i64,
    /// Groups not in the OK state (and those seen in the last window).
    pub groups: HashMap<GroupKey, GroupRecord>,
    /// `new_value`: groups known; `absence`: when each group was last seen.
    seen: HashMap<GroupKey, i64>,
    baseline: HashMap<(GroupKey, u32), VecDeque<f64>>,
    /// The first stored event's time: a past window of `change` before it has no data,
    /// which is not zero events.
    history_since: Option<i64>,
    /// Health.
    pub health: Health,
    /// Whether the value is a duration (µs), for display.
    pub duration_value: bool,
}

/// The most past values kept per group and seasonal slot of an anomaly baseline.
const BASELINE_SAMPLES: usize = 2000;
/// The fewest past values a baseline decides with.
const BASELINE_MIN_SAMPLES: usize = 6;

impl MonitorEval {
    /// Prepares `spec` to evaluate windows ending at or after `start` (µs).
    pub fn new(spec: Arc<MonitorSpec>, start: i64) -> Result<MonitorEval, String> {
        let mut bucket = gcd(spec.window, spec.every);
        let mut query = spec.query.clone();
        if !spec.active.is_empty() {
            // Buckets of at most a minute, aligned to minutes, are wholly in or out of
            // recurring intervals; one-off ranges select their events exactly.
            bucket = gcd(bucket, 60_000_000);
            if let Some(ranges) = spec.active.ranges_only() {
                query.filter = Some(restrict_to(query.filter.take(), &ranges)?);
            }
        }
        let plan = compile_partials(
            &query,
            &DataFusionDialect,
            &CompileOptions::default(),
            bucket,
        )
        .map_err(|e| e.message)?;
        let anomaly_threshold = match &spec.kind {
            Kind::Anomaly(a) => Some(a.deviations),
            _ => None,
        };
        let conditions = Conditions {
            alert: anomaly_threshold.map_or(spec.alert, |d| Comparison {
                op: crate::condition::Op::Gt,
                threshold: d,
            }),
            warn: spec.warn,
            recover: spec.recover,
            pending_for: spec.pending_for,
            keep_firing_for: spec.keep_firing_for,
        };
        let duration_value = plan
            .aggregate
            .field
            .as_ref()
            .is_some_and(|f| f.kind() == FieldKind::Duration)
            && !matches!(plan.aggregate.func, AggFunc::Count | AggFunc::DistinctCount);
        let next_eval = align_up(start, spec.every);
        let history = match spec.kind {
            Kind::Change { offset } | Kind::PctChange { offset } => offset,
            _ => 0,
        };
        let fetched_to = align_down(next_eval - spec.window - history, bucket);
        Ok(MonitorEval {
            spec,
            query,
            plan,
            conditions,
            bucket,
            buckets: Buckets::default(),
            fetched_to,
            stream_from: None,
            samples: BTreeMap::new(),
            next_eval,
            groups: HashMap::new(),
            seen: HashMap::new(),
            baseline: HashMap::new(),
            history_since: None,
            health: Health::Ok,
            duration_value,
        })
    }

    /// Reads the history the monitor decides with before its first window: the groups known
    /// to `new_value` and `absence`, the baseline of `anomaly`.
    pub fn warm_up(&mut self, engine: &QueryEngine) -> Result<(), String> {
        let start = self.next_eval - self.spec.window;
        match self.spec.kind.clone() {
            Kind::NewValue { learning: span } | Kind::Absence { lookback: span } => {
                let from = start - span;
                let plan = compile_partials(
                    &self.query,
                    &DataFusionDialect,
                    &range(from, start),
                    span.max(1),
                )
                .map_err(|e| e.message)?;
                let batches = engine.query(&plan.sql).map_err(|e| e.to_string())?;
                let mut known = Buckets::default();
                known.add_batches(&batches, plan.group_by.len(), plan.kind)?;
                for key in known.groups(i64::MIN, i64::MAX) {
                    self.seen.insert(key.clone(), start);
                }
            }
            Kind::Anomaly(anomaly) => {
                let (spec, from) = (self.spec.clone(), start - anomaly.baseline);
                let mut learner = MonitorEval::new(spec, from)?;
                learner.fetch(engine, start)?;
                while learner.next_eval <= start {
                    let at = learner.next_eval;
                    let window = learner
                        .buckets
                        .window(at - learner.spec.window, at, |_| true);
                    for (key, partial) in &window {
                        if let Some(v) = partial.value(learner.plan.aggregate.func) {
                            learner.remember(key, at, v, anomaly.seasonality);
                        }
                    }
                    learner.next_eval += learner.spec.every;
                    learner
                        .buckets
                        .prune(learner.next_eval - learner.spec.window);
                }
                self.baseline = learner.baseline;
            }
            Kind::Change { .. } | Kind::PctChange { .. } => {
                self.history_since = first_event_time(engine)?;
            }
            Kind::Threshold => {}
        }
        Ok(())
    }

    /// Reads the buckets up to `to` that were not read yet (those before the stream's cut).
    fn fetch(&mut self, engine: &QueryEngine, to: i64) -> Result<(), String> {
        let to = align_down(to, self.bucket);
        if to <= self.fetched_to {
            return Ok(());
        }
        let stored_to = self.stream_from.map_or(to, |cut| to.min(cut));
        if stored_to > self.fetched_to {
            let plan = compile_partials(
                &self.query,
                &DataFusionDialect,
                &range(self.fetched_to, stored_to),
                self.bucket,
            )
            .map_err(|e| e.message)?;
            let batches = engine.query(&plan.sql).map_err(|e| e.to_string())?;
            self.buckets
                .add_batches(&batches, plan.group_by.len(), plan.kind)?;
        }
        self.fetched_to = to;
        Ok(())
    }

    /// What the live stream must compute for this monitor; None when only a query of the
    /// store can (see [`crate::stream`]).
    pub fn feed_spec(&self) -> Option<FeedSpec> {
        let by: Vec<Field> = match self.query.pipes.as_slice() {
            [Pipe::Stats { by, .. }] => by.clone(),
            _ => Vec::new(),
        };
        FeedSpec::new(
            &self.query,
            self.plan.aggregate.func,
            self.plan.aggregate.field.as_ref(),
            &by,
            self.bucket,
            self.spec.max_groups,
        )
    }

    /// Up to [`crate::stream::SAMPLES`] events of group `key` in `[from, to)`, newest buckets
    /// first, when that range comes wholly from the live stream (None: read them from the
    /// store; the stream kept none, or not for all of the range).
    pub fn stream_samples(&self, key: &GroupKey, from: i64, to: i64) -> Option<Vec<&str>> {
        if self.stream_from.is_none_or(|cut| from < cut) {
            return None;
        }
        let events: Vec<&str> = self
            .samples
            .range(from..to)
            .rev()
            .filter_map(|(_, groups)| groups.get(key))
            .flatten()
            .map(|e| e.as_ref())
            .take(crate::stream::SAMPLES)
            .collect();
        (!events.is_empty()).then_some(events)
    }

    /// Whether the next window (and the past it compares with) comes wholly from the live
    /// stream: it can be evaluated as soon as events are accepted, without waiting for the
    /// store to commit them.
    pub fn streamed(&self) -> bool {
        let keep = match self.spec.kind {
            Kind::Change { offset } | Kind::PctChange { offset } => offset,
            _ => 0,
        };
        self.stream_from
            .is_some_and(|cut| self.next_eval - self.spec.window - keep >= cut)
    }

    /// Drops the partials read so far, and the stream's cut: the windows to come are read again
    /// (from the store, until a new cut is given). For when what was absorbed may include
    /// events that were never stored, or a feed was stopped.
    pub fn forget_buckets(&mut self) {
        let history = match self.spec.kind {
            Kind::Change { offset } | Kind::PctChange { offset } => offset,
            _ => 0,
        };
        self.fetched_to = align_down(self.next_eval - self.spec.window - history, self.bucket);
        self.buckets = Buckets::default();
        self.samples.clear();
        self.stream_from = None;
    }

    /// From bucket `cut` on, the buckets come from the live stream ([`absorb`](Self::absorb)).
    pub fn stream_from(&mut self, cut: i64) {
        self.stream_from = Some(cut);
    }

    /// Adds partials the live stream accumulated; those of buckets no window to come covers
    /// are left out. Events of groups the stream left out make the monitor say it is capped.
    pub fn absorb(&mut self, drained: Drained) {
        let keep = match self.spec.kind {
            Kind::Change { offset } | Kind::PctChange { offset } => offset,
            _ => 0,
        };
        let floor = self.next_eval - self.spec.window - keep;
        for (start, groups) in drained.buckets.range(floor..) {
            self.buckets.merge_bucket(*start, groups);
        }
        for (start, groups) in drained.samples.into_iter().filter(|(s, _)| *s >= floor) {
            let bucket = self.samples.entry(start).or_default();
            for (key, events) in groups {
                let kept = bucket.entry(key).or_default();
                let room = crate::stream::SAMPLES.saturating_sub(kept.len());
                kept.extend(events.into_iter().take(room));
            }
        }
        if drained.future > 0 {
            tracing::warn!(monitor = %self.spec.name, events = drained.future, "events dated more than an hour ahead of the server's clock were not counted");
        }
        if drained.dropped > 0 {
            tracing::warn!(monitor = %self.spec.name, events = drained.dropped, "too many groups in one bucket: the events of the groups beyond the limit were left out");
            if !matches!(self.health, Health::Error { .. }) {
                self.health = Health::Capped {
                    groups: self.spec.max_groups,
                };
            }
        }
    }

    /// Evaluates every window ending at or before `watermark`; their transitions are added
    /// to `out`. A failed query leaves the monitor where it was (health Error), to be retried.
    pub fn advance(&mut self, engine: &QueryEngine, watermark: i64, out: &mut Vec<Transition>) {
        if self.next_eval > watermark {
            return;
        }
        if let Err(message) = self.fetch(engine, watermark) {
            self.health = Health::Error { message };
            return;
        }
        if matches!(self.health, Health::Error { .. }) {
            self.health = Health::Ok;
        }
        while self.next_eval <= watermark {
            let at = self.next_eval;
            self.evaluate(at, out);
            self.next_eval += self.spec.every;
        }
        let keep = match self.spec.kind {
            Kind::Change { offset } | Kind::PctChange { offset } => offset,
            _ => 0,
        };
        let floor = self.next_eval - self.spec.window - keep;
        self.buckets.prune(floor);
        self.samples = self.samples.split_off(&floor);
    }

    fn window_values(&self, from: i64, to: i64) -> HashMap<GroupKey, Partial> {
        self.buckets
            .window(from, to, |start| self.bucket_counts(start))
    }

    fn bucket_counts(&self, start: i64) -> bool {
        let active = &self.spec.active;
        active.is_empty() || active.counts_bucket(start, self.bucket)
    }

    /// Evaluates the window ending at `at`.
    fn evaluate(&mut self, at: i64, out: &mut Vec<Transition>) {
        let spec = self.spec.clone();
        let window_active = spec.active.is_empty()
            || (at - spec.window..at)
                .step_by(self.bucket as usize)
                .any(|start| self.bucket_counts(start));
        if !window_active {
            // Outside its active calendar a monitor does not evaluate: once a window has no
            // active time left, what was firing resolves and what was pending is dropped.
            let keys: Vec<GroupKey> = self.groups.keys().cloned().collect();
            for key in keys {
                let record = self.groups.remove(&key).unwrap_or_else(|| unreachable!());
                let change = match record.state {
                    GroupState::Firing { .. } => Change::Resolved,
                    GroupState::Pending { .. } => Change::Ok,
                    GroupState::Ok => continue,
                };
                out.push(self.transition(&key, change, None, at, None, None));
            }
            return;
        }
        let func = self.plan.aggregate.func;
        let current = self.window_values(at - spec.window, at);
        let mut candidates: HashMap<GroupKey, Reading> = HashMap::new();
        let threshold = Some(spec.alert.threshold);
        match &spec.kind {
            Kind::Threshold => {
                for (key, partial) in &current {
                    let v = partial.value(func);
                    candidates.insert(key.clone(), Reading::plain(v, threshold));
                }
            }
            Kind::Change { offset } | Kind::PctChange { offset } => {
                let past_from = at - spec.window - offset;
                // A past before the first stored event is unknown, not zero: no decision.
                let known = self.history_since.is_none_or(|first| past_from >= first);
                let past = self.window_values(past_from, at - offset);
                let keys: HashSet<&GroupKey> = current.keys().chain(past.keys()).collect();
                let pct = matches!(spec.kind, Kind::PctChange { .. });
                for key in keys {
                    let now = current
                        .get(key)
                        .map_or(empty_value(func), |p| p.value(func));
                    let then = past.get(key).map_or(empty_value(func), |p| p.value(func));
                    let v = match (now, then) {
                        _ if !known => None,
                        (Some(n), Some(t)) if pct => Some(if t != 0.0 {
                            (n - t) / t.abs() * 100.0
                        } else if n > 0.0 {
                            f64::INFINITY
                        } else {
                            0.0
                        }),
                        (Some(n), Some(t)) => Some(n - t),
                        _ => None,
                    };
                    candidates.insert(key.clone(), Reading::plain(v, threshold));
                }
            }
            Kind::NewValue { .. } => {
                for (key, partial) in &current {
                    let new = !self.seen.contains_key(key);
                    if new {
                        self.seen.insert(key.clone(), at);
                    }
                    let shown = partial.value(func);
                    candidates.insert(
                        key.clone(),
                        Reading::new(Some(f64::from(u8::from(new))), shown, None),
                    );
                }
            }
            Kind::Absence { lookback } => {
                for key in current.keys() {
                    self.seen.insert(key.clone(), at);
                }
                self.seen.retain(|_, last| *last >= at - lookback);
                for key in self.seen.keys() {
                    // The window is the silence that counts: a group without events in it.
                    let silent = !current.contains_key(key);
                    let indicator = Some(f64::from(u8::from(silent)));
                    candidates.insert(
                        key.clone(),
                        Reading::new(indicator, Some(0.0).filter(|_| silent), None),
                    );
                }
            }
            Kind::Anomaly(anomaly) => {
                for (key, partial) in &current {
                    let Some(v) = partial.value(func) else {
                        continue;
                    };
                    let slot = slot(at, anomaly.seasonality);
                    let (indicator, bound) = match self.baseline.get(&(key.clone(), slot)) {
                        Some(samples) if samples.len() >= BASELINE_MIN_SAMPLES => {
                            let (median, scale) = robust(samples);
                            let score = match anomaly.direction {
                                Direction::Above => (v - median) / scale,
                                Direction::Below => (median - v) / scale,
                                Direction::Both => (v - median).abs() / scale,
                            };
                            let bound = match anomaly.direction {
                                Direction::Below => median - anomaly.deviations * scale,
                                _ => median + anomaly.deviations * scale,
                            };
                            (Some(score), Some(bound))
                        }
                        _ => (None, None),
                    };
                    candidates.insert(key.clone(), Reading::new(indicator, Some(v), bound));
                }
                for (key, partial) in &current {
                    if let Some(v) = partial.value(func) {
                        self.remember(key, at, v, anomaly.seasonality);
                    }
                }
            }
        }
        // Groups in trouble stay evaluated when they have no events in this window.
        for key in self.groups.keys() {
            candidates.entry(key.clone()).or_insert_with(|| {
                let v = match spec.kind {
                    Kind::NewValue { .. } => Some(0.0),
                    _ => empty_value(func),
                };
                Reading::plain(v, threshold)
            });
        }
        if candidates.len() > spec.max_groups {
            let total = candidates.len();
            let mut ranked: Vec<(GroupKey, Reading)> = candidates.into_iter().collect();
            ranked.sort_by(|a, b| {
                let tracked = |k: &GroupKey| self.groups.contains_key(k);
                tracked(&b.0)
                    .cmp(&tracked(&a.0))
                    .then(b.1.rank().total_cmp(&a.1.rank()))
            });
            ranked.truncate(spec.max_groups);
            candidates = ranked.into_iter().collect();
            self.health = Health::Capped { groups: total };
        } else if matches!(self.health, Health::Capped { .. }) {
            self.health = Health::Ok;
        }
        let mut keys: Vec<&GroupKey> = candidates.keys().collect();
        keys.sort();
        for key in keys {
            let Reading {
                indicator,
                shown,
                threshold,
            } = candidates[key];
            let state = self
                .groups
                .get(key)
                .map_or(GroupState::Ok, |r| r.state.clone());
            let (next, change) = state.next(&self.conditions, indicator, at);
            if let Some(change) = change {
                let level = next.firing();
                out.push(self.transition(key, change, level, at, shown, threshold));
            }
            if next == GroupState::Ok {
                self.groups.remove(key);
            } else {
                self.groups.insert(
                    key.clone(),
                    GroupRecord {
                        state: next,
                        value: shown,
                        threshold,
                    },
                );
            }
        }
    }

    fn remember(&mut self, key: &GroupKey, at: i64, value: f64, seasonality: Seasonality) {
        let samples = self
            .baseline
            .entry((key.clone(), slot(at, seasonality)))
            .or_default();
        if samples.len() == BASELINE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(value);
    }

    fn transition(
        &self,
        key: &GroupKey,
        state: Change,
        level: Option<Level>,
        at: i64,
        value: Option<f64>,
        threshold: Option<f64>,
    ) -> Transition {
        Transition {
            monitor: self.spec.name.clone(),
            group: self.group_map(key),
            state,
            level,
            at,
            value,
            threshold,
        }
    }

    /// The group's fields and values.
    pub fn group_map(&self, key: &GroupKey) -> BTreeMap<String, String> {
        self.plan
            .group_by
            .iter()
            .cloned()
            .zip(key.iter().cloned())
            .collect()
    }

    /// The group fields (`by`).
    pub fn group_by(&self) -> &[String] {
        &self.plan.group_by
    }

    /// The seen-group memory of `new_value` and `absence`, for persistence.
    pub fn seen(&self) -> &HashMap<GroupKey, i64> {
        &self.seen
    }

    /// Restores saved state: where evaluation continues, the groups and the seen groups. The
    /// buckets are read again from the store.
    pub fn restore(
        &mut self,
        next_eval: i64,
        groups: HashMap<GroupKey, GroupRecord>,
        seen: HashMap<GroupKey, i64>,
    ) {
        self.next_eval = next_eval;
        self.forget_buckets();
        self.groups = groups;
        if !seen.is_empty() {
            self.seen = seen;
        }
    }
}

/// `filter AND (time in one of the ranges)`.
fn restrict_to(filter: Option<Expr>, ranges: &[(i64, i64)]) -> Result<Expr, String> {
    let time = Field::resolve("time", 0).map_err(|e| e.message)?;
    let compare = |op, micros| Expr::Compare {
        field: time.clone(),
        op,
        value: Literal::Time(micros),
    };
    let within = Expr::Or(
        ranges
            .iter()
            .map(|(from, to)| {
                Expr::And(vec![
                    compare(CompareOp::Ge, *from),
                    compare(CompareOp::Lt, *to),
                ])
            })
            .collect(),
    );
    Ok(match filter {
        Some(filter) => Expr::And(vec![filter, within]),
        None => within,
    })
}

/// The time of the first stored event, if any.
fn first_event_time(engine: &QueryEngine) -> Result<Option<i64>, String> {
    stored_event_time(engine, "MIN")
}

/// The time of the newest stored event.
pub fn last_event_time(engine: &QueryEngine) -> Result<Option<i64>, String> {
    stored_event_time(engine, "MAX")
}

/// `MIN` or `MAX` of the stored events' times.
fn stored_event_time(engine: &QueryEngine, func: &str) -> Result<Option<i64>, String> {
    let batches = engine
        .sql(
            &format!("SELECT CAST({func}(time) AS TIMESTAMP(6)) AS t FROM events"),
            Vec::new(),
        )
        .map_err(|e| e.to_string())?;
    let Some(batch) = batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let time = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64)
        .map_err(|e| e.to_string())?;
    let time = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&time);
    Ok((!arrow::array::Array::is_null(time, 0)).then(|| time.value(0)))
}

/// Options selecting `[from, to)`.
fn range(from: i64, to: i64) -> CompileOptions {
    CompileOptions {
        from_micros: Some(from),
        to_micros: Some(to),
        limits: QueryLimits {
            max_rows: u64::MAX,
            ..QueryLimits::default()
        },
        ..CompileOptions::default()
    }
}

/// The seasonal slot of a window ending at `at`.
fn slot(at: i64, seasonality: Seasonality) -> u32 {
    let hour = (at - 1).div_euclid(3_600_000_000);
    match seasonality {
        // The epoch was a Thursday; any fixed offset keeps weeks apart.
        Seasonality::HourOfWeek => hour.rem_euclid(168) as u32,
        Seasonality::HourOfDay => hour.rem_euclid(24) as u32,
        Seasonality::None => 0,
    }
}

/// The median and a robust scale: 1.4826 × the median absolute deviation (the standard
/// deviation for normal data), floored so that a flat history (MAD 0) does not call every
/// small wiggle an anomaly — at least 1, and at least 10 % of the median.
fn robust(samples: &VecDeque<f64>) -> (f64, f64) {
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    let median = median_of(&mut sorted);
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
    let mad = median_of(&mut deviations);
    let scale = (1.4826 * mad).max(1.0).max(0.1 * median.abs());
    (median, scale)
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `t` rounded down to a multiple of `step`.
pub fn align_down(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// `t` rounded up to a multiple of `step`.
pub fn align_up(t: i64, step: i64) -> i64 {
    let down = align_down(t, step);
    if down == t { t } else { down + step }
}

/// Replays `[from, to)` of the store through the monitors, as if each had been created at
/// `from` (its history before `from` warms it up): every transition they would have made, in
/// time order. Monitors run on `threads` threads; a monitor whose query fails is reported
/// with its error instead of stopping the others.
pub fn backtest(
    engine: &QueryEngine,
    monitors: &[Arc<MonitorSpec>],
    from: i64,
    to: i64,
    threads: usize,
) -> (Vec<Transition>, Vec<(String, String)>) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(monitors.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(spec) = monitors.get(i) else { break };
                    let mut out = Vec::new();
                    let outcome = MonitorEval::new(spec.clone(), from).and_then(|mut eval| {
                        eval.warm_up(engine)?;
                        eval.advance(engine, to, &mut out);
                        match eval.health {
                            Health::Error { message } => Err(message),
                            _ => Ok(()),
                        }
                    });
                    let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                    results.0.extend(out);
                    if let Err(message) = outcome {
                        results.1.push((spec.name.clone(), message));
                    }
                }
            });
        }
    });
    let (mut transitions, errors) = results.into_inner().unwrap_or_else(|e| e.into_inner());
    transitions.sort_by(|a: &Transition, b: &Transition| {
        (a.at, &a.monitor, &a.group).cmp(&(b.at, &b.monitor, &b.group))
    });
    (transitions, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_statistics_ignore_outliers() {
        let samples: VecDeque<f64> = [10.0, 12.0, 11.0, 9.0, 10.0, 500.0, 11.0].into();
        let (median, scale) = robust(&samples);
        assert_eq!(median, 11.0);
        assert!(scale < 3.0, "{scale}");
        assert_eq!(align_up(61, 60), 120);
        assert_eq!(align_up(120, 60), 120);
        assert_eq!(align_down(-1, 60), -60);
        assert_eq!(slot(3_600_000_000, Seasonality::HourOfDay), 0);
        assert_eq!(slot(3_600_000_001, Seasonality::HourOfDay), 1);
    }
}

//! Live monitors fed by the stream of accepted events instead of queries of the store.
//!
//! Querying the store every round costs a scan of every new event per monitor: with a hundred
//! monitors at 100,000 events/s evaluation fell behind and ingest slowed by a fifth. The
//! [`Tap`] sits on the ingest path ([`kubetrail_pipeline::EventTap`]) and adds each accepted
//! event to the partial aggregates (the same [`Partial`]s per bucket and group that a query
//! returns) of the monitors whose filter it matches; each round, a monitor takes what
//! accumulated ([`Tap::drain`]) and evaluates its windows as before. The store is still queried
//! for what precedes the stream: history a monitor starts with, and the buckets before its cut.
//!
//! **Exactly once.** The tap sees events after deduplication, once each. When a monitor is
//! registered, its *cut* is the bucket after the newest event time accepted so far (or stored
//! before): buckets before the cut are read from the store, buckets from the cut on only from
//! the stream, so no event is counted twice and none accepted before registration is missed.
//!
//! **Cost.** The ingest thread pays for every event, so the work is bounded: monitors are
//! indexed by one equality of their filter (`verb:get`, `user_kind:(human OR node)`,
//! `code:403`; [`FilterIndex`]) and an event is matched only against the monitors its field
//! values select, group keys are built in one reused buffer, and a bucket keeps at most
//! [`keys_per_bucket`](FeedSpec::keys_per_bucket) groups (more are counted as dropped and the
//! monitor says it is capped).
//!
//! **What stays on queries.** Monitors grouping by a JSON path or by two lists, and aggregates
//! of a time or of a JSON path, are evaluated from the store as before ([`FeedSpec::new`]
//! returns None).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use kubetrail_event::AuditEvent;
use kubetrail_query::{
    AggFunc, Expr, Field, FieldKind, FilterIndex, JsonColumn, Matcher, PartialKind, Query, Value,
    value_of,
};

use crate::window::{GroupKey, Partial};

/// What a monitor needs from each event.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    matcher: Matcher,
    by: Vec<Field>,
    /// The `by` field that is a list, if one is: an event counts once in the group of each
    /// of its elements (as the store's `UNNEST`), and not at all when the list is empty.
    list_by: Option<usize>,
    value: Option<Field>,
    kind: PartialKind,
    bucket: i64,
    /// The most groups one bucket keeps.
    pub keys_per_bucket: usize,
}

impl FeedSpec {
    /// The feed of a monitor with `query`, aggregating `func` of `value` by `by` into buckets
    /// of `bucket` µs; None when the stream cannot compute what the store query would.
    pub fn new(
        query: &Query,
        func: AggFunc,
        value: Option<&Field>,
        by: &[Field],
        bucket: i64,
        max_groups: usize,
    ) -> Option<FeedSpec> {
        let column_of = |f: &Field, kinds: &[FieldKind]| {
            matches!(f, Field::Column(_)) && kinds.contains(&f.kind())
        };
        const SCALAR: &[FieldKind] = &[
            FieldKind::Text,
            FieldKind::Int,
            FieldKind::Duration,
            FieldKind::Bool,
        ];
        const NUMERIC: &[FieldKind] = &[FieldKind::Int, FieldKind::Duration];
        let lists: Vec<usize> = (0..by.len())
            .filter(|&i| column_of(&by[i], &[FieldKind::List]))
            .collect();
        let all_known = by
            .iter()
            .all(|f| column_of(f, SCALAR) || column_of(f, &[FieldKind::List]));
        if !all_known || lists.len() > 1 {
            return None;
        }
        let numeric = value.is_some_and(|f| column_of(f, NUMERIC));
        let kind = match func {
            AggFunc::Count => PartialKind::Count,
            AggFunc::DistinctCount
                if value
                    .is_some_and(|f| column_of(f, SCALAR) || column_of(f, &[FieldKind::List])) =>
            {
                PartialKind::Distinct
            }
            AggFunc::Sum | AggFunc::Avg if numeric => PartialKind::SumCount,
            AggFunc::Min if numeric => PartialKind::Min,
            AggFunc::Max if numeric => PartialKind::Max,
            AggFunc::Percentile(_) if numeric => PartialKind::Histogram,
            _ => return None,
        };
        if query.filter.as_ref().is_some_and(|f| !matched_alike(f)) {
            return None;
        }
        let filter = Query {
            filter: query.filter.clone(),
            pipes: Vec::new(),
        };
        Some(FeedSpec {
            matcher: Matcher::new(&filter).ok()?,
            by: by.to_vec(),
            list_by: lists.first().copied(),
            value: value.cloned(),
            kind,
            bucket,
            keys_per_bucket: max_groups.saturating_mul(10).max(10_000),
        })
    }
}

/// Whether the in-memory matcher decides `filter` exactly as the store's SQL does: free text
/// is compared ignoring ASCII case (the store folds Unicode case, so a needle with non-ASCII
/// letters is left to the store), and text in annotations is the store's alone.
fn matched_alike(filter: &Expr) -> bool {
    match filter {
        Expr::And(all) | Expr::Or(all) => all.iter().all(matched_alike),
        Expr::Not(inner) => matched_alike(inner),
        Expr::Text(text) => text.is_ascii(),
        Expr::BodyText { body, text } => *body != JsonColumn::Annotations && text.is_ascii(),
        Expr::In { .. } | Expr::Exists(_) | Expr::Match { .. } | Expr::Compare { .. } => true,
    }
}

/// Maps hashed on the ingest thread for every event: foldhash, not the standard SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One group of one bucket: its partial and the first events, for the notifications.
#[derive(Debug)]
struct Slot {
    partial: Partial,
    samples: Vec<Box<str>>,
}

/// Sample events kept per group and bucket.
pub const SAMPLES: usize = 3;

/// The most bytes of sample events one feed keeps between two rounds; groups beyond get none
/// (their notifications read samples from the store).
const SAMPLE_BYTES: usize = 4 << 20;

/// One registered monitor's accumulating partials.
#[derive(Debug)]
struct Feed {
    name: String,
    spec: FeedSpec,
    cut: i64,
    buckets: BTreeMap<i64, FastMap<Box<str>, Slot>>,
    sample_bytes: usize,
    dropped: u64,
    future: u64,
}

/// How far ahead of the server's clock an event may be dated and still be counted by monitors
/// fed by the stream: buckets wait in memory until their window comes, so a sender with a
/// skewed or hostile clock could otherwise fill it. Such events are stored and queryable.
pub const FUTURE_HORIZON: i64 = 3_600_000_000;

/// What a monitor takes from the tap each round.
#[derive(Debug, Default)]
pub struct Drained {
    /// Partials by bucket start and group.
    pub buckets: BTreeMap<i64, HashMap<GroupKey, Partial>>,
    /// The first events (as stored, redacted) of each group and bucket, up to [`SAMPLES`].
    pub samples: BTreeMap<i64, HashMap<GroupKey, Vec<Box<str>>>>,
    /// Events of groups left out because a bucket had too many groups.
    pub dropped: u64,
    /// Events left out because they were dated more than [`FUTURE_HORIZON`] ahead.
    pub future: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// The newest event time accepted or stored so far (None: nothing yet).
    newest: Option<i64>,
    /// The newest event time accepted from each cluster since the start.
    accepted: HashMap<String, i64>,
    /// The latest event time counted: the server's clock plus [`FUTURE_HORIZON`].
    horizon: i64,
    /// Bumped when the writer fails: what the feeds hold may include events never stored.
    generation: u64,
    feeds: Vec<Feed>,
    /// Which feeds an event may concern (see [`FilterIndex`]).
    index: FilterIndex,
    candidates: Vec<usize>,
    key: String,
}

/// The live stream's side of the monitors; see the module documentation.
#[derive(Debug, Default)]
pub struct Tap {
    inner: Mutex<Inner>,
}

impl Tap {
    /// A tap with no monitors.
    pub fn new() -> Arc<Tap> {
        Arc::new(Tap::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Events up to `time` are in the store already (the newest stored event when the
    /// monitors start).
    pub fn stored_up_to(&self, time: i64) {
        let mut inner = self.lock();
        inner.newest = Some(inner.newest.map_or(time, |t| t.max(time)));
    }

    /// Feeds the monitor `name` from now on (replacing a feed of the same name); returns its
    /// cut: the first bucket start the stream covers. Earlier buckets are the store's.
    pub fn register(&self, name: &str, spec: FeedSpec) -> i64 {
        let mut inner = self.lock();
        let cut = match inner.newest {
            Some(newest) => crate::evaluate::align_down(newest, spec.bucket) + spec.bucket,
            None => i64::MIN,
        };
        inner.feeds.retain(|f| f.name != name);
        inner.feeds.push(Feed {
            name: name.to_owned(),
            spec,
            cut,
            buckets: BTreeMap::new(),
            sample_bytes: 0,
            dropped: 0,
            future: 0,
        });
        inner.index = FilterIndex::new(inner.feeds.iter().map(|f| f.spec.matcher.filter()));
        cut
    }

    /// Stops feeding `name`.
    pub fn unregister(&self, name: &str) {
        let mut inner = self.lock();
        let before = inner.feeds.len();
        inner.feeds.retain(|f| f.name != name);
        if inner.feeds.len() != before {
            inner.index = FilterIndex::new(inner.feeds.iter().map(|f| f.spec.matcher.filter()));
        }
    }

    /// The server's clock (µs), given each round: events dated more than [`FUTURE_HORIZON`]
    /// ahead of it are not counted.
    pub fn set_clock(&self, now: i64) {
        self.lock().horizon = now.saturating_add(FUTURE_HORIZON);
    }

    /// Changes when the writer fails ([`kubetrail_pipeline::EventTap::writer_failed`]): the
    /// monitors then start their feeds again from a new cut.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The newest event time accepted from each cluster: the watermark of monitors fed by the
    /// stream, which need not wait for the store to commit.
    pub fn accepted(&self) -> Vec<(String, i64)> {
        let inner = self.lock();
        inner
            .accepted
            .iter()
            .map(|(c, t)| (c.clone(), *t))
            .collect()
    }

    /// Takes what accumulated for `name` since the last call.
    pub fn drain(&self, name: &str) -> Drained {
        let (buckets, dropped, future) = {
            let mut inner = self.lock();
            let Some(feed) = inner.feeds.iter_mut().find(|f| f.name == name) else {
                return Drained::default();
            };
            feed.sample_bytes = 0;
            (
                std::mem::take(&mut feed.buckets),
                std::mem::take(&mut feed.dropped),
                std::mem::take(&mut feed.future),
            )
        };
        let mut drained = Drained {
            dropped,
            future,
            ..Drained::default()
        };
        for (start, groups) in buckets {
            let mut partials = HashMap::with_capacity(groups.len());
            let mut samples = HashMap::new();
            for (key, slot) in groups {
                let key = decode_key(&key);
                if !slot.samples.is_empty() {
                    samples.insert(key.clone(), slot.samples);
                }
                partials.insert(key, slot.partial);
            }
            drained.buckets.insert(start, partials);
            if !samples.is_empty() {
                drained.samples.insert(start, samples);
            }
        }
        drained
    }

    /// Adds one accepted event to the feeds it concerns.
    pub fn add(&self, event: &AuditEvent<'_>, cluster: &str, time: i64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.newest = Some(inner.newest.map_or(time, |t| t.max(time)));
        match inner.accepted.get_mut(cluster) {
            Some(newest) => *newest = (*newest).max(time),
            None => {
                inner.accepted.insert(cluster.to_owned(), time);
            }
        }
        if inner.feeds.is_empty() {
            return;
        }
        let Inner {
            feeds,
            index,
            candidates,
            key,
            horizon,
            ..
        } = inner;
        index.candidates(event, cluster, candidates);
        let horizon = if *horizon == 0 { i64::MAX } else { *horizon };
        for &i in candidates.iter() {
            feeds[i].add(event, cluster, time, horizon, key);
        }
    }
}

impl kubetrail_pipeline::EventTap for Tap {
    fn accepted(&self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) {
        self.add(event, cluster, time_micros);
    }

    fn accepted_before(&self, time_micros: i64) {
        self.stored_up_to(time_micros);
    }

    fn writer_failed(&self) {
        self.lock().generation += 1;
    }
}

impl Feed {
    fn add(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        time: i64,
        horizon: i64,
        key: &mut String,
    ) {
        let spec = &self.spec;
        if time < self.cut || !spec.matcher.matches_stored(event, cluster, time) {
            return;
        }
        if time > horizon {
            self.future += 1;
            return;
        }
        let value = spec.value.as_ref().map(|f| value_of(f, event, cluster));
        let int = match &value {
            Some(Value::Int(n)) => *n,
            _ => None,
        };
        // A group without a value where the store's aggregate is NULL has no row there.
        if matches!(
            spec.kind,
            PartialKind::Min | PartialKind::Max | PartialKind::Histogram
        ) && int.is_none()
        {
            return;
        }
        let start = crate::evaluate::align_down(time, spec.bucket);
        match spec.list_by {
            None => {
                group_key(key, &spec.by, event, cluster, None);
                self.fold_into(start, key, int, value.as_ref(), event);
            }
            Some(at) => {
                let Value::List(elements) = value_of(&spec.by[at], event, cluster) else {
                    return;
                };
                for element in &elements {
                    group_key(key, &self.spec.by, event, cluster, Some((at, element)));
                    self.fold_into(start, key, int, value.as_ref(), event);
                }
            }
        }
    }

    /// Adds the event to group `key` of bucket `start`.
    fn fold_into(
        &mut self,
        start: i64,
        key: &str,
        int: Option<i64>,
        value: Option<&Value<'_>>,
        event: &AuditEvent<'_>,
    ) {
        let Feed {
            spec,
            buckets,
            sample_bytes,
            dropped,
            ..
        } = self;
        let groups = buckets.entry(start).or_default();
        let full = groups.len() >= spec.keys_per_bucket;
        match groups.get_mut(key) {
            Some(slot) => slot.fold(int, value, event, sample_bytes),
            None if full => *dropped += 1,
            None => {
                let mut slot = Slot {
                    partial: match spec.kind {
                        PartialKind::Count => Partial::Count(0),
                        PartialKind::SumCount => Partial::SumCount(0, 0),
                        PartialKind::Min => Partial::Min(i64::MAX),
                        PartialKind::Max => Partial::Max(i64::MIN),
                        PartialKind::Distinct => Partial::Distinct(HashSet::new()),
                        PartialKind::Histogram => Partial::Histogram(Box::default()),
                    },
                    samples: Vec::new(),
                };
                slot.fold(int, value, event, sample_bytes);
                groups.insert(key.into(), slot);
            }
        }
    }
}

impl Slot {
    /// Adds one event: to the partial, and to the samples while there is room.
    fn fold(
        &mut self,
        int: Option<i64>,
        value: Option<&Value<'_>>,
        event: &AuditEvent<'_>,
        sample_bytes: &mut usize,
    ) {
        fold(&mut self.partial, int, value);
        if self.samples.len() < SAMPLES && *sample_bytes < SAMPLE_BYTES {
            let raw = event.raw.as_str();
            *sample_bytes += raw.len();
            self.samples.push(raw.into());
        }
    }
}

/// Writes the group key of `event` into `key`; `element` gives the value of the list field
/// at its index.
fn group_key(
    key: &mut String,
    by: &[Field],
    event: &AuditEvent<'_>,
    cluster: &str,
    element: Option<(usize, &str)>,
) {
    key.clear();
    for (i, field) in by.iter().enumerate() {
        if let Some((at, value)) = element
            && at == i
        {
            push_key(key, value);
            continue;
        }
        match value_of(field, event, cluster) {
            Value::Text(text) => push_key(key, &text),
            Value::Int(n) => push_key(key, &n.map(|n| n.to_string()).unwrap_or_default()),
            Value::Bool(b) => push_key(key, if b { "true" } else { "false" }),
            Value::List(_) => {}
        }
    }
}

/// Adds one event's value (`int` when numeric) to a partial.
fn fold(partial: &mut Partial, int: Option<i64>, value: Option<&Value<'_>>) {
    match partial {
        Partial::Count(n) => *n += 1,
        Partial::SumCount(s, n) => {
            if let Some(v) = int {
                *s = s.saturating_add(v);
                *n += 1;
            }
        }
        Partial::Min(m) => *m = (*m).min(int.unwrap_or(i64::MAX)),
        Partial::Max(m) => *m = (*m).max(int.unwrap_or(i64::MIN)),
        Partial::Distinct(set) => {
            let mut insert = |text: &str| {
                if !set.contains(text) {
                    set.insert(text.to_owned());
                }
            };
            match value {
                Some(Value::Text(text)) => insert(text),
                Some(Value::List(elements)) => elements.iter().for_each(|e| insert(e)),
                Some(Value::Int(Some(n))) => insert(&n.to_string()),
                Some(Value::Bool(b)) => insert(if *b { "true" } else { "false" }),
                _ => {}
            }
        }
        Partial::Histogram(h) => {
            if let Some(v) = int {
                h.record(v);
            }
        }
    }
}

/// Appends one group value to a key: its length, `:`, the value, so any text (a `\0` or a
/// separator in an attacker's username included) gives a key of its own.
fn push_key(key: &mut String, value: &str) {
    let _ = write!(key, "{}:", value.len());
    key.push_str(value);
}

fn decode_key(mut key: &str) -> GroupKey {
    let mut values = Vec::new();
    while let Some((len, rest)) = key.split_once(':') {
        let len: usize = len.parse().unwrap_or(rest.len()).min(rest.len());
        values.push(rest[..len].to_owned());
        key = &rest[len..];
    }
    values.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_whatever_the_values_hold() {
        for values in [
            vec![],
            vec![""],
            vec!["alice", ""],
            vec!["3:abc", "a:b", "\0"],
            vec!["élan", "x"],
        ] {
            let mut key = String::new();
            for v in &values {
                push_key(&mut key, v);
            }
            let decoded = decode_key(&key);
            assert_eq!(decoded.as_ref(), values.as_slice(), "{key:?}");
        }
    }
}

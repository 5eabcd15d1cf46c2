//! Partial aggregates per time bucket and group, merged into evaluation windows.
//!
//! A monitor's query is run once per range of new buckets (not once per window): each bucket
//! is `gcd(window, every)` wide, holds a mergeable partial per group — a count, a sum and
//! count, a minimum, a maximum, a set of distinct values or a latency histogram — and a window
//! is the merge of the buckets it covers. A week of history is one scan, and a live monitor
//! reads only the buckets the watermark has just closed.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use kubetrail_query::{AggFunc, PartialKind};
use kubetrail_store::LatencyHistogram;

/// The values of a group's `by` fields, in order (empty for a monitor without `by`); shared,
/// because every window of every evaluation handles the keys of all its groups.
pub type GroupKey = std::sync::Arc<[String]>;

/// The partial aggregate of one bucket and group.
#[derive(Debug, Clone)]
pub enum Partial {
    /// A count.
    Count(i64),
    /// A sum and the count of values.
    SumCount(i64, i64),
    /// The smallest value.
    Min(i64),
    /// The largest value.
    Max(i64),
    /// The distinct values.
    Distinct(HashSet<String>),
    /// A latency histogram.
    Histogram(Box<LatencyHistogram>),
}

impl Partial {
    /// Adds `other` (of the same kind) to this one.
    pub fn merge(&mut self, other: &Partial) {
        match (self, other) {
            (Partial::Count(a), Partial::Count(b)) => *a += b,
            (Partial::SumCount(s, n), Partial::SumCount(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (Partial::Min(a), Partial::Min(b)) => *a = (*a).min(*b),
            (Partial::Max(a), Partial::Max(b)) => *a = (*a).max(*b),
            (Partial::Distinct(a), Partial::Distinct(b)) => a.extend(b.iter().cloned()),
            (Partial::Histogram(a), Partial::Histogram(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The aggregate's value; None when there is none (the average of no values).
    pub fn value(&self, func: AggFunc) -> Option<f64> {
        match (self, func) {
            (Partial::Count(n), _) => Some(*n as f64),
            (Partial::SumCount(s, _), AggFunc::Sum) => Some(*s as f64),
            (Partial::SumCount(s, n), _) => (*n > 0).then(|| *s as f64 / *n as f64),
            (Partial::Min(v) | Partial::Max(v), _) => Some(*v as f64),
            (Partial::Distinct(set), _) => Some(set.len() as f64),
            (Partial::Histogram(h), AggFunc::Percentile(p)) => {
                (h.count() > 0).then(|| h.quantile(f64::from(p) / 100.0))
            }
            (Partial::Histogram(_), _) => None,
        }
    }
}

/// The value a group has in a window where it has no events: zero for counts, sums and
/// distinct counts; nothing for averages, extremes and percentiles.
pub fn empty_value(func: AggFunc) -> Option<f64> {
    match func {
        AggFunc::Count | AggFunc::DistinctCount | AggFunc::Sum => Some(0.0),
        _ => None,
    }
}

/// Buckets of partials, by bucket start (µs).
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: BTreeMap<i64, HashMap<GroupKey, Partial>>,
}

impl Buckets {
    /// Adds the rows of a partials query (`bucket, g0…, partial columns`).
    pub fn add_batches(
        &mut self,
        batches: &[RecordBatch],
        groups: usize,
        kind: PartialKind,
    ) -> Result<(), String> {
        for batch in batches {
            // Whatever unit the engine's time bucket has, as µs.
            let bucket = cast(
                batch.column(0),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )
            .and_then(|b| cast(&b, &DataType::Int64))
            .map_err(|e| e.to_string())?;
            let bucket = bucket.as_primitive::<Int64Type>();
            let keys: Vec<_> = (0..groups)
                .map(|i| cast(batch.column(1 + i), &DataType::Utf8))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let keys: Vec<_> = keys.iter().map(|k| k.as_string::<i32>().clone()).collect();
            let first = 1 + groups;
            for row in 0..batch.num_rows() {
                if bucket.is_null(row) {
                    continue;
                }
                let key: GroupKey = keys
                    .iter()
                    .map(|k| {
                        if k.is_null(row) {
                            String::new()
                        } else {
                            k.value(row).to_owned()
                        }
                    })
                    .collect();
                let Some(partial) = read_partial(batch, first, row, kind)? else {
                    continue;
                };
                self.buckets
                    .entry(bucket.value(row))
                    .or_default()
                    .entry(key)
                    .and_modify(|p| p.merge(&partial))
                    .or_insert(partial);
            }
        }
        Ok(())
    }

    /// Merges `groups` into the bucket starting at `start`.
    pub fn merge_bucket(&mut self, start: i64, groups: &HashMap<GroupKey, Partial>) {
        let bucket = self.buckets.entry(start).or_default();
        for (key, partial) in groups {
            match bucket.get_mut(key) {
                Some(p) => p.merge(partial),
                None => {
                    bucket.insert(key.clone(), partial.clone());
                }
            }
        }
    }

    /// The merged partials of the buckets starting in `[from, to)`, by group; buckets for
    /// which `counts` says no are left out.
    pub fn window(
        &self,
        from: i64,
        to: i64,
        counts: impl Fn(i64) -> bool,
    ) -> HashMap<GroupKey, Partial> {
        let mut merged: HashMap<GroupKey, Partial> = HashMap::new();
        for (start, groups) in self.buckets.range(from..to) {
            if !counts(*start) {
                continue;
            }
            for (key, partial) in groups {
                match merged.get_mut(key) {
                    Some(m) => m.merge(partial),
                    None => {
                        merged.insert(key.clone(), partial.clone());
                    }
                }
            }
        }
        merged
    }

    /// The groups present in the buckets of `[from, to)`.
    pub fn groups(&self, from: i64, to: i64) -> impl Iterator<Item = &GroupKey> {
        self.buckets.range(from..to).flat_map(|(_, g)| g.keys())
    }

    /// Forgets the buckets before `before`.
    pub fn prune(&mut self, before: i64) {
        self.buckets = self.buckets.split_off(&before);
    }
}

fn read_partial(
    batch: &RecordBatch,
    first: usize,
    row: usize,
    kind: PartialKind,
) -> Result<Option<Partial>, String> {
    let int = |i: usize| -> Result<Option<i64>, String> {
        let column = cast(batch.column(first + i), &DataType::Int64).map_err(|e| e.to_string())?;
        let column = column.as_primitive::<Int64Type>();
        Ok((!column.is_null(row)).then(|| column.value(row)))
    };
    Ok(match kind {
        PartialKind::Count => int(0)?.map(Partial::Count),
        PartialKind::SumCount => Some(Partial::SumCount(
            int(0)?.unwrap_or(0),
            int(1)?.unwrap_or(0),
        )),
        PartialKind::Min => int(0)?.map(Partial::Min),
        PartialKind::Max => int(0)?.map(Partial::Max),
        PartialKind::Distinct => {
            let column = batch.column(first);
            if column.is_null(row) {
                return Ok(Some(Partial::Distinct(HashSet::new())));
            }
            let list = column.as_list::<i32>().value(row);
            let list = cast(&list, &DataType::Utf8).map_err(|e| e.to_string())?;
            let values = list.as_string::<i32>();
            Some(Partial::Distinct(
                (0..values.len())
                    .filter(|i| !values.is_null(*i))
                    .map(|i| values.value(i).to_owned())
                    .collect(),
            ))
        }
        PartialKind::Histogram => {
            let column = batch.column(first).as_binary::<i32>();
            if column.is_null(row) {
                return Ok(None);
            }
            let histogram =
                LatencyHistogram::decode(column.value(row)).map_err(|e| e.to_string())?;
            Some(Partial::Histogram(Box::new(histogram)))
        }
    })
}

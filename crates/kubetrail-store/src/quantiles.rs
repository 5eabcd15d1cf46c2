//! `kt_latency_quantiles(latency_us)`: the p50, p90 and p99 of a group's latencies, in
//! microseconds, as a three-element list — in one pass with one small histogram per group.
//! `kt_latency_histogram(latency_us)` returns that histogram itself (bytes), and
//! `kt_latency_quantiles` also takes such histograms and merges them, so quantiles can be
//! rolled up from a fine grouping to coarser ones without reading the latencies again;
//! `kt_latency_top_bound(histogram, n)` finds from one where the `n` slowest requests start.
//!
//! Why not `approx_percentile_cont`: it keeps a t-digest per percentile and per group and is fed
//! row by row, so three percentiles over the four groupings of the latency report cost seconds
//! on millions of events. Latencies are positive integers spanning many orders of magnitude, so
//! log-scaled buckets 1 % wide answer every percentile to within half a percent, merge exactly
//! across partitions, and are updated a batch at a time for all groups together
//! ([`GroupsAccumulator`]).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Float64Builder, Int64Builder,
    ListBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ScalarUDF, Signature, TypeSignature, Volatility, create_udf,
};

/// The quantiles returned, in order.
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// Buckets per factor e: bucket `b` holds values in `[e^(b/K), e^((b+1)/K))`, about 1 % wide.
const BUCKETS_PER_E: f64 = 100.0;

/// The functions, for registration: `kt_latency_quantiles` and `kt_latency_histogram`.
pub fn latency_aggregates() -> [AggregateUDF; 2] {
    [Output::Quantiles, Output::Histogram].map(|output| {
        AggregateUDF::from(LatencyAggregate {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Int64]),
                    TypeSignature::Exact(vec![DataType::Binary]),
                ],
                Volatility::Immutable,
            ),
            output,
        })
    })
}

/// `kt_latency_top_bound(histogram, n)`: a latency that at least `n` of the histogram's
/// requests reach, within 1 % of the `n`-th largest (the smallest when it holds fewer). A
/// filter `latency_us >= kt_latency_top_bound(…)` keeps the `n` slowest requests and little
/// else, so their wide columns are decoded for a handful of rows.
pub fn latency_top_bound() -> ScalarUDF {
    create_udf(
        "kt_latency_top_bound",
        vec![DataType::Binary, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(top_bound),
    )
}

fn top_bound(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let histograms = arrays[0].as_binary::<i32>();
    let ranks = arrays[1].as_primitive::<Int64Type>();
    let mut bounds = Int64Builder::with_capacity(histograms.len());
    for row in 0..histograms.len() {
        if histograms.is_null(row) || ranks.is_null(row) {
            bounds.append_null();
        } else {
            let rank = u64::try_from(ranks.value(row)).unwrap_or(0).max(1);
            bounds.append_option(Histogram::decode(histograms.value(row))?.top_bound(rank));
        }
    }
    Ok(ColumnarValue::Array(Arc::new(bounds.finish())))
}

/// What a latency aggregate returns; both take latencies (BIGINT) or histograms (BINARY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    /// The p50, p90 and p99 as a list of three.
    Quantiles,
    /// The encoded histogram, to be merged later.
    Histogram,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LatencyAggregate {
    signature: Signature,
    output: Output,
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

impl AggregateUDFImpl for LatencyAggregate {
    fn name(&self) -> &str {
        match self.output {
            Output::Quantiles => "kt_latency_quantiles",
            Output::Histogram => "kt_latency_histogram",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.output {
            Output::Quantiles => list_type(),
            Output::Histogram => DataType::Binary,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "histogram"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Histogram::default(), self.output)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups(Vec::new(), self.output)))
    }
}

/// Counts per log bucket over the range of buckets seen, with the exact extremes. Public as
/// [`crate::LatencyHistogram`]: monitors keep one per time bucket and merge them into windows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histogram {
    /// The first bucket of `counts`.
    low: u32,
    counts: Vec<u32>,
    total: u64,
    min: i64,
    max: i64,
}

fn bucket(value: i64) -> u32 {
    if value <= 1 {
        0
    } else {
        ((value as f64).ln() * BUCKETS_PER_E) as u32
    }
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, value: i64) {
        if self.total == 0 {
            self.min = value;
            self.max = value;
        }
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.add_to_bucket(bucket(value), 1);
    }

    fn add_to_bucket(&mut self, b: u32, times: u32) {
        if self.counts.is_empty() {
            self.low = b;
            self.counts.push(0);
        } else if b < self.low {
            let grow = (self.low - b) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.low = b;
        }
        let index = (b - self.low) as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += times;
        self.total += u64::from(times);
    }

    /// Adds the values of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.total == 0 {
            self.min = other.min;
            self.max = other.max;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        for (i, &count) in other.counts.iter().enumerate() {
            if count > 0 {
                self.add_to_bucket(other.low + i as u32, count);
            }
        }
    }

    /// The value at quantile `q`: the middle of the bucket holding that rank, within the
    /// group's extremes.
    pub fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                let b = f64::from(self.low + i as u32);
                let middle = ((b + 0.5) / BUCKETS_PER_E).exp();
                return middle.clamp(self.min as f64, self.max as f64);
            }
        }
        self.max as f64
    }

    /// A value that at least `n` of the values reach: the lower edge of the bucket holding
    /// the `n`-th largest (so within 1 % of it), never below the smallest value; `None`
    /// when there are no values.
    fn top_bound(&self, n: u64) -> Option<i64> {
        if self.total == 0 {
            return None;
        }
        let mut seen = 0u64;
        for (i, &count) in self.counts.iter().enumerate().rev() {
            seen += u64::from(count);
            if seen >= n {
                // Bucket `b` holds the values whose `ln(v)·K` rounds down to `b`, so they are at
                // least `e^(b/K)`; one less absorbs the rounding of that power.
                let b = f64::from(self.low + i as u32);
                let edge = (b / BUCKETS_PER_E).exp().floor() as i64 - 1;
                return Some(edge.max(self.min));
            }
        }
        Some(self.min)
    }

    /// `low, min, max, counts…` as little-endian bytes; empty for no values.
    fn encode(&self) -> Vec<u8> {
        if self.total == 0 {
            return Vec::new();
        }
        let mut bytes = Vec::with_capacity(20 + 4 * self.counts.len());
        bytes.extend_from_slice(&self.low.to_le_bytes());
        bytes.extend_from_slice(&self.min.to_le_bytes());
        bytes.extend_from_slice(&self.max.to_le_bytes());
        for count in &self.counts {
            bytes.extend_from_slice(&count.to_le_bytes());
        }
        bytes
    }

    /// The histogram `kt_latency_histogram` returned as bytes.
    pub fn decode(bytes: &[u8]) -> Result<Histogram> {
        if bytes.is_empty() {
            return Ok(Histogram::default());
        }
        let corrupt = || DataFusionError::Internal("corrupt latency histogram state".to_owned());
        if bytes.len() < 20 || !(bytes.len() - 20).is_multiple_of(4) {
            return Err(corrupt());
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let i64_at =
            |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let counts: Vec<u32> = (20..bytes.len()).step_by(4).map(u32_at).collect();
        Ok(Histogram {
            low: u32_at(0),
            total: counts.iter().map(|&c| u64::from(c)).sum(),
            counts,
            min: i64_at(4),
            max: i64_at(12),
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + 4 * self.counts.capacity()
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.total
    }
}

/// Adds the rows of `input` — latencies, or histograms to merge — to the histogram of
/// each row's group, leaving out NULLs and the rows `filter` rejects.
fn fold(
    histograms: &mut [Histogram],
    input: &ArrayRef,
    group_of: impl Fn(usize) -> usize,
    filter: Option<&BooleanArray>,
) -> Result<()> {
    let included =
        |row: usize| !input.is_null(row) && filter.is_none_or(|f| f.is_valid(row) && f.value(row));
    match input.data_type() {
        DataType::Binary => {
            let states = input.as_binary::<i32>();
            for row in (0..input.len()).filter(|&row| included(row)) {
                histograms[group_of(row)].merge(&Histogram::decode(states.value(row))?);
            }
        }
        DataType::Int64 => {
            let values = input.as_primitive::<Int64Type>();
            for row in (0..input.len()).filter(|&row| included(row)) {
                histograms[group_of(row)].record(values.value(row));
            }
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "latency aggregates take BIGINT latencies or BINARY histograms, not {other}"
            )));
        }
    }
    Ok(())
}

/// The result for each group: its quantiles or its encoded histogram (NULL for no values).
fn output_array(histograms: &[Histogram], output: Output) -> ArrayRef {
    match output {
        Output::Quantiles => {
            let mut builder = ListBuilder::new(Float64Builder::new())
                .with_field(Arc::new(Field::new_list_field(DataType::Float64, true)));
            for histogram in histograms {
                if histogram.total == 0 {
                    builder.append_null();
                    continue;
                }
                for q in QUANTILES {
                    builder.values().append_value(histogram.quantile(q));
                }
                builder.append(true);
            }
            Arc::new(builder.finish())
        }
        Output::Histogram => {
            let mut builder = BinaryBuilder::new();
            for histogram in histograms {
                if histogram.total == 0 {
                    builder.append_null();
                } else {
                    builder.append_value(histogram.encode());
                }
            }
            Arc::new(builder.finish())
        }
    }
}

/// The encoded states of `histograms`.
fn state_array(histograms: &[Histogram]) -> ArrayRef {
    let mut builder = BinaryBuilder::new();
    for histogram in histograms {
        builder.append_value(histogram.encode());
    }
    Arc::new(builder.finish())
}

/// Every group's histogram, updated a batch at a time.
#[derive(Debug)]
struct Groups(Vec<Histogram>, Output);

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.resize_with(total_num_groups, Histogram::default);
        fold(
            &mut self.0,
            &values[0],
            |row| group_indices[row],
            opt_filter,
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(output_array(&emit_to.take_needed(&mut self.0), self.1))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![state_array(&emit_to.take_needed(&mut self.0))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.resize_with(total_num_groups, Histogram::default);
        fold(&mut self.0, &values[0], |row| group_indices[row], None)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut one_per_row = vec![Histogram::default(); values[0].len()];
        fold(&mut one_per_row, &values[0], |row| row, opt_filter)?;
        Ok(vec![state_array(&one_per_row)])
    }

    fn size(&self) -> usize {
        self.0.iter().map(Histogram::size).sum()
    }
}

/// The single-group form (no GROUP BY, window functions).
#[derive(Debug)]
struct OneGroup(Histogram, Output);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        fold(std::slice::from_mut(&mut self.0), &values[0], |_| 0, None)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&output_array(std::slice::from_ref(&self.0), self.1), 0)
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.0.encode()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        fold(std::slice::from_mut(&mut self.0), &states[0], |_| 0, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_percent_of_the_exact_ones() {
        let values: Vec<i64> = (1..=100_000).map(|i| i * 37 % 1_000_003 + 1).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let mut histogram = Histogram::default();
        for &v in &values {
            histogram.record(v);
        }
        for q in QUANTILES {
            let exact = sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let estimate = histogram.quantile(q);
            assert!(
                (estimate - exact).abs() / exact < 0.01,
                "q{q}: {estimate} against {exact}"
            );
        }
        assert_eq!(histogram.quantile(0.0), histogram.quantile(1e-9));
    }

    #[test]
    fn the_top_bound_keeps_the_n_largest_and_little_else() {
        let values: Vec<i64> = (0..50_000).map(|i| (i * 7919) % 3_000_017).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let mut histogram = Histogram::default();
        for &v in &values {
            histogram.record(v);
        }
        for n in [1, 20, 100, 10_000] {
            let bound = histogram.top_bound(n).unwrap();
            let nth = sorted[n as usize - 1];
            assert!(bound <= nth, "n={n}: {bound} above the n-th largest {nth}");
            assert!(
                bound as f64 >= nth as f64 * 0.98,
                "n={n}: {bound} far below {nth}"
            );
        }
        assert_eq!(histogram.top_bound(1_000_000), Some(0));
        assert_eq!(Histogram::default().top_bound(5), None);
    }

    #[test]
    fn merged_and_round_tripped_histograms_equal_the_whole() {
        let mut whole = Histogram::default();
        let mut left = Histogram::default();
        let mut right = Histogram::default();
        for v in [3, 5_000, 70, 1, 12_000_000, 800, 800, 42] {
            whole.record(v);
            if v % 2 == 0 {
                left.record(v);
            } else {
                right.record(v);
            }
        }
        let mut merged = Histogram::decode(&left.encode()).unwrap();
        merged.merge(&Histogram::decode(&right.encode()).unwrap());
        assert_eq!(merged.total, whole.total);
        for q in QUANTILES {
            assert_eq!(merged.quantile(q), whole.quantile(q), "q{q}");
        }
        assert_eq!((merged.min, merged.max), (1, 12_000_000));
        assert!(Histogram::decode(&[1, 2, 3]).is_err());
    }

    /// Through DataFusion, grouped (the group accumulator, over two partitions) and not.
    #[test]
    fn sql_answers_match_exact_quantiles() {
        use arrow::array::{Int64Array, RecordBatch, StringArray};
        use arrow::datatypes::Schema;
        use datafusion::datasource::MemTable;
        use datafusion::prelude::SessionContext;

        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let rows: Vec<(&str, i64)> = (1..=1000)
            .map(|v| ("a", v))
            .chain((0..3000).map(|i| ("b", 10_000 + i * 7)))
            .collect();
        let batch = |part: &[(&str, i64)]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(part.iter().map(|r| r.0))),
                    Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
                ],
            )
            .unwrap()
        };
        let (first, second) = rows.split_at(1700);
        let table = MemTable::try_new(
            schema.clone(),
            vec![vec![batch(first)], vec![batch(second)]],
        )
        .unwrap();
        let ctx = SessionContext::new();
        for function in latency_aggregates() {
            ctx.register_udaf(function);
        }
        ctx.register_table("t", Arc::new(table)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let query = |sql: &str| {
            let batches = runtime
                .block_on(async { ctx.sql(sql).await.unwrap().collect().await })
                .unwrap();
            let mut answers = Vec::new();
            for batch in &batches {
                let lists = batch.column(1).as_list::<i32>();
                for row in 0..batch.num_rows() {
                    let values = lists.value(row);
                    let values = values.as_primitive::<arrow::datatypes::Float64Type>();
                    answers.push((
                        batch.column(0).as_string::<i32>().value(row).to_owned(),
                        values.values().to_vec(),
                    ));
                }
            }
            answers
        };
        let exact = |group: Option<&str>| -> Vec<f64> {
            let mut values: Vec<i64> = rows
                .iter()
                .filter(|r| group.is_none_or(|g| r.0 == g))
                .map(|r| r.1)
                .collect();
            values.sort_unstable();
            QUANTILES
                .iter()
                .map(|q| values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64)
                .collect()
        };
        let close = |got: &[f64], want: &[f64]| {
            got.len() == 3 && got.iter().zip(want).all(|(g, w)| (g - w).abs() / w < 0.01)
        };
        for (group, got) in query("SELECT g, kt_latency_quantiles(v) FROM t GROUP BY g") {
            assert!(close(&got, &exact(Some(&group))), "{group}: {got:?}");
        }
        let all = query("SELECT 'all', kt_latency_quantiles(v) FROM t");
        assert!(close(&all[0].1, &exact(None)), "{all:?}");
        // Rolled up from finer groups' histograms: the same as from the latencies.
        let rolled_up = query(
            "SELECT 'all', kt_latency_quantiles(h) FROM (SELECT g, v % 3 AS part, kt_latency_histogram(v) AS h FROM t GROUP BY g, v % 3)",
        );
        assert_eq!(rolled_up[0].1, all[0].1);
        for (group, got) in query(
            "SELECT g, kt_latency_quantiles(h) FROM (SELECT g, v % 5 AS part, kt_latency_histogram(v) AS h FROM t GROUP BY 1, 2) GROUP BY g",
        ) {
            assert!(
                close(&got, &exact(Some(&group))),
                "rolled up {group}: {got:?}"
            );
        }
    }
}

//! The parsed form of a query: a search expression and a pipeline of commands.

use std::sync::Arc;

use crate::fields::{Field, JsonColumn};
use crate::lexer::CompareOp;

/// A whole query: `SEARCH | command | command …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The search; None matches every event.
    pub filter: Option<Expr>,
    /// Commands applied in order to the matching events.
    pub pipes: Vec<Pipe>,
}

/// A search expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All must match.
    And(Vec<Expr>),
    /// Any must match.
    Or(Vec<Expr>),
    /// Must not match.
    Not(Box<Expr>),
    /// `field:value`: equality, or a wildcard pattern when the value has `*`.
    Match {
        /// The field.
        field: Field,
        /// The value.
        pattern: Pattern,
    },
    /// `field:(a OR b OR …)` with exact values: the field equals one of them. One set lookup
    /// however many values, so allowlists and exemptions of any size stay fast.
    In {
        /// The field (a column, or an annotation).
        field: Field,
        /// The values.
        values: ValueSet,
    },
    /// `field:*`: the field has a (non-empty) value.
    Exists(Field),
    /// `field>value` and the other comparisons.
    Compare {
        /// The field.
        field: Field,
        /// The operator.
        op: CompareOp,
        /// The value, read according to the field's type.
        value: Literal,
    },
    /// Free text, matched case-insensitively anywhere in the event, bodies included.
    Text(String),
    /// `requestObject:text`: free text matched case-insensitively in one body's JSON text.
    BodyText {
        /// `requestObject` or `responseObject`.
        body: JsonColumn,
        /// The text.
        text: String,
    },
}

/// A set of exact values, sorted and without duplicates; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSet(Arc<[String]>);

impl ValueSet {
    /// The set of `values`.
    pub fn new(mut values: Vec<String>) -> Self {
        values.sort_unstable();
        values.dedup();
        ValueSet(values.into())
    }

    /// Whether `value` is in the set (a binary search).
    pub fn contains(&self, value: &str) -> bool {
        self.0.binary_search_by(|v| v.as_str().cmp(value)).is_ok()
    }

    /// The values, sorted.
    pub fn values(&self) -> &[String] {
        &self.0
    }
}

/// A value to match a field against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The exact value.
    Exact(String),
    /// A pattern where `*` stands for any run of characters.
    Wildcard(String),
}

/// A typed value of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// Microseconds.
    Duration(i64),
    /// Microseconds since the Unix epoch, UTC.
    Time(i64),
    /// A boolean.
    Bool(bool),
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `count()`
    Count,
    /// `dc(field)`: distinct values.
    DistinctCount,
    /// `sum(field)`
    Sum,
    /// `avg(field)`
    Avg,
    /// `min(field)`
    Min,
    /// `max(field)`
    Max,
    /// `p50(field)` … `p99(field)`: the percentile.
    Percentile(u8),
}

impl AggFunc {
    /// The name written in queries.
    pub fn name(self) -> String {
        match self {
            AggFunc::Count => "count".into(),
            AggFunc::DistinctCount => "dc".into(),
            AggFunc::Sum => "sum".into(),
            AggFunc::Avg => "avg".into(),
            AggFunc::Min => "min".into(),
            AggFunc::Max => "max".into(),
            AggFunc::Percentile(p) => format!("p{p}"),
        }
    }
}

/// One aggregate of `stats` or `timechart`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The function.
    pub func: AggFunc,
    /// Its field (None for `count()`).
    pub field: Option<Field>,
    /// The output column name: `as NAME`, else e.g. `count`, `p99_latency`.
    pub alias: String,
}

/// A pipeline command.
#[derive(Debug, Clone, PartialEq)]
pub enum Pipe {
    /// `stats AGG, … [by FIELD, …]`
    Stats {
        /// The aggregates.
        aggregates: Vec<Aggregate>,
        /// Grouping fields.
        by: Vec<Field>,
    },
    /// `timechart SPAN AGG, … [by FIELD]`: aggregates per time bucket.
    Timechart {
        /// Bucket width in microseconds.
        span_micros: i64,
        /// Where the width is written in the query.
        span_at: usize,
        /// The aggregates.
        aggregates: Vec<Aggregate>,
        /// An optional series field.
        by: Option<Field>,
    },
    /// `top N FIELD`: the N most frequent values with their counts.
    Top {
        /// How many.
        limit: u64,
        /// The field.
        field: Field,
    },
    /// `sort [-]COLUMN, …`: `-` for descending.
    Sort(Vec<SortKey>),
    /// `fields FIELD, …`: choose the columns of event results.
    Fields(Vec<Field>),
    /// `limit N`
    Limit(u64),
}

/// A sort column: an output column name (an aggregate alias or a field) and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The output column.
    pub column: String,
    /// Descending?
    pub descending: bool,
}

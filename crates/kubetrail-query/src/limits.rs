//! What one query may ask for. The query language is the one way users, monitors and detections
//! ask kubetrail anything, and a server answers many of them while it ingests: a query that
//! could grow without bound (nesting, terms, groups, buckets, rows) would cost everyone else
//! their service. Each limit has a default, a configuration key under `query:` in the serve
//! configuration, and an error that names the key and the place in the query; every one is
//! listed in `docs/limits.md`. The model is ClickHouse's `max_query_size`, `max_ast_depth` and
//! `max_ast_elements`, and Elasticsearch's clause limits.

/// The limits a query is parsed and compiled under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// The longest query, in bytes (`query.maxLength`).
    pub max_length: usize,
    /// The deepest nesting of parentheses and negations (`query.maxDepth`).
    pub max_depth: usize,
    /// The most search terms (`query.maxTerms`); a value list is one term.
    pub max_terms: usize,
    /// The most values in one value list, `user:(a OR b OR …)` (`query.maxValues`).
    pub max_values: usize,
    /// The longest value or free-text term, in bytes (`query.maxValueLength`).
    pub max_value_length: usize,
    /// The most fields after `by` (`query.maxGroupBy`).
    pub max_group_by: usize,
    /// The most time buckets of a `timechart` (`query.maxBuckets`).
    pub max_buckets: u64,
    /// The most rows an answer may have (`query.maxRows`).
    pub max_rows: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_length: 4 << 20,
            max_depth: 32,
            max_terms: 1024,
            max_values: 200_000,
            max_value_length: 4096,
            max_group_by: 10,
            max_buckets: 10_000,
            max_rows: 10_000,
        }
    }
}

//! Compiling a query to SQL over the store's `events` table, through a dialect, so the embedded
//! store (DataFusion) and ClickHouse run the same queries.
//!
//! User input never reaches the SQL text: every value becomes a numbered parameter, and the only
//! identifiers are catalog columns and aliases that passed [`is_identifier`]. Durations and
//! numbers that shape the query (bucket widths, limits, percentiles) are parsed integers.
//!
//! Text columns of the store are never NULL (absent is `''`), so negation means what users
//! expect; a negated condition is written `(…) IS NOT TRUE`, so a NULL number (an event
//! without a status code) matches `-code:200` as users expect. The SQL stays shallow: `AND` and
//! `OR` of many terms are balanced trees, value lists one `IN`, and a negation one node
//! (`NOT COALESCE(…)` nested two, whose names DataFusion formats recursively).

use crate::ast::{AggFunc, Aggregate, Expr, Literal, Pattern, Pipe, Query, SortKey};
use crate::error::QueryError;
use crate::fields::{Field, FieldKind, JsonColumn, POD_SPEC_ROOTS};
use crate::lexer::CompareOp;
use crate::limits::QueryLimits;
use crate::parser::is_identifier;

/// A parameter value of a compiled query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Text.
    Text(String),
    /// A 64-bit integer.
    Int(i64),
    /// A UTC timestamp in microseconds.
    TimestampMicros(i64),
    /// A boolean.
    Bool(bool),
}

/// SQL text with its parameters and the names of its output columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSql {
    /// The statement, with placeholders.
    pub sql: String,
    /// Parameter values, in placeholder order.
    pub params: Vec<Param>,
    /// Output column names, in order.
    pub columns: Vec<String>,
}

/// What differs between SQL engines.
pub trait Dialect {
    /// The placeholder of the `index`th parameter (1-based).
    fn placeholder(&self, index: usize) -> String;
    /// A quoted identifier. Only catalog names, validated aliases and field paths (which
    /// cannot hold a `"`) reach it; quotes are doubled all the same.
    fn ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
    /// LIKE with `\` as the escape character.
    fn like(&self, expr: &str, pattern: &str) -> String;
    /// Whether a text contains another (a plain string, not a pattern), ignoring case.
    fn contains_text(&self, expr: &str, needle: &str) -> String;
    /// Whether the text of one top-level field of a JSON text column contains a needle (a plain
    /// string), ignoring case as [`contains_text`](Self::contains_text) does.
    fn json_field_contains_text(&self, column: &str, key: &str, needle: &str) -> String;
    /// Whether a list column contains a value.
    fn list_contains(&self, column: &str, value: &str) -> String;
    /// Whether any element of a list column matches a LIKE pattern.
    fn list_like(&self, column: &str, pattern: &str) -> String;
    /// Whether a list column is non-empty.
    fn list_not_empty(&self, column: &str) -> String;
    /// Whether a text expression equals one of the values of `values`, a placeholder holding
    /// them as a JSON array of strings: one parameter however many values, looked up in a set.
    fn in_set(&self, expr: &str, values: &str) -> String;
    /// Whether any element of a list column equals one of the values (as for `in_set`).
    fn list_in_set(&self, column: &str, values: &str) -> String;
    /// Whether any value at a dotted JSON path of a JSON text column (arrays searched
    /// element-wise) equals the value, or matches it as a `*` wildcard pattern when `wildcard`
    /// is true.
    fn json_path_match(&self, column: &str, path: &str, value: &str, wildcard: &str) -> String;
    /// Whether any value of the query parameter `name` of a request-URI column (decoded as
    /// [`crate::uri_param_values`] does) equals the value, or matches it as a `*` wildcard
    /// pattern when `wildcard` is true.
    fn uri_param_match(&self, column: &str, name: &str, value: &str, wildcard: &str) -> String;
    /// The value of one key of the annotations column, or NULL.
    fn annotation(&self, column: &str, key: &str) -> String;
    /// The `p`th percentile of an expression.
    fn percentile(&self, expr: &str, p: u8) -> String;
    /// The start of the `span_micros` wide time bucket of a timestamp column.
    fn time_bucket(&self, column: &str, span_micros: i64) -> String;
    /// An expression expanding a list column into one row per element.
    fn unnest(&self, column: &str) -> String;
    /// An expression as text.
    fn text(&self, expr: &str) -> String;
    /// The aggregate: the distinct values of a text expression, as a list; of a list column
    /// (`list` true), the distinct elements of all its lists.
    fn distinct_values(&self, expr: &str, list: bool) -> String;
    /// The aggregate: a mergeable histogram of an integer expression, from which percentiles
    /// of any union of groups can be read (`kubetrail_store::LatencyHistogram`).
    fn histogram(&self, expr: &str) -> String;
}

/// Apache DataFusion, the embedded store's engine. The `kt_*` functions are registered by the
/// store.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataFusionDialect;

impl Dialect for DataFusionDialect {
    fn placeholder(&self, index: usize) -> String {
        format!("${index}")
    }
    fn like(&self, expr: &str, pattern: &str) -> String {
        format!("{expr} LIKE {pattern}")
    }
    fn contains_text(&self, expr: &str, needle: &str) -> String {
        format!("kt_contains_text({expr}, {needle})")
    }
    fn json_field_contains_text(&self, column: &str, key: &str, needle: &str) -> String {
        format!("kt_json_field_contains_text({column}, {key}, {needle})")
    }
    fn list_contains(&self, column: &str, value: &str) -> String {
        format!("array_has({column}, {value})")
    }
    fn list_like(&self, column: &str, pattern: &str) -> String {
        format!("kt_list_like({column}, {pattern})")
    }
    fn list_not_empty(&self, column: &str) -> String {
        format!("cardinality({column}) > 0")
    }
    fn in_set(&self, expr: &str, values: &str) -> String {
        format!("kt_in_set({expr}, {values})")
    }
    fn list_in_set(&self, column: &str, values: &str) -> String {
        format!("kt_list_in_set({column}, {values})")
    }
    fn json_path_match(&self, column: &str, path: &str, value: &str, wildcard: &str) -> String {
        format!("kt_json_path_match({column}, {path}, {value}, {wildcard})")
    }
    fn uri_param_match(&self, column: &str, name: &str, value: &str, wildcard: &str) -> String {
        format!("kt_uri_param_match({column}, {name}, {value}, {wildcard})")
    }
    fn annotation(&self, column: &str, key: &str) -> String {
        format!("kt_annotation({column}, {key})")
    }
    fn percentile(&self, expr: &str, p: u8) -> String {
        format!(
            "approx_percentile_cont({expr}, {:.2})",
            f64::from(p) / 100.0
        )
    }
    fn time_bucket(&self, column: &str, span_micros: i64) -> String {
        format!(
            "date_bin(INTERVAL '{span_micros} microseconds', {column}, TIMESTAMP '1970-01-01T00:00:00Z')"
        )
    }
    fn unnest(&self, column: &str) -> String {
        format!("unnest({column})")
    }
    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS VARCHAR)")
    }
    fn distinct_values(&self, expr: &str, list: bool) -> String {
        if list {
            format!("array_distinct(flatten(array_agg({expr})))")
        } else {
            format!("array_agg(DISTINCT {expr})")
        }
    }
    fn histogram(&self, expr: &str) -> String {
        format!("kt_latency_histogram(CAST({expr} AS BIGINT))")
    }
}

/// Options that are not part of the query text.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Only events at or after this time (microseconds since the epoch).
    pub from_micros: Option<i64>,
    /// Only events before this time.
    pub to_micros: Option<i64>,
    /// Only events of this cluster.
    pub cluster: Option<String>,
    /// The row limit of event results without `| limit`.
    pub default_limit: u64,
    /// The limits (timechart buckets, rows).
    pub limits: QueryLimits,
    /// Now, in microseconds since the epoch: where a range without an end ends, for counting
    /// a timechart's buckets.
    pub now_micros: Option<i64>,
}

/// The event columns shown when a query has no `fields` command.
pub const DEFAULT_FIELDS: &[&str] = &[
    "time",
    "user",
    "verb",
    "resource",
    "subresource",
    "ns",
    "name",
    "code",
    "latency",
    "client",
];

/// The table queries read.
const TABLE: &str = "events";

/// Compiles `query` for `dialect`.
pub fn compile(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
) -> Result<CompiledSql, QueryError> {
    let mut c = Compiler {
        dialect,
        params: Vec::new(),
    };
    let conditions = c.conditions(query, options);
    let mut stage = Stage {
        select: Vec::new(),
        from: TABLE.to_owned(),
        conditions,
        group_by: Vec::new(),
        order_by: Vec::new(),
        limit: None,
        shaped: false,
        event_rows: true,
    };
    for pipe in &query.pipes {
        c.apply(&mut stage, pipe, options)?;
    }
    if stage.event_rows && stage.select.is_empty() {
        for name in DEFAULT_FIELDS {
            let field = Field::resolve(name, 0)?;
            stage.select.push((c.column(&field), (*name).to_owned()));
        }
    }
    if stage.event_rows {
        if stage.order_by.is_empty() {
            stage
                .order_by
                .push(format!("{} DESC", dialect.ident("time")));
        }
        if stage.limit.is_none() && options.default_limit > 0 {
            stage.limit = Some(options.default_limit);
        }
    }
    // One row more than the limit tells the caller the answer would have been larger.
    if options.limits.max_rows < u64::MAX {
        let cap = options.limits.max_rows + 1;
        stage.limit = Some(stage.limit.map_or(cap, |l| l.min(cap)));
    }
    let columns = stage
        .select
        .iter()
        .map(|(_, alias)| alias.clone())
        .collect();
    Ok(CompiledSql {
        sql: stage.render(dialect),
        params: c.params,
        columns,
    })
}

/// Where a page of search results continues: the last event of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    /// Its time, µs since the epoch.
    pub time_micros: i64,
    /// Its auditID.
    pub audit_id: String,
    /// Its stage.
    pub stage: String,
}

/// The columns of a search hit: enough to page and to show the complete event.
pub const SEARCH_COLUMNS: &[&str] = &["time", "audit_id", "stage", "cluster", "event"];

/// Compiles a search: the events matching the query's filter in the range, newest first,
/// ordered by (time, auditID, stage) descending so that the page after `after` is exact even
/// when many events share a timestamp. `limit` rows at most; pipes are not part of a search
/// (the caller refuses them).
pub fn compile_search(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
    after: Option<&SearchCursor>,
    limit: u64,
) -> CompiledSql {
    search_of(query, dialect, options, after, limit, SEARCH_COLUMNS, false)
}

/// The same columns as [`compile_search`], oldest first, the page after `after` in that order:
/// reading history in the order it happened (detections hunting over the store need windows
/// and first sightings in time order).
pub fn compile_scan(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
    after: Option<&SearchCursor>,
    limit: u64,
) -> CompiledSql {
    search_of(query, dialect, options, after, limit, SEARCH_COLUMNS, true)
}

/// The times of the same page as [`compile_search`], and nothing else: the first of a search's
/// two steps. Ordering needs only the time column (and the filter's), so this reads a small
/// part of what the page itself reads; the page is then searched from the oldest of these
/// times on, where the segments' row groups (cut by time) let the scan skip every row group
/// but the few the page lies in, instead of carrying every matching event's text to the sort.
pub fn compile_search_times(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
    after: Option<&SearchCursor>,
    limit: u64,
) -> CompiledSql {
    search_of(query, dialect, options, after, limit, &["time"], false)
}

/// The oldest and the newest time of the events a search matches in its range, and how many
/// there are (columns `first`, `last`, `events`; the times NULL when there are none): how a
/// reader of many events with [`compile_scan`] cuts the range into slices of about a page
/// each, so that each page's search reads only its slice's row groups.
pub fn compile_extent(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
) -> CompiledSql {
    let mut c = Compiler {
        dialect,
        params: Vec::new(),
    };
    let conditions = c.conditions(query, options);
    let time = dialect.ident("time");
    let stage = Stage {
        select: vec![
            (format!("min({time})"), "first".to_owned()),
            (format!("max({time})"), "last".to_owned()),
            ("count(*)".to_owned(), "events".to_owned()),
        ],
        from: TABLE.to_owned(),
        conditions,
        group_by: Vec::new(),
        order_by: Vec::new(),
        limit: None,
        shaped: true,
        event_rows: false,
    };
    CompiledSql {
        sql: stage.render(dialect),
        params: c.params,
        columns: ["first", "last", "events"].map(str::to_owned).to_vec(),
    }
}

fn search_of(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
    after: Option<&SearchCursor>,
    limit: u64,
    columns: &[&str],
    ascending: bool,
) -> CompiledSql {
    let mut c = Compiler {
        dialect,
        params: Vec::new(),
    };
    let mut conditions = c.conditions(query, options);
    let time = dialect.ident("time");
    // The times alone bound the page from below: ordered by time only, and after a cursor
    // strictly older than its time (the events of that same time that follow the cursor are
    // at the cursor's time, which is above any bound this gives), so neither the sort nor the
    // filter reads the auditID and stage columns.
    let times_only = columns == ["time"];
    let (before, direction) = if ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let (Some(after), true) = (after, times_only) {
        let t = c.param(Param::TimestampMicros(after.time_micros));
        conditions.push(format!("{time} < {t}"));
    } else if let Some(after) = after {
        let (id, stage) = (dialect.ident("audit_id"), dialect.ident("stage"));
        let t = c.param(Param::TimestampMicros(after.time_micros));
        let a = c.param(Param::Text(after.audit_id.clone()));
        let s = c.param(Param::Text(after.stage.clone()));
        conditions.push(format!(
            "{time} {before} {t} OR ({time} = {t} AND ({id} {before} {a} OR ({id} = {a} AND {stage} {before} {s})))"
        ));
    }
    let stage = Stage {
        select: columns
            .iter()
            .map(|name| (dialect.ident(name), (*name).to_owned()))
            .collect(),
        from: TABLE.to_owned(),
        conditions,
        group_by: Vec::new(),
        order_by: ["time", "audit_id", "stage"][..if times_only { 1 } else { 3 }]
            .iter()
            .map(|name| format!("{} {direction}", dialect.ident(name)))
            .collect(),
        limit: Some(limit),
        shaped: true,
        event_rows: true,
    };
    CompiledSql {
        sql: stage.render(dialect),
        params: c.params,
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// How a monitor's aggregate is kept per time bucket, so that buckets merge exactly into any
/// window: the columns after the bucket and the group keys in [`Partials::sql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialKind {
    /// `count()`: one BIGINT count.
    Count,
    /// `sum` and `avg`: the sum and the count of values (two BIGINT).
    SumCount,
    /// `min`: the smallest value.
    Min,
    /// `max`: the largest value.
    Max,
    /// `dc`: the distinct values, as a list of text.
    Distinct,
    /// Percentiles: a histogram (BINARY, `kubetrail_store::LatencyHistogram`).
    Histogram,
}

/// A monitor's query compiled to per-bucket partial aggregates: the columns are the bucket
/// start (`bucket`, a timestamp), one text column per group field, then the partials of
/// [`Partials::kind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Partials {
    /// The statement.
    pub sql: CompiledSql,
    /// The group fields, as written (`user`, `verb`).
    pub group_by: Vec<String>,
    /// The aggregate the monitor watches.
    pub aggregate: Aggregate,
    /// How it is kept per bucket.
    pub kind: PartialKind,
}

/// Compiles a monitor's query — a search, optionally followed by `| stats AGG [by FIELD, …]`
/// with one aggregate (`count()` when there is no `stats`) — into partial aggregates per
/// `bucket_micros` wide time bucket and group, which the monitor merges into its windows.
pub fn compile_partials(
    query: &Query,
    dialect: &dyn Dialect,
    options: &CompileOptions,
    bucket_micros: i64,
) -> Result<Partials, QueryError> {
    let (aggregate, by) = match query.pipes.as_slice() {
        [] => (
            Aggregate {
                func: AggFunc::Count,
                field: None,
                alias: "count".to_owned(),
            },
            Vec::new(),
        ),
        [Pipe::Stats { aggregates, by }] => match aggregates.as_slice() {
            [one] => (one.clone(), by.clone()),
            _ => {
                return Err(QueryError::at(
                    0,
                    "a monitor watches one aggregate: write `| stats count() by …` with a single function",
                ));
            }
        },
        _ => {
            return Err(QueryError::at(
                0,
                "a monitor's query is a search, optionally followed by one `| stats AGG by FIELD, …`; timechart, top, sort, fields and limit have no place in it",
            ));
        }
    };
    if aggregate
        .field
        .as_ref()
        .is_some_and(|f| f.kind() == FieldKind::Time)
    {
        return Err(QueryError::at(
            0,
            "a monitor compares a number with its threshold: min(time) and max(time) are for queries and reports",
        ));
    }
    if by.len() > options.limits.max_group_by {
        return Err(QueryError::limit(
            0,
            "query.maxGroupBy",
            format!("at most {} fields after `by`", options.limits.max_group_by),
        ));
    }
    let kind = match aggregate.func {
        AggFunc::Count => PartialKind::Count,
        AggFunc::DistinctCount => PartialKind::Distinct,
        AggFunc::Sum | AggFunc::Avg => PartialKind::SumCount,
        AggFunc::Min => PartialKind::Min,
        AggFunc::Max => PartialKind::Max,
        AggFunc::Percentile(_) => PartialKind::Histogram,
    };
    let mut c = Compiler {
        dialect,
        params: Vec::new(),
    };
    let conditions = c.conditions(query, options);
    let mut select = vec![(
        dialect.time_bucket(&dialect.ident("time"), bucket_micros),
        "bucket".to_owned(),
    )];
    for (i, field) in by.iter().enumerate() {
        let key = c.group_key(field);
        let key = match field.kind() {
            FieldKind::Text | FieldKind::List => key,
            _ => dialect.text(&key),
        };
        select.push((format!("COALESCE({key}, '')"), format!("g{i}")));
    }
    let column = aggregate.field.as_ref().map(|f| c.column(f));
    let column = column.unwrap_or_default();
    match kind {
        PartialKind::Count => select.push(("COUNT(*)".to_owned(), "n".to_owned())),
        PartialKind::SumCount => {
            select.push((format!("SUM({column})"), "s".to_owned()));
            select.push((format!("COUNT({column})"), "n".to_owned()));
        }
        PartialKind::Min => select.push((format!("MIN({column})"), "v".to_owned())),
        PartialKind::Max => select.push((format!("MAX({column})"), "v".to_owned())),
        PartialKind::Distinct => {
            let field = aggregate.field.as_ref();
            let list = field.is_some_and(|f| f.kind() == FieldKind::List);
            let expr = if list || field.is_some_and(|f| f.kind() == FieldKind::Text) {
                column
            } else {
                dialect.text(&column)
            };
            select.push((dialect.distinct_values(&expr, list), "d".to_owned()));
        }
        PartialKind::Histogram => select.push((dialect.histogram(&column), "h".to_owned())),
    }
    let stage = Stage {
        group_by: (1..=by.len() + 1).map(|i| i.to_string()).collect(),
        select,
        from: TABLE.to_owned(),
        conditions,
        order_by: vec!["1".to_owned()],
        limit: None,
        shaped: true,
        event_rows: false,
    };
    let columns = stage
        .select
        .iter()
        .map(|(_, alias)| alias.clone())
        .collect();
    Ok(Partials {
        sql: CompiledSql {
            sql: stage.render(dialect),
            params: c.params,
            columns,
        },
        group_by: by.iter().map(Field::display_name).collect(),
        aggregate,
        kind,
    })
}

/// One SELECT being built.
struct Stage {
    select: Vec<(String, String)>,
    from: String,
    conditions: Vec<String>,
    group_by: Vec<String>,
    order_by: Vec<String>,
    limit: Option<u64>,
    /// A command already chose the output (stats, top, timechart, fields).
    shaped: bool,
    event_rows: bool,
}

impl Stage {
    fn render(&self, dialect: &dyn Dialect) -> String {
        let select: Vec<String> = self
            .select
            .iter()
            .map(|(expr, alias)| format!("{expr} AS {}", dialect.ident(alias)))
            .collect();
        let mut sql = format!("SELECT {} FROM {}", select.join(", "), self.from);
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(
                &self
                    .conditions
                    .iter()
                    .map(|c| format!("({c})"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            );
        }
        if !self.group_by.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&self.group_by.join(", "));
        }
        if !self.order_by.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&self.order_by.join(", "));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    fn output_columns(&self) -> Vec<&str> {
        self.select.iter().map(|(_, a)| a.as_str()).collect()
    }
}

struct Compiler<'d> {
    dialect: &'d dyn Dialect,
    params: Vec<Param>,
}

impl Compiler<'_> {
    /// The query's filter, the time range and the cluster, as conditions to AND together.
    fn conditions(&mut self, query: &Query, options: &CompileOptions) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(filter) = &query.filter {
            conditions.push(self.expr(filter));
        }
        let time = self.dialect.ident("time");
        if let Some(from) = options.from_micros {
            let p = self.param(Param::TimestampMicros(from));
            conditions.push(format!("{time} >= {p}"));
        }
        if let Some(to) = options.to_micros {
            let p = self.param(Param::TimestampMicros(to));
            conditions.push(format!("{time} < {p}"));
        }
        if let Some(cluster) = &options.cluster {
            let p = self.param(Param::Text(cluster.clone()));
            conditions.push(format!("{} = {p}", self.dialect.ident("cluster")));
        }
        conditions
    }

    fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        self.dialect.placeholder(self.params.len())
    }

    fn column(&mut self, field: &Field) -> String {
        match field {
            Field::Column(def) => self.dialect.ident(def.column),
            Field::Json {
                column: JsonColumn::Annotations,
                path,
            } => {
                let key = self.param(Param::Text(path.join(".")));
                self.dialect
                    .annotation(&self.dialect.ident("annotations"), &key)
            }
            Field::Json { column, .. } => self.dialect.ident(column.column()),
            // The parser admits these in search terms only, which compile through
            // `view_match`; as a column they have no value.
            Field::Pod(_) | Field::Param(_) => "NULL".to_owned(),
        }
    }

    /// A search term on the pod view or a query parameter: whether any value equals `value`
    /// (or matches it as a pattern). The pod view reads the request bodies of the resources
    /// that carry a pod spec, at that resource's path (`pod_spec_root`), as the matcher does.
    fn view_match(&mut self, field: &Field, value: &str, wildcard: bool) -> String {
        match field {
            Field::Param(name) => {
                let column = self.dialect.ident("request_uri");
                let name = self.param(Param::Text(name.clone()));
                let value = self.param(Param::Text(value.to_owned()));
                let wildcard = self.param(Param::Bool(wildcard));
                self.dialect
                    .uri_param_match(&column, &name, &value, &wildcard)
            }
            Field::Pod(def) => {
                let mut per_root = Vec::new();
                for (resources, ephemeral, root) in POD_SPEC_ROOTS {
                    let resources = serde_json::Value::from(*resources).to_string();
                    let resources = self.param(Param::Text(resources));
                    let in_resources = self
                        .dialect
                        .in_set(&self.dialect.ident("resource"), &resources);
                    let subresource = self.dialect.ident("subresource");
                    let no_subresource = format!("{subresource} = ''");
                    let subresource = if *ephemeral {
                        let ephemeral = self.param(Param::Text("ephemeralcontainers".into()));
                        format!("({no_subresource} OR {subresource} = {ephemeral})")
                    } else {
                        no_subresource
                    };
                    let paths: Vec<String> = def
                        .paths_below(root)
                        .map(|path| {
                            let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
                            self.json_match(JsonColumn::RequestObject, &steps, value, wildcard)
                        })
                        .collect();
                    per_root.push(format!(
                        "({in_resources} AND {subresource} AND ({}))",
                        paths.join(" OR ")
                    ));
                }
                format!("({})", per_root.join(" OR "))
            }
            Field::Column(_) | Field::Json { .. } => unreachable!("not a view field"),
        }
    }

    fn expr(&mut self, expr: &Expr) -> String {
        match expr {
            Expr::And(all) => {
                let parts = all.iter().map(|e| self.expr(e)).collect();
                balanced(parts, " AND ")
            }
            Expr::Or(any) => {
                let parts = any.iter().map(|e| self.expr(e)).collect();
                balanced(parts, " OR ")
            }
            Expr::Not(inner) => format!("({}) IS NOT TRUE", self.expr(inner)),
            Expr::In { field, values } => {
                let column = self.column(field);
                let values = serde_json::Value::from(values.values()).to_string();
                let values = self.param(Param::Text(values));
                if field.kind() == FieldKind::List {
                    self.dialect.list_in_set(&column, &values)
                } else {
                    self.dialect.in_set(&column, &values)
                }
            }
            Expr::Text(text) => {
                let column = self.dialect.ident("event");
                let needle = self.param(Param::Text(text.clone()));
                self.dialect.contains_text(&column, &needle)
            }
            Expr::BodyText { body, text } => {
                let column = self.dialect.ident(body.column());
                let needle = self.param(Param::Text(text.clone()));
                match body {
                    // Read from the complete event: only the body's own text may match.
                    JsonColumn::ResponseObject => {
                        let key = self.param(Param::Text(body.prefix().to_owned()));
                        self.dialect
                            .json_field_contains_text(&column, &key, &needle)
                    }
                    JsonColumn::RequestObject | JsonColumn::Annotations => {
                        self.dialect.contains_text(&column, &needle)
                    }
                }
            }
            Expr::Exists(field) if field.is_search_only() => self.view_match(field, "*", true),
            Expr::Match { field, pattern } if field.is_search_only() => match pattern {
                Pattern::Exact(value) => self.view_match(field, value, false),
                Pattern::Wildcard(value) => self.view_match(field, value, true),
            },
            Expr::Exists(field) => match field {
                Field::Json {
                    column: JsonColumn::RequestObject,
                    path,
                } if path.is_empty() => {
                    format!(
                        "{} <> ''",
                        self.dialect.ident(JsonColumn::RequestObject.column())
                    )
                }
                Field::Json {
                    column: json @ (JsonColumn::RequestObject | JsonColumn::ResponseObject),
                    path,
                } => self.json_match(*json, path, "*", true),
                _ if field.kind() == FieldKind::List => {
                    let column = self.column(field);
                    self.dialect.list_not_empty(&column)
                }
                _ if field.kind() == FieldKind::Text => {
                    let column = self.column(field);
                    format!("{column} IS NOT NULL AND {column} <> ''")
                }
                _ => format!("{} IS NOT NULL", self.column(field)),
            },
            Expr::Match { field, pattern } => {
                if let Field::Json {
                    column: json @ (JsonColumn::RequestObject | JsonColumn::ResponseObject),
                    path,
                } = field
                {
                    let (text, wildcard) = match pattern {
                        Pattern::Exact(t) => (t.as_str(), false),
                        Pattern::Wildcard(t) => (t.as_str(), true),
                    };
                    return self.json_match(*json, path, text, wildcard);
                }
                let column = self.column(field);
                let list = field.kind() == FieldKind::List;
                match pattern {
                    Pattern::Exact(value) => {
                        let p = self.param(Param::Text(value.clone()));
                        if list {
                            self.dialect.list_contains(&column, &p)
                        } else {
                            format!("{column} = {p}")
                        }
                    }
                    Pattern::Wildcard(value) => {
                        let p = self.param(Param::Text(wildcard_to_like(value)));
                        if list {
                            self.dialect.list_like(&column, &p)
                        } else {
                            self.dialect.like(&column, &p)
                        }
                    }
                }
            }
            Expr::Compare { field, op, value } => {
                let column = self.column(field);
                let p = self.param(match value {
                    Literal::Text(t) => Param::Text(t.clone()),
                    Literal::Int(n) | Literal::Duration(n) => Param::Int(*n),
                    Literal::Time(t) => Param::TimestampMicros(*t),
                    Literal::Bool(b) => Param::Bool(*b),
                });
                format!(
                    "{column} {} {p}",
                    match op {
                        CompareOp::Eq => "=",
                        CompareOp::Ne => "<>",
                        CompareOp::Lt => "<",
                        CompareOp::Le => "<=",
                        CompareOp::Gt => ">",
                        CompareOp::Ge => ">=",
                    }
                )
            }
        }
    }

    fn json_match(
        &mut self,
        column: JsonColumn,
        path: &[String],
        value: &str,
        wildcard: bool,
    ) -> String {
        let path = self.param(Param::Text(column.path_in_column(path)));
        let column = self.dialect.ident(column.column());
        let value = self.param(Param::Text(value.to_owned()));
        let wildcard = self.param(Param::Bool(wildcard));
        self.dialect
            .json_path_match(&column, &path, &value, &wildcard)
    }

    fn aggregate(&mut self, aggregate: &Aggregate) -> String {
        let column = aggregate
            .field
            .as_ref()
            .map(|f| self.column(f))
            .unwrap_or_default();
        match aggregate.func {
            AggFunc::Count => "COUNT(*)".to_owned(),
            AggFunc::DistinctCount => format!("COUNT(DISTINCT {column})"),
            AggFunc::Sum => format!("SUM({column})"),
            AggFunc::Avg => format!("AVG({column})"),
            AggFunc::Min => format!("MIN({column})"),
            AggFunc::Max => format!("MAX({column})"),
            AggFunc::Percentile(p) => self.dialect.percentile(&column, p),
        }
    }

    /// A grouping key: lists are expanded to one row per element.
    fn group_key(&mut self, field: &Field) -> String {
        let column = self.column(field);
        if field.kind() == FieldKind::List {
            self.dialect.unnest(&column)
        } else {
            column
        }
    }

    fn apply(
        &mut self,
        stage: &mut Stage,
        pipe: &Pipe,
        options: &CompileOptions,
    ) -> Result<(), QueryError> {
        let shaping = matches!(
            pipe,
            Pipe::Stats { .. } | Pipe::Timechart { .. } | Pipe::Top { .. } | Pipe::Fields(_)
        );
        if shaping && stage.shaped {
            return Err(QueryError::at(
                0,
                "stats, timechart, top and fields work on events: use one of them, then sort and limit",
            ));
        }
        match pipe {
            Pipe::Stats { aggregates, by } => {
                for field in by {
                    let key = self.group_key(field);
                    stage.select.push((key, field.display_name()));
                }
                stage.group_by = (1..=by.len()).map(|i| i.to_string()).collect();
                for aggregate in aggregates {
                    let expr = self.aggregate(aggregate);
                    stage.select.push((expr, aggregate.alias.clone()));
                }
                stage.order_by = vec![format!("{} DESC", by.len() + 1)];
                stage.order_by.extend((1..=by.len()).map(|i| i.to_string()));
            }
            Pipe::Timechart {
                span_micros,
                span_at,
                aggregates,
                by,
            } => {
                if let (Some(from), Some(to)) = (
                    options.from_micros,
                    options.to_micros.or(options.now_micros),
                ) {
                    let buckets = ((to - from).max(0) as u64).div_ceil(*span_micros as u64);
                    if buckets > options.limits.max_buckets {
                        return Err(QueryError::limit(
                            *span_at,
                            "query.maxBuckets",
                            format!(
                                "this timechart would have {buckets} buckets over the time range, more than the limit of {}: widen the span or narrow the range",
                                options.limits.max_buckets
                            ),
                        ));
                    }
                }
                let bucket = self
                    .dialect
                    .time_bucket(&self.dialect.ident("time"), *span_micros);
                stage.select.push((bucket, "time".to_owned()));
                if let Some(field) = by {
                    let key = self.group_key(field);
                    stage.select.push((key, field.display_name()));
                }
                let keys = 1 + usize::from(by.is_some());
                stage.group_by = (1..=keys).map(|i| i.to_string()).collect();
                for aggregate in aggregates {
                    let expr = self.aggregate(aggregate);
                    stage.select.push((expr, aggregate.alias.clone()));
                }
                stage.order_by = (1..=keys).map(|i| i.to_string()).collect();
            }
            Pipe::Top { limit, field } => {
                let key = self.group_key(field);
                stage.select.push((key, field.display_name()));
                stage
                    .select
                    .push(("COUNT(*)".to_owned(), "count".to_owned()));
                stage.group_by = vec!["1".to_owned()];
                stage.order_by = vec!["2 DESC".to_owned(), "1".to_owned()];
                stage.limit = Some(*limit);
            }
            Pipe::Fields(fields) => {
                for field in fields {
                    let column = self.column(field);
                    stage.select.push((column, field.display_name()));
                }
                stage.shaped = true;
                return Ok(());
            }
            Pipe::Sort(keys) => {
                stage.order_by = self.sort_keys(stage, keys)?;
                return Ok(());
            }
            Pipe::Limit(n) => {
                stage.limit = Some(stage.limit.map_or(*n, |l| l.min(*n)));
                return Ok(());
            }
        }
        stage.shaped = true;
        stage.event_rows = false;
        Ok(())
    }

    fn sort_keys(&mut self, stage: &Stage, keys: &[SortKey]) -> Result<Vec<String>, QueryError> {
        let outputs = stage.output_columns();
        keys.iter()
            .map(|key| {
                let direction = if key.descending { " DESC" } else { "" };
                if stage.shaped {
                    if outputs.contains(&key.column.as_str()) && is_identifier(&key.column) {
                        return Ok(format!("{}{direction}", self.dialect.ident(&key.column)));
                    }
                    return Err(QueryError::at(
                        0,
                        format!(
                            "cannot sort by `{}`: the results have the columns {}",
                            key.column,
                            outputs.join(", ")
                        ),
                    ));
                }
                // Event rows sort by any field.
                let field = Field::resolve(&key.column, 0)?;
                Ok(format!("{}{direction}", self.column(&field)))
            })
            .collect()
    }
}

/// Conditions joined by `op` as a balanced tree of parentheses. SQL parsers read `a OR b OR c
/// …` into a chain as deep as it is long, and engines walk such trees recursively; halving
/// keeps the depth at the logarithm of the number of terms.
fn balanced(mut parts: Vec<String>, op: &str) -> String {
    if parts.len() <= 4 {
        return parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(op);
    }
    let right = parts.split_off(parts.len() / 2);
    format!("({}){op}({})", balanced(parts, op), balanced(right, op))
}

/// Escapes LIKE metacharacters in literal text.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `*` wildcard pattern as a LIKE pattern.
fn wildcard_to_like(pattern: &str) -> String {
    pattern
        .split('*')
        .map(like_escape)
        .collect::<Vec<_>>()
        .join("%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn check(query: &str, expected_sql: &str, expected_params: &[Param]) {
        let compiled = compile(
            &parse(query).unwrap(),
            &DataFusionDialect,
            &CompileOptions {
                default_limit: 100,
                ..CompileOptions::default()
            },
        )
        .unwrap();
        assert_eq!(compiled.sql, expected_sql, "{query}");
        assert_eq!(compiled.params, expected_params, "{query}");
    }

    #[test]
    fn searches_become_parameterized_conditions() {
        check(
            "user:system:serviceaccount:kube-system:* -verb:get code>=400",
            r#"SELECT "time" AS "time", "user" AS "user", "verb" AS "verb", "resource" AS "resource", "subresource" AS "subresource", "namespace" AS "ns", "name" AS "name", "code" AS "code", "latency_us" AS "latency", "client" AS "client" FROM events WHERE (("user" LIKE $1) AND (("verb" = $2) IS NOT TRUE) AND ("code" >= $3)) ORDER BY "time" DESC LIMIT 100"#,
            &[
                Param::Text("system:serviceaccount:kube-system:%".into()),
                Param::Text("get".into()),
                Param::Int(400),
            ],
        );
    }

    #[test]
    fn searches_page_by_time_audit_id_and_stage() {
        let after = SearchCursor {
            time_micros: 7,
            audit_id: "a'b".into(),
            stage: "ResponseComplete".into(),
        };
        let compiled = compile_search(
            &parse("verb:delete").unwrap(),
            &DataFusionDialect,
            &CompileOptions {
                from_micros: Some(1),
                ..CompileOptions::default()
            },
            Some(&after),
            51,
        );
        assert_eq!(
            compiled.sql,
            r#"SELECT "time" AS "time", "audit_id" AS "audit_id", "stage" AS "stage", "cluster" AS "cluster", "event" AS "event" FROM events WHERE ("verb" = $1) AND ("time" >= $2) AND ("time" < $3 OR ("time" = $3 AND ("audit_id" < $4 OR ("audit_id" = $4 AND "stage" < $5)))) ORDER BY "time" DESC, "audit_id" DESC, "stage" DESC LIMIT 51"#
        );
        assert_eq!(
            compiled.params,
            [
                Param::Text("delete".into()),
                Param::TimestampMicros(1),
                Param::TimestampMicros(7),
                Param::Text("a'b".into()),
                Param::Text("ResponseComplete".into()),
            ]
        );
    }

    #[test]
    fn the_times_of_a_page_need_neither_audit_ids_nor_stages() {
        let after = SearchCursor {
            time_micros: 7,
            audit_id: "a".into(),
            stage: "ResponseComplete".into(),
        };
        let compiled = compile_search_times(
            &parse("verb:delete").unwrap(),
            &DataFusionDialect,
            &CompileOptions::default(),
            Some(&after),
            51,
        );
        assert_eq!(
            compiled.sql,
            r#"SELECT "time" AS "time" FROM events WHERE ("verb" = $1) AND ("time" < $2) ORDER BY "time" DESC LIMIT 51"#
        );
        assert_eq!(compiled.columns, ["time"]);
    }

    #[test]
    fn injection_attempts_stay_values() {
        let compiled = compile(
            &parse(r##"user:"x' OR 1=1 --" "%_\"""##).unwrap(),
            &DataFusionDialect,
            &CompileOptions::default(),
        )
        .unwrap();
        assert!(
            !compiled.sql.contains("1=1") && !compiled.sql.contains('\''),
            "{}",
            compiled.sql
        );
        assert_eq!(compiled.params[0], Param::Text("x' OR 1=1 --".into()));
        // Free text is a plain needle: `%` and `_` are not LIKE wildcards in it.
        assert_eq!(compiled.params[1], Param::Text(r#"%_""#.into()));
    }

    #[test]
    fn stats_top_timechart_sort_limit() {
        check(
            "code:403 | stats count() as n, dc(user) by verb, resource | sort -n | limit 5",
            r#"SELECT "verb" AS "verb", "resource" AS "resource", COUNT(*) AS "n", COUNT(DISTINCT "user") AS "dc_user" FROM events WHERE ("code" = $1) GROUP BY 1, 2 ORDER BY "n" DESC LIMIT 5"#,
            &[Param::Int(403)],
        );
        check(
            "user:system:anonymous | top 3 ip",
            r#"SELECT unnest("source_ips") AS "ip", COUNT(*) AS "count" FROM events WHERE ("user" = $1) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"#,
            &[Param::Text("system:anonymous".into())],
        );
        check(
            "| timechart 1m count() by code",
            r#"SELECT date_bin(INTERVAL '60000000 microseconds', "time", TIMESTAMP '1970-01-01T00:00:00Z') AS "time", "code" AS "code", COUNT(*) AS "count" FROM events GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 10001"#,
            &[],
        );
        check(
            "| stats p99(latency) by verb",
            r#"SELECT "verb" AS "verb", approx_percentile_cont("latency_us", 0.99) AS "p99_latency" FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10001"#,
            &[],
        );
    }

    #[test]
    fn fields_free_text_and_json_paths() {
        check(
            "\"db-credentials\" requestObject.spec.containers.securityContext.privileged:true | fields time, user, annotations.authorization.k8s.io/decision",
            r#"SELECT "time" AS "time", "user" AS "user", kt_annotation("annotations", $5) AS "annotations.authorization.k8s.io/decision" FROM events WHERE ((kt_contains_text("event", $1)) AND (kt_json_path_match("request_object", $2, $3, $4))) ORDER BY "time" DESC LIMIT 100"#,
            &[
                Param::Text("db-credentials".into()),
                Param::Text("spec.containers.securityContext.privileged".into()),
                Param::Text("true".into()),
                Param::Bool(false),
                Param::Text("authorization.k8s.io/decision".into()),
            ],
        );
        check(
            "responseObject.status.phase:Pending requestObject:*",
            r#"SELECT "time" AS "time", "user" AS "user", "verb" AS "verb", "resource" AS "resource", "subresource" AS "subresource", "namespace" AS "ns", "name" AS "name", "code" AS "code", "latency_us" AS "latency", "client" AS "client" FROM events WHERE ((kt_json_path_match("event", $1, $2, $3)) AND ("request_object" <> '')) ORDER BY "time" DESC LIMIT 100"#,
            &[
                Param::Text("responseObject.status.phase".into()),
                Param::Text("Pending".into()),
                Param::Bool(false),
            ],
        );
    }

    #[test]
    fn body_text_reads_the_request_body_column_or_the_event() {
        check(
            "requestObject:*Debug-Tools* | stats count()",
            r#"SELECT COUNT(*) AS "count" FROM events WHERE (kt_contains_text("request_object", $1)) ORDER BY 1 DESC LIMIT 10001"#,
            &[Param::Text("Debug-Tools".into())],
        );
        check(
            "responseObject:\"a*b\" | stats count()",
            r#"SELECT COUNT(*) AS "count" FROM events WHERE (kt_json_field_contains_text("event", $2, $1)) ORDER BY 1 DESC LIMIT 10001"#,
            &[
                Param::Text("a*b".into()),
                Param::Text("responseObject".into()),
            ],
        );
    }

    #[test]
    fn monitor_partials_are_kept_per_bucket_and_group() {
        let partials = |q: &str| {
            parse(q).and_then(|q| {
                compile_partials(
                    &q,
                    &DataFusionDialect,
                    &CompileOptions::default(),
                    60_000_000,
                )
            })
        };
        let p = partials("code:403 | stats count() by user, code").unwrap();
        assert_eq!(
            p.sql.sql,
            "SELECT date_bin(INTERVAL '60000000 microseconds', \"time\", TIMESTAMP '1970-01-01T00:00:00Z') AS \"bucket\", COALESCE(\"user\", '') AS \"g0\", COALESCE(CAST(\"code\" AS VARCHAR), '') AS \"g1\", COUNT(*) AS \"n\" FROM events WHERE (\"code\" = $1) GROUP BY 1, 2, 3 ORDER BY 1"
        );
        assert_eq!(p.group_by, ["user", "code"]);
        assert_eq!(p.kind, PartialKind::Count);
        assert_eq!(partials("verb:list").unwrap().kind, PartialKind::Count);
        assert_eq!(
            partials("* | stats avg(latency)").unwrap().kind,
            PartialKind::SumCount
        );
        let p99 = partials("* | stats p99(latency) by verb").unwrap();
        assert_eq!(p99.kind, PartialKind::Histogram);
        assert!(
            p99.sql
                .sql
                .contains("kt_latency_histogram(CAST(\"latency_us\" AS BIGINT))")
        );
        let dc = partials("* | stats dc(ip)").unwrap();
        assert!(
            dc.sql
                .sql
                .contains("array_distinct(flatten(array_agg(\"source_ips\")))")
        );
        for (bad, needle) in [
            ("* | stats count(), dc(user)", "one aggregate"),
            ("* | top 5 user", "no place"),
            ("* | stats avg(user)", "numeric field"),
        ] {
            let e = partials(bad).unwrap_err();
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn sorting_by_a_missing_column_is_explained() {
        let e = compile(
            &parse("| stats count() by user | sort -total").unwrap(),
            &DataFusionDialect,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "cannot sort by `total`: the results have the columns user, count"
        );
        let e = compile(
            &parse("| stats count() | top 5 user").unwrap(),
            &DataFusionDialect,
            &CompileOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("stats, timechart, top and fields work on events")
        );
    }
}

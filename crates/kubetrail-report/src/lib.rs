//! Investigations: the handful of questions operators ask of audit logs, each answered by one
//! report built from SQL over the store's `events` table.
//!
//! A report is a list of sections (tables) plus findings (sentences worth reading first). The
//! CLI prints them, the HTTP API returns them as JSON; both get the same [`Report`].
//!
//! Counting rules shared by every report, so that numbers agree between reports:
//! - one row per request: its last stage counts — `ResponseComplete` or `Panic`, or the lone
//!   `ResponseStarted` event of a request that failed authentication (a request audited at
//!   several stages would otherwise count several times);
//! - latency figures leave out long-running requests (watches, exec/attach/port-forward,
//!   proxy and log streams), whose duration is the length of a session, not API-server work;
//! - the time range is half-open, `[from, to)`; without one, the whole store.

pub mod rbac;
mod sql;

use std::fmt;

use arrow::array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use kubetrail_query::{CompiledSql, Param};
use kubetrail_store::{QueryEngine, QuerySession, StoreError, output};
use serde_json::{Value, json};

/// The reports, with a one-line description each.
pub const REPORTS: &[(&str, &str)] = &[
    (
        "auth-failures",
        "401s and 403s by user, source IP, user agent and cluster, with the authorization reasons and what changed against the preceding period",
    ),
    (
        "anonymous",
        "requests by system:anonymous and unauthenticated clients, by resource, namespace and source IP, allowed versus denied",
    ),
    (
        "latency",
        "p50/p90/p99 by verb, resource, user and client; the slowest requests; cluster-wide lists without a limit",
    ),
    (
        "changes",
        "create/update/patch/delete by user and resource, humans separated from controllers",
    ),
    (
        "object",
        "every request that touched one object (RESOURCE/NAMESPACE/NAME or RESOURCE/NAME), subresources included",
    ),
    (
        "rollout",
        "from a change to a deployment (deployments/NAMESPACE/NAME), the chain of ReplicaSet and pod actions that followed",
    ),
    (
        "top-talkers",
        "users and clients by request count and by total API-server time",
    ),
];

/// What a report covers.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Start of the range (µs since the epoch, inclusive); default: the first stored event.
    pub from_micros: Option<i64>,
    /// End of the range (exclusive); default: just after the last stored event.
    pub to_micros: Option<i64>,
    /// Only this cluster's events (`None`: all clusters).
    pub cluster: Option<String>,
    /// Rows per ranked section.
    pub limit: usize,
}

/// One table of a report.
#[derive(Debug)]
pub struct Section {
    /// Stable key (for JSON consumers).
    pub name: &'static str,
    /// Heading.
    pub title: String,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl Section {
    /// Rows in the section.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A finished report.
#[derive(Debug)]
pub struct Report {
    /// The report's name.
    pub name: &'static str,
    /// What it covers, in words.
    pub title: String,
    /// The range covered, µs.
    pub from_micros: i64,
    /// End of the range (exclusive), µs.
    pub to_micros: i64,
    /// Sentences worth reading before the tables.
    pub findings: Vec<String>,
    /// The tables.
    pub sections: Vec<Section>,
}

impl Report {
    /// The report as one JSON object: `{report, title, from, to, findings, sections: [{name,
    /// title, rows: [...]}]}`.
    pub fn to_json(&self) -> Result<Value, ReportError> {
        let mut sections = Vec::new();
        for section in &self.sections {
            let rows = output::json_rows(&section.batches)?;
            sections.push(json!({"name": section.name, "title": section.title, "rows": rows}));
        }
        Ok(json!({
            "report": self.name,
            "title": self.title,
            "from": format_micros(self.from_micros),
            "to": format_micros(self.to_micros),
            "findings": self.findings,
            "sections": sections,
        }))
    }
}

/// Why a report could not be made; every variant reads as a plain explanation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No such report.
    #[error("there is no report {name:?}{}; the reports are: {}", suggestion(.nearest), names())]
    Unknown {
        /// The name asked for.
        name: String,
        /// The closest report name, if any is close.
        nearest: Option<&'static str>,
    },
    /// The report needs an argument it did not get, or got a malformed one.
    #[error("{0}")]
    Argument(String),
    /// The store holds no events (for the cluster asked for).
    #[error(
        "the store holds no events{0}; import some (`kubetrail import FILE`) or start `kubetrail serve`"
    )]
    EmptyStore(String),
    /// Events exist, but none in the range.
    #[error("no events between {from} and {to}; the store holds events from {first} to {last}")]
    EmptyRange {
        /// Start asked for.
        from: String,
        /// End asked for.
        to: String,
        /// First stored event.
        first: String,
        /// Last stored event.
        last: String,
    },
    /// The object named was never seen in the range.
    #[error("no request touched {object} in this range{}", nearest_objects(.nearest))]
    ObjectNotSeen {
        /// The object asked for.
        object: String,
        /// Similar objects that were seen.
        nearest: Vec<String>,
    },
    /// The user or service account asked about made no request in the range.
    #[error("{subject} made no authenticated request in this range{}", nearest_users(.nearest))]
    SubjectNotSeen {
        /// The user name asked for.
        subject: String,
        /// Users that were seen, closest first.
        nearest: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn suggestion(nearest: &Option<&'static str>) -> String {
    nearest.map_or(String::new(), |n| format!(" (did you mean {n:?}?)"))
}

fn names() -> String {
    REPORTS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn nearest_users(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        format!("; users that were seen: {}", nearest.join(", "))
    }
}

fn nearest_objects(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        format!("; similar objects that were seen: {}", nearest.join(", "))
    }
}

/// Runs report `name`; `target` is the object of `object` and `rollout`.
pub fn run(
    engine: &QueryEngine,
    name: &str,
    target: Option<&str>,
    options: &ReportOptions,
) -> Result<Report, ReportError> {
    let name = find(name)?;
    let needs_target = matches!(name, "object" | "rollout");
    let target = match (needs_target, target) {
        (true, None) => {
            return Err(ReportError::Argument(format!(
                "the {name} report needs an object: RESOURCE/NAMESPACE/NAME, or RESOURCE/NAME for a cluster-scoped one (e.g. pods/default/web-0)"
            )));
        }
        (false, Some(extra)) => {
            return Err(ReportError::Argument(format!(
                "the {name} report takes no object (got {extra:?})"
            )));
        }
        (_, target) => target,
    };
    let ctx = Ctx::new(engine, options)?;
    let mut report = Report {
        name,
        title: String::new(),
        from_micros: ctx.from,
        to_micros: ctx.to,
        findings: Vec::new(),
        sections: Vec::new(),
    };
    match name {
        "auth-failures" => sql::auth_failures(&ctx, &mut report)?,
        "anonymous" => sql::anonymous(&ctx, &mut report)?,
        "latency" => sql::latency(&ctx, &mut report)?,
        "changes" => sql::changes(&ctx, &mut report)?,
        "object" => sql::object(
            &ctx,
            &ObjectRef::parse(target.unwrap_or_default())?,
            &mut report,
        )?,
        "rollout" => sql::rollout(
            &ctx,
            &ObjectRef::parse(target.unwrap_or_default())?,
            &mut report,
        )?,
        _ => sql::top_talkers(&ctx, &mut report)?,
    }
    Ok(report)
}

/// The report called `name`, or an error naming the closest one.
pub fn find(name: &str) -> Result<&'static str, ReportError> {
    REPORTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, _)| *n)
        .ok_or_else(|| ReportError::Unknown {
            name: name.to_owned(),
            nearest: nearest_report(name),
        })
}

fn nearest_report(name: &str) -> Option<&'static str> {
    REPORTS
        .iter()
        .map(|(n, _)| (*n, edit_distance(n, name)))
        .filter(|(n, d)| *d <= 3 || n.starts_with(name) || name.starts_with(n))
        .min_by_key(|(_, d)| *d)
        .map(|(n, _)| n)
}

/// Levenshtein distance, for suggesting a report name.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// `RESOURCE[.GROUP]/NAMESPACE/NAME` or `RESOURCE[.GROUP]/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Plural resource, as in the URL (`pods`, `deployments`).
    pub resource: String,
    /// API group, when given (`apps` in `deployments.apps/…`).
    pub group: Option<String>,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// Parses the command-line form.
    pub fn parse(text: &str) -> Result<ObjectRef, ReportError> {
        let parts: Vec<&str> = text.split('/').collect();
        let (resource, namespace, name) = match parts.as_slice() {
            [resource, name] => (*resource, "", *name),
            [resource, namespace, name] => (*resource, *namespace, *name),
            _ => {
                return Err(ReportError::Argument(format!(
                    "{text:?} is not an object: write RESOURCE/NAMESPACE/NAME (pods/default/web-0) or RESOURCE/NAME for a cluster-scoped one (nodes/node-1)"
                )));
            }
        };
        if resource.is_empty() || name.is_empty() {
            return Err(ReportError::Argument(format!(
                "{text:?}: the resource and the name must not be empty"
            )));
        }
        let (resource, group) = match resource.split_once('.') {
            Some((resource, group)) => (resource, Some(group.to_owned())),
            None => (resource, None),
        };
        Ok(ObjectRef {
            resource: resource.to_ascii_lowercase(),
            group,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource)?;
        if let Some(group) = &self.group {
            write!(f, ".{group}")?;
        }
        if !self.namespace.is_empty() {
            write!(f, "/{}", self.namespace)?;
        }
        write!(f, "/{}", self.name)
    }
}

/// The engine with the resolved range and filters. Every statement gets `$1` = from, `$2` =
/// to, `$3` = cluster (`''` for all) and its own parameters from `$4` on.
pub(crate) struct Ctx<'a> {
    session: QuerySession<'a>,
    pub from: i64,
    pub to: i64,
    cluster: String,
    pub limit: usize,
}

impl<'a> Ctx<'a> {
    fn new(engine: &'a QueryEngine, options: &ReportOptions) -> Result<Ctx<'a>, ReportError> {
        let cluster = options.cluster.clone().unwrap_or_default();
        let mut ctx = Ctx {
            session: engine.session()?,
            from: i64::MIN / 2,
            to: i64::MAX / 2,
            cluster,
            limit: options.limit.max(1),
        };
        // What is stored at all, and how much of it in the range asked for (a bound not given
        // covers everything on its side). Without a range or a cluster the Parquet statistics
        // answer, without reading a column.
        let all = if options.from_micros.is_none()
            && options.to_micros.is_none()
            && ctx.cluster.is_empty()
        {
            ctx.query(
                "SELECT count(*) AS n, min(time) AS first, max(time) AS last, count(*) AS in_range FROM events",
                Vec::new(),
            )?
        } else {
            ctx.query(
                "SELECT count(*) AS n, min(time) AS first, max(time) AS last, \
                 sum(CASE WHEN time >= $4 AND time < $5 THEN 1 ELSE 0 END) AS in_range \
                 FROM events WHERE ($3 = '' OR cluster = $3)",
                vec![
                    Param::TimestampMicros(options.from_micros.unwrap_or(ctx.from)),
                    Param::TimestampMicros(options.to_micros.unwrap_or(ctx.to)),
                ],
            )?
        };
        if int(&all, "n").unwrap_or(0) == 0 {
            let whose = if ctx.cluster.is_empty() {
                String::new()
            } else {
                format!(" of cluster {:?}", ctx.cluster)
            };
            return Err(ReportError::EmptyStore(whose));
        }
        let first = timestamp(&all, "first").unwrap_or(0);
        let last = timestamp(&all, "last").unwrap_or(0);
        ctx.from = options.from_micros.unwrap_or(first);
        ctx.to = options.to_micros.unwrap_or(last + 1);
        if ctx.from >= ctx.to || int(&all, "in_range").unwrap_or(0) == 0 {
            return Err(ReportError::EmptyRange {
                from: format_micros(ctx.from),
                to: options
                    .to_micros
                    .map_or_else(|| "the last stored event".to_owned(), format_micros),
                first: format_micros(first),
                last: format_micros(last),
            });
        }
        Ok(ctx)
    }

    /// Runs a statement with the common parameters followed by `extra`.
    pub fn query(&self, sql: &str, extra: Vec<Param>) -> Result<Vec<RecordBatch>, ReportError> {
        Ok(self.session.query(&self.statement(sql, extra))?)
    }

    /// Runs a statement and keeps its result as the in-memory table `name` for the report's
    /// next statements: the rows a report is about are read from the store once, and every
    /// table of the report is computed from them. The rows kept.
    pub fn keep(&self, name: &str, sql: &str, extra: Vec<Param>) -> Result<usize, ReportError> {
        Ok(self.session.keep(name, &self.statement(sql, extra))?)
    }

    /// Runs `statements` with Parquet filter pushdown on: for statements whose filter keeps
    /// a small share of the rows (see [`QuerySession::set_filter_pushdown`]).
    pub fn selective<T>(&self, statements: impl FnOnce() -> T) -> T {
        let previous = self.session.set_filter_pushdown(true);
        let result = statements();
        self.session.set_filter_pushdown(previous);
        result
    }

    fn statement(&self, sql: &str, extra: Vec<Param>) -> CompiledSql {
        let mut params = vec![
            Param::TimestampMicros(self.from),
            Param::TimestampMicros(self.to),
            Param::Text(self.cluster.clone()),
        ];
        params.extend(extra);
        CompiledSql {
            sql: sql.to_owned(),
            params,
            columns: Vec::new(),
        }
    }
}

/// The first row's value of `column`, read as array type `A`, unless absent or NULL.
pub(crate) fn first_value<A: Array + 'static, T>(
    batches: &[RecordBatch],
    column: &str,
    value: impl Fn(&A) -> T,
) -> Option<T> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let array = batch.column_by_name(column)?.as_any().downcast_ref::<A>()?;
    (!array.is_null(0)).then(|| value(array))
}

/// One row of a query result, read by column name; a missing or NULL cell reads as empty or
/// zero (the store's text columns are never NULL, so this only smooths over aggregates).
pub(crate) struct RowRef<'a> {
    batch: &'a RecordBatch,
    row: usize,
}

impl RowRef<'_> {
    fn column<A: Array + 'static>(&self, name: &str) -> Option<&A> {
        let array = self
            .batch
            .column_by_name(name)?
            .as_any()
            .downcast_ref::<A>()?;
        (!array.is_null(self.row)).then_some(array)
    }

    pub fn text(&self, name: &str) -> &str {
        self.column::<arrow::array::StringArray>(name)
            .map_or("", |a| a.value(self.row))
    }

    pub fn int(&self, name: &str) -> i64 {
        self.column::<Int64Array>(name)
            .map_or(0, |a| a.value(self.row))
    }

    pub fn timestamp(&self, name: &str) -> i64 {
        self.column::<TimestampMicrosecondArray>(name)
            .map_or(0, |a| a.value(self.row))
    }
}

/// Every row of a query result.
pub(crate) fn rows(batches: &[RecordBatch]) -> impl Iterator<Item = RowRef<'_>> {
    batches
        .iter()
        .flat_map(|batch| (0..batch.num_rows()).map(move |row| RowRef { batch, row }))
}

/// The first row's value of an integer column.
pub(crate) fn int(batches: &[RecordBatch], column: &str) -> Option<i64> {
    first_value(batches, column, |a: &Int64Array| a.value(0))
}

/// The first row's value of a timestamp column, µs.
pub(crate) fn timestamp(batches: &[RecordBatch], column: &str) -> Option<i64> {
    first_value(batches, column, |a: &TimestampMicrosecondArray| a.value(0))
}

/// RFC 3339 with microseconds, UTC.
pub fn format_micros(micros: i64) -> String {
    kubetrail_event::Timestamp::from_micros(micros).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_with_and_without_namespace() {
        let pod = ObjectRef::parse("pods/search/api-1").unwrap();
        assert_eq!(pod.namespace, "search");
        assert_eq!(pod.to_string(), "pods/search/api-1");
        let node = ObjectRef::parse("nodes/node-1").unwrap();
        assert_eq!(node.namespace, "");
        let deployment = ObjectRef::parse("deployments.apps/checkout/frontend").unwrap();
        assert_eq!(deployment.group.as_deref(), Some("apps"));
        assert_eq!(deployment.resource, "deployments");
        for bad in ["pods", "pods/a/b/c", "/ns/name", "pods/ns/"] {
            assert!(ObjectRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_reports_suggest_the_nearest() {
        assert_eq!(nearest_report("auth-failure"), Some("auth-failures"));
        assert_eq!(nearest_report("latncy"), Some("latency"));
        assert_eq!(nearest_report("top"), Some("top-talkers"));
        assert_eq!(nearest_report("zzzzzzzz"), None);
    }
}

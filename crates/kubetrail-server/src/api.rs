//! The HTTP API under `/api/v1`: search, query (stats, time series), facets, one event by
//! auditID, object history, every report and the RBAC advice — the same code the CLI runs,
//! as JSON. Documented for clients in `docs/openapi.yaml` (served at `/api/v1/openapi.yaml`)
//! and `docs/api.md`.
//!
//! Every route but the OpenAPI document needs `Authorization: Bearer <api token>`. Queries run
//! on the store's own query runtime through `spawn_blocking`, at most
//! `api.maxConcurrentQueries` at once, so investigations cannot take the webhook's threads.
//! They see what has been flushed to Parquet (at most `store.flushInterval` behind ingest).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use kubetrail_query::{
    CompileOptions, CompiledSql, DataFusionDialect, Field, Param, Pipe, QueryError, QueryLimits,
    SearchCursor, compile, compile_search, compile_search_times,
};
use kubetrail_report::rbac::{Subject, SuggestOptions};
use kubetrail_report::{REPORTS, ReportError, ReportOptions};
use kubetrail_store::{QueryBudget, QueryEngine, StoreError, output};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::App;

/// The OpenAPI document, served as is.
const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// What queries may ask for and use (the `query:` configuration).
#[derive(Debug, Clone)]
pub(crate) struct QuerySettings {
    pub limits: QueryLimits,
    pub max_facet_fields: usize,
    pub budget: QueryBudget,
    pub threads: usize,
    pub niceness: i32,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Everything the API offers.
    Admin,
    /// Reads only: search, query, facets, reports, RBAC advice, monitor state.
    Viewer,
}

/// An API token and its role.
#[derive(Debug, Clone)]
pub(crate) struct ApiToken {
    pub secret: String,
    pub role: Role,
}

impl ApiToken {
    pub fn new(secret: &str, role: Role) -> ApiToken {
        ApiToken {
            secret: secret.to_owned(),
            role,
        }
    }
}

/// What the API needs besides the rest of the server.
pub(crate) struct Api {
    tokens: Vec<ApiToken>,
    data: PathBuf,
    engine: Mutex<Option<QueryEngine>>,
    queries: tokio::sync::Semaphore,
    pub(crate) settings: QuerySettings,
}

impl Api {
    pub fn new(
        tokens: Vec<ApiToken>,
        data: PathBuf,
        max_concurrent_queries: usize,
        settings: QuerySettings,
    ) -> Api {
        Api {
            tokens,
            data,
            engine: Mutex::new(None),
            queries: tokio::sync::Semaphore::new(max_concurrent_queries.max(1)),
            settings,
        }
    }

    /// The largest request body the API reads: the longest query and room for the rest.
    pub fn max_body_bytes(&self) -> usize {
        self.settings.limits.max_length + (64 << 10)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The query engine, opened on first use (the table needs a directory to list).
    pub(crate) fn engine(&self) -> Result<QueryEngine, ApiError> {
        let mut engine = self
            .engine
            .lock()
            .map_err(|_| ApiError::internal("the query engine lock is poisoned"))?;
        if let Some(engine) = engine.as_ref() {
            return Ok(engine.clone());
        }
        let niceness = self.settings.niceness;
        let opened = QueryEngine::open_with(
            &self.data,
            self.settings.budget,
            self.settings.threads,
            Some(Arc::new(move || lower_priority(niceness))),
        )
        .map_err(ApiError::from_store)?;
        *engine = Some(opened.clone());
        Ok(opened)
    }
}

/// Lowers the scheduling priority of the calling thread (a query engine worker) to
/// `niceness`: when the CPU is short, the ingest threads get it first, so investigations
/// cannot slow down collection. Failing to is logged, not fatal.
fn lower_priority(niceness: i32) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    if niceness <= 0 {
        return;
    }
    // thread-priority maps its 0–99 scale onto niceness 19 … -20; this is the inverse.
    let scale = ((19 - niceness.min(19)) * 99 / 39) as u8;
    let result = ThreadPriorityValue::try_from(scale)
        .map_err(|e| format!("{e:?}"))
        .and_then(|value| {
            thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                ThreadPriority::Crossplatform(value),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
            )
            .map_err(|e| format!("{e:?}"))
        });
    if let Err(error) = result {
        tracing::warn!(%error, niceness, "cannot lower the priority of a query thread");
    }
}

/// A new id for an internal error, to find its details in the log.
fn error_id() -> String {
    use std::hash::BuildHasher;
    static ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new().hash_one(n)
    )
}

/// The routes, each relative to `/api/v1`. Every path here is documented in
/// `docs/openapi.yaml` (a test holds them together).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/search", get(search_get).post(search_post)),
        ("/query", get(query_get).post(query_post)),
        ("/facets", get(facets)),
        ("/events/{audit_id}", get(event_by_id)),
        ("/objects/{*object}", get(object_history)),
        ("/reports", get(report_list)),
        ("/reports/{name}", get(report)),
        ("/rbac/suggest", get(rbac_suggest)),
        ("/rbac/denied", get(rbac_denied)),
        ("/session", get(session)),
        ("/fields", get(fields)),
        ("/validate", get(validate)),
        ("/span", get(span)),
    ]
}

/// `GET /api/v1/openapi.yaml` (no token: clients discover the API with it).
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// Refuses requests without a valid API token, and changes (anything but reads) with a
/// read-only one; the token's role goes with the request for `/session`.
pub(crate) async fn require_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = crate::webhook::bearer(&headers);
    let role = presented.and_then(|token| {
        // Every token is compared, so timing does not reveal which one nearly matched.
        app.api.tokens.iter().fold(None, |found, t| {
            if crate::webhook::same_secret(&t.secret, token) {
                Some(t.role)
            } else {
                found
            }
        })
    });
    let Some(role) = role else {
        let message = if presented.is_none() {
            "the API needs Authorization: Bearer <api token> (see docs/api.md)"
        } else {
            "the API token is not valid"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    };
    if role == Role::Viewer && !is_read(request.method(), request.uri().path()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this token is read-only (api.viewerTokens); changes need a token of api.tokens",
        )
        .into_response();
    }
    request.extensions_mut().insert(role);
    next.run(request).await
}

/// Whether a request only reads: GET, or the POST forms of search and query (long queries).
fn is_read(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST
            && matches!(path.trim_start_matches("/api/v1"), "/search" | "/query"))
}

/// `GET /api/v1/session`: what the presented token may do (the UI's login check).
async fn session(axum::Extension(role): axum::Extension<Role>) -> Response {
    Json(json!({ "role": role })).into_response()
}

/// `GET /api/v1/fields`: the query language's fields, for autocompletion.
async fn fields() -> Response {
    let kind = |k: kubetrail_query::FieldKind| {
        use kubetrail_query::FieldKind::*;
        match k {
            Text => "text",
            List => "list",
            Int => "number",
            Duration => "duration",
            Time => "time",
            Bool => "bool",
        }
    };
    let fields: Vec<Value> = kubetrail_query::FIELDS
        .iter()
        .map(|f| json!({"name": f.name, "kind": kind(f.kind), "aliases": f.aliases}))
        .collect();
    Json(json!({
        "fields": fields,
        "paths": ["requestObject.", "responseObject.", "annotations."],
        "commands": ["stats", "timechart", "top", "sort", "fields", "limit"],
    }))
    .into_response()
}

/// `GET /api/v1/span`: how many events the store holds and the times of the oldest and the
/// newest (the UI's default time range and histogram). Answered from Parquet statistics.
async fn span(State(app): State<Arc<App>>) -> Response {
    let result = with_engine(&app, |engine| {
        let rows = engine
            .sql(
                "SELECT count(*) AS events, min(time) AS oldest, max(time) AS newest FROM events",
                Vec::new(),
            )
            .map_err(ApiError::from_store)?;
        let rows = output::json_rows(&rows).map_err(ApiError::from_store)?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_else(|| json!({"events": 0})))
    })
    .await;
    match result {
        // An empty store has no table yet: nothing is stored.
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            Json(json!({"events": 0, "oldest": null, "newest": null})).into_response()
        }
        other => respond(other),
    }
}

/// `GET /api/v1/validate?q=`: whether a query parses, without running it (the UI checks as
/// people type). A query that does not parse is an answer here, not a failed request:
/// `{"ok": false, "error", "position"}` with 200. `search` tells a filter (for `/search`) from
/// a query with commands (for `/query`).
async fn validate(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let result = params_from_query(params).map(|params| {
        let query = match kubetrail_query::parse_with(params.text(), &app.api.settings.limits) {
            Ok(query) => query,
            Err(e) => {
                return json!({
                    "ok": false,
                    "error": e.message,
                    "position": e.position,
                    "limit": e.limit,
                });
            }
        };
        let command = query.pipes.iter().find_map(|p| match p {
            Pipe::Stats { .. } => Some("stats"),
            Pipe::Timechart { .. } => Some("timechart"),
            Pipe::Top { .. } => Some("top"),
            _ => None,
        });
        json!({"ok": true, "search": query.pipes.is_empty(), "command": command})
    });
    respond(result)
}

/// An error answer: `{"status": 400, "error": "...", "position": 12, "limit": "query.maxDepth"}`.
/// A 500 is kubetrail's own bug: it carries an `errorId` and no internals, which go to the
/// server's log under the same id.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    position: Option<usize>,
    limit: Option<&'static str>,
    error_id: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            position: None,
            limit: None,
            error_id: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// kubetrail's own failure: logged in full with a new error id; the client gets the id.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        let id = error_id();
        tracing::error!(error_id = %id, error = %message.into(), "an API request failed inside kubetrail");
        ApiError {
            error_id: Some(id.clone()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error {id}: the server's log has the details under this id"),
            )
        }
    }

    pub(crate) fn query(error: &QueryError, text: &str) -> ApiError {
        // Rendering repeats the query: a short excerpt around the mistake is enough.
        let rendered = if text.len() > 200 {
            error.message.clone()
        } else {
            error.render(text)
        };
        ApiError {
            position: Some(error.position),
            limit: error.limit,
            ..ApiError::bad_request(format!("q: {rendered}"))
        }
    }

    /// A request past one of the API's own limits (not the query text's).
    fn limit(limit: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            limit: Some(limit),
            ..ApiError::bad_request(format!("{} ({limit})", message.into()))
        }
    }

    fn from_store(error: StoreError) -> ApiError {
        match error {
            StoreError::Missing(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "the store holds no events yet: point an API server or a --tail at this server",
            ),
            // A segment merged away between listing and reading: the query is worth repeating.
            StoreError::Query(message) if message.contains("No such file or directory") => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store changed under the query (compaction); try again",
                )
            }
            StoreError::QueryLimit { limit, message } => ApiError::limit(limit, message),
            StoreError::Cancelled => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the query was cancelled")
            }
            other => ApiError::internal(other.to_string()),
        }
    }

    fn from_report(error: ReportError) -> ApiError {
        let status = match error {
            ReportError::Store(store) => return ApiError::from_store(store),
            ReportError::Unknown { .. } | ReportError::Argument(_) => StatusCode::BAD_REQUEST,
            ReportError::EmptyStore(_)
            | ReportError::EmptyRange { .. }
            | ReportError::ObjectNotSeen { .. }
            | ReportError::SubjectNotSeen { .. } => StatusCode::NOT_FOUND,
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"status": self.status.as_u16(), "error": self.message});
        if let Some(position) = self.position {
            body["position"] = json!(position);
        }
        if let Some(limit) = self.limit {
            body["limit"] = json!(limit);
        }
        if let Some(id) = self.error_id {
            body["errorId"] = json!(id);
        }
        (self.status, Json(body)).into_response()
    }
}

/// Parameters of every route (query string, or JSON body for `POST`); each route uses the
/// ones it documents. Unknown names are refused, so a typo is an error, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Params {
    q: Option<String>,
    since: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cluster: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
    fields: Option<String>,
    object: Option<String>,
    user: Option<String>,
    serviceaccount: Option<String>,
    max_resource_names: Option<usize>,
    total: Option<bool>,
}

impl Params {
    fn text(&self) -> &str {
        self.q.as_deref().unwrap_or("")
    }

    /// The time range: `since` (a duration back from now) or `from`, and `to` (RFC 3339).
    fn range(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        time_range(
            self.since.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
        )
    }

    fn limit(&self, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
            Some(n) if n > max => Err(ApiError::bad_request(format!(
                "limit must be at most {max}"
            ))),
            Some(n) => Ok(n),
        }
    }

    fn report_options(&self, default_limit: u64) -> Result<ReportOptions, ApiError> {
        let (from_micros, to_micros) = self.range()?;
        Ok(ReportOptions {
            from_micros,
            to_micros,
            cluster: self.cluster.clone(),
            limit: self.limit(default_limit, 10_000)? as usize,
        })
    }

    fn compile_options(&self, limits: &QueryLimits) -> Result<CompileOptions, ApiError> {
        let (from_micros, to_micros) = self.range()?;
        Ok(CompileOptions {
            from_micros,
            to_micros,
            cluster: self.cluster.clone(),
            default_limit: 0,
            limits: limits.clone(),
            now_micros: Some(kubetrail_pipeline::ingest::now_micros()),
        })
    }

    fn parsed(&self, limits: &QueryLimits) -> Result<kubetrail_query::Query, ApiError> {
        kubetrail_query::parse_with(self.text(), limits)
            .map_err(|e| ApiError::query(&e, self.text()))
    }
}

/// Turns a rejected query string or body into the API's error shape.
fn params_from_query(params: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn params_from_json(params: Result<Json<Params>, JsonRejection>) -> Result<Params, ApiError> {
    params
        .map(|Json(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Runs `job` on a blocking thread with the query engine, waiting for a query slot first. A
/// query that lost a segment to compaction mid-way is run once more. The job's queries share
/// the budget's deadline, and stop when the request does: if the client goes away, axum drops
/// this future, and with it the sender whose closing cancels them.
async fn with_engine<T: Send + 'static>(
    app: &Arc<App>,
    job: impl Fn(&QueryEngine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = app
        .api
        .queries
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let (_request_alive, cancelled) = tokio::sync::watch::channel(());
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        // Opening registers the table, which blocks on the engine's runtime: not on ours.
        let engine = app.api.engine()?.controlled(cancelled);
        match job(&engine) {
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE && e.limit.is_none() => {
                job(&engine)
            }
            result => result,
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("the query task failed: {e}")))?
}

/// The time range of `since` (a duration back from now) or `from`, and `to` (RFC 3339), as
/// every read route takes them.
pub(crate) fn time_range(
    since: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let time = |name: &str, text: &str| {
        kubetrail_event::Timestamp::parse(text)
            .map(|t| t.as_micros())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name}: {text:?} is not an RFC 3339 time (2026-03-02T08:00:00Z)"
                ))
            })
    };
    let from = match (since, from) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give since or from, not both"));
        }
        (Some(since), None) => {
            let span = crate::units::parse_duration_flag(since)
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
            Some(kubetrail_pipeline::ingest::now_micros() - span)
        }
        (None, Some(from)) => Some(time("from", from)?),
        (None, None) => None,
    };
    let to = to.map(|t| time("to", t)).transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::bad_request(
            "the time range is empty: from must be before to",
        ));
    }
    Ok((from, to))
}

pub(crate) fn respond<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn search_get(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    respond(run_search(&app, params_from_query(params)).await)
}

async fn search_post(
    State(app): State<Arc<App>>,
    params: Result<Json<Params>, JsonRejection>,
) -> Response {
    respond(run_search(&app, params_from_json(params)).await)
}

/// A page of search results.
#[derive(Serialize)]
struct SearchPage {
    events: Vec<SearchHit>,
    next: Option<String>,
}

/// One event of a search.
#[derive(Serialize)]
struct SearchHit {
    time: String,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    cluster: String,
    event: Box<RawValue>,
}

/// A stored event as part of an answer: its JSON text as it is, never parsed into a tree, so
/// an event nested as deep as the API server allows is answered like any other (a parse
/// would either recurse that deep or stop at a depth limit).
fn stored_event(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        // Stored events are valid JSON; should one not be, it is answered as a string.
        RawValue::from_string(Value::from(text).to_string()).unwrap_or_default()
    })
}

/// Search: matching events, newest first, `limit` per page, `next` to continue.
async fn run_search(
    app: &Arc<App>,
    params: Result<Params, ApiError>,
) -> Result<SearchPage, ApiError> {
    let params = params?;
    let limits = &app.api.settings.limits;
    let query = params.parsed(limits)?;
    if !query.pipes.is_empty() {
        return Err(ApiError::bad_request(
            "q: a search is a filter without pipes; use /api/v1/query for stats, timechart, top, sort and fields",
        ));
    }
    let limit = params.limit(50, 1000)?;
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let options = params.compile_options(limits)?;
    // One row more than the page tells whether there is a next page. Two steps: the page's
    // times first (the time column alone), then the page from the oldest of them on, so the
    // complete events are read from the few row groups the page lies in only.
    let times = compile_search_times(
        &query,
        &DataFusionDialect,
        &options,
        after.as_ref(),
        limit + 1,
    );
    let rows = with_engine(app, move |engine| {
        let batches = engine.query(&times).map_err(ApiError::from_store)?;
        let mut options = options.clone();
        let oldest = batches
            .iter()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            })
            .flat_map(|times| times.iter().flatten())
            .min();
        if let Some(oldest) = oldest {
            options.from_micros = Some(options.from_micros.map_or(oldest, |f| f.max(oldest)));
        }
        let compiled = compile_search(
            &query,
            &DataFusionDialect,
            &options,
            after.as_ref(),
            limit + 1,
        );
        engine.query(&compiled).map_err(ApiError::from_store)
    })
    .await?;
    let mut events = Vec::new();
    let mut last = None;
    for batch in &rows {
        let times = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>();
        let text = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
        };
        // The original event is read as a view (see `kubetrail_store::table_schema`).
        let originals = batch
            .column(4)
            .as_any()
            .downcast_ref::<arrow::array::StringViewArray>();
        let (Some(times), Some(ids), Some(stages), Some(clusters), Some(originals)) =
            (times, text(1), text(2), text(3), originals)
        else {
            return Err(ApiError::internal("unexpected search result columns"));
        };
        for row in 0..batch.num_rows() {
            if events.len() as u64 == limit {
                break;
            }
            events.push(SearchHit {
                time: kubetrail_report::format_micros(times.value(row)),
                audit_id: ids.value(row).to_owned(),
                stage: stages.value(row).to_owned(),
                cluster: clusters.value(row).to_owned(),
                event: stored_event(originals.value(row)),
            });
            last = Some(SearchCursor {
                time_micros: times.value(row),
                audit_id: ids.value(row).to_owned(),
                stage: stages.value(row).to_owned(),
            });
        }
    }
    let total_rows: usize = rows.iter().map(|b| b.num_rows()).sum();
    let next = if total_rows as u64 > limit {
        last.as_ref().map(encode_cursor)
    } else {
        None
    };
    Ok(SearchPage { events, next })
}

/// A cursor is the last hit's (time, auditID, stage), hex-encoded: opaque to clients, and
/// any byte string decodes to something harmless (it only ever becomes parameters).
fn encode_cursor(cursor: &SearchCursor) -> String {
    format!(
        "{}\n{}\n{}",
        cursor.time_micros, cursor.audit_id, cursor.stage
    )
    .bytes()
    .map(|b| format!("{b:02x}"))
    .collect()
}

fn decode_cursor(text: &str) -> Result<SearchCursor, ApiError> {
    let invalid = || ApiError::bad_request("cursor: not a cursor this API returned as next");
    if !text.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    // The time has no newline and neither has the stage; the auditID is what lies between.
    let (time, rest) = text.split_once('\n').ok_or_else(invalid)?;
    let (audit_id, stage) = rest.rsplit_once('\n').ok_or_else(invalid)?;
    Ok(SearchCursor {
        time_micros: time.parse().map_err(|_| invalid())?,
        audit_id: audit_id.to_owned(),
        stage: stage.to_owned(),
    })
}

async fn query_get(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    respond(run_query(&app, params_from_query(params)).await)
}

async fn query_post(
    State(app): State<Arc<App>>,
    params: Result<Json<Params>, JsonRejection>,
) -> Response {
    respond(run_query(&app, params_from_json(params)).await)
}

/// Any query of the language, pipes included: `{columns, rows}`.
async fn run_query(app: &Arc<App>, params: Result<Params, ApiError>) -> Result<Value, ApiError> {
    let params = params?;
    let limits = &app.api.settings.limits;
    let query = params.parsed(limits)?;
    let mut options = params.compile_options(limits)?;
    options.default_limit = params.limit(100, limits.max_rows)?;
    let compiled = compile(&query, &DataFusionDialect, &options)
        .map_err(|e| ApiError::query(&e, params.text()))?;
    let columns = compiled.columns.clone();
    let max_rows = limits.max_rows;
    let rows = with_engine(app, move |engine| {
        let batches = engine.query(&compiled).map_err(ApiError::from_store)?;
        if batches.iter().map(|b| b.num_rows() as u64).sum::<u64>() > max_rows {
            return Err(too_many_rows(max_rows));
        }
        output::json_rows(&batches).map_err(ApiError::from_store)
    })
    .await?;
    Ok(json!({"columns": columns, "rows": rows}))
}

fn too_many_rows(max_rows: u64) -> ApiError {
    ApiError::limit(
        "query.maxRows",
        format!(
            "the answer has more than {max_rows} rows: narrow the search, group by fewer fields, or end with `| sort … | limit N`"
        ),
    )
}

/// The fields shown by `facets` when none are asked for.
const DEFAULT_FACETS: &str = "user,verb,resource,ns,code,client";

/// Top values of fields for a query: `{total, facets: [{field, values: [{value, count}]}]}`.
async fn facets(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    respond(run_facets(&app, params_from_query(params)).await)
}

async fn run_facets(app: &Arc<App>, params: Result<Params, ApiError>) -> Result<Value, ApiError> {
    let params = params?;
    let limits = &app.api.settings.limits;
    let query = params.parsed(limits)?;
    if !query.pipes.is_empty() {
        return Err(ApiError::bad_request(
            "q: facets take a filter without pipes",
        ));
    }
    let limit = params.limit(10, 1000)?;
    let options = params.compile_options(limits)?;
    let mut statements: Vec<(String, CompiledSql)> = Vec::new();
    let names = params.fields.as_deref().unwrap_or(DEFAULT_FACETS);
    let max_fields = app.api.settings.max_facet_fields;
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let field = Field::resolve(name, 0)
            .map_err(|e| ApiError::bad_request(format!("fields: {name}: {}", e.message)))?;
        // Each field is one more scan: a name given twice is answered once.
        if statements.iter().any(|(n, _)| {
            Field::resolve(n, 0).is_ok_and(|f| f.display_name() == field.display_name())
        }) {
            continue;
        }
        if statements.len() == max_fields {
            return Err(ApiError::limit(
                "query.maxFacetFields",
                format!("fields: at most {max_fields} facets per request"),
            ));
        }
        let mut top = query.clone();
        top.pipes.push(Pipe::Top { limit, field });
        let compiled = compile(&top, &DataFusionDialect, &options)
            .map_err(|e| ApiError::bad_request(format!("fields: {name}: {}", e.message)))?;
        statements.push((name.to_owned(), compiled));
    }
    let mut count = query.clone();
    count.pipes.push(Pipe::Stats {
        aggregates: vec![kubetrail_query::Aggregate {
            func: kubetrail_query::AggFunc::Count,
            field: None,
            alias: "n".to_owned(),
        }],
        by: Vec::new(),
    });
    let want_total = params.total.unwrap_or(true);
    let total = compile(&count, &DataFusionDialect, &options)
        .map_err(|e| ApiError::query(&e, params.text()))?;
    with_engine(app, move |engine| {
        // `total=false`: one scan less for a client that counts otherwise (the web UI's
        // histogram does).
        let rows = if want_total {
            output::json_rows(&engine.query(&total).map_err(ApiError::from_store)?)
                .map_err(ApiError::from_store)?
        } else {
            Vec::new()
        };
        let mut facets = Vec::new();
        for (name, compiled) in &statements {
            let batches = engine.query(compiled).map_err(ApiError::from_store)?;
            let values: Vec<Value> = output::json_rows(&batches)
                .map_err(ApiError::from_store)?
                .into_iter()
                .map(|row| {
                    let value = compiled
                        .columns
                        .first()
                        .map_or(Value::Null, |c| row[c].clone());
                    let count = compiled
                        .columns
                        .get(1)
                        .map_or(Value::Null, |c| row[c].clone());
                    json!({"value": value, "count": count})
                })
                .collect();
            facets.push(json!({"field": name, "values": values}));
        }
        let total = match rows.first() {
            Some(row) => row["n"].clone(),
            None if want_total => json!(0),
            None => Value::Null,
        };
        Ok(json!({"total": total, "facets": facets}))
    })
    .await
}

/// Every stored stage of one request: `{auditID, events: [{stage, time, cluster, event}]}`.
async fn event_by_id(State(app): State<Arc<App>>, UrlPath(audit_id): UrlPath<String>) -> Response {
    let id = audit_id.clone();
    let result = with_engine(&app, move |engine| {
        let batches = engine
            .query(&CompiledSql {
                sql: "SELECT time, stage, \"cluster\", event FROM events WHERE audit_id = $1 \
                      ORDER BY CASE stage WHEN 'RequestReceived' THEN 1 WHEN 'ResponseStarted' THEN 2 \
                      WHEN 'ResponseComplete' THEN 3 ELSE 4 END"
                    .to_owned(),
                params: vec![Param::Text(id.clone())],
                columns: Vec::new(),
            })
            .map_err(ApiError::from_store)?;
        output::json_rows(&batches).map_err(ApiError::from_store)
    })
    .await;
    respond(result.and_then(|rows| {
        if rows.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no stored event has auditID {audit_id:?}"),
            ));
        }
        let events: Vec<StoredStage> = rows
            .into_iter()
            .map(|row| StoredStage {
                stage: row["stage"].as_str().unwrap_or_default().to_owned(),
                time: row["time"].clone(),
                cluster: row["cluster"].as_str().unwrap_or_default().to_owned(),
                event: stored_event(row["event"].as_str().unwrap_or("null")),
            })
            .collect();
        Ok(EventStages { audit_id, events })
    }))
}

/// Every stored stage of one request.
#[derive(Serialize)]
struct EventStages {
    #[serde(rename = "auditID")]
    audit_id: String,
    events: Vec<StoredStage>,
}

/// One stored stage of a request.
#[derive(Serialize)]
struct StoredStage {
    stage: String,
    time: Value,
    cluster: String,
    event: Box<RawValue>,
}

/// The history of one object: the `object` report for `RESOURCE/NAMESPACE/NAME` or
/// `RESOURCE/NAME`.
async fn object_history(
    State(app): State<Arc<App>>,
    UrlPath(object): UrlPath<String>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    respond(
        run_report(
            &app,
            "object".to_owned(),
            Some(object),
            params_from_query(params),
        )
        .await,
    )
}

async fn report_list() -> Response {
    let reports: Vec<Value> = REPORTS
        .iter()
        .map(|(name, description)| {
            let object = matches!(*name, "object" | "rollout");
            json!({"name": name, "description": description, "needsObject": object})
        })
        .collect();
    Json(json!({"reports": reports})).into_response()
}

async fn report(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let params = params_from_query(params);
    let object = params.as_ref().ok().and_then(|p| p.object.clone());
    respond(run_report(&app, name, object, params).await)
}

async fn run_report(
    app: &Arc<App>,
    name: String,
    object: Option<String>,
    params: Result<Params, ApiError>,
) -> Result<Value, ApiError> {
    let params = params?;
    kubetrail_report::find(&name).map_err(ApiError::from_report)?;
    let options = params.report_options(20)?;
    with_engine(app, move |engine| {
        let report = kubetrail_report::run(engine, &name, object.as_deref(), &options)
            .map_err(ApiError::from_report)?;
        report.to_json().map_err(ApiError::from_report)
    })
    .await
}

/// `rbac suggest`: the suggestion as JSON plus the manifests as YAML text.
async fn rbac_suggest(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let result = async {
        let params = params_from_query(params)?;
        let subject = match (&params.user, &params.serviceaccount) {
            (Some(user), None) => Subject::user(user),
            (None, Some(sa)) => Subject::service_account(sa),
            _ => {
                return Err(ApiError::bad_request(
                    "give user=NAME or serviceaccount=NAMESPACE:NAME",
                ));
            }
        }
        .map_err(ApiError::from_report)?;
        let options = params.report_options(1)?;
        let shape = SuggestOptions {
            max_resource_names: params
                .max_resource_names
                .unwrap_or(SuggestOptions::default().max_resource_names),
        };
        with_engine(&app, move |engine| {
            let suggestion = kubetrail_report::rbac::suggest(engine, &subject, &options, &shape)
                .map_err(ApiError::from_report)?;
            let mut body = suggestion.to_json();
            body["yaml"] = json!(suggestion.to_yaml().map_err(ApiError::from_report)?);
            Ok(body)
        })
        .await
    }
    .await;
    respond(result)
}

/// `rbac denied`: `{denied: [...], refusedByAdmission}`.
async fn rbac_denied(
    State(app): State<Arc<App>>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let result = async {
        let options = params_from_query(params)?.report_options(1)?;
        with_engine(&app, move |engine| {
            let (denied, admission) =
                kubetrail_report::rbac::denied(engine, &options).map_err(ApiError::from_report)?;
            Ok(json!({"denied": denied, "refusedByAdmission": admission}))
        })
        .await
    }
    .await;
    respond(result)
}

/// The API token when none is configured: generated once, kept in `<data>/api-token` (mode
/// 0600) so restarts keep it and the CLI user can read it.
pub(crate) fn generated_token(data: &Path) -> std::io::Result<(String, PathBuf)> {
    let path = data.join("api-token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_owned();
        if token.len() >= 16 {
            return Ok((token, path));
        }
    }
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok((token, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = SearchCursor {
            time_micros: 1_772_438_400_000_001,
            audit_id: "5b0c\n'x".into(),
            stage: "ResponseComplete".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).unwrap(), cursor);
        for bad in ["", "abc", "zz", "41", &"x".repeat(8)] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_routed() {
        let spec: serde_yaml_ng::Value = serde_yaml_ng::from_str(OPENAPI).unwrap();
        let documented: std::collections::BTreeSet<String> = spec["paths"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        let mut routed: std::collections::BTreeSet<String> = routes()
            .into_iter()
            .chain(crate::quarantine::routes())
            .chain(crate::monitors::routes())
            .chain(crate::exclusions::routes())
            .chain(crate::findings::routes())
            .map(|(path, _)| format!("/api/v1{}", path.replace("{*object}", "{object}")))
            .collect();
        routed.insert("/api/v1/openapi.yaml".to_owned());
        routed.insert("/api/v1/status".to_owned());
        assert_eq!(documented, routed);
    }
}

//! The webhook source: `POST /audit` (and `/audit/<token>`) as kube-apiserver's webhook backend
//! calls it — one `EventList` per request (a single `Event` is accepted too), `Content-Type:
//! application/json`, `?timeout=30s` appended by client-go.
//!
//! Authentication, in order: a token in the path (the only way for plain-HTTP senders: the API
//! server sends its kubeconfig credentials only to `https` URLs), a bearer token, the client
//! certificate's common name (mTLS). Each credential belongs to one cluster whose name is stamped
//! on the events. A request that names a cluster (`?cluster=NAME`) must name its own.
//!
//! The answer is 2xx only once every event is durable in the write-ahead log, and every bad
//! event of the batch (nested too deep, a broken field) durable in the quarantine; the API
//! server retries anything else (up to 5 times), and retried batches are deduplicated by the
//! store. A body that is not an EventList at all is refused (400). Every refusal is counted by
//! reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kubetrail_pipeline::{Batch, BatchOutcome, BatchSource, IngestError};
use serde_json::json;

use crate::metrics::{SourceCluster, SourceReason};
use crate::{App, ClientIdentity, Credentials};

/// A refused request: its status, the counted reason and the message for the sender.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u32>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }
}

pub(crate) async fn receive(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    identity: Option<Extension<ClientIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, None, query, identity, headers, body).await
}

pub(crate) async fn receive_with_path_token(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    identity: Option<Extension<ClientIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, Some(token), query, identity, headers, body).await
}

async fn handle(
    app: Arc<App>,
    path_token: Option<String>,
    query: HashMap<String, String>,
    identity: Option<Extension<ClientIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = accept(&app, path_token, &query, identity, &headers, body).await;
    let response = match result {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(refusal) => {
            app.metrics
                .rejected
                .get_or_create(&SourceReason {
                    source: "webhook",
                    reason: refusal.reason,
                })
                .inc();
            count(&app, refusal.reason);
            if refusal.status.is_server_error() || refusal.status == StatusCode::TOO_MANY_REQUESTS {
                tracing::debug!(reason = refusal.reason, message = %refusal.message, "webhook request refused");
            } else {
                tracing::info!(reason = refusal.reason, message = %refusal.message, "webhook request refused");
            }
            let mut response = (
                refusal.status,
                Json(json!({"error": refusal.message, "reason": refusal.reason})),
            )
                .into_response();
            if let Some(seconds) = refusal.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            response
        }
    };
    app.metrics
        .webhook_requests
        .get_or_create(&crate::metrics::StatusCode {
            code: response.status().as_u16(),
        })
        .inc();
    app.metrics
        .webhook_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

fn count(app: &App, key: &str) {
    if let Ok(mut counts) = app.webhook_counts.lock() {
        *counts.entry(key.to_owned()).or_default() += 1;
    }
}

async fn accept(
    app: &App,
    path_token: Option<String>,
    query: &HashMap<String, String>,
    identity: Option<Extension<ClientIdentity>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, Refusal> {
    if app.shutting_down.load(Ordering::Relaxed) {
        return Err(Refusal {
            retry_after: Some(5),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "kubetrail is shutting down",
            )
        });
    }
    let cluster = authenticate(
        &app.credentials,
        path_token.as_deref(),
        bearer(headers),
        identity.and_then(|Extension(i)| i.0).as_deref(),
        query.get("cluster").map(String::as_str),
    )?;
    check_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > app.max_body_bytes) {
        return Err(too_large(app.max_body_bytes));
    }
    // Shed load before reading the body: refusing costs nothing once memory is spoken for or
    // the store is behind.
    if app.ingest.is_full() {
        drain(body, app.max_body_bytes).await;
        return Err(busy("the store is behind"));
    }
    let Some(_reserved) = app
        .inflight
        .try_reserve(declared.unwrap_or(app.max_body_bytes))
    else {
        drain(body, app.max_body_bytes).await;
        return Err(busy(
            "too many request bodies in flight (webhook.maxInflightSize)",
        ));
    };
    let bytes = axum::body::to_bytes(body, app.max_body_bytes)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large(app.max_body_bytes)
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "body-read-failed",
                    format!("cannot read the request body: {e}"),
                )
            }
        })?;
    app.metrics.webhook_bytes.inc_by(bytes.len() as u64);
    // The writer thread decodes the body (see `kubetrail_pipeline::ingest`): the request
    // holds only its bytes while it waits.
    let batch = Batch::document(
        BatchSource::Webhook,
        cluster.clone(),
        bytes.clone(),
        app.transforms.clone(),
    );
    let ack = app
        .ingest
        .try_submit(batch)
        .map_err(|(error, _)| ingest_refusal(&error))?;
    let outcome = match ack.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => return Err(ingest_refusal(&error)),
        Err(_) => return Err(ingest_refusal(&IngestError::ShuttingDown)),
    };
    refuse_without_events(&outcome, &bytes)?;
    if outcome.skipped > outcome.quarantined
        && let Some(first) = outcome.skips.first()
    {
        tracing::warn!(
            skipped = outcome.skipped,
            quarantined = outcome.quarantined,
            %first,
            "bad events in a webhook batch were skipped"
        );
    }
    app.metrics
        .events_received
        .get_or_create(&SourceCluster {
            source: "webhook",
            cluster,
        })
        .inc_by(outcome.kept());
    count(app, "accepted-requests");
    Ok(json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "filtered": outcome.filtered,
        "skipped": outcome.skipped,
        "quarantined": outcome.quarantined,
    }))
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!(
            "the body is larger than {limit} bytes (webhook.maxBodySize); lower --audit-webhook-truncate-max-batch-size or raise the limit"
        ),
    )
}

/// Reads a refused request's body without keeping it, so the answer reaches the sender on a
/// healthy connection instead of a reset in the middle of its upload.
async fn drain(mut body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > limit {
            break;
        }
    }
}

fn busy(why: &str) -> Refusal {
    Refusal {
        retry_after: Some(1),
        ..Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!("kubetrail is receiving more than it can store right now ({why}); retry later"),
        )
    }
}

fn ingest_refusal(error: &IngestError) -> Refusal {
    match error {
        IngestError::Busy { .. } => Refusal {
            retry_after: Some(1),
            ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "busy", error.to_string())
        },
        IngestError::Unavailable(_) => Refusal {
            retry_after: Some(10),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                error.to_string(),
            )
        },
        IngestError::ShuttingDown => Refusal {
            retry_after: Some(5),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                error.to_string(),
            )
        },
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cluster_of_token<'a>(credentials: &'a Credentials, token: &str) -> Option<&'a str> {
    // Every token is compared, so timing does not reveal which one nearly matched.
    let mut found = None;
    for (secret, cluster) in &credentials.tokens {
        if same_secret(secret, token) {
            found = Some(cluster.as_str());
        }
    }
    found
}

fn authenticate(
    credentials: &Credentials,
    path_token: Option<&str>,
    bearer: Option<&str>,
    client_cn: Option<&str>,
    named_cluster: Option<&str>,
) -> Result<String, Refusal> {
    let unauthorized =
        |message: String| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let open = credentials.tokens.is_empty() && credentials.client_cns.is_empty();
    let mut clusters: Vec<&str> = Vec::new();
    for (kind, token) in [("path", path_token), ("bearer", bearer)] {
        if let Some(token) = token {
            match cluster_of_token(credentials, token) {
                Some(cluster) => clusters.push(cluster),
                None if open => {}
                None => {
                    return Err(unauthorized(format!(
                        "the {kind} token is not configured for any cluster"
                    )));
                }
            }
        }
    }
    if clusters.is_empty()
        && let Some(cn) = client_cn
    {
        match credentials.client_cns.iter().find(|(c, _)| c == cn) {
            Some((_, cluster)) => clusters.push(cluster),
            None if credentials.tokens.is_empty() && !credentials.client_cns.is_empty() => {
                return Err(unauthorized(format!(
                    "the client certificate CN={cn} is not configured for any cluster (clientCertCN)"
                )));
            }
            None => {}
        }
    }
    let cluster = match clusters.as_slice() {
        [] if open => String::new(),
        [] => {
            return Err(unauthorized(
                "no credentials: send the cluster's token as `Authorization: Bearer` (https) or as POST /audit/<token> (http: the API server sends no Authorization header over plain http)".to_owned(),
            ));
        }
        [first, rest @ ..] => {
            if let Some(other) = rest.iter().find(|c| *c != first) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "wrong-cluster",
                    format!("the credentials belong to different clusters ({first}, {other})"),
                ));
            }
            (*first).to_owned()
        }
    };
    if let Some(named) = named_cluster
        && named != cluster
    {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "wrong-cluster",
            format!("these credentials are for cluster {cluster:?}, not {named:?}"),
        ));
    }
    Ok(cluster)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "Content-Type {value:?} is not application/json (the API server sends an EventList as application/json)"
            ),
        ))
    }
}

/// A body that is not an EventList (or an Event) at all is refused as malformed, saying why.
/// A well-formed body whose events are all bad is answered 2xx: its events are in the
/// quarantine, and a refusal would only make the API server send it again and again.
fn refuse_without_events(outcome: &BatchOutcome, body: &[u8]) -> Result<(), Refusal> {
    if outcome.kept() > 0
        || outcome.filtered > 0
        || outcome.skips.iter().any(|s| s.is_event_level())
    {
        return Ok(());
    }
    if let Some(first) = outcome.skips.first() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the body is not a valid audit EventList or Event: {first}"),
        ));
    }
    if !looks_like_empty_list(body) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the body holds no audit events (expected an audit.k8s.io EventList or Event)",
        ));
    }
    Ok(())
}

/// An `EventList` without items is valid (the API server does not send one, others might).
fn looks_like_empty_list(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
        v.get("kind").and_then(|k| k.as_str()) == Some("EventList")
            && v.get("items")
                .is_none_or(|i| i.as_array().is_some_and(Vec::is_empty) || i.is_null())
    })
}

//! The quarantine over HTTP (`/api/v1/quarantine`): what bad input the sources kept aside,
//! one entry with its input, and replay — each entry's input sent through the pipeline again
//! (decoded with the server's current limits, transformed, stored) and, once stored, taken out
//! of the quarantine's listing. Replay goes through the running server because only the
//! process that holds the store may write to it.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use kubetrail_pipeline::{Batch, BatchSource, IngestError};
use kubetrail_store::quarantine::{self, QuarantineEntry};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::api::ApiError;

/// The routes, relative to `/api/v1`.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/quarantine", get(list)),
        ("/quarantine/replay", post(replay)),
        ("/quarantine/{id}", get(show)),
    ]
}

/// An entry without its input, as listed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    #[serde(flatten)]
    entry: QuarantineEntry,
    input_kept: bool,
}

async fn entries(app: &Arc<App>) -> Result<Vec<QuarantineEntry>, ApiError> {
    let data = app.api.data_dir().to_path_buf();
    tokio::task::spawn_blocking(move || quarantine::quarantined(&data))
        .await
        .map_err(|e| ApiError::internal(format!("reading the quarantine failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /quarantine`: every entry still in quarantine, oldest first, without inputs.
async fn list(State(app): State<Arc<App>>) -> Response {
    let result = entries(&app).await.map(|entries| {
        let listed: Vec<Listed> = entries
            .into_iter()
            .map(|mut entry| {
                let input_kept = !entry.input.is_empty();
                entry.input.clear();
                Listed { entry, input_kept }
            })
            .collect();
        json!({"total": listed.len(), "entries": listed})
    });
    crate::api::respond(result)
}

/// `GET /quarantine/{id}`: one entry, with its input.
async fn show(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let result = entries(&app).await.and_then(|entries| {
        entries.into_iter().find(|e| e.id == id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no entry {id:?} in the quarantine (replayed entries leave it)"),
            )
        })
    });
    crate::api::respond(result)
}

/// The body of `POST /quarantine/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// The entries to replay.
    #[serde(default)]
    ids: Vec<String>,
    /// Every entry.
    #[serde(default)]
    all: bool,
}

/// What replaying one entry did.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Replayed {
    id: String,
    /// `stored`, `duplicate`, `filtered`, `failed` (still bad: `reason` says why) or
    /// `no-input` (the quarantine was near its limit and kept no input).
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `POST /quarantine/replay`: sends entries through the pipeline again.
async fn replay(
    State(app): State<Arc<App>>,
    request: Result<Json<ReplayRequest>, JsonRejection>,
) -> Response {
    let result = async {
        let Json(request) = request.map_err(|e| ApiError::bad_request(e.body_text()))?;
        if request.all != request.ids.is_empty() {
            return Err(ApiError::bad_request(
                "give the entries to replay as {\"ids\": [...]} or all of them as {\"all\": true}",
            ));
        }
        let entries = entries(&app).await?;
        let chosen: Vec<QuarantineEntry> = if request.all {
            entries
        } else {
            let mut chosen = Vec::new();
            for id in &request.ids {
                let entry = entries.iter().find(|e| &e.id == id).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("no entry {id:?} in the quarantine"),
                    )
                })?;
                chosen.push(entry.clone());
            }
            chosen
        };
        let mut results = Vec::new();
        let mut done = Vec::new();
        for entry in chosen {
            let replayed = replay_one(&app, &entry).await?;
            if matches!(replayed.outcome, "stored" | "duplicate" | "filtered") {
                done.push(entry.id.clone());
            }
            results.push(replayed);
        }
        let data = app.api.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || quarantine::mark_replayed(&data, &done))
            .await
            .map_err(|e| ApiError::internal(format!("updating the quarantine failed: {e}")))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(json!({ "replayed": results }))
    }
    .await;
    crate::api::respond(result)
}

async fn replay_one(app: &Arc<App>, entry: &QuarantineEntry) -> Result<Replayed, ApiError> {
    let answer = |outcome, reason| Replayed {
        id: entry.id.clone(),
        outcome,
        reason,
    };
    let Some(input) = entry.input_bytes() else {
        return Ok(answer("no-input", None));
    };
    let mut batch = Batch::document(
        BatchSource::Replay,
        entry.cluster.clone(),
        Bytes::from(input),
        app.transforms.clone(),
    );
    let ack = loop {
        match app.ingest.try_submit(batch) {
            Ok(ack) => break ack,
            Err((IngestError::Busy { .. }, returned)) => {
                batch = *returned;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((error, _)) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    error.to_string(),
                ));
            }
        }
    };
    let outcome = ack
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(if let Some(skip) = outcome.skips.first() {
        answer("failed", Some(format!("{}: {}", skip.reason, skip.message)))
    } else if outcome.skipped > 0 {
        answer(
            "failed",
            Some("kubetrail failed on this input: the server's log says why".to_owned()),
        )
    } else if outcome.accepted > 0 {
        answer("stored", None)
    } else if outcome.duplicates > 0 {
        answer("duplicate", None)
    } else if outcome.filtered > 0 {
        answer("filtered", None)
    } else {
        answer("failed", Some("the input holds no event".to_owned()))
    })
}

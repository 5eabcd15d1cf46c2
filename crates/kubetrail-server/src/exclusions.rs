//! Exclusion filters over HTTP (`/api/v1/exclusions`): what each drops, and switching one off
//! during an outage to capture everything ("capture more") and on again after. A switch lasts
//! until the server restarts, when the configuration's `enabled` applies again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::api::ApiError;

/// The routes, relative to `/api/v1`.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/exclusions", get(list)),
        ("/exclusions/{name}", get(show).put(switch)),
    ]
}

fn describe(e: &kubetrail_pipeline::Exclusion) -> Value {
    json!({
        "name": e.name,
        "query": e.query,
        "keep": format!("{}%", f64::from(e.keep_per_10k) / 100.0),
        "enabled": e.enabled.load(Ordering::Relaxed),
        "matched": e.matched.load(Ordering::Relaxed),
        "dropped": e.excluded.load(Ordering::Relaxed),
    })
}

fn find<'a>(app: &'a App, name: &str) -> Result<&'a kubetrail_pipeline::Exclusion, ApiError> {
    app.transforms
        .exclusions
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no exclusion filter {name:?} (they are defined under exclusions: in the configuration)"),
            )
        })
}

/// `GET /exclusions`.
async fn list(State(app): State<Arc<App>>) -> Response {
    let all: Vec<Value> = app.transforms.exclusions.iter().map(describe).collect();
    crate::api::respond(Ok(json!({"exclusions": all})))
}

/// `GET /exclusions/{name}`.
async fn show(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>) -> Response {
    crate::api::respond(find(&app, &name).map(describe))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    enabled: bool,
}

/// `PUT /exclusions/{name}` with `{"enabled": false}`.
async fn switch(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<Switch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = body
        .map_err(|e| ApiError::bad_request(format!("expected {{\"enabled\": true|false}}: {e}")))
        .and_then(|Json(switch)| {
            let exclusion = find(&app, &name)?;
            let before = exclusion.enabled.swap(switch.enabled, Ordering::Relaxed);
            if before != switch.enabled {
                tracing::info!(filter = %name, enabled = switch.enabled, "exclusion filter switched");
            }
            Ok(describe(exclusion))
        });
    crate::api::respond(result)
}

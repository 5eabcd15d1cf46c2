//! `/api/v1/findings` and `/api/v1/rules`: what the live detection rules found, newest first,
//! filtered by rule, severity, time and a search of the query language over the findings'
//! events; and the rules that run (`docs/detections.md`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use kubetrail_alert::detect::{FindingFilter, read_findings};
use kubetrail_query::Matcher;
use kubetrail_rules::Severity;
use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::api::{ApiError, respond, time_range};

/// The routes, relative to `/api/v1`.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![("/findings", get(findings)), ("/rules", get(rules))]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsQuery {
    /// Rule ids, comma-separated.
    rule: Option<String>,
    /// The lowest severity.
    severity: Option<String>,
    /// A search over the findings' events.
    q: Option<String>,
    since: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// `GET /findings?rule=&severity=&q=&since=|from=&to=&limit=`.
async fn findings(
    State(app): State<Arc<App>>,
    query: Result<Query<FindingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let (from, to) = time_range(
            query.since.as_deref(),
            query.from.as_deref(),
            query.to.as_deref(),
        )?;
        let min_severity = query
            .severity
            .as_deref()
            .map(|s| {
                Severity::parse(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "severity: {s:?} is not info, low, medium, high or critical"
                    ))
                })
            })
            .transpose()?;
        let matcher = match query.q.as_deref().filter(|q| !q.trim().is_empty()) {
            None => None,
            Some(text) => {
                let parsed = kubetrail_query::parse_with(text, &app.api.settings.limits)
                    .map_err(|e| ApiError::query(&e, text))?;
                Some(Matcher::new(&parsed).map_err(|e| ApiError::query(&e, text))?)
            }
        };
        let limit = match query.limit {
            None => 100,
            Some(n) if (1..=1000).contains(&n) => n,
            Some(_) => return Err(ApiError::bad_request("limit must be between 1 and 1000")),
        };
        let filter = FindingFilter {
            rules: query
                .rule
                .iter()
                .flat_map(|r| r.split(','))
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            min_severity,
            matcher,
            from,
            to,
            limit,
        };
        let dir = app.api.data_dir().join("findings");
        let found = tokio::task::spawn_blocking(move || read_findings(&dir, &filter))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("findings could not be read: {e}")))?;
        Ok(json!({ "findings": found }))
    }
    .await;
    respond(result)
}

/// `GET /rules`: the rules loaded, with how many findings each has made since the start.
async fn rules(State(app): State<Arc<App>>) -> Response {
    let result = app
        .detections
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "detections are not running"))
        .map(|detector| {
            let counts = detector
                .stats()
                .findings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let rules: Vec<serde_json::Value> = detector
                .rules()
                .iter()
                .map(|rule| {
                    let findings: u64 = counts
                        .iter()
                        .filter(|((id, _), _)| id == &rule.id)
                        .map(|(_, n)| n)
                        .sum();
                    json!({
                        "id": rule.id,
                        "title": rule.title,
                        "severity": rule.severity,
                        "mitre": rule.mitre,
                        "enabled": rule.enabled,
                        "condition": rule.condition,
                        "file": rule.file,
                        "findings": findings,
                    })
                })
                .collect();
            json!({ "rules": rules })
        });
    respond(result)
}

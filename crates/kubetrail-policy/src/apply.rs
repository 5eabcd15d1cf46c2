//! Applying a policy inside kubetrail: collect broadly at the API server, keep selectively here.
//!
//! An incoming event is treated as the API server would have treated the request under this
//! policy: level None or an omitted stage drops it; a lower level than recorded strips the bodies
//! (and the Request-level `patch.webhook.admission.k8s.io/*` annotations) that level does not
//! log and rewrites `level`; `omitManagedFields` clears `metadata.managedFields` in objects, in
//! the items of lists and in the rows of Tables. A policy can only take away: an event recorded
//! at a lower level than the policy asks for is kept as recorded.

use std::borrow::Cow;

use kubetrail_event::{AuditEvent, Level, RawJson};
use serde_json::Value;

use crate::attributes::RequestAttributes;
use crate::eval::Evaluator;

/// What applying the policy did to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Kept, possibly with less in it.
    Kept,
    /// Dropped: its rule (or no rule) says level None.
    DroppedByLevel,
    /// Dropped: its stage is omitted.
    DroppedByStage,
}

/// Applies the policy of `evaluator` to `event`, changing it in place when it is kept.
pub fn apply_policy(evaluator: &Evaluator, event: &mut AuditEvent<'_>) -> Applied {
    let decision = evaluator.evaluate(&RequestAttributes::from_event(event));
    if decision.level == Level::None {
        return Applied::DroppedByLevel;
    }
    if decision.omit_stages.contains(event.stage) {
        return Applied::DroppedByStage;
    }
    let mut changed = false;
    if decision.level < event.level {
        if decision.level < Level::RequestResponse {
            event.response_object = None;
        }
        if decision.level < Level::Request {
            event.request_object = None;
            event
                .annotations
                .retain(|(k, _)| !k.starts_with("patch.webhook.admission.k8s.io/"));
        }
        event.level = decision.level;
        changed = true;
    }
    if decision.omit_managed_fields {
        // The patch document itself is never filtered (reference §1.4).
        if event.verb != "patch" {
            changed |= strip_managed_fields(&mut event.request_object);
        }
        changed |= strip_managed_fields(&mut event.response_object);
    }
    if changed {
        event.rebuild_raw();
    }
    Applied::Kept
}

/// Clears `metadata.managedFields` in a logged body; whether anything was removed.
fn strip_managed_fields(body: &mut Option<RawJson<'_>>) -> bool {
    let Some(raw) = body.as_ref() else {
        return false;
    };
    if !raw.as_str().contains("\"managedFields\"") {
        return false;
    }
    let Ok(mut value) = serde_json::from_str::<Value>(raw.as_str()) else {
        return false;
    };
    if clear(&mut value) == 0 {
        return false;
    }
    *body = Some(RawJson(Cow::Owned(value.to_string())));
    true
}

/// The API server clears managed fields of the object, of each list item, and of each Table
/// row's object; patches and other bodies are left alone.
fn clear(value: &mut Value) -> usize {
    let mut cleared = 0;
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        cleared += usize::from(metadata.shift_remove("managedFields").is_some());
    }
    if let Some(Value::Array(items)) = value.get_mut("items") {
        for item in items {
            if let Some(metadata) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                cleared += usize::from(metadata.shift_remove("managedFields").is_some());
            }
        }
    }
    if let Some(Value::Array(rows)) = value.get_mut("rows") {
        for row in rows {
            if let Some(metadata) = row
                .get_mut("object")
                .and_then(|o| o.get_mut("metadata"))
                .and_then(Value::as_object_mut)
            {
                cleared += usize::from(metadata.shift_remove("managedFields").is_some());
            }
        }
    }
    cleared
}

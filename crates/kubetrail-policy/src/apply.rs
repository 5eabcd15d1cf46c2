//! Applying a policy inside kubetrail: collect broadly at the API server, keep selectively here.
//!
//! An incoming event is treated as the API server would have treated the request under this
//! policy: level None or an omitted stage drops it; a lower level than recorded strips the bodies
//! (and the Request-level `patch.webhook.admission.k8s.io/*` annotations) that level does not
//! log and rewrites `level`; `omitManagedFields` clears `metadata.managedFields` in objects, in
//! the items of lists and in the rows of Tables. A policy can only take away: an event recorded
//! at a lower level than the policy asks for is kept as recorded.

use std::borrow::Cow;

use kubetrail_event::json::{self, TokenKind, Tokens};
use kubetrail_event::{AuditEvent, Level, RawJson};

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
    match without_managed_fields(raw.as_str()) {
        Some(stripped) => {
            *body = Some(RawJson(Cow::Owned(stripped)));
            true
        }
        None => false,
    }
}

/// The body without the managed fields the API server clears: those of the object, of each
/// list item, and of each Table row's object (patches and other bodies are left alone). Only
/// the removed members change; the rest of the text stays as it was, at any depth. None when
/// there were none.
fn without_managed_fields(body: &str) -> Option<String> {
    let bytes = body.as_bytes();
    let mut tokens = Tokens::new(body);
    // The path to the current value: keys, and `#` for array elements.
    let mut path: Vec<Cow<'_, str>> = Vec::new();
    let mut open_objects: Vec<bool> = Vec::new();
    let mut removals: Vec<std::ops::Range<usize>> = Vec::new();
    let mut key: Option<(Cow<'_, str>, usize)> = None;
    while let Some(token) = tokens.next() {
        match token.kind {
            TokenKind::Key => {
                key = Some((json::unescape(&body[token.span.clone()]), token.span.start));
                continue;
            }
            TokenKind::ObjectEnd | TokenKind::ArrayEnd => {
                open_objects.pop();
                path.pop();
                continue;
            }
            _ => {}
        }
        let (step, key_start) = match open_objects.last() {
            Some(true) => match key.take() {
                Some((k, at)) => (Some(k), Some(at)),
                None => (None, None),
            },
            Some(false) => (Some(Cow::Borrowed("#")), None),
            None => (None, None),
        };
        let opens = matches!(token.kind, TokenKind::ObjectStart | TokenKind::ArrayStart);
        if let (Some(step), Some(start)) = (&step, key_start)
            && step == "managedFields"
            && clears_managed_fields(&path)
        {
            let end = if opens {
                tokens.skip_container()
            } else {
                token.span.end
            };
            removals.push(member_with_comma(bytes, start, end));
            continue;
        }
        if opens {
            open_objects.push(token.kind == TokenKind::ObjectStart);
            path.extend(step);
        }
    }
    if removals.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(body.len());
    let mut copied = 0;
    for removal in removals {
        out.push_str(&body[copied..removal.start]);
        copied = removal.end;
    }
    out.push_str(&body[copied..]);
    Some(out)
}

/// Whether the object at `path` is metadata whose managed fields the API server clears.
fn clears_managed_fields(path: &[Cow<'_, str>]) -> bool {
    let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    matches!(
        path.as_slice(),
        ["metadata"] | ["items", "#", "metadata"] | ["rows", "#", "object", "metadata"]
    )
}

/// The span of an object member from its key's start to its value's `end`, with the comma that
/// separates it from a neighbour, so the object stays valid JSON without it.
fn member_with_comma(bytes: &[u8], start: usize, end: usize) -> std::ops::Range<usize> {
    let before = bytes[..start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace());
    if let Some(comma) = before.filter(|&i| bytes[i] == b',') {
        return comma..end;
    }
    let after = bytes[end..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| end + i);
    match after.filter(|&i| bytes[i] == b',') {
        Some(comma) => start..comma + 1,
        None => start..end,
    }
}
#[cfg(test)]
mod tests {
    use super::without_managed_fields;

    const MANAGED: &str =
        r#"[{"manager":"kubectl","operation":"Update","fieldsV1":{"f:spec":{}}}]"#;

    fn check(body: &str, expected: Option<&str>) {
        assert_eq!(without_managed_fields(body).as_deref(), expected, "{body}");
    }

    #[test]
    fn managed_fields_go_from_objects_lists_and_tables_only() {
        check(
            &format!(
                r#"{{"metadata":{{"name":"a","managedFields":{MANAGED},"uid":"u"}},"spec":{{}}}}"#
            ),
            Some(r#"{"metadata":{"name":"a","uid":"u"},"spec":{}}"#),
        );
        check(
            &format!(r#"{{"metadata":{{"managedFields":{MANAGED}, "name":"a"}}}}"#),
            Some(r#"{"metadata":{ "name":"a"}}"#),
        );
        check(
            &format!(r#"{{"metadata":{{ "managedFields" : {MANAGED} }}}}"#),
            Some(r#"{"metadata":{  }}"#),
        );
        check(
            &format!(
                r#"{{"kind":"List","items":[{{"metadata":{{"name":"a","managedFields":{MANAGED}}}}},{{"metadata":{{"managedFields":{MANAGED},"name":"b"}}}}]}}"#
            ),
            Some(
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#,
            ),
        );
        check(
            &format!(
                r#"{{"rows":[{{"cells":[],"object":{{"metadata":{{"managedFields":{MANAGED}}}}}}}]}}"#
            ),
            Some(r#"{"rows":[{"cells":[],"object":{"metadata":{}}}]}"#),
        );
        // Elsewhere it stays: a patch, a nested object's metadata, a key inside a string.
        check(
            &format!(r#"[{{"op":"add","path":"/metadata/managedFields","value":{MANAGED}}}]"#),
            None,
        );
        check(
            &format!(
                r#"{{"spec":{{"template":{{"metadata":{{"managedFields":{MANAGED}}}}}}},"note":"\"managedFields\""}}"#
            ),
            None,
        );
    }

    #[test]
    fn bodies_nested_deep_are_handled() {
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        check(
            &format!(r#"{{"metadata":{{"managedFields":{MANAGED}}},"spec":{deep}}}"#),
            Some(&format!(r#"{{"metadata":{{}},"spec":{deep}}}"#)),
        );
    }
}

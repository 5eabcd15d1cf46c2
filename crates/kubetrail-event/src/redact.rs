//! Redaction: credentials are removed from events before anything is stored, printed or
//! forwarded. kubetrail's promise is never to keep a credential, whatever audit policy the
//! cluster runs (a `RequestResponse` catch-all logs every Secret and TokenReview in full).
//!
//! Three kinds of rules, all on by default:
//! - **structural**, by resource: the values of Secret `data`/`stringData` (keys kept, so "who
//!   changed which key" stays answerable) and the `last-applied-configuration` annotation that
//!   repeats them, in objects, lists and patches; TokenReview `spec.token`; the token a
//!   TokenRequest (`serviceaccounts/token`) returns;
//! - **patterns**, in every string of the bodies and in annotation values: bearer and basic
//!   authorization values, JWTs, private keys, cloud and forge access tokens, passwords in URLs;
//! - **configured** JSON paths and patterns.
//!
//! Events with nothing to redact are left untouched (their original text stays byte for byte);
//! a cheap scan decides that. A redacted event gets the annotation `kubetrail.io/redacted`, and
//! its `raw` text is rebuilt from the redacted event, so the original with the credential is gone.

use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;

use crate::model::{AuditEvent, RawJson};

/// What replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// The annotation added to redacted events: how many values were replaced.
pub const REDACTED_ANNOTATION: &str = "kubetrail.io/redacted";

/// Credential patterns searched in every string. Names appear in the replacement text.
const PATTERNS: &[(&str, &str)] = &[
    ("bearer", r"(?i)(?-u:\b)bearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    ("basic-auth", r"(?i)(?-u:\b)basic\s+[A-Za-z0-9+/]{8,}=*"),
    (
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?",
    ),
    (
        "private-key",
        r"-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY-----|$)",
    ),
    (
        "aws-access-key",
        r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
    ),
    (
        "github-token",
        r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,}(?-u:\b)",
    ),
    ("slack-token", r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "url-password",
        r"(?i)(?-u:\b)[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",
    ),
];

/// Literals at least one of which occurs in any match of the built-in patterns, in the
/// spellings used in practice (`Bearer`, `bearer`, `BEARER`; a `bEaReR` token is not caught).
/// Searching for them first is an order of magnitude faster than running the patterns over
/// every event, and almost no event contains any.
const TRIGGERS: &[&str] = &[
    "Bearer",
    "bearer",
    "BEARER",
    "Basic",
    "basic",
    "BASIC",
    "eyJ",
    "PRIVATE KEY",
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "xox",
    "://",
];

/// User-configured redaction rules, on top of the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedactionConfig {
    /// Paths into the event whose values are replaced, dotted, `*` for any key or array element:
    /// `requestObject.spec.password`, `responseObject.items.*.spec.apiKey`,
    /// `annotations.example.com/token`.
    pub paths: Vec<String>,
    /// Extra regular expressions whose matches are replaced in every string.
    pub patterns: Vec<String>,
}

/// A configuration that does not compile.
#[derive(Debug, thiserror::Error)]
pub enum RedactionConfigError {
    /// A pattern is not a valid regular expression.
    #[error("redaction pattern {pattern:?} is not a valid regular expression: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        source: regex::Error,
    },
    /// A path does not start with `requestObject`, `responseObject` or `annotations`.
    #[error("redaction path {0:?} must start with requestObject., responseObject. or annotations.")]
    Path(String),
}

/// Applies redaction rules to events.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Every pattern, default and configured, as one alternation: one scan finds any of them.
    any: Regex,
    /// A fast first test for the built-in patterns (an alternation of literals, which the regex
    /// crate runs as a SIMD multi-literal search at several GB/s); None when configured patterns,
    /// which have no known literals, must be run on everything.
    triggers: Option<Regex>,
    patterns: Vec<(String, Regex)>,
    paths: Vec<(BodyField, Vec<String>)>,
    annotation_paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyField {
    Request,
    Response,
}

impl Redactor {
    /// The default rules plus `config`.
    pub fn new(config: &RedactionConfig) -> Result<Self, RedactionConfigError> {
        let mut patterns: Vec<(String, Regex)> = PATTERNS
            .iter()
            .map(|(name, p)| {
                (
                    (*name).to_owned(),
                    Regex::new(p).expect("built-in patterns compile"),
                )
            })
            .collect();
        for (i, pattern) in config.patterns.iter().enumerate() {
            let regex = Regex::new(pattern).map_err(|source| RedactionConfigError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
            patterns.push((format!("pattern-{i}"), regex));
        }
        let alternation: Vec<String> = patterns
            .iter()
            .map(|(_, r)| format!("(?:{})", r.as_str()))
            .collect();
        let any =
            Regex::new(&alternation.join("|")).expect("an alternation of valid patterns compiles");
        let mut paths = Vec::new();
        let mut annotation_paths = Vec::new();
        for path in &config.paths {
            if let Some(key) = path.strip_prefix("annotations.") {
                annotation_paths.push(key.to_owned());
                continue;
            }
            let (field, rest) = if let Some(rest) = path.strip_prefix("requestObject.") {
                (BodyField::Request, rest)
            } else if let Some(rest) = path.strip_prefix("responseObject.") {
                (BodyField::Response, rest)
            } else {
                return Err(RedactionConfigError::Path(path.clone()));
            };
            paths.push((field, rest.split('.').map(str::to_owned).collect()));
        }
        let triggers = config.patterns.is_empty().then(|| {
            let literals: Vec<String> = TRIGGERS.iter().map(|t| regex::escape(t)).collect();
            Regex::new(&literals.join("|")).expect("an alternation of literals compiles")
        });
        Ok(Redactor {
            any,
            triggers,
            patterns,
            paths,
            annotation_paths,
        })
    }

    /// Redacts `event` in place; returns how many values were replaced.
    pub fn redact(&self, event: &mut AuditEvent<'_>) -> usize {
        let target = event.object_ref.as_ref().map(|r| {
            (
                r.api_group.as_ref(),
                r.resource.as_ref(),
                r.subresource.as_ref(),
            )
        });
        let structural = match target {
            Some(("", "secrets", _)) => Some(Structural::Secret),
            Some(("authentication.k8s.io", "tokenreviews", _)) => Some(Structural::TokenReview),
            Some(("", "serviceaccounts", "token")) => Some(Structural::TokenRequest),
            _ => None,
        };
        let has_bodies = event.request_object.is_some() || event.response_object.is_some();
        let needs_scan = (structural.is_some() && has_bodies)
            || !self.paths.is_empty()
            || (!self.annotation_paths.is_empty() && !event.annotations.is_empty())
            || self.may_match(event.raw.as_str());
        if !needs_scan {
            return 0;
        }
        let mut count = 0;
        for field in [BodyField::Request, BodyField::Response] {
            let slot = match field {
                BodyField::Request => &mut event.request_object,
                BodyField::Response => &mut event.response_object,
            };
            let Some(body) = slot.as_ref() else { continue };
            let Ok(mut value) = serde_json::from_str::<Value>(body.as_str()) else {
                continue;
            };
            let mut replaced = 0;
            match structural {
                Some(Structural::Secret) => replaced += redact_secret_body(&mut value),
                Some(Structural::TokenReview) => {
                    replaced += redact_path(&mut value, &["spec", "token"])
                }
                Some(Structural::TokenRequest) if field == BodyField::Response => {
                    replaced += redact_path(&mut value, &["status", "token"])
                }
                _ => {}
            }
            for (path_field, path) in &self.paths {
                if *path_field == field {
                    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
                    replaced += redact_path(&mut value, &segments);
                }
            }
            replaced += self.redact_strings(&mut value);
            if replaced > 0 {
                *slot = Some(RawJson(Cow::Owned(value.to_string())));
                count += replaced;
            }
        }
        for (key, value) in &mut event.annotations {
            if self.annotation_paths.iter().any(|p| p == key) {
                *value = Cow::Borrowed(REDACTED);
                count += 1;
            } else if let Some(replaced) = self.replace_patterns(value) {
                *value = Cow::Owned(replaced.0);
                count += replaced.1;
            }
        }
        if let Some(ua) = &event.user_agent
            && let Some((replaced, n)) = self.replace_patterns(ua)
        {
            event.user_agent = Some(Cow::Owned(replaced));
            count += n;
        }
        if let Some((replaced, n)) = self.replace_patterns(&event.request_uri) {
            event.request_uri = Cow::Owned(replaced);
            count += n;
        }
        if count > 0 {
            event.annotations.retain(|(k, _)| k != REDACTED_ANNOTATION);
            event.annotations.push((
                Cow::Borrowed(REDACTED_ANNOTATION),
                Cow::Owned(format!("{count} values")),
            ));
            event.rebuild_raw();
        }
        count
    }

    /// Whether any pattern can match `text`.
    fn may_match(&self, text: &str) -> bool {
        match &self.triggers {
            Some(triggers) => triggers.is_match(text) && self.any.is_match(text),
            None => self.any.is_match(text),
        }
    }

    /// Replaces pattern matches in one string; None when nothing matched.
    fn replace_patterns(&self, text: &str) -> Option<(String, usize)> {
        if !self.may_match(text) {
            return None;
        }
        let mut text = text.to_owned();
        let mut count = 0;
        for (name, regex) in &self.patterns {
            let matches = regex.find_iter(&text).count();
            if matches > 0 {
                count += matches;
                text = regex
                    .replace_all(&text, format!("<redacted:{name}>"))
                    .into_owned();
            }
        }
        Some((text, count))
    }

    fn redact_strings(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => match self.replace_patterns(s) {
                Some((replaced, n)) => {
                    *s = replaced;
                    n
                }
                None => 0,
            },
            Value::Array(items) => items.iter_mut().map(|v| self.redact_strings(v)).sum(),
            Value::Object(map) => map.values_mut().map(|v| self.redact_strings(v)).sum(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Structural {
    Secret,
    TokenReview,
    TokenRequest,
}

/// Replaces the value at `path` (`*` matches any key or element); returns how many.
fn redact_path(value: &mut Value, path: &[&str]) -> usize {
    let Some((first, rest)) = path.split_first() else {
        if value.is_null() || value.as_str() == Some(REDACTED) {
            return 0;
        }
        *value = Value::String(REDACTED.to_owned());
        return 1;
    };
    match value {
        Value::Object(map) if *first == "*" => map.values_mut().map(|v| redact_path(v, rest)).sum(),
        Value::Object(map) => map.get_mut(*first).map_or(0, |v| redact_path(v, rest)),
        Value::Array(items) if *first == "*" => {
            items.iter_mut().map(|v| redact_path(v, rest)).sum()
        }
        Value::Array(items) => first
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get_mut(i))
            .map_or(0, |v| redact_path(v, rest)),
        _ => 0,
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret, a list of them, or a patch to one.
fn redact_secret_body(value: &mut Value) -> usize {
    let mut count = 0;
    match value {
        Value::Array(ops) => {
            // JSON patch: operations on data, stringData or the last-applied annotation.
            for op in ops {
                let sensitive = op.get("path").and_then(Value::as_str).is_some_and(|p| {
                    p == "/data"
                        || p == "/stringData"
                        || p.starts_with("/data/")
                        || p.starts_with("/stringData/")
                        || p.contains("last-applied-configuration")
                });
                if sensitive && let Some(v) = op.get_mut("value") {
                    count += redact_values(v);
                }
            }
        }
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get_mut("items") {
                for item in items {
                    count += redact_secret_body(item);
                }
            }
            for key in ["data", "stringData"] {
                if let Some(v) = map.get_mut(key) {
                    count += redact_values(v);
                }
            }
            count += redact_path(value, &["metadata", "annotations", LAST_APPLIED]);
        }
        _ => {}
    }
    count
}

/// Replaces the values of an object (keys kept), or a value itself.
fn redact_values(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => map.values_mut().map(|v| redact_path(v, &[])).sum(),
        other => redact_path(other, &[]),
    }
}

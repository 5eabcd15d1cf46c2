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

use std::ops::Range;

use regex::Regex;

use crate::json::{self, TokenKind, Tokens};
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
            if let Some((redacted, replaced)) = self.redact_body(body.as_str(), structural, field) {
                *slot = Some(RawJson(Cow::Owned(redacted)));
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

    /// Redacts one body: the values the structural and configured rules name, and pattern
    /// matches in every string value. The body is walked as tokens and only the redacted values
    /// are rewritten, so the rest of its text stays as it came, at any depth. None when nothing
    /// was redacted; else the new text and how many values were replaced.
    fn redact_body(
        &self,
        body: &str,
        structural: Option<Structural>,
        field: BodyField,
    ) -> Option<(String, usize)> {
        let rules = Rules {
            structural,
            field,
            configured: &self.paths,
            sensitive_patches: match structural {
                Some(Structural::Secret) if body.trim_start().starts_with('[') => {
                    sensitive_patch_operations(body)
                }
                _ => Vec::new(),
            },
        };
        let scan_strings = self.may_match(body);
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut count = 0;
        let mut tokens = Tokens::new(body);
        let mut path: Vec<Step<'_>> = Vec::new();
        // For each open container: whether it is an object, the index of its next element,
        // and whether each of its values is redacted whole (the members of Secret `data`).
        let mut open: Vec<(bool, usize, bool)> = Vec::new();
        let mut key: Option<Cow<'_, str>> = None;
        while let Some(token) = tokens.next() {
            match token.kind {
                TokenKind::Key => {
                    key = Some(json::unescape(&body[token.span]));
                    continue;
                }
                TokenKind::ObjectEnd | TokenKind::ArrayEnd => {
                    open.pop();
                    path.pop();
                    continue;
                }
                _ => {}
            }
            let mut members_whole = false;
            if let Some((is_object, next, whole)) = open.last_mut() {
                if *is_object {
                    path.push(Step::Key(key.take().unwrap_or_default()));
                } else {
                    path.push(Step::Index(*next));
                    *next += 1;
                }
                members_whole = *whole;
            }
            let opens = matches!(token.kind, TokenKind::ObjectStart | TokenKind::ArrayStart);
            let rule = if members_whole {
                Some(Rule::Whole)
            } else {
                rules.at(&path)
            };
            let rule = match (rule, token.kind) {
                (Some(Rule::ValuesOf), TokenKind::ObjectStart) => Some(Rule::ValuesOf),
                (Some(_), _) => Some(Rule::Whole),
                (None, _) => None,
            };
            if rule == Some(Rule::Whole) {
                let end = if opens {
                    tokens.skip_container()
                } else {
                    token.span.end
                };
                let value = &body[token.span.start..end];
                if value != "null" && json::unescape(value) != REDACTED {
                    edits.push((token.span.start..end, json_string(REDACTED)));
                    count += 1;
                }
                path.pop();
                continue;
            }
            match token.kind {
                TokenKind::ObjectStart => open.push((true, 0, rule == Some(Rule::ValuesOf))),
                TokenKind::ArrayStart => open.push((false, 0, false)),
                TokenKind::String => {
                    if scan_strings
                        && let Some((replaced, n)) =
                            self.replace_patterns(&json::unescape(&body[token.span.clone()]))
                    {
                        edits.push((token.span, json_string(&replaced)));
                        count += n;
                    }
                    path.pop();
                }
                _ => {
                    path.pop();
                }
            }
        }
        if count == 0 {
            return None;
        }
        let mut redacted = String::with_capacity(body.len());
        let mut copied = 0;
        for (span, replacement) in edits {
            redacted.push_str(&body[copied..span.start]);
            redacted.push_str(&replacement);
            copied = span.end;
        }
        redacted.push_str(&body[copied..]);
        Some((redacted, count))
    }
}

/// A string as JSON text. Replacements are written with plain JSON escaping, so the text a
/// person searches for (`<redacted>`) is the text stored.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{REDACTED}\""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Structural {
    Secret,
    TokenReview,
    TokenRequest,
}

/// One step of the path to a value in a body.
#[derive(Debug)]
enum Step<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

impl Step<'_> {
    fn is_key(&self, name: &str) -> bool {
        matches!(self, Step::Key(k) if k == name)
    }

    /// Whether a configured path step (`*`, a key, an array index) names this step.
    fn matches(&self, pattern: &str) -> bool {
        pattern == "*"
            || match self {
                Step::Key(k) => k == pattern,
                Step::Index(i) => pattern.parse() == Ok(*i),
            }
    }
}

/// What a rule does to the value at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Replace the value.
    Whole,
    /// Replace each member value of an object (keys kept); any other value whole.
    ValuesOf,
}

/// The rules for one body.
struct Rules<'r> {
    structural: Option<Structural>,
    field: BodyField,
    configured: &'r [(BodyField, Vec<String>)],
    /// JSON patch operations on a Secret that touch its data (indices in the patch).
    sensitive_patches: Vec<usize>,
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl Rules<'_> {
    fn at(&self, path: &[Step<'_>]) -> Option<Rule> {
        for (field, steps) in self.configured {
            if *field == self.field
                && steps.len() == path.len()
                && path.iter().zip(steps).all(|(step, p)| step.matches(p))
            {
                return Some(Rule::Whole);
            }
        }
        match self.structural? {
            // A Secret, a list of them (`items`, at any depth of lists), or a JSON patch.
            Structural::Secret => {
                if let [Step::Index(i), value] = path
                    && value.is_key("value")
                    && self.sensitive_patches.contains(i)
                {
                    return Some(Rule::ValuesOf);
                }
                let mut rest = path;
                while let [items, Step::Index(_), inner @ ..] = rest
                    && items.is_key("items")
                {
                    rest = inner;
                }
                match rest {
                    [data] if data.is_key("data") || data.is_key("stringData") => {
                        Some(Rule::ValuesOf)
                    }
                    [metadata, annotations, key]
                        if metadata.is_key("metadata")
                            && annotations.is_key("annotations")
                            && key.is_key(LAST_APPLIED) =>
                    {
                        Some(Rule::Whole)
                    }
                    _ => None,
                }
            }
            Structural::TokenReview => {
                matches!(path, [spec, token] if spec.is_key("spec") && token.is_key("token"))
                    .then_some(Rule::Whole)
            }
            Structural::TokenRequest if self.field == BodyField::Response => {
                matches!(path, [status, token] if status.is_key("status") && token.is_key("token"))
                    .then_some(Rule::Whole)
            }
            Structural::TokenRequest => None,
        }
    }
}

/// The operations of a JSON patch (an array of `{"op", "path", "value"}`) whose path touches a
/// Secret's data or the annotation that repeats it.
fn sensitive_patch_operations(patch: &str) -> Vec<usize> {
    let mut sensitive = Vec::new();
    let mut tokens = Tokens::new(patch);
    let (mut index, mut key_is_path) = (0usize, false);
    while let Some(token) = tokens.next() {
        match (tokens.depth(), token.kind) {
            (1, TokenKind::ObjectEnd | TokenKind::ArrayEnd) => index += 1,
            (1, TokenKind::String | TokenKind::Scalar) => index += 1,
            (2, TokenKind::Key) => key_is_path = json::unescape(&patch[token.span]) == "path",
            (2, TokenKind::String) if key_is_path => {
                let p = json::unescape(&patch[token.span]);
                if p == "/data"
                    || p == "/stringData"
                    || p.starts_with("/data/")
                    || p.starts_with("/stringData/")
                    || p.contains("last-applied-configuration")
                {
                    sensitive.push(index);
                }
                key_is_path = false;
            }
            (3, TokenKind::ObjectStart | TokenKind::ArrayStart) => {
                tokens.skip_container();
                key_is_path = false;
            }
            (2, _) => key_is_path = false,
            _ => {}
        }
    }
    sensitive
}

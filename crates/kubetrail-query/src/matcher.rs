//! Evaluating a search on one event in memory, for what must decide before an event is stored:
//! exclusion filters (`user:system:kube-scheduler verb:update resource:leases`), and later
//! detections and monitors. The field values are read the same way the store fills its columns,
//! so a filter means the same here as in a stored query.

use std::borrow::Cow;
use std::cmp::Ordering;

use kubetrail_event::AuditEvent;

use crate::ast::{Expr, Literal, Pattern, Query};
use crate::error::QueryError;
use crate::fields::{Field, JsonColumn, PodFieldDef, pod_spec_root};
use crate::lexer::CompareOp;

/// A compiled search for matching events one by one.
#[derive(Debug, Clone)]
pub struct Matcher {
    expr: Option<Expr>,
}

impl Matcher {
    /// A matcher for the search part of `query`; a query with commands (`| stats …`) is not a
    /// filter and is refused.
    pub fn new(query: &Query) -> Result<Matcher, QueryError> {
        if !query.pipes.is_empty() {
            return Err(QueryError::at(
                0,
                "a filter is a search only: remove the `| …` commands",
            ));
        }
        Ok(Matcher {
            expr: query.filter.clone(),
        })
    }

    /// Parses and compiles a filter.
    pub fn parse(text: &str) -> Result<Matcher, QueryError> {
        Matcher::new(&crate::parser::parse(text)?)
    }

    /// Whether `event` (received from `cluster`) matches.
    pub fn matches(&self, event: &AuditEvent<'_>, cluster: &str) -> bool {
        let context = Context {
            event,
            cluster,
            time: None,
        };
        self.expr.as_ref().is_none_or(|e| context.eval(e))
    }

    /// Why `event` matches, or None when it does not: for each search term that held on the
    /// way to the match (the first alternative of an `OR` that did), the field and the value
    /// that satisfied it. Negated terms hold by an absence and add nothing. What a detection
    /// finding says about its event.
    pub fn explain(&self, event: &AuditEvent<'_>, cluster: &str) -> Option<Vec<Evidence>> {
        let context = Context {
            event,
            cluster,
            time: None,
        };
        let mut evidence = Vec::new();
        match &self.expr {
            None => Some(evidence),
            Some(expr) => context.explain(expr, &mut evidence).then_some(evidence),
        }
    }

    /// Whether `event` matches once stored under `time_micros` (the store files an event
    /// without a time under its arrival): `time` conditions then mean what they mean in a
    /// query of the store.
    pub fn matches_stored(&self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) -> bool {
        let context = Context {
            event,
            cluster,
            time: Some(time_micros),
        };
        self.expr.as_ref().is_none_or(|e| context.eval(e))
    }
}

/// The value of `field` in `event` as one text: list elements joined by `,`, numbers and
/// booleans written out, `""` when absent (the label of a log-based metric).
pub fn field_value(field: &Field, event: &AuditEvent<'_>, cluster: &str) -> String {
    let context = Context {
        event,
        cluster,
        time: None,
    };
    match context.value(field) {
        FieldValue::One(value) => value.into_owned(),
        FieldValue::Text(values) => values.join(","),
        FieldValue::Int(n) => n.map(|n| n.to_string()).unwrap_or_default(),
        FieldValue::Bool(b) => b.to_string(),
    }
}

/// A field's value in one event, as [`field_value`] reads it but without copying: what a
/// group key or an index of filters is built from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'v> {
    /// A text field (`""` when absent, as stored).
    Text(Cow<'v, str>),
    /// The elements of a list field.
    List(Vec<Cow<'v, str>>),
    /// An integer, a duration (µs) or a time (µs); None when absent (stored as NULL).
    Int(Option<i64>),
    /// A boolean.
    Bool(bool),
}

/// The value of `field` in `event` (received from `cluster`).
pub fn value_of<'v>(field: &Field, event: &'v AuditEvent<'_>, cluster: &'v str) -> Value<'v> {
    let context = Context {
        event,
        cluster,
        time: None,
    };
    match context.value(field) {
        FieldValue::One(value) => Value::Text(value),
        FieldValue::Text(values) => Value::List(values),
        FieldValue::Int(n) => Value::Int(n),
        FieldValue::Bool(b) => Value::Bool(b),
    }
}

/// One term of a search that held for an event: the field (or `text` for free text) and the
/// value that satisfied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The field as written in output (`pod.privileged`, `verb`).
    pub field: String,
    /// The event's value that satisfied the term.
    pub value: String,
}

struct Context<'e, 'a> {
    event: &'e AuditEvent<'a>,
    cluster: &'e str,
    /// The stored time, when known (else the event's own).
    time: Option<i64>,
}

/// A value of a field, as compared and matched. Text borrows from the event where it can:
/// every event of the ingest path goes through the exclusion filters, the log-based metrics and
/// the live monitors' filters, so reading a field must not allocate.
enum FieldValue<'v> {
    /// A text field.
    One(Cow<'v, str>),
    /// A list field (its elements).
    Text(Vec<Cow<'v, str>>),
    Int(Option<i64>),
    Bool(bool),
}

impl<'v> FieldValue<'v> {
    /// The text values (one for a text field, the elements of a list); none for numbers.
    fn texts(&self) -> &[Cow<'v, str>] {
        match self {
            FieldValue::One(one) => std::slice::from_ref(one),
            FieldValue::Text(values) => values,
            FieldValue::Int(_) | FieldValue::Bool(_) => &[],
        }
    }
}

impl<'e> Context<'e, '_> {
    fn eval(&self, expr: &Expr) -> bool {
        match expr {
            Expr::And(all) => all.iter().all(|e| self.eval(e)),
            Expr::Or(any) => any.iter().any(|e| self.eval(e)),
            Expr::Not(inner) => !self.eval(inner),
            Expr::Text(text) => contains_ignore_ascii_case(self.event.raw.as_str(), text),
            Expr::BodyText { body, text } => {
                let body = match body {
                    JsonColumn::RequestObject => self.event.request_object.as_ref(),
                    JsonColumn::ResponseObject => self.event.response_object.as_ref(),
                    JsonColumn::Annotations => None,
                };
                body.is_some_and(|b| contains_ignore_ascii_case(b.as_str(), text))
            }
            Expr::In { field, values } => {
                self.value(field).texts().iter().any(|v| values.contains(v))
            }
            Expr::Exists(field) => match self.value(field) {
                FieldValue::Int(v) => v.is_some(),
                FieldValue::Bool(_) => true,
                text => text.texts().iter().any(|v| !v.is_empty()),
            },
            Expr::Match { field, pattern } => {
                self.value(field).texts().iter().any(|v| match pattern {
                    Pattern::Exact(p) => v == p,
                    Pattern::Wildcard(p) => wildcard_match(p, v),
                })
            }
            Expr::Compare { field, op, value } => {
                let ordering = match (self.value(field), value) {
                    (
                        FieldValue::Int(Some(v)),
                        Literal::Int(x) | Literal::Duration(x) | Literal::Time(x),
                    ) => Some(v.cmp(x)),
                    (FieldValue::Bool(v), Literal::Bool(x)) => Some(v.cmp(x)),
                    (values @ (FieldValue::One(_) | FieldValue::Text(_)), Literal::Text(x)) => {
                        // Any element satisfying the comparison is a match, as for lists in SQL.
                        return values
                            .texts()
                            .iter()
                            .any(|v| compare(v.as_ref().cmp(x.as_str()), *op));
                    }
                    _ => None,
                };
                ordering.is_some_and(|o| compare(o, *op))
            }
        }
    }

    /// [`eval`](Self::eval), recording the evidence of the terms that made it true.
    fn explain(&self, expr: &Expr, out: &mut Vec<Evidence>) -> bool {
        match expr {
            Expr::And(all) => {
                let mark = out.len();
                let held = all.iter().all(|e| self.explain(e, out));
                if !held {
                    out.truncate(mark);
                }
                held
            }
            Expr::Or(any) => any.iter().any(|e| {
                let mark = out.len();
                let held = self.explain(e, out);
                if !held {
                    out.truncate(mark);
                }
                held
            }),
            Expr::Not(_) => self.eval(expr),
            leaf => {
                if !self.eval(leaf) {
                    return false;
                }
                out.push(self.leaf_evidence(leaf));
                true
            }
        }
    }

    /// The evidence of a term that held.
    fn leaf_evidence(&self, leaf: &Expr) -> Evidence {
        let (field, value) = match leaf {
            Expr::Text(text) => ("text".to_owned(), text.clone()),
            Expr::BodyText { body, text } => (body.prefix().to_owned(), text.clone()),
            Expr::Match { field, pattern } => {
                let value = self.value(field);
                let found = value.texts().iter().find(|v| match pattern {
                    Pattern::Exact(p) => v.as_ref() == p,
                    Pattern::Wildcard(p) => wildcard_match(p, v),
                });
                (
                    field.display_name(),
                    found.map(|v| v.to_string()).unwrap_or_default(),
                )
            }
            Expr::In { field, values } => {
                let value = self.value(field);
                let found = value.texts().iter().find(|v| values.contains(v));
                (
                    field.display_name(),
                    found.map(|v| v.to_string()).unwrap_or_default(),
                )
            }
            Expr::Exists(field) | Expr::Compare { field, .. } => {
                let value = match self.value(field) {
                    FieldValue::Int(n) => n.map(|n| n.to_string()).unwrap_or_default(),
                    FieldValue::Bool(b) => b.to_string(),
                    text => text
                        .texts()
                        .iter()
                        .find(|v| !v.is_empty())
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                };
                (field.display_name(), value)
            }
            Expr::And(_) | Expr::Or(_) | Expr::Not(_) => unreachable!("not a leaf"),
        };
        Evidence { field, value }
    }

    fn value(&self, field: &Field) -> FieldValue<'e> {
        let e: &'e AuditEvent<'_> = self.event;
        let d = &e.derived;
        let text = |s: &'e str| FieldValue::One(Cow::Borrowed(s));
        let object = |f: for<'o> fn(&'o kubetrail_event::ObjectReference<'_>) -> &'o str| {
            FieldValue::One(Cow::Borrowed(e.object_ref.as_ref().map_or("", f)))
        };
        match field {
            Field::Json { column, path } => self.json_values(*column, path),
            Field::Pod(def) => self.pod_values(def),
            Field::Param(name) => FieldValue::Text(uri_param_values(&e.request_uri, name)),
            Field::Column(def) => match def.column {
                "time" => FieldValue::Int(self.time.or_else(|| e.time().map(|t| t.as_micros()))),
                "stage_time" => FieldValue::Int(e.stage_timestamp.map(|t| t.as_micros())),
                "audit_id" => text(&e.audit_id),
                "stage" => text(e.stage.as_str()),
                "level" => text(e.level.as_str()),
                "verb" => text(&e.verb),
                "user" => text(&e.user.username),
                "user_uid" => text(&e.user.uid),
                "user_groups" => FieldValue::Text(
                    e.user
                        .groups
                        .iter()
                        .map(|g| Cow::Borrowed(g.as_ref()))
                        .collect(),
                ),
                "user_kind" => text(d.user_kind.as_str()),
                "impersonated_user" => text(
                    e.impersonated_user
                        .as_ref()
                        .map_or("", |u| u.username.as_ref()),
                ),
                "effective_user" => text(&d.effective_user),
                "service_account" => FieldValue::One(
                    d.service_account
                        .as_ref()
                        .map_or(Cow::Borrowed(""), |(ns, name)| {
                            Cow::Owned(format!("{ns}:{name}"))
                        }),
                ),
                "source_ips" => FieldValue::Text(
                    e.source_ips
                        .iter()
                        .map(|g| Cow::Borrowed(g.as_ref()))
                        .collect(),
                ),
                "user_agent" => text(e.user_agent.as_deref().unwrap_or("")),
                "client" => FieldValue::One(Cow::Owned(d.client.to_string())),
                "api_group" => object(|r| r.api_group.as_ref()),
                "api_version" => object(|r| r.api_version.as_ref()),
                "resource" => object(|r| r.resource.as_ref()),
                "subresource" => object(|r| r.subresource.as_ref()),
                "resource_key" => text(d.resource_key.as_deref().unwrap_or("")),
                "namespace" => object(|r| r.namespace.as_ref()),
                "name" => object(|r| r.name.as_ref()),
                "object_uid" => object(|r| r.uid.as_ref()),
                "request_uri" => text(&e.request_uri),
                "path" => text(&d.path),
                "code" => FieldValue::Int(e.code().map(i64::from)),
                "status_reason" => {
                    text(e.response_status.as_ref().map_or("", |s| s.reason.as_ref()))
                }
                "status_message" => text(
                    e.response_status
                        .as_ref()
                        .map_or("", |s| s.message.as_ref()),
                ),
                "decision" => text(d.decision.as_deref().unwrap_or("")),
                "authz_reason" => text(d.authorization_reason.as_deref().unwrap_or("")),
                "latency_us" => FieldValue::Int(d.latency_micros),
                "mutating" => FieldValue::Bool(d.mutating),
                "cluster" => text(self.cluster),
                other => unreachable!("field catalog column {other} has no event value"),
            },
        }
    }

    /// The values of a pod-view field: each of its paths below the pod spec of the request
    /// body, for the resources that carry one.
    fn pod_values(&self, def: &'static PodFieldDef) -> FieldValue<'e> {
        let e: &'e AuditEvent<'_> = self.event;
        let (Some(object), Some(body)) = (e.object_ref.as_ref(), e.request_object.as_ref()) else {
            return FieldValue::Text(Vec::new());
        };
        let Some(root) = pod_spec_root(&object.resource, &object.subresource) else {
            return FieldValue::Text(Vec::new());
        };
        let mut values = Vec::new();
        for path in def.paths_below(root) {
            let steps: Vec<&str> = path.split('.').collect();
            values.extend(kubetrail_event::json::values_at_path(body.as_str(), &steps));
        }
        FieldValue::Text(values)
    }

    fn json_values(&self, column: JsonColumn, path: &[String]) -> FieldValue<'e> {
        let body = match column {
            JsonColumn::Annotations => {
                let key = path.first().map(String::as_str).unwrap_or_default();
                return FieldValue::Text(
                    self.event
                        .annotation(key)
                        .map(|v| vec![Cow::Owned(v.to_owned())])
                        .unwrap_or_default(),
                );
            }
            JsonColumn::RequestObject => self.event.request_object.as_ref(),
            JsonColumn::ResponseObject => self.event.response_object.as_ref(),
        };
        FieldValue::Text(
            body.map(|b| kubetrail_event::json::values_at_path(b.as_str(), path))
                .unwrap_or_default(),
        )
    }
}

/// The values of the query parameter `name` in a request URI, percent-decoded (`+` is a
/// space, as Go's `url.ParseQuery` reads it), in order: `/api/v1/…/exec?command=sh&command=-c`
/// has two `command` values.
pub fn uri_param_values<'u>(uri: &'u str, name: &str) -> Vec<Cow<'u, str>> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes and bytes that do not form UTF-8 are kept as
/// written (lossily), never an error: the text comes from a client.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn compare(ordering: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase();
    haystack.to_ascii_lowercase().contains(&needle)
}

/// Glob matching where `*` is any run of characters (case-sensitive, like the field values).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "system:serviceaccount:kube-system:*",
            "system:serviceaccount:kube-system:job-controller"
        ));
        assert!(!wildcard_match(
            "system:serviceaccount:kube-system:*",
            "system:serviceaccount:ci:deployer"
        ));
        assert!(wildcard_match(
            "*controller*",
            "system:kube-controller-manager"
        ));
        assert!(wildcard_match("a*b*c", "abc"));
        assert!(!wildcard_match("a*b*c", "acb"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("ab*ba", "aba"));
    }
}

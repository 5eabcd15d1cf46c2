//! Evaluating a search on one event in memory, for what must decide before an event is stored:
//! exclusion filters (`user:system:kube-scheduler verb:update resource:leases`), and later
//! detections and monitors. The field values are read the same way the store fills its columns,
//! so a filter means the same here as in a stored query.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::rc::Rc;

use kubetrail_event::AuditEvent;

use crate::ast::{Expr, Literal, Pattern, Query};
use crate::error::QueryError;
use crate::fields::{Column, Field, JsonColumn, PodFieldDef, pod_spec_root};
use crate::lexer::CompareOp;

/// A compiled search for matching events one by one.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The search as written: what [`Matcher::explain`] walks, so evidence comes in the
    /// order of the terms.
    expr: Option<Expr>,
    /// The same search compiled for deciding fast (see [`Node`]).
    compiled: Option<Node>,
}

/// A search compiled for deciding, not explaining: the operands of every `AND` and `OR` are
/// ordered cheapest first (columns before URI parameters before JSON walks and free text), so
/// most events fail on a column and no body is read; and the values an `OR` compares one field
/// with (`pod.image:(alpine OR */alpine:* OR …)`, a hundred patterns in a detection) are
/// grouped, so the field is read once and its values tried against the set. Terms have no
/// side effects: neither changes what matches, only the cost.
#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// The field equals one of `exact` (sorted) or matches one of `wildcards`.
    AnyOf {
        field: Field,
        exact: Vec<String>,
        wildcards: Globs,
    },
    Term(Expr),
}

impl Node {
    fn compile(expr: &Expr) -> Node {
        let mut node = match expr {
            Expr::And(all) => Node::And(all.iter().map(Node::compile).collect()),
            Expr::Or(any) => Node::Or(group_alternatives(any)),
            term @ (Expr::Match { .. } | Expr::In { .. }) => {
                group_alternatives(std::slice::from_ref(term))
                    .pop()
                    .unwrap_or_else(|| Node::Term(term.clone()))
            }
            Expr::Not(inner) => Node::Not(Box::new(Node::compile(inner))),
            term => Node::Term(term.clone()),
        };
        if let Node::And(all) | Node::Or(all) = &mut node {
            all.sort_by_cached_key(Node::cost);
        }
        node
    }

    /// A rough cost of deciding the node on one event, in units of reading a column.
    fn cost(&self) -> u32 {
        match self {
            Node::And(all) | Node::Or(all) => all.iter().map(Node::cost).sum(),
            Node::Not(inner) => inner.cost(),
            Node::AnyOf { field, .. } => field_cost(field) + 1,
            Node::Term(term) => cost(term),
        }
    }
}

/// The alternatives of an `OR`, compiled, with the equalities and patterns on one field
/// merged into one [`Node::AnyOf`] (in the place of the first).
fn group_alternatives(any: &[Expr]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::with_capacity(any.len());
    // Per field: where its node goes, its exact values and its patterns.
    let mut groups: Vec<(usize, &Field, Vec<String>, Vec<String>)> = Vec::new();
    for alternative in any {
        let (field, exact, wildcard) = match alternative {
            Expr::Match {
                field,
                pattern: Pattern::Exact(value),
            } => (field, std::slice::from_ref(value), None),
            Expr::Match {
                field,
                pattern: Pattern::Wildcard(pattern),
            } => (field, &[][..], Some(pattern)),
            Expr::In { field, values } => (field, values.values(), None),
            other => {
                nodes.push(Node::compile(other));
                continue;
            }
        };
        let group = groups.iter_mut().find(|(_, f, _, _)| *f == field);
        match group {
            Some((_, _, exacts, patterns)) => {
                exacts.extend_from_slice(exact);
                patterns.extend(wildcard.cloned());
            }
            None => {
                // A placeholder, replaced once the group is complete.
                groups.push((
                    nodes.len(),
                    field,
                    exact.to_vec(),
                    wildcard.cloned().into_iter().collect(),
                ));
                nodes.push(Node::Term(Expr::Exists(field.clone())));
            }
        }
    }
    for (at, field, mut exact, patterns) in groups {
        exact.sort_unstable();
        exact.dedup();
        nodes[at] = Node::AnyOf {
            field: field.clone(),
            exact,
            wildcards: Globs::new(&patterns),
        };
    }
    nodes
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
            compiled: query.filter.as_ref().map(Node::compile),
        })
    }

    /// The search (None: every event matches).
    pub fn filter(&self) -> Option<&Expr> {
        self.expr.as_ref()
    }

    /// Parses and compiles a filter.
    pub fn parse(text: &str) -> Result<Matcher, QueryError> {
        Matcher::new(&crate::parser::parse(text)?)
    }

    /// Whether `event` (received from `cluster`) matches.
    pub fn matches(&self, event: &AuditEvent<'_>, cluster: &str) -> bool {
        self.matches_in(&EventView::new(event, cluster))
    }

    /// Whether the event of `view` matches; fields read from its bodies and URI by earlier
    /// searches on the same view are not read again.
    pub fn matches_in(&self, view: &EventView<'_, '_>) -> bool {
        self.compiled.as_ref().is_none_or(|n| view.decide(n))
    }

    /// Why `event` matches, or None when it does not: for each search term that held on the
    /// way to the match (the first alternative of an `OR` that did), the field and the value
    /// that satisfied it. Negated terms hold by an absence and add nothing. What a detection
    /// finding says about its event.
    pub fn explain(&self, event: &AuditEvent<'_>, cluster: &str) -> Option<Vec<Evidence>> {
        self.explain_in(&EventView::new(event, cluster))
    }

    /// [`Matcher::explain`] on a view shared with other searches of the same event.
    pub fn explain_in(&self, view: &EventView<'_, '_>) -> Option<Vec<Evidence>> {
        let mut evidence = Vec::new();
        match (&self.expr, &self.compiled) {
            (Some(expr), Some(compiled)) => {
                // Most events do not match: decide cheaply, explain only a match.
                (view.decide(compiled) && view.explain(expr, &mut evidence)).then_some(evidence)
            }
            _ => Some(evidence),
        }
    }

    /// Whether `event` matches once stored under `time_micros` (the store files an event
    /// without a time under its arrival): `time` conditions then mean what they mean in a
    /// query of the store.
    pub fn matches_stored(&self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) -> bool {
        self.matches_in(&EventView::stored(event, cluster, time_micros))
    }
}

/// A rough cost of deciding `expr` on one event, in units of reading a column: a URI
/// parameter splits the query string, a JSON path walks a body, the pod view walks it once
/// per spec location, free text lowercases a whole event.
fn cost(expr: &Expr) -> u32 {
    match expr {
        Expr::And(all) | Expr::Or(all) => all.iter().map(cost).sum(),
        Expr::Not(inner) => cost(inner),
        Expr::Match { field, .. }
        | Expr::In { field, .. }
        | Expr::Exists(field)
        | Expr::Compare { field, .. } => field_cost(field),
        Expr::BodyText { .. } => 200,
        Expr::Text(_) => 400,
    }
}

/// The cost of reading `field` (see [`cost`]).
fn field_cost(field: &Field) -> u32 {
    match field {
        Field::Column(def) if matches!(def.id, Column::ServiceAccount | Column::Client) => 2,
        Field::Column(_) => 1,
        Field::Param(_) => 8,
        Field::Json { .. } => 40,
        Field::Pod(_) => 100,
    }
}

/// The value of `field` in `event` as one text: list elements joined by `,`, numbers and
/// booleans written out, `""` when absent (the label of a log-based metric).
pub fn field_value(field: &Field, event: &AuditEvent<'_>, cluster: &str) -> String {
    match EventView::new(event, cluster).read(field) {
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
    match EventView::new(event, cluster).read(field) {
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

/// One event as searches see it. Values read from the bodies and the URI (JSON paths, the pod
/// view, query parameters) are kept for the view's life: a rule pack asks the same body for
/// `pod.image` or `pod.hostPath` in several rules, and an `OR` of patterns on one field asks
/// once per pattern; each is walked once per event.
pub struct EventView<'e, 'a> {
    event: &'e AuditEvent<'a>,
    cluster: &'e str,
    /// The stored time, when known (else the event's own).
    time: Option<i64>,
    kept: RefCell<Vec<(Field, Rc<FieldValue<'e>>)>>,
}

/// A field's value, read now (a column: cheaper to read again than to keep) or kept.
enum Read<'e> {
    Now(FieldValue<'e>),
    Kept(Rc<FieldValue<'e>>),
}

impl<'e> std::ops::Deref for Read<'e> {
    type Target = FieldValue<'e>;

    fn deref(&self) -> &FieldValue<'e> {
        match self {
            Read::Now(value) => value,
            Read::Kept(value) => value,
        }
    }
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

impl<'e, 'a> EventView<'e, 'a> {
    /// The view of `event` received from `cluster`.
    pub fn new(event: &'e AuditEvent<'a>, cluster: &'e str) -> Self {
        EventView {
            event,
            cluster,
            time: None,
            kept: RefCell::new(Vec::new()),
        }
    }

    /// The view of `event` as stored under `time_micros` (see [`Matcher::matches_stored`]).
    pub fn stored(event: &'e AuditEvent<'a>, cluster: &'e str, time_micros: i64) -> Self {
        EventView {
            time: Some(time_micros),
            ..EventView::new(event, cluster)
        }
    }

    /// The event.
    pub fn event(&self) -> &'e AuditEvent<'a> {
        self.event
    }

    /// The cluster it came from.
    pub fn cluster(&self) -> &'e str {
        self.cluster
    }

    /// Decides a compiled search.
    fn decide(&self, node: &Node) -> bool {
        match node {
            Node::And(all) => all.iter().all(|n| self.decide(n)),
            Node::Or(any) => any.iter().any(|n| self.decide(n)),
            Node::Not(inner) => !self.decide(inner),
            Node::AnyOf {
                field,
                exact,
                wildcards,
            } => self.value(field).texts().iter().any(|v| {
                exact
                    .binary_search_by(|e| e.as_str().cmp(v.as_ref()))
                    .is_ok()
                    || wildcards.matches(v)
            }),
            Node::Term(term) => self.eval(term),
        }
    }

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
            Expr::Exists(field) => match &*self.value(field) {
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
                let ordering = match (&*self.value(field), value) {
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
                let value = match &*self.value(field) {
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

    /// The value of `field`, kept when it is read from a body or the URI.
    fn value(&self, field: &Field) -> Read<'e> {
        let e = self.event;
        let nothing_to_walk = match field {
            Field::Column(_) => true,
            Field::Json { column, .. } => match column {
                JsonColumn::RequestObject => e.request_object.is_none(),
                JsonColumn::ResponseObject => e.response_object.is_none(),
                JsonColumn::Annotations => true,
            },
            Field::Pod(_) => e.request_object.is_none(),
            Field::Param(_) => !e.request_uri.contains('?'),
        };
        if nothing_to_walk {
            return Read::Now(self.read(field));
        }
        if let Some((_, value)) = self
            .kept
            .borrow()
            .iter()
            .find(|(f, _)| same_field(f, field))
        {
            return Read::Kept(Rc::clone(value));
        }
        let value = Rc::new(self.read(field));
        self.kept
            .borrow_mut()
            .push((field.clone(), Rc::clone(&value)));
        Read::Kept(value)
    }

    /// The value of `field`, read from the event.
    fn read(&self, field: &Field) -> FieldValue<'e> {
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
            Field::Column(def) => match def.id {
                Column::Time => {
                    FieldValue::Int(self.time.or_else(|| e.time().map(|t| t.as_micros())))
                }
                Column::StageTime => FieldValue::Int(e.stage_timestamp.map(|t| t.as_micros())),
                Column::AuditId => text(&e.audit_id),
                Column::Stage => text(e.stage.as_str()),
                Column::Level => text(e.level.as_str()),
                Column::Verb => text(&e.verb),
                Column::User => text(&e.user.username),
                Column::UserUid => text(&e.user.uid),
                Column::UserGroups => FieldValue::Text(
                    e.user
                        .groups
                        .iter()
                        .map(|g| Cow::Borrowed(g.as_ref()))
                        .collect(),
                ),
                Column::UserKind => text(d.user_kind.as_str()),
                Column::ImpersonatedUser => text(
                    e.impersonated_user
                        .as_ref()
                        .map_or("", |u| u.username.as_ref()),
                ),
                Column::EffectiveUser => text(&d.effective_user),
                Column::ServiceAccount => FieldValue::One(
                    d.service_account
                        .as_ref()
                        .map_or(Cow::Borrowed(""), |(ns, name)| {
                            Cow::Owned(format!("{ns}:{name}"))
                        }),
                ),
                Column::SourceIps => FieldValue::Text(
                    e.source_ips
                        .iter()
                        .map(|g| Cow::Borrowed(g.as_ref()))
                        .collect(),
                ),
                Column::UserAgent => text(e.user_agent.as_deref().unwrap_or("")),
                Column::Client => FieldValue::One(match &d.client.component {
                    None => Cow::Borrowed(d.client.name.as_ref()),
                    Some(_) => Cow::Owned(d.client.to_string()),
                }),
                Column::ApiGroup => object(|r| r.api_group.as_ref()),
                Column::ApiVersion => object(|r| r.api_version.as_ref()),
                Column::Resource => object(|r| r.resource.as_ref()),
                Column::Subresource => object(|r| r.subresource.as_ref()),
                Column::ResourceKey => text(d.resource_key.as_deref().unwrap_or("")),
                Column::Namespace => object(|r| r.namespace.as_ref()),
                Column::Name => object(|r| r.name.as_ref()),
                Column::ObjectUid => object(|r| r.uid.as_ref()),
                Column::RequestUri => text(&e.request_uri),
                Column::Path => text(&d.path),
                Column::Code => FieldValue::Int(e.code().map(i64::from)),
                Column::StatusReason => {
                    text(e.response_status.as_ref().map_or("", |s| s.reason.as_ref()))
                }
                Column::StatusMessage => text(
                    e.response_status
                        .as_ref()
                        .map_or("", |s| s.message.as_ref()),
                ),
                Column::Decision => text(d.decision.as_deref().unwrap_or("")),
                Column::AuthzReason => text(d.authorization_reason.as_deref().unwrap_or("")),
                Column::LatencyUs => FieldValue::Int(d.latency_micros),
                Column::Mutating => FieldValue::Bool(d.mutating),
                Column::Cluster => text(self.cluster),
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
        let body = body.as_str();
        let mut values = Vec::new();
        for path in def.paths_below(root) {
            let steps: Vec<&str> = path.split('.').collect();
            if may_hold(body, &steps) {
                values.extend(kubetrail_event::json::values_at_path(body, &steps));
            }
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
            body.filter(|b| may_hold(b.as_str(), path))
                .map(|b| kubetrail_event::json::values_at_path(b.as_str(), path))
                .unwrap_or_default(),
        )
    }
}

/// `a == b`, comparing catalog entries by address: the cache of a view is searched for every
/// term of every search, and the derived comparison would compare their texts.
fn same_field(a: &Field, b: &Field) -> bool {
    match (a, b) {
        (Field::Column(a), Field::Column(b)) => std::ptr::eq(*a, *b),
        (Field::Pod(a), Field::Pod(b)) => std::ptr::eq(*a, *b),
        _ => a == b,
    }
}

/// Whether the JSON `body` may hold a value at `path`: false when one of its keys certainly
/// appears nowhere (tried from the last, the rarest), so that a search for a field most bodies
/// lack (`pod.hostPID`, `requestObject.spec.tls`) scans bytes instead of walking JSON.
fn may_hold<S: AsRef<str>>(body: &str, path: &[S]) -> bool {
    path.iter()
        .rev()
        .all(|key| kubetrail_event::json::may_have_key(body, key.as_ref()))
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

/// Patterns an `OR` matches one field against. A few are tried one by one; more are
/// compiled into one regular expression (an automaton, linear in the value's length whatever
/// the patterns), since a detection's list of images or user agents holds a hundred.
#[derive(Debug, Clone)]
enum Globs {
    Few(Vec<Glob>),
    Many(regex::Regex),
}

/// From how many patterns one automaton beats trying each.
const GLOBS_AS_ONE_AUTOMATON: usize = 4;
/// The most one automaton may take: a list from a filter typed into the API (an exclusion, a
/// monitor) must not cost the server more than this; a longer list is tried pattern by
/// pattern instead. The pack's longest lists take a few KiB.
const GLOBS_AUTOMATON_BYTES: usize = 1 << 20;

impl Globs {
    fn new(patterns: &[String]) -> Globs {
        if patterns.len() >= GLOBS_AS_ONE_AUTOMATON {
            let alternatives: Vec<String> = patterns
                .iter()
                .map(|p| {
                    p.split('*')
                        .map(regex::escape)
                        .collect::<Vec<_>>()
                        .join(".*")
                })
                .collect();
            let automaton = regex::RegexBuilder::new(&format!("^(?:{})$", alternatives.join("|")))
                .dot_matches_new_line(true)
                .size_limit(GLOBS_AUTOMATON_BYTES)
                .build();
            if let Ok(automaton) = automaton {
                return Globs::Many(automaton);
            }
        }
        Globs::Few(patterns.iter().map(|p| Glob::new(p)).collect())
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Globs::Few(globs) => globs.iter().any(|glob| glob.matches(text)),
            Globs::Many(automaton) => automaton.is_match(text),
        }
    }
}

/// A pattern with `*` split once at compile time: what [`wildcard_match`] does, without
/// splitting the pattern again for every value.
#[derive(Debug, Clone)]
struct Glob {
    first: String,
    /// The parts between the first and the last `*`, each found after the previous one.
    middles: Vec<String>,
    last: String,
}

impl Glob {
    /// The glob of `pattern`, which has at least one `*`.
    fn new(pattern: &str) -> Glob {
        let mut parts: Vec<String> = pattern.split('*').map(str::to_owned).collect();
        let last = if parts.len() > 1 {
            parts.pop().unwrap_or_default()
        } else {
            String::new()
        };
        let first = if parts.is_empty() {
            String::new()
        } else {
            parts.remove(0)
        };
        parts.retain(|m| !m.is_empty());
        Glob {
            first,
            middles: parts,
            last,
        }
    }

    fn matches(&self, text: &str) -> bool {
        let (first, last) = (self.first.as_str(), self.last.as_str());
        if text.len() < first.len() + last.len()
            || !text.starts_with(first)
            || !text.ends_with(last)
        {
            return false;
        }
        let mut rest = &text[first.len()..text.len() - last.len()];
        for middle in &self.middles {
            match rest.find(middle.as_str()) {
                Some(i) => rest = &rest[i + middle.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Glob matching where `*` is any run of characters (case-sensitive, like the field values).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (Some((first, inner)), Some((_, last))) =
        (pattern.split_once('*'), pattern.rsplit_once('*'))
    else {
        return pattern == text;
    };
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    // The parts between the first and the last `*`, each found after the previous one.
    let middles = inner.rsplit_once('*').map_or("", |(middles, _)| middles);
    for middle in middles.split('*').filter(|m| !m.is_empty()) {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{Glob, Globs, wildcard_match};

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

    #[test]
    fn compiled_globs_match_as_wildcards_do() {
        let patterns = [
            "system:serviceaccount:kube-system:*",
            "*controller*",
            "a*b*c",
            "*",
            "**",
            "ab*ba",
            "*/alpine:*",
            "x*",
            "*y",
        ];
        let texts = [
            "",
            "abc",
            "acb",
            "aba",
            "abba",
            "docker.io/library/alpine:3.20",
            "alpine",
            "system:serviceaccount:kube-system:job-controller",
            "xy",
            "y",
        ];
        for pattern in patterns {
            let glob = Glob::new(pattern);
            for text in texts {
                assert_eq!(
                    glob.matches(text),
                    wildcard_match(pattern, text),
                    "{pattern} on {text}"
                );
            }
        }
        // A list as long as the pack's image lists is one automaton; one far past the size
        // limit is tried pattern by pattern, with the same answers.
        let images: Vec<String> = (0..200)
            .map(|i| format!("*registry-{i}.example.com/tools/*:v{i}*"))
            .collect();
        assert!(matches!(Globs::new(&images), Globs::Many(_)));
        let huge: Vec<String> = (0..3_000)
            .map(|i| format!("*{i}-{}*", "x".repeat(60)))
            .collect();
        let huge_globs = Globs::new(&huge);
        assert!(matches!(huge_globs, Globs::Few(_)));
        assert!(huge_globs.matches(&format!("a2999-{}b", "x".repeat(60))));
        assert!(!huge_globs.matches("a3000-x"));
        // As one automaton: the same answers, and regex syntax in a pattern is text.
        let mut patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        patterns.push("a.c*".to_owned());
        patterns.push("(x|*".to_owned());
        let globs = Globs::new(&patterns);
        assert!(matches!(globs, Globs::Many(_)));
        for text in texts.iter().chain(&["a.cd", "abcd", "(x|y", "line\nbreak"]) {
            assert_eq!(
                globs.matches(text),
                patterns.iter().any(|p| wildcard_match(p, text)),
                "{text}"
            );
        }
    }
}

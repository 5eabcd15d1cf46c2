//! Which of many filters an event may match, without evaluating them all.
//!
//! Everything on the ingest path that holds many filters (the live monitors' tap, the rule pack
//! of detections) pays for every event times every filter. Most filters are conjunctions
//! with an equality on a cheap column (`resource:secrets …`, `verb:(create OR update) …`,
//! `code:403 …`): an event whose value of that column is not one of the equality's values
//! cannot match, whatever the rest says. [`FilterIndex`] files each filter under one such
//! equality, the most selective it has, and hands an event the filters its values select plus
//! those without any usable equality; only those are evaluated. A conjunct that is an `OR`
//! whose every branch has such an equality (a sequence rule's steps, `resource:pods … OR
//! resource:deployments …`) files the filter under each branch's.

use std::collections::HashMap;

use kubetrail_event::AuditEvent;

use crate::ast::{Expr, Literal, Pattern, ValueSet};
use crate::fields::{Column, FIELDS, Field, FieldDef, FieldKind, POD_SPEC_ROOTS};
use crate::lexer::CompareOp;
use crate::matcher::{Value, value_of};

/// Maps hashed for every event on the ingest thread: foldhash, not the standard SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Filters (by their position in the list they were built from) filed under one equality each.
#[derive(Debug, Default, Clone)]
pub struct FilterIndex {
    text: Vec<(Field, FastMap<String, Vec<usize>>)>,
    ints: Vec<(Field, FastMap<i64, Vec<usize>>)>,
    /// Filters with an equality on the verb and one on the resource, by both: neither alone
    /// is selective (`verb:update` is every lease renewal, `resource:pods` every kubelet's
    /// read), the pair is.
    verb_resource: FastMap<String, FastMap<String, Vec<usize>>>,
    /// Filters without a usable equality: every event is a candidate for them.
    always: Vec<usize>,
}

/// `field = one of values`, a top-level conjunct of a filter (or implied by one).
enum Selector {
    Text(Field, Vec<String>),
    Int(Field, i64),
    VerbResource(Vec<String>, Vec<String>),
    /// One of several: the branches of an `OR`.
    Any(Vec<Selector>),
}

impl FilterIndex {
    /// The index of `filters`; `None` is a filter every event matches.
    pub fn new<'f>(filters: impl IntoIterator<Item = Option<&'f Expr>>) -> FilterIndex {
        let mut index = FilterIndex::default();
        for (i, filter) in filters.into_iter().enumerate() {
            match filter.and_then(best_selector) {
                None => index.always.push(i),
                Some(selector) => index.file(selector, i),
            }
        }
        index
    }

    /// Files filter `i` under `selector`.
    fn file(&mut self, selector: Selector, i: usize) {
        match selector {
            Selector::Text(field, values) => {
                let map = values_of(&mut self.text, &field);
                for value in values {
                    map.entry(value).or_default().push(i);
                }
            }
            Selector::Int(field, n) => {
                values_of(&mut self.ints, &field)
                    .entry(n)
                    .or_default()
                    .push(i);
            }
            Selector::VerbResource(verbs, resources) => {
                for verb in verbs {
                    let by_resource = self.verb_resource.entry(verb).or_default();
                    for resource in &resources {
                        by_resource.entry(resource.clone()).or_default().push(i);
                    }
                }
            }
            Selector::Any(branches) => {
                for branch in branches {
                    self.file(branch, i);
                }
            }
        }
    }

    /// How many filters are candidates for every event (no usable equality).
    pub fn unselective(&self) -> usize {
        self.always.len()
    }

    /// The filters `event` (from `cluster`) may match, in ascending order, into `out`
    /// (cleared first). A filter left out does not match.
    pub fn candidates(&self, event: &AuditEvent<'_>, cluster: &str, out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for (field, by_value) in &self.text {
            if let Value::Text(value) = value_of(field, event, cluster)
                && let Some(filters) = by_value.get(value.as_ref())
            {
                out.extend_from_slice(filters);
            }
        }
        if !self.verb_resource.is_empty()
            && let Some(by_resource) = self.verb_resource.get(event.verb.as_ref())
            && let Some(filters) = by_resource.get(
                event
                    .object_ref
                    .as_ref()
                    .map_or("", |r| r.resource.as_ref()),
            )
        {
            out.extend_from_slice(filters);
        }
        for (field, by_value) in &self.ints {
            if let Value::Int(Some(n)) = value_of(field, event, cluster)
                && let Some(filters) = by_value.get(&n)
            {
                out.extend_from_slice(filters);
            }
        }
        // A filter filed under several branches may be selected twice.
        out.sort_unstable();
        out.dedup();
    }

    /// A filter every event with a candidate matches, on cheap columns only (the equalities
    /// the filters are filed under): what a reader of stored events asks the store for, before
    /// judging each event it reads as live ones are judged. None when some filter is a
    /// candidate for every event, so every event must be read.
    pub fn superset(&self) -> Option<Expr> {
        if !self.always.is_empty() {
            return None;
        }
        let mut any = Vec::new();
        let one_of = |field: Field, values: Vec<String>| Expr::In {
            field,
            values: ValueSet::new(values),
        };
        for (field, by_value) in &self.text {
            any.push(one_of(field.clone(), by_value.keys().cloned().collect()));
        }
        for (field, by_value) in &self.ints {
            any.extend(by_value.keys().map(|n| Expr::Compare {
                field: field.clone(),
                op: CompareOp::Eq,
                value: Literal::Int(*n),
            }));
        }
        let mut by_resources: FastMap<Vec<String>, Vec<String>> = FastMap::default();
        for (verb, by_resource) in &self.verb_resource {
            let mut resources: Vec<String> = by_resource.keys().cloned().collect();
            resources.sort_unstable();
            by_resources
                .entry(resources)
                .or_default()
                .push(verb.clone());
        }
        for (resources, verbs) in by_resources {
            any.push(Expr::And(vec![
                one_of(Field::Column(column_def(Column::Verb)), verbs),
                one_of(Field::Column(column_def(Column::Resource)), resources),
            ]));
        }
        // No filter at all: an empty set, which nothing is in.
        if any.is_empty() {
            any.push(one_of(Field::Column(column_def(Column::Verb)), Vec::new()));
        }
        Some(Expr::Or(any))
    }
}

/// The catalog's definition of `column`.
fn column_def(column: Column) -> &'static FieldDef {
    FIELDS
        .iter()
        .find(|def| def.id == column)
        .expect("every column is in the catalog")
}

/// The map of `field`'s values in `fields`, added when missing.
fn values_of<'i, K>(
    fields: &'i mut Vec<(Field, FastMap<K, Vec<usize>>)>,
    field: &Field,
) -> &'i mut FastMap<K, Vec<usize>> {
    let at = match fields.iter().position(|(f, _)| f == field) {
        Some(at) => at,
        None => {
            fields.push((field.clone(), FastMap::default()));
            fields.len() - 1
        }
    };
    &mut fields[at].1
}

/// The most selective equality among the top-level conjuncts of `filter`.
fn best_selector(filter: &Expr) -> Option<Selector> {
    let conjuncts = match filter {
        Expr::And(all) => all.as_slice(),
        one => std::slice::from_ref(one),
    };
    let selectors: Vec<Selector> = conjuncts.iter().filter_map(selector).collect();
    let best = selectors.iter().map(rank).min()?;
    if best > PAIR_RANK
        && let (Some(verbs), Some(resources)) = (
            column_values(&selectors, Column::Verb),
            column_values(&selectors, Column::Resource),
        )
    {
        return Some(Selector::VerbResource(verbs, resources));
    }
    selectors.into_iter().find(|s| rank(s) == best)
}

/// How selective a selector is ([`selectivity_rank`]): a choice among branches is as
/// selective as its least selective branch.
fn rank(selector: &Selector) -> u8 {
    match selector {
        Selector::Text(Field::Column(def), _) | Selector::Int(Field::Column(def), _) => {
            selectivity_rank(def.id)
        }
        Selector::VerbResource(..) => PAIR_RANK,
        Selector::Any(branches) => branches.iter().map(rank).max().unwrap_or(u8::MAX),
        _ => u8::MAX,
    }
}

/// The values a conjunct of `selectors` allows for text column `column`: one equality's, or
/// the union of an `OR`'s when each of its branches has an equality on the column.
fn column_values(selectors: &[Selector], column: Column) -> Option<Vec<String>> {
    fn of(selector: &Selector, column: Column) -> Option<Vec<String>> {
        match selector {
            Selector::Text(Field::Column(def), values) if def.id == column => Some(values.clone()),
            Selector::Any(branches) => {
                let mut all = Vec::new();
                for branch in branches {
                    all.extend(of(branch, column)?);
                }
                Some(all)
            }
            _ => None,
        }
    }
    selectors.iter().find_map(|s| of(s, column))
}

/// Lower is more selective in audit traffic: a subresource, an object's name or a user picks
/// few events, then the pair of a verb and a resource ([`PAIR_RANK`]); an API group
/// (equalities name a group other than the core one, where most traffic is) picks more, a
/// resource, a namespace, a verb or a code more still (reads, leases and 200s are most of it).
fn selectivity_rank(column: Column) -> u8 {
    match column {
        Column::AuditId => 0,
        Column::Subresource => 1,
        Column::Name => 2,
        Column::User => 3,
        Column::ApiGroup => 5,
        Column::Resource => 6,
        Column::Namespace => 7,
        Column::Verb => 8,
        Column::Code => 9,
        _ => 10,
    }
}

/// Where the pair of a verb and a resource ranks among single equalities.
const PAIR_RANK: u8 = 4;

/// A conjunct that is an equality on a text column (not a list) or an integer column, or
/// that needs the pod view (which only the resources with a pod spec have).
fn selector(conjunct: &Expr) -> Option<Selector> {
    let column =
        |field: &Field, kind: FieldKind| matches!(field, Field::Column(_)) && field.kind() == kind;
    match conjunct {
        Expr::Match {
            field,
            pattern: Pattern::Exact(value),
        } if column(field, FieldKind::Text) => {
            Some(Selector::Text(field.clone(), vec![value.clone()]))
        }
        Expr::In { field, values } if column(field, FieldKind::Text) => {
            Some(Selector::Text(field.clone(), values.values().to_vec()))
        }
        Expr::Compare {
            field,
            op: CompareOp::Eq,
            value: Literal::Int(n),
        } if column(field, FieldKind::Int) => Some(Selector::Int(field.clone(), *n)),
        _ if needs_pod_view(conjunct) => Some(Selector::Text(
            Field::Column(column_def(Column::Resource)),
            pod_spec_resources(),
        )),
        Expr::Or(branches) => branches
            .iter()
            .map(best_selector)
            .collect::<Option<Vec<_>>>()
            .map(Selector::Any),
        _ => None,
    }
}

/// The resources whose requests carry a pod spec.
fn pod_spec_resources() -> Vec<String> {
    POD_SPEC_ROOTS
        .iter()
        .flat_map(|(resources, _, _)| resources.iter().map(|r| (*r).to_owned()))
        .collect()
}

/// Whether `expr` holds only for events with a value in the pod view: a term on a `pod.`
/// field holds only for a value (an absent field has none), and so does an `OR` of them.
fn needs_pod_view(expr: &Expr) -> bool {
    match expr {
        Expr::Match { field, .. }
        | Expr::In { field, .. }
        | Expr::Exists(field)
        | Expr::Compare { field, .. } => matches!(field, Field::Pod(_)),
        Expr::And(all) => all.iter().any(needs_pod_view),
        Expr::Or(any) => any.iter().all(needs_pod_view),
        Expr::Not(_) | Expr::Text(_) | Expr::BodyText { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::FilterIndex;
    use crate::{Matcher, parse};
    use kubetrail_event::{DecodeOptions, Decoded, Decoder};

    fn event(json: &str) -> kubetrail_event::AuditEvent<'static> {
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut events = Vec::new();
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(e, _) = d {
                events.push((*e).into_owned());
            }
        };
        decoder.feed(format!("{json}\n").as_bytes(), &mut out);
        decoder.finish(&mut out);
        events.pop().expect("one event")
    }

    #[test]
    fn candidates_are_a_superset_of_the_matches_in_order() {
        let filters = [
            "resource:secrets verb:get",
            "verb:(create OR delete) -user:system:*",
            "code:403",
            "requestObject.spec.hostNetwork:true OR verb:get",
            "subresource:exec resource:pods",
            "",
            "verb:create (pod.runAsUser:0 OR pod.privileged:true)",
            // Filed under each branch: a sequence rule's steps, an OR of resources.
            "code<400 ((resource:secrets verb:get) OR (apigroup:rbac.authorization.k8s.io verb:create))",
            "verb:(create OR update) (resource:pods OR (resource:deployments -subresource:*))",
            "(user:alice OR user:bob) OR subresource:exec",
        ];
        let parsed: Vec<_> = filters.iter().map(|f| parse(f).unwrap()).collect();
        let index = FilterIndex::new(parsed.iter().map(|q| q.filter.as_ref()));
        assert_eq!(index.unselective(), 2);
        let mut selected = Vec::new();
        let events = [
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/secrets/s","verb":"get","user":{"username":"alice"},"objectRef":{"resource":"secrets","namespace":"d","name":"s","apiVersion":"v1"},"responseStatus":{"code":403}}"#,
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/pods/p/exec?command=sh","verb":"create","user":{"username":"bob"},"objectRef":{"resource":"pods","subresource":"exec","namespace":"d","name":"p","apiVersion":"v1"},"responseStatus":{"code":101}}"#,
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"d","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/pods","verb":"create","user":{"username":"erin"},"objectRef":{"resource":"pods","namespace":"d","name":"p","apiVersion":"v1"},"responseStatus":{"code":201},"requestObject":{"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}}}"#,
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"c","stage":"ResponseComplete","requestURI":"/api/v1/nodes","verb":"list","user":{"username":"system:node:n"},"objectRef":{"resource":"nodes","apiVersion":"v1"},"responseStatus":{"code":200}}"#,
        ];
        let mut candidates = Vec::new();
        for json in events {
            let event = event(json);
            index.candidates(&event, "", &mut candidates);
            assert!(candidates.windows(2).all(|w| w[0] < w[1]), "{candidates:?}");
            for (i, query) in parsed.iter().enumerate() {
                if Matcher::new(query).unwrap().matches(&event, "") {
                    assert!(candidates.contains(&i), "{json}: filter {i} left out");
                }
            }
            selected.push(candidates.clone());
        }
        // alice's secret: the secrets filter, the first branch of the sequence, her user.
        assert_eq!(selected[0], vec![0, 2, 3, 5, 7, 9]);
        // bob's exec (a create of pods): by the subresource and by his user once, and the
        // filters of pods created (their other terms are for the matcher to decide).
        assert_eq!(selected[1], vec![1, 3, 4, 5, 6, 8, 9]);
        // erin's pod: the pod view and the pair of verb and resource.
        assert_eq!(selected[2], vec![1, 3, 5, 6, 8]);
        // The list event selects only the two filters without an equality.
        assert_eq!(candidates, vec![3, 5]);
    }

    #[test]
    fn the_superset_matches_exactly_the_events_with_candidates() {
        let filters = [
            "resource:secrets verb:get",
            "verb:(create OR delete) resource:(pods OR services) -user:system:*",
            "verb:update resource:(services OR pods)",
            "code:403",
            "subresource:exec",
            "verb:create pod.privileged:true",
        ];
        let parsed: Vec<_> = filters.iter().map(|f| parse(f).unwrap()).collect();
        let index = FilterIndex::new(parsed.iter().map(|q| q.filter.as_ref()));
        let superset = crate::Query {
            filter: index.superset(),
            pipes: Vec::new(),
        };
        assert!(superset.filter.is_some());
        let superset = Matcher::new(&superset).unwrap();
        let events = [
            ("get", "secrets", "", 200, true),
            ("get", "configmaps", "", 200, false),
            ("get", "configmaps", "", 403, true),
            ("delete", "services", "", 200, true),
            ("update", "pods", "", 200, true),
            ("patch", "pods", "", 200, false),
            ("create", "pods", "exec", 101, true),
            ("create", "deployments", "", 201, true),
            ("create", "nodes", "", 201, false),
        ];
        let mut candidates = Vec::new();
        for (verb, resource, subresource, code, selected) in events {
            let json = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/x","verb":"{verb}","user":{{"username":"u"}},"objectRef":{{"resource":"{resource}","subresource":"{subresource}","name":"n","apiVersion":"v1"}},"responseStatus":{{"code":{code}}}}}"#
            );
            let event = event(&json);
            index.candidates(&event, "", &mut candidates);
            assert_eq!(!candidates.is_empty(), selected, "{json}");
            assert_eq!(superset.matches(&event, ""), selected, "{json}");
        }

        // A filter without an equality makes every event a candidate; no filter, none.
        let unselective = [parse("verb:get").unwrap(), parse("-user:a").unwrap()];
        let index = FilterIndex::new(unselective.iter().map(|q| q.filter.as_ref()));
        assert_eq!(index.superset(), None);
        let none = crate::Query {
            filter: FilterIndex::new([]).superset(),
            pipes: Vec::new(),
        };
        let json = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/x","verb":"get","user":{"username":"u"}}"#;
        assert!(!Matcher::new(&none).unwrap().matches(&event(json), ""));
    }
}

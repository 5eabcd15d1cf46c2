//! Inline tests for a converted rule, made from its condition: a firing event built from the
//! values of the first way the condition can hold, and a quiet event that is the same event
//! with a failed request or another verb (or, when the condition does not look at those,
//! another value of a field it does look at). Every candidate is judged by loading the rule
//! and running its inline tests, so a test is kept only when the engine agrees with it.

use kubetrail_query::{CompareOp, Field, JsonColumn, PodFieldDef, pod_spec_root};
use serde_json::{Map, Value, json};

use super::detection::{FieldRef, Node, Term};
use crate::rule::{RuleSet, SourceFile};

/// How many ways the condition can hold are tried for a firing event.
const MAX_CONJUNCTIONS: usize = 16;

/// The most events an inline test repeats.
const MAX_REPEAT: u64 = 10_000;

/// The verbs tried for a quiet event, in order.
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// A threshold, as the tests need it.
pub(crate) struct Threshold<'a> {
    /// Events (or distinct values) per group.
    pub(crate) count: u64,
    /// The window, µs.
    pub(crate) window: i64,
    /// The field whose distinct values are counted.
    pub(crate) distinct: Option<&'a FieldRef>,
}

/// The tests made: the firing cases and the quiet ones.
pub(crate) struct Tests {
    /// Must fire.
    pub(crate) fire: Vec<Value>,
    /// Must stay quiet.
    pub(crate) quiet: Vec<Value>,
}

/// Makes tests for the rule `write(tests, with_threshold)` writes: the rule's YAML text with
/// those tests, with or without its threshold.
pub(crate) fn synthesize(
    condition: &Node,
    threshold: Option<&Threshold<'_>>,
    write: &dyn Fn(&Tests, bool) -> String,
) -> Result<Tests, String> {
    // A firing event for the condition alone.
    let conjunctions = dnf(condition, true);
    let mut candidates = Vec::new();
    let mut plans = Vec::new();
    let mut first_error = None;
    for conjunction in conjunctions.iter().take(MAX_CONJUNCTIONS) {
        for neutral in [false, true] {
            match build_event(conjunction, neutral) {
                Ok(event) => {
                    candidates.push(event);
                    plans.push(conjunction);
                }
                Err(why) => {
                    first_error.get_or_insert(why);
                }
            }
        }
    }
    if candidates.is_empty() {
        return Err(first_error.unwrap_or_else(|| {
            "no way of satisfying the condition could be written as a test event".into()
        }));
    }
    let results = judge(
        &write(
            &Tests {
                fire: candidates.clone(),
                quiet: Vec::new(),
            },
            false,
        ),
        "fire",
    )?;
    let Some(chosen) = results.iter().position(|passed| *passed) else {
        return Err(
            "no event built from the condition's values makes the rule fire (the condition may never hold)"
                .into(),
        );
    };
    let fire = candidates[chosen].clone();
    let conjunction = plans[chosen];

    // Quiet events: a failed request, another verb, then other values of the fields matched.
    let mut quiet_candidates = Vec::new();
    let code = fire
        .pointer("/responseStatus/code")
        .and_then(Value::as_i64)
        .unwrap_or(if fire["verb"] == "create" { 201 } else { 200 });
    quiet_candidates.push(with(
        &fire,
        &["responseStatus"],
        json!({"code": if code < 400 { 403 } else { 200 }}),
    ));
    let verb = fire["verb"].as_str().unwrap_or("get");
    for other in VERBS.iter().filter(|v| **v != verb) {
        quiet_candidates.push(with(&fire, &["verb"], json!(other)));
    }
    let preferred = quiet_candidates.len();
    for (term, positive) in conjunction {
        if *positive {
            quiet_candidates.extend(mutations(&fire, term));
        }
    }
    let results = judge(
        &write(
            &Tests {
                fire: vec![fire.clone()],
                quiet: quiet_candidates.clone(),
            },
            false,
        ),
        "quiet",
    )?;
    let quiet = results
        .iter()
        .take(preferred)
        .position(|passed| *passed)
        .or_else(|| results.iter().position(|passed| *passed))
        .map(|i| quiet_candidates[i].clone())
        .ok_or("no change of the firing event (a failed request, another verb, other values of the fields the condition reads) keeps the rule quiet")?;

    let tests = match threshold {
        None => Tests {
            fire: vec![fire],
            quiet: vec![quiet],
        },
        Some(threshold) => repeated(&fire, &quiet, conjunction, threshold)?,
    };
    let results = run(&write(&tests, true))?;
    let mut kept = Tests {
        fire: Vec::new(),
        quiet: Vec::new(),
    };
    for (expect, index, passed) in results {
        let (from, to) = if expect == "fire" {
            (&tests.fire, &mut kept.fire)
        } else {
            (&tests.quiet, &mut kept.quiet)
        };
        if passed {
            to.push(from[index].clone());
        } else if expect == "fire" {
            return Err(format!(
                "the firing test made for the rule does not fire: {}",
                from[index]
            ));
        }
    }
    if kept.quiet.is_empty() {
        return Err("no quiet test made for the rule stays quiet".into());
    }
    Ok(kept)
}

/// The tests of a sequence whose steps are `steps` joined by `by`: a firing event made for each
/// step alone (as [`synthesize`] makes one, checked with the rule `write_step(n, tests)` writes
/// for step `n`), given the same join values, in order; quiet cases are the same events with
/// another join value in the last, and the events without the first step's. All are checked
/// with the whole rule, which `write` writes.
pub(crate) fn synthesize_sequence(
    steps: &[Node],
    by: &[FieldRef],
    write_step: &dyn Fn(usize, &Tests) -> String,
    write: &dyn Fn(&Tests) -> String,
) -> Result<Tests, String> {
    let mut events = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let tests = synthesize(step, None, &|tests, _| write_step(n, tests))
            .map_err(|why| format!("step {}: {why}", n + 1))?;
        let fire = tests.fire.into_iter().next();
        events.push(fire.ok_or_else(|| format!("step {}: no firing event", n + 1))?);
    }
    let mut other = events.clone();
    for field in by {
        let Some((path, shape)) = location(&field.field) else {
            return Err(format!(
                "a test cannot give every step the same `{}`",
                field.name
            ));
        };
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let (same, different) = match shape {
            Shape::Text => (json!("sigma-1"), json!("sigma-2")),
            Shape::List => match &field.field {
                Field::Column(def) if def.name == "ip" => {
                    (json!(["198.51.100.1"]), json!(["198.51.100.2"]))
                }
                _ => (json!(["sigma-1"]), json!(["sigma-2"])),
            },
            Shape::Int => {
                return Err(format!(
                    "a test cannot vary the number `{}` between sequences",
                    field.name
                ));
            }
        };
        // The value a step's condition fixed, else one of ours.
        let same = events
            .iter()
            .find_map(|e| get(e, &segments).cloned())
            .unwrap_or(same);
        let different = if same == different {
            json!("sigma-3")
        } else {
            different
        };
        for event in events.iter_mut().chain(other.iter_mut()) {
            set(event, &segments, same.clone());
        }
        if let Some(last) = other.last_mut() {
            set(last, &segments, different);
        }
    }
    let tests = Tests {
        fire: vec![json!({ "sequence": events })],
        quiet: vec![
            json!({ "sequence": other }),
            json!({ "sequence": events[1..] }),
        ],
    };
    let mut kept = Tests {
        fire: Vec::new(),
        quiet: Vec::new(),
    };
    for (expect, index, passed) in run(&write(&tests))? {
        match (expect, passed) {
            ("fire", true) => kept.fire.push(tests.fire[index].clone()),
            ("fire", false) => {
                return Err(format!(
                    "the firing sequence made for the rule does not fire (its steps' conditions may disagree on the join values): {}",
                    tests.fire[index]
                ));
            }
            (_, true) => kept.quiet.push(tests.quiet[index].clone()),
            (_, false) => {}
        }
    }
    if kept.quiet.is_empty() {
        return Err("no quiet sequence made for the rule stays quiet".into());
    }
    Ok(kept)
}

/// The tests of a threshold rule: the firing event repeated as often as the threshold asks
/// (with distinct values of the counted field for a distinct count), and quiet repetitions:
/// one fewer, one value repeated, and the quiet event repeated.
fn repeated(
    fire: &Value,
    quiet: &Value,
    conjunction: &[(Term, bool)],
    threshold: &Threshold<'_>,
) -> Result<Tests, String> {
    let count = threshold.count;
    if count > MAX_REPEAT {
        return Err(format!(
            "the threshold counts {count} events, more than an inline test repeats ({MAX_REPEAT})"
        ));
    }
    let every = (threshold.window / count as i64).min(1_000_000);
    if every <= 0 {
        return Err("the window is too short for the events it must count".into());
    }
    let every = if every == 1_000_000 {
        "1s".to_owned()
    } else {
        format!("{every}us")
    };
    let case =
        |event: &Value, repeat: u64| json!({"repeat": repeat, "every": every, "event": event});
    let (fire_event, quiet_event) = match threshold.distinct {
        None => (fire.clone(), quiet.clone()),
        Some(field) => (
            numbered(fire, field, conjunction)?,
            numbered(quiet, field, conjunction)?,
        ),
    };
    let mut tests = Tests {
        fire: vec![case(&fire_event, count)],
        quiet: Vec::new(),
    };
    if count > 1 {
        tests.quiet.push(case(&fire_event, count - 1));
        if threshold.distinct.is_some() {
            tests.quiet.push(case(fire, count));
        }
    }
    tests.quiet.push(case(&quiet_event, count));
    Ok(tests)
}

/// `event` with a value of `field` that differs in each repetition (`{i}`).
fn numbered(
    event: &Value,
    field: &FieldRef,
    conjunction: &[(Term, bool)],
) -> Result<Value, String> {
    let Some((path, shape)) = location(&field.field) else {
        return Err(format!(
            "a test cannot vary `{}` between events",
            field.name
        ));
    };
    let mut value = match &field.field {
        Field::Column(def) if def.name == "ip" => "198.51.100.{i}".to_owned(),
        _ => "sigma-{i}".to_owned(),
    };
    for (term, positive) in conjunction {
        if let (Term::Match { field: f, glob }, true) = (term, positive)
            && f.field == field.field
        {
            value = glob.numbered_witness().ok_or_else(|| {
                format!(
                    "the condition fixes `{}` to one value, so its distinct values can never reach the threshold",
                    field.name
                )
            })?;
        }
    }
    let value = match shape {
        Shape::Text => json!(value),
        Shape::List => json!([value]),
        Shape::Int => {
            return Err(format!(
                "a test cannot vary the number `{}` between events",
                field.name
            ));
        }
    };
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    Ok(with(event, &segments, value))
}

/// Runs the inline tests of the rule in `yaml`: (expect, index, passed) for each case.
fn run(yaml: &str) -> Result<Vec<(&'static str, usize, bool)>, String> {
    let set = RuleSet::load(
        false,
        &[SourceFile {
            name: "converted".into(),
            text: yaml.to_owned(),
        }],
    );
    if let Some(problem) = set.problems.first() {
        return Err(problem.message.clone());
    }
    let Some(rule) = set.rules.first() else {
        return Err("the converted rule did not load".into());
    };
    Ok(crate::run_inline_tests(rule, &set.defaults)
        .into_iter()
        .map(|r| (r.expect, r.index, r.failure.is_none()))
        .collect())
}

/// Whether each case of one kind passed, in order.
fn judge(yaml: &str, kind: &str) -> Result<Vec<bool>, String> {
    Ok(run(yaml)?
        .into_iter()
        .filter(|(expect, _, _)| *expect == kind)
        .map(|(_, _, passed)| passed)
        .collect())
}

/// The ways `node` holds (when `positive`) or fails: conjunctions of terms, each term with
/// whether it must hold. Only the first few are made.
fn dnf(node: &Node, positive: bool) -> Vec<Vec<(Term, bool)>> {
    const LIMIT: usize = 64;
    match (node, positive) {
        (Node::Term(term), _) => vec![vec![(term.clone(), positive)]],
        (Node::Not(inner), _) => dnf(inner, !positive),
        (Node::And(parts), true) | (Node::Or(parts), false) => {
            let mut out: Vec<Vec<(Term, bool)>> = vec![Vec::new()];
            for part in parts {
                let ways = dnf(part, positive);
                let mut product = Vec::new();
                'outer: for left in &out {
                    for right in &ways {
                        let mut joined = left.clone();
                        joined.extend(right.iter().cloned());
                        product.push(joined);
                        if product.len() >= LIMIT {
                            break 'outer;
                        }
                    }
                }
                out = product;
            }
            out
        }
        (Node::Or(parts), true) | (Node::And(parts), false) => parts
            .iter()
            .flat_map(|p| dnf(p, positive))
            .take(LIMIT)
            .collect(),
    }
}

/// The shape of a value in an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    List,
    Int,
}

/// Where a field's value lies in an audit event.
fn location(field: &Field) -> Option<(Vec<String>, Shape)> {
    let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match field {
        Field::Column(def) => {
            let (p, shape): (&[&str], Shape) = match def.name {
                "verb" => (&["verb"], Shape::Text),
                "user" => (&["user", "username"], Shape::Text),
                "user_uid" => (&["user", "uid"], Shape::Text),
                "group" => (&["user", "groups"], Shape::List),
                "as" => (&["impersonatedUser", "username"], Shape::Text),
                "ip" => (&["sourceIPs"], Shape::List),
                "ua" => (&["userAgent"], Shape::Text),
                "apigroup" => (&["objectRef", "apiGroup"], Shape::Text),
                "apiversion" => (&["objectRef", "apiVersion"], Shape::Text),
                "resource" => (&["objectRef", "resource"], Shape::Text),
                "subresource" => (&["objectRef", "subresource"], Shape::Text),
                "ns" => (&["objectRef", "namespace"], Shape::Text),
                "name" => (&["objectRef", "name"], Shape::Text),
                "object_uid" => (&["objectRef", "uid"], Shape::Text),
                "uri" => (&["requestURI"], Shape::Text),
                "code" => (&["responseStatus", "code"], Shape::Int),
                "status_reason" => (&["responseStatus", "reason"], Shape::Text),
                "message" => (&["responseStatus", "message"], Shape::Text),
                "id" => (&["auditID"], Shape::Text),
                "stage" => (&["stage"], Shape::Text),
                "level" => (&["level"], Shape::Text),
                _ => return None,
            };
            Some((path(p), shape))
        }
        Field::Json { column, path: p } if !p.is_empty() => {
            let mut out = vec![column.prefix().to_owned()];
            out.extend(p.iter().cloned());
            Some((out, Shape::Text))
        }
        _ => None,
    }
}

/// The comparisons a number must satisfy.
type Bounds = Vec<(CompareOp, i64)>;

/// A value of a term's field that the term accepts.
enum Want {
    Text(String),
    Number,
    Exists,
}

/// The overlay of a test event on which the positive terms of `conjunction` hold; with
/// `neutral`, fields that only negative terms read get a value no pattern expects.
fn build_event(conjunction: &[(Term, bool)], neutral: bool) -> Result<Value, String> {
    let mut event = json!({});
    let mut texts: Vec<(Vec<String>, Shape, Vec<String>)> = Vec::new();
    let mut numbers: Vec<(Vec<String>, Bounds)> = Vec::new();
    let mut pods: Vec<(&'static PodFieldDef, String)> = Vec::new();
    let mut keyword = 0;
    for (term, _) in conjunction.iter().filter(|(_, p)| *p) {
        let (field, want) = match term {
            Term::Text(text) => {
                keyword += 1;
                set(
                    &mut event,
                    &[
                        "annotations",
                        &format!("sigma.kubetrail.io/keyword-{keyword}"),
                    ],
                    json!(text),
                );
                continue;
            }
            Term::Match { field, glob } => (field, Want::Text(glob.witness())),
            Term::Exists(field) => (field, Want::Exists),
            Term::Compare { field, .. } => (field, Want::Number),
        };
        if let Field::Pod(def) = &field.field {
            let value = match want {
                Want::Text(t) => t,
                _ => "sigma".to_owned(),
            };
            pods.push((def, value));
            continue;
        }
        let Some((path, shape)) = location(&field.field) else {
            return Err(format!("a test event cannot set `{}`", field.name));
        };
        match (shape, want) {
            (Shape::Int, Want::Number) => {
                let Term::Compare { op, value, .. } = term else {
                    unreachable!("numbers come from comparisons")
                };
                match numbers.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, bounds)) => bounds.push((*op, *value)),
                    None => numbers.push((path, vec![(*op, *value)])),
                }
            }
            (Shape::Int, _) => {}
            (shape, want) => {
                let text = match want {
                    Want::Text(t) => t,
                    _ => "sigma".to_owned(),
                };
                match texts.iter_mut().find(|(p, _, _)| *p == path) {
                    Some((_, _, values)) => values.push(text),
                    None => texts.push((path, shape, vec![text])),
                }
            }
        }
    }
    for (path, shape, values) in &texts {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let value = match shape {
            Shape::List => json!(values),
            _ => json_scalar(path, &combine(values)),
        };
        set(&mut event, &segments, value);
    }
    for (path, bounds) in &numbers {
        let value = bounds
            .iter()
            .map(|(op, n)| adjust(*op, *n))
            .find(|candidate| bounds.iter().all(|(op, n)| holds(*candidate, *op, *n)))
            .ok_or_else(|| {
                format!(
                    "no number satisfies every comparison of `{}`",
                    path.join(".")
                )
            })?;
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        set(&mut event, &segments, json!(value));
    }
    if !pods.is_empty() {
        place_pod_values(&mut event, &pods)?;
    }
    if neutral {
        for (term, _) in conjunction.iter().filter(|(_, p)| !*p) {
            let field = match term {
                Term::Match { field, .. } | Term::Exists(field) => field,
                Term::Compare { .. } | Term::Text(_) => continue,
            };
            let Some((path, shape)) = location(&field.field) else {
                continue;
            };
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if get(&event, &segments).is_some() {
                continue;
            }
            let value = match (term, shape) {
                (Term::Exists(_), _) => Value::Null,
                (_, Shape::List) => json!(["sigma-other"]),
                (_, Shape::Int) => continue,
                (_, Shape::Text) => json!("sigma-other"),
            };
            set(&mut event, &segments, value);
        }
    }
    Ok(event)
}

/// One value matching several patterns of one field: the longest exact one, else the texts
/// of the patterns one after the other (what `contains|all` asks for).
fn combine(values: &[String]) -> String {
    if values.len() == 1 {
        return values[0].clone();
    }
    values.concat()
}

/// A JSON value for a body path: `true`, `false` and numbers as JSON, the rest as text.
fn json_scalar(path: &[String], text: &str) -> Value {
    let in_body = path.first().is_some_and(|p| {
        p == JsonColumn::RequestObject.prefix() || p == JsonColumn::ResponseObject.prefix()
    });
    if in_body {
        if let Ok(b) = text.parse::<bool>() {
            return json!(b);
        }
        if let Ok(n) = text.parse::<i64>() {
            return json!(n);
        }
    }
    json!(text)
}

/// The number a comparison is satisfied by at its bound.
fn adjust(op: CompareOp, n: i64) -> i64 {
    match op {
        CompareOp::Gt => n + 1,
        CompareOp::Lt => n - 1,
        _ => n,
    }
}

fn holds(value: i64, op: CompareOp, n: i64) -> bool {
    match op {
        CompareOp::Eq => value == n,
        CompareOp::Ne => value != n,
        CompareOp::Lt => value < n,
        CompareOp::Le => value <= n,
        CompareOp::Gt => value > n,
        CompareOp::Ge => value >= n,
    }
}

/// Writes pod-view values into a request body of the event's resource (a Pod when the
/// condition does not name one), containers and volumes as lists of one element.
fn place_pod_values(
    event: &mut Value,
    pods: &[(&'static PodFieldDef, String)],
) -> Result<(), String> {
    let resource = match get(event, &["objectRef", "resource"]).and_then(Value::as_str) {
        Some(resource) => resource.to_owned(),
        None => {
            set(event, &["objectRef", "resource"], json!("pods"));
            "pods".to_owned()
        }
    };
    let subresource = get(event, &["objectRef", "subresource"])
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(root) = pod_spec_root(&resource, &subresource) else {
        return Err(format!(
            "`pod.{}` reads pod specs, and requests on `{resource}` carry none",
            pods[0].0.name
        ));
    };
    let body = event
        .as_object_mut()
        .ok_or("not an object")?
        .entry("requestObject")
        .or_insert_with(|| json!({}));
    if resource == "pods" && body.get("kind").is_none() {
        body["kind"] = json!("Pod");
    }
    for (def, value) in pods {
        let mut path: Vec<&str> = root.split('.').collect();
        let below: Vec<&str> = match (def.pod_paths.first(), def.container_paths.first()) {
            (Some(p), _) => p.split('.').collect(),
            (None, Some(p)) => {
                path.push("containers");
                p.split('.').collect()
            }
            (None, None) => return Err(format!("`pod.{}` has no path", def.name)),
        };
        path.extend(below);
        let leaf = path.last().copied().unwrap_or_default();
        let value = if matches!(leaf, "add" | "command" | "args") {
            json!([value])
        } else {
            json_scalar(&["requestObject".to_owned()], value)
        };
        set_in_spec(body, &path, value);
    }
    Ok(())
}

/// Sets `path` below `body`, where containers and volumes are lists of one object.
fn set_in_spec(body: &mut Value, path: &[&str], value: Value) {
    let mut here = body;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if !here.is_object() {
            *here = json!({});
        }
        let map = here.as_object_mut().expect("an object");
        if last {
            map.insert((*segment).to_owned(), value);
            return;
        }
        let listed = matches!(
            *segment,
            "containers" | "initContainers" | "ephemeralContainers" | "volumes"
        );
        let next = map.entry((*segment).to_owned()).or_insert_with(|| {
            if listed {
                json!([{"name": "sigma"}])
            } else {
                json!({})
            }
        });
        here = if listed {
            if next.as_array().is_none_or(|items| items.is_empty()) {
                *next = json!([{"name": "sigma"}]);
            }
            &mut next.as_array_mut().expect("an array")[0]
        } else {
            next
        };
    }
}

/// The firing event changed so a positive term on one field no longer holds.
fn mutations(fire: &Value, term: &Term) -> Vec<Value> {
    let field = match term {
        Term::Match { field, .. } | Term::Exists(field) | Term::Compare { field, .. } => field,
        Term::Text(_) => {
            return vec![with(fire, &["annotations"], Value::Null)];
        }
    };
    if let Field::Pod(_) = field.field {
        return vec![with(fire, &["requestObject"], Value::Null)];
    }
    let Some((path, shape)) = location(&field.field) else {
        return Vec::new();
    };
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match shape {
        Shape::Text => vec![
            with(fire, &segments, json!("sigma-quiet")),
            with(fire, &segments, Value::Null),
        ],
        Shape::List => vec![
            with(fire, &segments, json!(["sigma-quiet"])),
            with(fire, &segments, Value::Null),
        ],
        // Removing a status would only let the test builder fill in a success again.
        Shape::Int => {
            let current = get(fire, &segments).and_then(Value::as_i64).unwrap_or(200);
            vec![with(
                fire,
                &segments,
                json!(if current < 400 { 500 } else { 200 }),
            )]
        }
    }
}

/// `event` with `path` set to `value` (`null` removes it when the test is read).
fn with(event: &Value, path: &[&str], value: Value) -> Value {
    let mut out = event.clone();
    set(&mut out, path, value);
    out
}

fn set(event: &mut Value, path: &[&str], value: Value) {
    let mut here = event;
    for (i, segment) in path.iter().enumerate() {
        if !here.is_object() {
            *here = Value::Object(Map::new());
        }
        let map = here.as_object_mut().expect("an object");
        if i + 1 == path.len() {
            map.insert((*segment).to_owned(), value);
            return;
        }
        here = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn get<'v>(event: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(event, |here, segment| here.get(*segment))
        .filter(|v| !v.is_null())
}

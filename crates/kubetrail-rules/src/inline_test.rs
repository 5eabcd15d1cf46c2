//! A rule's inline tests: each case's events are laid over a default event, decoded by the
//! same decoder as real input, and fed to an engine holding that rule alone (with the default
//! exemptions), which must report (`fire`) or stay quiet (`quiet`). A `sequence:` case is
//! judged on its last event alone; its `learn:` events are history given to
//! [`Engine::learn`] first. A first-seen rule's learning period is over when a case starts
//! (its history is declared to start one learning period earlier), so a case tests what the
//! rule reports after learning what `learn:` holds.
//!
//! The default event is a successful request by a human with a kubectl user agent from a
//! public address, at level `RequestResponse`, stage `ResponseComplete`. A case gives only what
//! matters to it; objects merge key by key, anything else replaces, `null` removes a key. When
//! a case sets `objectRef` but no `requestURI`, the URI is built from the object, and when it
//! sets a verb but no status, `create` answers 201 and the rest 200.

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_query::parse_duration_micros;
use serde_json::{Map, Value, json};

use crate::engine::{Engine, Finding};
use crate::exemption::Exemption;
use crate::rule::Rule;
use crate::spec::{SequenceCase, TestCase};

/// The time of a case's first event, µs (2026-07-23T14:47:51Z).
const START: i64 = 1_784_818_071_000_000;

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `fire` or `quiet`.
    pub expect: &'static str,
    /// The case's number among its kind, from 0.
    pub index: usize,
    /// The findings the rule reported.
    pub findings: Vec<Finding>,
    /// None when it passed, else why not.
    pub failure: Option<String>,
}

/// Runs every inline test of `rule`.
pub fn run(rule: &Rule, defaults: &[Exemption]) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for (expect, cases) in [("fire", &rule.tests.fire), ("quiet", &rule.tests.quiet)] {
        for (index, case) in cases.iter().enumerate() {
            let mut engine = Engine::with_rules(vec![rule.clone()], defaults.to_vec());
            if let Some(first_seen) = &rule.first_seen {
                engine.history_starts_at(START - first_seen.learning);
            }
            let outcome = events(case, &rule.id, index).and_then(|plan| {
                let mut findings = Vec::new();
                for event in &plan.events {
                    if event.learn {
                        feed(&event.text, |e| engine.learn(e, "", event.time))?;
                    } else {
                        // A sequence case judges its last event only.
                        if plan.last_only {
                            findings.clear();
                        }
                        feed(&event.text, |e| {
                            engine.evaluate(e, "", event.time, &mut findings)
                        })?;
                    }
                }
                Ok(findings)
            });
            let (findings, failure) = match outcome {
                Err(message) => (Vec::new(), Some(message)),
                Ok(findings) => {
                    let failure = match (expect, findings.is_empty()) {
                        ("fire", true) => Some("the rule did not report it".to_owned()),
                        ("quiet", false) => {
                            Some(format!("the rule reported it: {}", findings[0].explanation))
                        }
                        _ => None,
                    };
                    (findings, failure)
                }
            };
            results.push(CaseResult {
                expect,
                index,
                findings,
                failure,
            });
        }
    }
    results
}

/// Decodes one test event and hands it to `handle`.
fn feed(
    text: &str,
    mut handle: impl FnMut(&kubetrail_event::AuditEvent<'_>),
) -> Result<(), String> {
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut failure = None;
    let mut decoded = 0;
    let mut out = |d: Decoded<'_>| match d {
        Decoded::Event(event, _) => {
            decoded += 1;
            handle(&event);
        }
        Decoded::Skipped(skip) => {
            failure = Some(format!(
                "the test event is not an audit event: {}",
                skip.message
            ));
        }
        _ => {}
    };
    decoder.feed(text.as_bytes(), &mut out);
    decoder.feed(b"\n", &mut out);
    decoder.finish(&mut out);
    match failure {
        Some(message) => Err(message),
        None if decoded == 0 => Err("the test event decoded to nothing".to_owned()),
        None => Ok(()),
    }
}

/// One event of a case.
struct PlannedEvent {
    time: i64,
    text: String,
    /// Given to [`Engine::learn`] rather than evaluated.
    learn: bool,
}

/// The events of a case, in order.
struct Plan {
    events: Vec<PlannedEvent>,
    /// Whether only the last evaluated event's findings are judged.
    last_only: bool,
}

/// The most events (and waits) a sequence case may hold.
const MAX_SEQUENCE_EVENTS: usize = 1_000;

/// The events of a case.
fn events(case: &TestCase, rule: &str, index: usize) -> Result<Plan, String> {
    let (repeat, every, overlay) = match case {
        TestCase::Event(overlay) => (1, 1_000_000, overlay),
        TestCase::Repeated {
            repeat,
            every,
            event,
        } => {
            let every = match every {
                None => 1_000_000,
                Some(text) => parse_duration_micros(text)
                    .ok_or_else(|| format!("every: {text:?} is not a duration"))?,
            };
            (*repeat, every, event)
        }
        TestCase::Sequence(sequence) => return sequence_events(sequence, rule, index),
    };
    if !(1..=10_000).contains(&repeat) {
        return Err(format!("repeat: {repeat} is not between 1 and 10000"));
    }
    check_overlay(overlay)?;
    let events = (0..repeat)
        .map(|i| {
            let time = START + i as i64 * every;
            PlannedEvent {
                time,
                text: event_text(overlay, rule, index, i, time),
                learn: false,
            }
        })
        .collect();
    Ok(Plan {
        events,
        last_only: false,
    })
}

/// The events of a `sequence:` case: `learn:` then `sequence:`, 1s apart on one clock that
/// `{wait: D}` moves on.
fn sequence_events(case: &SequenceCase, rule: &str, index: usize) -> Result<Plan, String> {
    if case.learn.len() + case.sequence.len() > MAX_SEQUENCE_EVENTS {
        return Err(format!(
            "a sequence case holds at most {MAX_SEQUENCE_EVENTS} events and waits"
        ));
    }
    let mut clock = START;
    let mut number = 0;
    let mut events = Vec::new();
    for (list, elements) in [("learn", &case.learn), ("sequence", &case.sequence)] {
        for (n, element) in elements.iter().enumerate() {
            let is_learned = list == "learn";
            if let Some(wait) = element.get("wait") {
                let text = wait.as_str().unwrap_or_default();
                let micros = parse_duration_micros(text)
                    .filter(|w| *w >= 0 && element.as_object().is_some_and(|o| o.len() == 1))
                    .ok_or_else(|| {
                        format!("{list}[{n}]: `wait:` takes a duration alone (`wait: 6m`)")
                    })?;
                clock = clock.saturating_add(micros);
                continue;
            }
            check_overlay(element).map_err(|e| format!("{list}[{n}]: {e}"))?;
            events.push(PlannedEvent {
                time: clock,
                text: event_text(element, rule, index, number, clock),
                learn: is_learned,
            });
            number += 1;
            clock += 1_000_000;
        }
    }
    if !events.iter().any(|e| !e.learn) {
        return Err("`sequence:` needs at least one event".to_owned());
    }
    Ok(Plan {
        events,
        last_only: true,
    })
}

fn check_overlay(overlay: &Value) -> Result<(), String> {
    let Some(map) = overlay.as_object() else {
        return Err("a test case is a mapping of event keys".to_owned());
    };
    for key in ["sequence", "learn", "repeat", "wait"] {
        if map.contains_key(key) {
            return Err(format!(
                "`{key}:` is not an event key: a case is an event, `{{repeat, every, event}}` or `{{learn, sequence}}` (check for a misspelt key beside it)"
            ));
        }
    }
    Ok(())
}

/// The JSON text of a test event: `overlay` (with `{i}` replaced) over the default event.
fn event_text(overlay: &Value, rule: &str, case: usize, i: u64, time: i64) -> String {
    let mut event = default_event(rule, case, i, time);
    let overlay = substitute(overlay, i);
    let sets_status = overlay.get("responseStatus").is_some();
    let sets_uri = overlay.get("requestURI").is_some();
    merge(&mut event, &overlay);
    if !sets_status && event["verb"] == "create" {
        event["responseStatus"]["code"] = json!(201);
    }
    if !sets_uri {
        event["requestURI"] = json!(uri_of(&event));
    }
    event.to_string()
}

fn default_event(rule: &str, case: usize, repetition: u64, time: i64) -> Value {
    let at = kubetrail_event::Timestamp::from_micros(time).to_string();
    let done = kubetrail_event::Timestamp::from_micros(time + 5_000).to_string();
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": format!("test-{rule}-{case}-{repetition}"),
        "stage": "ResponseComplete",
        "verb": "get",
        "user": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.36.0 (linux/amd64) kubernetes/5f4b3c2",
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": at,
        "stageTimestamp": done,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    })
}

/// The request URI of an event's object, as the API server writes it.
fn uri_of(event: &Value) -> String {
    let Some(object) = event.get("objectRef").and_then(Value::as_object) else {
        return "/api".to_owned();
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("");
    let mut uri = match text("apiGroup") {
        "" => "/api/v1".to_owned(),
        group => format!(
            "/apis/{group}/{}",
            match text("apiVersion") {
                "" => "v1",
                v => v,
            }
        ),
    };
    if !text("namespace").is_empty() {
        uri.push_str(&format!("/namespaces/{}", text("namespace")));
    }
    uri.push_str(&format!("/{}", text("resource")));
    if !text("name").is_empty() {
        uri.push_str(&format!("/{}", text("name")));
    }
    if !text("subresource").is_empty() {
        uri.push_str(&format!("/{}", text("subresource")));
    }
    uri
}

/// Lays `overlay` over `base`: objects merge key by key, `null` removes, the rest replaces.
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// `overlay` with `{i}` in every string replaced by `i`.
fn substitute(overlay: &Value, i: u64) -> Value {
    match overlay {
        Value::String(s) if s.contains("{i}") => Value::String(s.replace("{i}", &i.to_string())),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, i)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, i)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

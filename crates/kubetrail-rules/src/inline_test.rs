//! A rule's inline tests: each case's events are laid over a default event, decoded by the
//! same decoder as real input, and fed to an engine holding that rule alone (with the default
//! exemptions), which must report (`fire`) or stay quiet (`quiet`).
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
use crate::spec::TestCase;

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
            let outcome = events(case, &rule.id, index).and_then(|events| {
                let mut findings = Vec::new();
                for (time, text) in &events {
                    feed(&mut engine, text, *time, &mut findings)?;
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

fn feed(
    engine: &mut Engine,
    text: &str,
    time: i64,
    findings: &mut Vec<Finding>,
) -> Result<(), String> {
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut failure = None;
    let mut decoded = 0;
    let mut out = |d: Decoded<'_>| match d {
        Decoded::Event(event, _) => {
            decoded += 1;
            engine.evaluate(&event, "", time, findings);
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

/// The events of a case: (time, JSON text).
fn events(case: &TestCase, rule: &str, index: usize) -> Result<Vec<(i64, String)>, String> {
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
    };
    if !(1..=10_000).contains(&repeat) {
        return Err(format!("repeat: {repeat} is not between 1 and 10000"));
    }
    if !overlay.is_object() {
        return Err("a test case is a mapping of event keys".to_owned());
    }
    (0..repeat)
        .map(|i| {
            let time = START + i as i64 * every;
            let mut event = default_event(rule, index, i, time);
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
            Ok((time, event.to_string()))
        })
        .collect()
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

//! Conformance with kube-apiserver's policy checker, and behaviour on real events.

use std::borrow::Cow;
use std::path::PathBuf;

use kubetrail_policy::{Evaluator, RequestAttributes, User, load};
use serde_json::Value;

mod apply;
mod lint;
mod simulate;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

fn text(v: &Value) -> Cow<'_, str> {
    Cow::Borrowed(v.as_str().unwrap_or(""))
}

/// The vectors' `request` object as attributes.
fn attributes(request: &Value) -> RequestAttributes<'_> {
    RequestAttributes {
        user: request["user"].as_object().map(|u| User {
            name: Cow::Borrowed(u["name"].as_str().unwrap()),
            groups: u["groups"]
                .as_array()
                .map(|g| g.iter().map(text).collect())
                .unwrap_or_default(),
        }),
        verb: text(&request["verb"]),
        namespace: text(&request["namespace"]),
        api_group: text(&request["apiGroup"]),
        api_version: text(&request["apiVersion"]),
        resource: text(&request["resource"]),
        subresource: text(&request["subresource"]),
        name: text(&request["name"]),
        resource_request: request["resourceRequest"].as_bool().unwrap(),
        path: text(&request["path"]),
    }
}

#[test]
fn every_upstream_policy_vector_passes() {
    let vectors: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(data("policy-vectors/vectors.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vectors.len(), 84);
    let mut failures = Vec::new();
    for case in &vectors {
        let name = case["name"].as_str().unwrap();
        // Policies are JSON, which is YAML: load them through the same path as files.
        let policy = match load(&case["policy"].to_string()) {
            Ok(loaded) => loaded.policy,
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        let got = Evaluator::new(&policy).evaluate(&attributes(&case["request"]));
        let expect = &case["expect"];
        for asserted in case["asserted"].as_array().unwrap() {
            let ok = match asserted.as_str().unwrap() {
                "level" => got.level.as_str() == expect["level"].as_str().unwrap(),
                "omitStages" => {
                    let mut want: Vec<&str> = expect["omitStages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap())
                        .collect();
                    want.sort_unstable();
                    want.dedup();
                    let mut have: Vec<&str> = got.omit_stages.iter().map(|s| s.as_str()).collect();
                    have.sort_unstable();
                    want == have
                }
                "omitManagedFields" => {
                    Some(got.omit_managed_fields) == expect["omitManagedFields"].as_bool()
                }
                other => panic!("unknown assertion {other}"),
            };
            if !ok {
                failures.push(format!("{name}: {asserted} expected {expect}, got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! `kubetrail report`: every report checked against the ground truth of the generator's
//! injected incidents and against the real API server's log.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{TempDir, data, run, stderr, stdout};

fn import(store: &Path, file: &str) {
    super::import(store, &[], &[file]);
}

fn report(store: &Path, args: &[&str]) -> Value {
    let mut all = vec!["report", "--data", store.to_str().unwrap(), "-o", "json"];
    all.extend(args);
    let output = run(&all, b"");
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn failure(store: &Path, args: &[&str]) -> String {
    let mut all = vec!["report", "--data", store.to_str().unwrap()];
    all.extend(args);
    let output = run(&all, b"");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{args:?}: {}",
        stdout(&output)
    );
    assert!(output.stdout.is_empty());
    stderr(&output)
}

fn rows<'a>(report: &'a Value, section: &str) -> &'a Vec<Value> {
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == section)
        .unwrap_or_else(|| panic!("no section {section} in {report}"))["rows"]
        .as_array()
        .unwrap()
}

fn truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
        .unwrap()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn reports_find_every_injected_incident() {
    let dir = TempDir::new("report-truth");
    let store = dir.path().join("data");
    import(&store, "generated/all.log");
    let truth = truth();
    let incidents = &truth["incidents"];

    // auth-failures: the 403 spike's user, IP and count; the 401 spike's count and IPs.
    let auth = report(&store, &["auth-failures"]);
    let spike = &incidents["forbidden-spike"];
    let user = rows(&auth, "by-user")
        .iter()
        .find(|r| r["user"] == spike["user"])
        .unwrap();
    assert_eq!(user["requests"], spike["count"]);
    assert_eq!(user["code"], 403);
    assert_eq!(
        strings(&user["source_ips"]),
        [spike["sourceIP"].as_str().unwrap().to_owned()].into()
    );
    let unauthorized = &incidents["unauthorized-spike"];
    let by_code = rows(&auth, "by-code");
    let code_401 = by_code.iter().find(|r| r["code"] == 401).unwrap();
    assert_eq!(code_401["requests"], unauthorized["count"]);
    let ips_401: BTreeSet<String> = rows(&auth, "by-source-ip")
        .iter()
        .filter(|r| r["unauthorized_401"].as_i64().unwrap() > 0)
        .map(|r| r["source_ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ips_401, strings(&unauthorized["sourceIPs"]));
    let changed: BTreeSet<&str> = rows(&auth, "changed")
        .iter()
        .map(|r| r["who"].as_str().unwrap())
        .collect();
    assert!(
        changed.contains(spike["user"].as_str().unwrap()),
        "{changed:?}"
    );
    assert!(!auth["findings"].as_array().unwrap().is_empty());

    // anonymous: count, allowed, namespace, resource and source IPs.
    let anonymous = report(&store, &["anonymous"]);
    let secrets = &incidents["anonymous-secrets"];
    let summary = &rows(&anonymous, "summary")[0];
    assert_eq!(summary["requests"], secrets["count"]);
    assert_eq!(summary["allowed"], secrets["allowed"]);
    let by_ip: BTreeSet<String> = rows(&anonymous, "by-source-ip")
        .iter()
        .map(|r| r["source_ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(by_ip, strings(&secrets["sourceIPs"]));
    assert_eq!(
        rows(&anonymous, "by-namespace")[0]["namespace"],
        secrets["namespace"]
    );
    assert_eq!(
        rows(&anonymous, "by-resource")[0]["resource"],
        "core/secrets"
    );
    assert_eq!(
        rows(&anonymous, "allowed-resources").len() as u64,
        secrets["allowed"].as_u64().unwrap()
    );

    // latency: the slow lists are the slowest requests, and their sender tops the users.
    let latency = report(&store, &["latency"]);
    let slow = &incidents["slow-list"];
    let slowest = rows(&latency, "slowest");
    assert!(
        slowest
            .iter()
            .all(|r| r["user"] == slow["user"] && r["verb"] == "list")
    );
    let min_ms = slow["min_latency_s"].as_f64().unwrap() * 1000.0;
    assert!(
        slowest
            .iter()
            .all(|r| r["latency_ms"].as_f64().unwrap() >= min_ms)
    );
    assert_eq!(rows(&latency, "by-user")[0]["user"], slow["user"]);
    let lists = &rows(&latency, "cluster-wide-lists")[0];
    assert_eq!(lists["user"], slow["user"]);
    assert_eq!(lists["requests"], slow["count"]);

    // changes in the freeze window: the deletes of the person who broke it.
    let freeze = &incidents["freeze-mutation"];
    let window = freeze["window"].as_array().unwrap();
    let changes = report(
        &store,
        &[
            "changes",
            "--from",
            window[0].as_str().unwrap(),
            "--to",
            window[1].as_str().unwrap(),
        ],
    );
    let deletes: Vec<&Value> = rows(&changes, "humans")
        .iter()
        .filter(|r| r["user"] == freeze["user"] && r["verb"] == freeze["verb"])
        .collect();
    assert_eq!(deletes.len() as u64, freeze["count"].as_u64().unwrap());
    assert!(
        deletes
            .iter()
            .all(|r| r["namespace"] == freeze["namespace"])
    );
    let everyone = report(&store, &["changes"]);
    for incident in ["privileged-pod", "cluster-admin-binding"] {
        let user = &incidents[incident]["user"];
        assert!(
            rows(&everyone, "humans").iter().any(|r| r["user"] == *user),
            "{incident}"
        );
    }

    // object: why the pod was evicted, and who deleted it.
    let eviction = &incidents["pod-eviction"];
    let pod = format!(
        "pods/{}/{}",
        eviction["namespace"].as_str().unwrap(),
        eviction["pod"].as_str().unwrap()
    );
    let object = report(&store, &["object", &pod]);
    let requests = rows(&object, "requests");
    assert_eq!(requests[0]["subresource"], "eviction");
    assert_eq!(requests[0]["user"], eviction["evicted_by"]);
    assert_eq!(requests[1]["verb"], "delete");
    assert_eq!(requests[1]["user"], eviction["deleted_by"]);
    let findings = object["findings"].to_string();
    assert!(findings.contains(&format!(
        "evicted by {}",
        eviction["evicted_by"].as_str().unwrap()
    )));

    // object: an exec still open when the log ends (audited only at ResponseStarted) counts.
    let exec = &incidents["exec"];
    let pod = format!(
        "pods/{}/{}",
        exec["namespace"].as_str().unwrap(),
        exec["pod"].as_str().unwrap()
    );
    let object = report(&store, &["object", &pod]);
    let execs: Vec<&Value> = rows(&object, "requests")
        .iter()
        .filter(|r| r["subresource"] == "exec")
        .collect();
    assert_eq!(execs.len() as u64, exec["count"].as_u64().unwrap());
    assert_eq!(execs[0]["user"], exec["user"]);

    // rollout: the incident's chain, linked from the deployment to its new pods.
    let rollout = &incidents["deployment-rollout"];
    let deployment = format!(
        "deployments/{}/{}",
        rollout["namespace"].as_str().unwrap(),
        rollout["deployment"].as_str().unwrap()
    );
    let chain_report = report(&store, &["rollout", &deployment]);
    let chain = rows(&chain_report, "chain");
    let users: BTreeSet<String> = strings(&rollout["users"]);
    let by_incident_users = chain
        .iter()
        .filter(|r| users.contains(r["user"].as_str().unwrap()))
        .count();
    assert_eq!(by_incident_users as u64, rollout["count"].as_u64().unwrap());
    let chain_users: BTreeSet<String> = chain
        .iter()
        .map(|r| r["user"].as_str().unwrap().to_owned())
        .collect();
    assert!(users.is_subset(&chain_users), "{chain_users:?}");
    assert!(
        chain
            .iter()
            .any(|r| r["step"] == "ReplicaSet created" && r["name"] == rollout["replicaset"])
    );
    let new_pods = chain
        .iter()
        .filter(|r| r["step"] == "pod created")
        .collect::<Vec<_>>();
    assert!(!new_pods.is_empty());
    assert!(new_pods.iter().all(|r| r["owner"] == rollout["replicaset"]));

    // top-talkers: the slow lister costs the API server the most time.
    let talkers = report(&store, &["top-talkers"]);
    assert_eq!(rows(&talkers, "users-by-time")[0]["user"], slow["user"]);
    let top = &rows(&talkers, "users-by-requests")[0];
    assert!(top["requests"].as_i64().unwrap() >= spike["count"].as_i64().unwrap());
}

#[test]
fn reports_agree_with_the_real_api_server_log() {
    let dir = TempDir::new("report-real");
    let store = dir.path().join("data");
    let log = "fixtures/real-apiserver-v1.36/audit.log";
    import(&store, log);
    // Expected figures counted straight from the file: one event per request.
    let mut failures = std::collections::BTreeMap::<i64, i64>::new();
    let mut changes = 0;
    for line in std::fs::read_to_string(data(log)).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let stage = event["stage"].as_str().unwrap();
        let anonymous_start = stage == "ResponseStarted" && event["user"]["username"].is_null();
        if stage != "ResponseComplete" && stage != "Panic" && !anonymous_start {
            continue;
        }
        let code = event["responseStatus"]["code"].as_i64().unwrap_or(0);
        if code == 401 || code == 403 {
            *failures.entry(code).or_default() += 1;
        }
        let verb = event["verb"].as_str().unwrap_or("");
        if ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
            && code > 0
            && code < 400
        {
            changes += 1;
        }
    }
    let auth = report(&store, &["auth-failures"]);
    if failures.is_empty() {
        assert!(rows(&auth, "by-code").is_empty());
    } else {
        for row in rows(&auth, "by-code") {
            let code = row["code"].as_i64().unwrap();
            assert_eq!(
                row["requests"].as_i64().unwrap(),
                failures[&code],
                "code {code}"
            );
        }
    }
    let changed = report(&store, &["changes"]);
    let total: i64 = rows(&changed, "by-actor")
        .iter()
        .map(|r| r["changes"].as_i64().unwrap())
        .sum();
    assert_eq!(total, changes);
    // Every report runs on real data.
    for name in ["anonymous", "latency", "top-talkers"] {
        let done = report(&store, &[name]);
        assert_eq!(done["report"], name);
    }
}

#[test]
fn mistakes_get_plain_explanations() {
    let dir = TempDir::new("report-errors");
    let store = dir.path().join("data");
    let message = failure(&store, &["auth-failure"]);
    assert!(
        message.contains("did you mean \"auth-failures\""),
        "{message}"
    );
    assert!(
        message.contains("the reports are: auth-failures, anonymous"),
        "{message}"
    );
    let message = failure(&store, &["latency"]);
    assert!(message.contains("no kubetrail data in"), "{message}");

    import(&store, "generated/all.log");
    let message = failure(&store, &["object"]);
    assert!(
        message.contains("needs an object: RESOURCE/NAMESPACE/NAME"),
        "{message}"
    );
    let message = failure(&store, &["object", "pods"]);
    assert!(message.contains("cluster-scoped"), "{message}");
    let message = failure(&store, &["latency", "pods/a/b"]);
    assert!(message.contains("takes no object"), "{message}");
    let truth = truth();
    let eviction = &truth["incidents"]["pod-eviction"];
    let pod = eviction["pod"].as_str().unwrap();
    let typo = format!(
        "pods/{}/{}",
        eviction["namespace"].as_str().unwrap(),
        &pod[..pod.len() - 1]
    );
    let message = failure(&store, &["object", &typo]);
    assert!(message.contains("no request touched"), "{message}");
    assert!(message.contains(pod), "nearest match missing: {message}");
    let message = failure(&store, &["rollout", "pods/default/web"]);
    assert!(message.contains("deployments/NAMESPACE/NAME"), "{message}");
    let message = failure(&store, &["changes", "--from", "2030-01-01T00:00:00Z"]);
    assert!(
        message.contains("no events between 2030-01-01"),
        "{message}"
    );
    assert!(
        message.contains("the store holds events from 2026-03-02"),
        "{message}"
    );
    let message = failure(&store, &["changes", "--cluster", "nowhere"]);
    assert!(
        message.contains("no events of cluster \"nowhere\""),
        "{message}"
    );
}

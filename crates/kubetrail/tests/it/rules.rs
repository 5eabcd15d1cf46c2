//! `kubetrail rules`: the pack's inline tests, hunting in files and in the store, and the
//! generated incidents found with the right user while background traffic stays quiet.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::Serve;
use crate::{TempDir, data, import, run, stderr, stdout};

fn findings(output: &std::process::Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", stderr(output));
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// CI runs the bundled pack's inline tests through the command users run.
#[test]
fn the_bundled_pack_passes_rules_test() {
    let output = run(&["rules", "test"], b"");
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains(" 0 failed, 0 problems"),
        "{}",
        stdout(&output)
    );
    let listed = run(&["rules", "list", "-o", "json"], b"");
    assert!(stdout(&listed).lines().count() >= 60, "{}", stdout(&listed));
}

#[test]
fn a_broken_rule_directory_names_file_and_line() {
    let dir = TempDir::new("rules-broken");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "id: bad\ntitle: t\ndescription: d\nseverity: high\ncondition: 'verb:get AND OR x'\n",
    )
    .unwrap();
    let output = run(&["rules", "test", dir.path().to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(4));
    let expected = format!(
        "{}:5: bad: condition:",
        dir.path().join("bad.yaml").display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

/// The generated log of 200k events with incidents: the incidents the pack is for are found
/// with the truth file's user, and nothing else reaches medium.
#[test]
fn generated_incidents_are_found_and_background_stays_quiet() {
    let log = data("generated/backtest.log.gz");
    let truth: Value =
        serde_json::from_slice(&std::fs::read(data("generated/backtest.truth.json")).unwrap())
            .unwrap();
    let from_file = findings(&run(
        &["rules", "run", "-o", "json", log.to_str().unwrap()],
        b"",
    ));
    let incident_user = |name: &str| {
        truth["incidents"][name]["user"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (incident, rule) in [
        ("privileged-pod", "privileged-container"),
        ("exec", "exec-into-pod"),
        ("cluster-admin-binding", "cluster-admin-binding"),
    ] {
        let users: BTreeSet<&str> = from_file
            .iter()
            .filter(|f| f["rule"] == rule)
            .map(|f| f["user"].as_str().unwrap())
            .collect();
        assert!(
            users.contains(incident_user(incident).as_str()),
            "{incident}: {rule} found {users:?}"
        );
    }
    // What reaches medium or above is an injected incident's user or source IP.
    let incidents = truth["incidents"].as_object().unwrap();
    let incident_users: BTreeSet<&str> = incidents
        .values()
        .filter_map(|i| i["user"].as_str())
        .collect();
    let incident_ips: BTreeSet<&str> = incidents
        .values()
        .flat_map(|i| {
            let many = i["sourceIPs"].as_array().into_iter().flatten();
            many.chain(std::iter::once(&i["sourceIP"]))
                .filter_map(Value::as_str)
        })
        .collect();
    for finding in &from_file {
        let severity = finding["severity"].as_str().unwrap();
        if matches!(severity, "medium" | "high" | "critical") {
            let user = finding["user"].as_str().unwrap();
            let ip = finding["source_ip"].as_str().unwrap_or("");
            assert!(
                incident_users.contains(user) || incident_ips.contains(ip),
                "background finding above low: {finding}"
            );
        }
        for key in [
            "rule",
            "severity",
            "auditID",
            "mitre",
            "explanation",
            "time",
        ] {
            assert!(!finding[key].is_null(), "{key} missing: {finding}");
        }
    }
}

/// A hunt over the store (oldest first, in pages) finds exactly what a run over the file finds
/// (the log of every incident; a short one, as the debug build evaluates slowly).
#[test]
fn a_hunt_over_the_store_finds_what_a_run_over_the_file_finds() {
    let log = data("generated/all.log");
    let from_file = findings(&run(
        &["rules", "run", "-o", "json", log.to_str().unwrap()],
        b"",
    ));
    assert!(
        from_file
            .iter()
            .any(|f| f["rule"] == "privileged-container"),
        "{from_file:?}"
    );
    let store = TempDir::new("rules-store");
    import(store.path(), &[], &["generated/all.log"]);
    let from_store = findings(&run(
        &[
            "rules",
            "run",
            "-o",
            "json",
            "--data",
            store.path().to_str().unwrap(),
        ],
        b"",
    ));
    let key = |f: &Value| {
        (
            f["rule"].as_str().unwrap().to_owned(),
            f["auditID"].as_str().unwrap().to_owned(),
            f["count"].as_u64(),
        )
    };
    let file_keys: Vec<_> = from_file.iter().map(key).collect();
    let store_keys: Vec<_> = from_store.iter().map(key).collect();
    assert_eq!(
        file_keys.iter().collect::<BTreeSet<_>>(),
        store_keys.iter().collect::<BTreeSet<_>>()
    );
}

/// `serve` runs the pack on every accepted event: findings are kept and served by the API
/// (filtered by rule, severity and a search), counted on `/metrics`, sent once per rule and
/// group to the channels, and a request delivered twice is judged once.
#[test]
fn serve_detects_live_and_serves_the_findings() {
    const TOKEN: &str = "detections-token-0123456789";
    let dir = TempDir::new("rules-serve");
    let alerts = dir.path().join("alerts.jsonl");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  flushInterval: 200ms\napi:\n  tokens: [{TOKEN}]\n\
             channels:\n  - name: file\n    type: file\n    path: {}\n\
             detections:\n  notify: [file]\n  notifyMinSeverity: high\n",
            alerts.display()
        ),
    )
    .unwrap();
    let server = Serve::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let truth: Value =
        serde_json::from_slice(&std::fs::read(data("generated/all.truth.json")).unwrap()).unwrap();
    let log = data("generated/all.log");
    let send = || {
        let sent = run(
            &[
                "send",
                "--url",
                &server.url("/audit"),
                log.to_str().unwrap(),
            ],
            b"",
        );
        assert!(sent.status.success(), "{}", stderr(&sent));
    };
    send();
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| -> Value {
        client
            .get(server.url(path))
            .bearer_auth(TOKEN)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let wanted = truth["incidents"]["privileged-pod"]["user"]
        .as_str()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let privileged = loop {
        let found = get("/api/v1/findings?rule=privileged-container");
        let list = found["findings"].as_array().unwrap().clone();
        if !list.is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "no finding: {found}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(privileged[0]["user"], wanted, "{privileged:?}");
    assert_eq!(privileged[0]["severity"], "high");
    assert_eq!(privileged[0]["event"]["auditID"], privileged[0]["auditID"]);
    assert!(
        !privileged[0]["mitre"]["techniques"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Wait until the whole log is judged, then count.
    let total = |query: &str| {
        get(&format!("/api/v1/findings?limit=1000{query}"))["findings"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut settled = total("");
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = total("");
        if now == settled {
            break;
        }
        settled = now;
    }
    assert!(settled > 1);
    let high = total("&severity=high");
    assert!(high >= 1 && high < settled, "{high} of {settled}");
    assert_eq!(
        total(&format!("&q=user:{wanted:?}&rule=privileged-container")),
        1
    );
    assert_eq!(total("&q=user:nobody-at-all"), 0);
    let bad = client
        .get(server.url("/api/v1/findings?severity=urgent"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);

    let rules = get("/api/v1/rules");
    let rule = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "privileged-container")
        .cloned()
        .unwrap();
    assert_eq!(rule["findings"], 1, "{rule}");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "kubetrail_detection_findings_total{rule=\"privileged-container\",severity=\"high\"} 1"
        ),
        "{metrics}"
    );

    // The same requests again (a webhook retry): judged once.
    send();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(total(""), settled);

    // One message per rule and group, for high and above only.
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages: Vec<Value> = loop {
        let text = std::fs::read_to_string(&alerts).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines
            .iter()
            .any(|m| m["monitor"] == "rule:privileged-container")
        {
            break lines;
        }
        assert!(Instant::now() < deadline, "no notification: {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut keys = BTreeSet::new();
    for message in &messages {
        let alert = &message["alerts"][0];
        assert!(
            matches!(alert["severity"].as_str(), Some("high" | "critical")),
            "{message}"
        );
        assert!(
            keys.insert(alert["key"].as_str().unwrap().to_owned()),
            "twice: {message}"
        );
    }
    server.terminate();
}

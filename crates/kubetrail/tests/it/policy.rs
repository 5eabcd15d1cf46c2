//! `kubetrail policy`.

use super::{TempDir, data, run, stderr, stdout};

#[test]
fn check_reports_errors_with_file_and_line() {
    let dir = TempDir::new("policy-check");
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  nonResourceURLs: [\"healthz\"]\n",
    )
    .unwrap();
    let output = run(&["policy", "check", path.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with(&format!(
            "{}:5: error: rules[0].nonResourceURLs[0]: Invalid value: \"healthz\": non-resource URL rules must begin with a '/' character",
            path.display()
        )),
        "{err}"
    );

    let good = data("fixtures/real-apiserver-v1.36/policy.yaml");
    let output = run(&["policy", "check", good.to_str().unwrap()], b"");
    assert!(output.status.success());
    assert!(stdout(&output).contains("valid audit.k8s.io/v1 policy with 1 rules"));
}

#[test]
fn eval_of_request_attributes_and_of_events() {
    let policy = data("fixtures/real-apiserver-v1.36/policy.yaml");
    let requests = concat!(
        r#"{"user":{"name":"alice","groups":["dev"]},"verb":"get","namespace":"default","apiGroup":"","apiVersion":"v1","resource":"pods","subresource":"","name":"web","resourceRequest":true,"path":"/api/v1/namespaces/default/pods/web"}"#,
        "\n",
        "not json\n",
    );
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let input = format!("{requests}{}\n", log.lines().next().unwrap());
    let output = run(
        &["policy", "eval", "--policy", policy.to_str().unwrap()],
        input.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({"level": "RequestResponse", "omitStages": ["RequestReceived"], "omitManagedFields": false, "rule": 0})
    );
    assert_eq!(lines[1]["auditID"], "0f23747d-7ce7-4772-8d05-b499911c6a68");
    assert!(
        stderr(&output).contains("<stdin>:2: invalid JSON"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn lint_finds_the_credential_leak_of_the_fixture_policy() {
    let policy = data("fixtures/real-apiserver-v1.36/policy.yaml");
    let output = run(
        &["policy", "lint", "-o", "json", policy.to_str().unwrap()],
        b"",
    );
    assert_eq!(output.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"credentials-in-logs"), "{codes:?}");
    assert!(codes.contains(&"health-endpoints-logged"), "{codes:?}");
}

#[test]
fn recommended_policies_check_and_lint_clean() {
    let dir = TempDir::new("policy-recommend");
    for profile in ["minimal", "security", "debugging"] {
        let output = run(&["policy", "recommend", "--profile", profile], b"");
        assert!(output.status.success());
        let path = dir.path().join(format!("{profile}.yaml"));
        std::fs::write(&path, &output.stdout).unwrap();
        let lint = run(&["policy", "lint", path.to_str().unwrap()], b"");
        assert!(lint.status.success(), "{profile}: {}", stdout(&lint));
        assert!(
            stdout(&lint).ends_with("0 findings (0 errors)\n"),
            "{}",
            stdout(&lint)
        );
    }
}

#[test]
fn simulate_reports_volume_per_rule() {
    let dir = TempDir::new("policy-simulate");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n- level: Metadata\n",
    )
    .unwrap();
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let output = run(
        &[
            "policy",
            "simulate",
            "-o",
            "json",
            "--policy",
            policy.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["recorded"]["events"], 2823);
    assert_eq!(s["droppedByLevel"]["events"], 693);
    assert_eq!(s["kept"]["events"], 2823 - 693);
    assert_eq!(s["rules"][0]["line"], 5);
    assert_eq!(s["addedRequestReceivedEstimate"]["events"], 0);

    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let output = run(
        &[
            "policy",
            "simulate",
            "--policy",
            policy.to_str().unwrap(),
            empty.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no audit events"),
        "{}",
        stderr(&output)
    );
}

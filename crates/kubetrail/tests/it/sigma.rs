//! `kubetrail rules import-sigma`: the 16 SigmaHQ Kubernetes audit rules converted or refused
//! by name, the converted rules passing `rules test` and finding what they are for in an
//! audit log, and our own correlation examples becoming thresholds.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{TempDir, data, run, stderr, stdout};

/// The refusal of each SigmaHQ rule that is not converted: the file and the construct.
const REFUSED: &[(&str, &str)] = &[
    (
        "kubernetes_audit_compiler_execution_in_container.yml:20:",
        "`file_path` is not a field of Kubernetes audit events",
    ),
    (
        "kubernetes_audit_hostpath_mount.yml:23:",
        "`hostPath` is not a field of Kubernetes audit events",
    ),
    (
        "kubernetes_audit_privileged_pod_creation.yml:25:",
        "`capabilities` is not a field of Kubernetes audit events",
    ),
    (
        "kubernetes_audit_rbac_permisions_listing.yml:23:",
        "`apiGroup` is not a field of Kubernetes audit events",
    ),
    (
        "kubernetes_audit_sidecar_injection.yml:23:",
        "`apiGroup` is not a field of Kubernetes audit events",
    ),
];

/// The rules converted from the other 11.
const CONVERTED: &[&str] = &[
    "sigma-creation-of-pod-in-system-namespace",
    "sigma-deployment-deleted-from-kubernetes-cluster",
    "sigma-kubernetes-admission-controller-modification",
    "sigma-kubernetes-cronjob-job-modification",
    "sigma-kubernetes-events-deleted",
    "sigma-kubernetes-rolebinding-modification",
    "sigma-kubernetes-secrets-enumeration",
    "sigma-kubernetes-secrets-modified-or-deleted",
    "sigma-kubernetes-unauthorized-or-unauthenticated-access",
    "sigma-new-kubernetes-service-account-created",
    "sigma-potential-remote-command-execution-in-pod-container",
];

fn import(out: &std::path::Path, extra: &[&str], inputs: &[&str]) -> std::process::Output {
    let mut args = vec!["rules", "import-sigma", "--out", out.to_str().unwrap()];
    args.extend(extra);
    args.extend(inputs);
    run(&args, b"")
}

fn written(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn rules_test(dir: &std::path::Path) -> String {
    let output = run(
        &["rules", "test", "--no-pack", "-v", dir.to_str().unwrap()],
        b"",
    );
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn event(
    id: &str,
    stage: &str,
    verb: &str,
    user: &str,
    object: Value,
    uri: &str,
    code: u16,
) -> String {
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": id, "stage": stage, "requestURI": uri, "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["198.51.100.23"],
        "userAgent": "kubectl/v1.36.0 (linux/amd64) kubernetes/5f4b3c2",
        "objectRef": object,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": "2026-07-23T10:00:00.000000Z",
        "stageTimestamp": "2026-07-23T10:00:00.050000Z"
    })
    .to_string()
}

fn findings_by_rule(output: &std::process::Output) -> BTreeMap<String, usize> {
    assert!(output.status.success(), "{}", stderr(output));
    let mut by_rule = BTreeMap::new();
    for line in stdout(output).lines() {
        let finding: Value = serde_json::from_str(line).unwrap();
        *by_rule
            .entry(finding["rule"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    by_rule
}

/// Every one of the 16 rules is converted or refused with the construct named; the converted
/// rules pass their tests and find a pods/exec and a deleted Deployment in an audit log, once
/// each, and nothing in a read.
#[test]
fn sigmahq_rules_convert_or_are_refused_by_name() {
    let dir = TempDir::new("sigma-import");
    let out = dir.path().join("rules");
    let output = import(&out, &[], &[data("sigma/sigmahq").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let errors = stderr(&output);
    let refused: Vec<&str> = errors
        .lines()
        .filter(|l| l.starts_with("kubetrail: refused: "))
        .collect();
    assert_eq!(refused.len(), REFUSED.len(), "{errors}");
    for (line, (file, construct)) in refused.iter().zip(REFUSED) {
        assert!(line.contains(file) && line.contains(construct), "{line}");
    }
    assert!(
        errors.contains("11 rules converted, 5 refused\n"),
        "{errors}"
    );
    assert_eq!(written(&out), CONVERTED);
    let tested = rules_test(&out);
    assert!(
        tested.contains("11 rules passed, 0 failed, 0 problems in rule files"),
        "{tested}"
    );
    assert_eq!(tested.matches("ok    sigma-").count(), 22, "{tested}");

    let log = dir.path().join("audit.log");
    let exec = json!({"resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web-0", "apiVersion": "v1"});
    let deployment = json!({"resource": "deployments", "namespace": "prod", "name": "web", "apiGroup": "apps", "apiVersion": "v1"});
    let lines = [
        event(
            "exec-1",
            "ResponseStarted",
            "create",
            "mallory@example.com",
            exec.clone(),
            "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&container=web&stdin=true&stdout=true&tty=true",
            101,
        ),
        event(
            "delete-1",
            "RequestReceived",
            "delete",
            "mallory@example.com",
            deployment.clone(),
            "/apis/apps/v1/namespaces/prod/deployments/web",
            200,
        ),
        event(
            "delete-1",
            "ResponseComplete",
            "delete",
            "mallory@example.com",
            deployment,
            "/apis/apps/v1/namespaces/prod/deployments/web",
            200,
        ),
        event(
            "get-1",
            "ResponseComplete",
            "get",
            "alice@example.com",
            json!({"resource": "pods", "namespace": "prod", "name": "web-0", "apiVersion": "v1"}),
            "/api/v1/namespaces/prod/pods/web-0",
            200,
        ),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let found = findings_by_rule(&run(
        &[
            "rules",
            "run",
            "--no-pack",
            "--rules",
            out.to_str().unwrap(),
            "-o",
            "json",
            log.to_str().unwrap(),
        ],
        b"",
    ));
    assert_eq!(
        found,
        BTreeMap::from([
            (
                "sigma-deployment-deleted-from-kubernetes-cluster".to_owned(),
                1
            ),
            (
                "sigma-potential-remote-command-execution-in-pod-container".to_owned(),
                1
            ),
        ])
    );
}

/// Without `--out` the rules are printed as one YAML stream; `--field` maps the names the
/// refused rules use onto what they mean, and they convert.
#[test]
fn printed_rules_and_field_mappings() {
    let dir = TempDir::new("sigma-print");
    let files = [
        data("sigma/sigmahq/kubernetes_audit_exec_into_container.yml"),
        data("sigma/sigmahq/kubernetes_audit_hostpath_mount.yml"),
        data("sigma/sigmahq/kubernetes_audit_sidecar_injection.yml"),
    ];
    let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec![
        "rules",
        "import-sigma",
        "--field",
        "hostPath=pod.hostPath",
        "--field",
        "apiGroup=objectRef.apiGroup",
    ];
    args.extend(&files);
    let output = run(&args, b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let documents: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let conditions: Vec<&str> = documents
        .iter()
        .map(|d| d["condition"].as_str().unwrap())
        .collect();
    assert_eq!(
        conditions,
        [
            "verb:create resource:pods subresource:exec",
            "verb:create resource:pods pod.hostPath:*",
            "verb:patch apigroup:apps resource:deployments",
        ]
    );
    let out = dir.path().join("rules");
    std::fs::create_dir_all(&out).unwrap();
    for document in &documents {
        let id = document["id"].as_str().unwrap();
        std::fs::write(
            out.join(format!("{id}.yaml")),
            serde_yaml_ng::to_string(document).unwrap(),
        )
        .unwrap();
    }
    assert!(rules_test(&out).contains("3 rules passed, 0 failed"));

    let bad = run(
        &[
            "rules",
            "import-sigma",
            "--field",
            "hostPath=pod.nope",
            files[0],
        ],
        b"",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--field \"hostPath=pod.nope\": unknown field `pod.nope`"),
        "{}",
        stderr(&bad)
    );
}

/// Our correlation examples: event_count and value_count become thresholds that fire on 20
/// secret reads by one user from one address; temporal_ordered and temporal become sequences
/// that fire on a role binding then an exec by one user, and on an exec and a secret listing
/// from one address; a temporal correlation without group-by is refused.
#[test]
fn correlations_become_thresholds() {
    let dir = TempDir::new("sigma-correlations");
    let out = dir.path().join("rules");
    let output = import(&out, &[], &[data("sigma/ours").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let errors = stderr(&output);
    assert!(
        errors.contains("kubetrail_temporal.yml:89: \"Exec And Secret Listing Anywhere\": correlation: a temporal correlation without `group-by` would join unrelated events"),
        "{errors}"
    );
    assert!(
        errors.contains("5 rules converted, 1 refused, 5 only counted by correlations"),
        "{errors}"
    );
    assert!(rules_test(&out).contains("5 rules passed, 0 failed"));

    let log = dir.path().join("audit.log");
    let lines: Vec<String> = (0..20)
        .map(|i| {
            event(
                &format!("read-{i}"),
                "ResponseComplete",
                "get",
                "mallory@example.com",
                json!({"resource": "secrets", "namespace": "prod", "name": format!("db-{i}"), "apiVersion": "v1"}),
                &format!("/api/v1/namespaces/prod/secrets/db-{i}"),
                200,
            )
        })
        .chain([
            event(
                "bind",
                "ResponseComplete",
                "create",
                "mallory@example.com",
                json!({"resource": "rolebindings", "namespace": "prod", "name": "me", "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"}),
                "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings",
                201,
            ),
            event(
                "exec",
                "ResponseComplete",
                "create",
                "mallory@example.com",
                json!({"resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web", "apiVersion": "v1"}),
                "/api/v1/namespaces/prod/pods/web/exec?command=id",
                101,
            ),
            event(
                "list",
                "ResponseComplete",
                "list",
                "bob@example.com",
                json!({"resource": "secrets", "namespace": "prod", "apiVersion": "v1"}),
                "/api/v1/namespaces/prod/secrets",
                200,
            ),
        ])
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let found = findings_by_rule(&run(
        &[
            "rules",
            "run",
            "--no-pack",
            "--rules",
            out.to_str().unwrap(),
            "-o",
            "json",
            log.to_str().unwrap(),
        ],
        b"",
    ));
    assert_eq!(
        found,
        BTreeMap::from([
            (
                "sigma-many-distinct-secrets-read-from-one-address".to_owned(),
                1
            ),
            ("sigma-many-secrets-read-by-one-user".to_owned(), 1),
            ("sigma-role-binding-then-exec-by-one-user".to_owned(), 1),
            (
                "sigma-exec-and-secret-listing-from-one-address".to_owned(),
                1
            ),
        ])
    );
}

//! `lint` on policies with known mistakes.

use kubetrail_policy::{LintSeverity, lint, load};

fn codes(text: &str) -> Vec<(Option<usize>, &'static str, LintSeverity)> {
    let loaded = load(text).unwrap();
    lint(&loaded)
        .into_iter()
        .map(|f| (f.rule, f.code, f.severity))
        .collect()
}

#[test]
fn a_catch_all_first_shadows_everything_after_it() {
    let found = codes(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n",
    );
    assert!(
        found.contains(&(Some(1), "shadowed-rule", LintSeverity::Warning)),
        "{found:?}"
    );
    assert!(
        found.contains(&(None, "request-received-not-omitted", LintSeverity::Warning)),
        "{found:?}"
    );
    assert!(
        found.contains(&(Some(0), "health-endpoints-logged", LintSeverity::Warning)),
        "{found:?}"
    );
    assert!(!found.iter().any(|f| f.1 == "no-catch-all"), "{found:?}");
}

#[test]
fn credentials_wrong_groups_verbs_and_names() {
    let text = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/metrics", "/version"]
- level: RequestResponse
  resources: [{group: "", resources: [secrets]}]
- level: Metadata
  resources: [{group: core, resources: [pods]}]
- level: Metadata
  verbs: [create]
  resources: [{group: "", resources: [configmaps], resourceNames: [x]}]
- level: Request
  verbs: [GET]
"#;
    let loaded = load(text).unwrap();
    let findings = lint(&loaded);
    let found: Vec<_> = findings
        .iter()
        .map(|f| (f.rule, f.code, f.severity))
        .collect();
    assert_eq!(
        found,
        [
            (Some(1), "credentials-in-logs", LintSeverity::Error),
            (Some(2), "core-group-name", LintSeverity::Error),
            (Some(3), "resource-names-never-match", LintSeverity::Error),
            (Some(4), "no-catch-all", LintSeverity::Warning),
            (Some(4), "unknown-verb", LintSeverity::Warning),
        ]
    );
    assert_eq!(findings[0].line, Some(7));
    assert!(
        findings[0].fix.contains("level: Metadata"),
        "{}",
        findings[0].fix
    );
}

#[test]
fn a_metadata_rule_for_secrets_before_request_response_is_not_a_leak() {
    let text = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/metrics", "/version"]
- level: Metadata
  resources: [{group: "", resources: [secrets, configmaps, serviceaccounts/token]}, {group: authentication.k8s.io, resources: [tokenreviews]}]
- level: Request
  verbs: [get, list, watch]
- level: RequestResponse
"#;
    assert_eq!(codes(text), []);
}

#[test]
fn list_at_request_response_is_volume() {
    let text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: [\"/healthz*\", \"/livez*\", \"/readyz*\", \"/metrics\", \"/version\"]\n- level: Metadata\n  resources: [{group: \"\", resources: [secrets, configmaps, serviceaccounts/token]}, {group: authentication.k8s.io, resources: [tokenreviews]}]\n- level: RequestResponse\n";
    assert_eq!(
        codes(text),
        [(
            Some(2),
            "list-watch-request-response",
            LintSeverity::Warning
        )]
    );
}

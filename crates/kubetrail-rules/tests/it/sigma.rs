//! Sigma rules converted through the public API: the SigmaHQ Kubernetes audit rules and our
//! own correlation examples (`tests/data/sigma/`), each converted exactly or refused by name,
//! and every converted rule loading and passing the inline tests made for it.

use std::path::{Path, PathBuf};

use kubetrail_rules::{
    RuleSet, SigmaImport, SigmaOptions, SourceFile, import_sigma, run_inline_tests,
};

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/sigma")
        .join(dir)
}

fn files(dir: &str) -> Vec<SourceFile> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| SourceFile {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&path).unwrap(),
        })
        .collect()
}

fn source(name: &str, text: &str) -> SourceFile {
    SourceFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

/// Loads every converted rule and runs its inline tests: each has a firing and a quiet test,
/// and all pass.
fn assert_rules_pass(import: &SigmaImport) {
    let files: Vec<SourceFile> = import
        .rules
        .iter()
        .map(|r| source(&format!("{}.yaml", r.id), &r.yaml))
        .collect();
    let set = RuleSet::load(false, &files);
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    assert_eq!(set.rules.len(), import.rules.len());
    for rule in &set.rules {
        assert!(
            !rule.tests.fire.is_empty() && !rule.tests.quiet.is_empty(),
            "{}",
            rule.id
        );
        for result in run_inline_tests(rule, &set.defaults) {
            assert!(
                result.failure.is_none(),
                "{} {}[{}]: {:?}",
                rule.id,
                result.expect,
                result.index,
                result.failure
            );
        }
    }
}

fn refusals(import: &SigmaImport) -> Vec<(String, String)> {
    import
        .refused
        .iter()
        .map(|r| (r.file.clone(), r.to_string()))
        .collect()
}

/// The 16 SigmaHQ rules: 11 convert, 5 name fields Kubernetes audit events do not have.
#[test]
fn sigmahq_kubernetes_audit_rules() {
    let import = import_sigma(&files("sigmahq"), &SigmaOptions::default());
    let ids: Vec<&str> = import.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sigma-kubernetes-admission-controller-modification",
            "sigma-kubernetes-cronjob-job-modification",
            "sigma-deployment-deleted-from-kubernetes-cluster",
            "sigma-kubernetes-events-deleted",
            "sigma-potential-remote-command-execution-in-pod-container",
            "sigma-creation-of-pod-in-system-namespace",
            "sigma-kubernetes-rolebinding-modification",
            "sigma-kubernetes-secrets-enumeration",
            "sigma-kubernetes-secrets-modified-or-deleted",
            "sigma-new-kubernetes-service-account-created",
            "sigma-kubernetes-unauthorized-or-unauthenticated-access",
        ]
    );
    let refused = refusals(&import);
    let expected = [
        (
            "kubernetes_audit_compiler_execution_in_container.yml",
            ":20: \"Compiler Execution Within Kubernetes Containers\": `file_path` is not a field of Kubernetes audit events",
        ),
        (
            "kubernetes_audit_hostpath_mount.yml",
            ":23: \"Container With A hostPath Mount Created\": `hostPath` is not a field",
        ),
        (
            "kubernetes_audit_privileged_pod_creation.yml",
            ":25: \"Privileged Container Deployed\": `capabilities` is not a field",
        ),
        (
            "kubernetes_audit_rbac_permisions_listing.yml",
            ":23: \"RBAC Permission Enumeration Attempt\": `apiGroup` is not a field",
        ),
        (
            "kubernetes_audit_sidecar_injection.yml",
            ":23: \"Potential Sidecar Injection Into Running Deployment\": `apiGroup` is not a field",
        ),
    ];
    assert_eq!(refused.len(), expected.len(), "{refused:#?}");
    for ((file, message), (expected_file, expected_message)) in refused.iter().zip(expected) {
        assert_eq!(file, expected_file);
        assert!(
            message.starts_with(&format!("{file}{expected_message}")),
            "{message}"
        );
    }
    assert_rules_pass(&import);

    let exec = &import.rules[4].yaml;
    assert!(
        exec.contains("condition: verb:create resource:pods subresource:exec\n"),
        "{exec}"
    );
    assert!(exec.contains("severity: medium\n"), "{exec}");
    assert!(exec.contains("techniques:\n  - T1609\n"), "{exec}");
    assert!(exec.contains("default_exemptions: false\n"), "{exec}");
    assert!(
        exec.contains("title: Potential Remote Command Execution In Pod Container (Sigma rule by Leo Tsaousis (@laripping))\n"),
        "{exec}"
    );
    assert!(exec.contains("Detection Rule License (DRL) 1.1"), "{exec}");
    assert!(
        exec.contains("id a1b0ca4e-7835-413e-8471-3ff2b8a66be6"),
        "{exec}"
    );
    let admission = &import.rules[0].yaml;
    assert!(
        admission.contains(
            "condition: apigroup:admissionregistration.k8s.io resource:(mutatingwebhookconfigurations OR validatingwebhookconfigurations) verb:(create OR delete OR patch OR replace OR update)\n"
        ),
        "{admission}"
    );
    assert!(
        admission.contains(
            "tactics:\n  - TA0003\n  - TA0006\n  techniques:\n  - T1078\n  - T1552\n  - T1552.007\n"
        ),
        "{admission}"
    );
    let unauthorized = &import.rules[10].yaml;
    assert!(
        unauthorized.contains("condition: code:(401 OR 403)\n"),
        "{unauthorized}"
    );
}

/// With the fields the refused rules mean mapped onto kubetrail's (the pod view, the API
/// group), they convert too, and their tests pass.
#[test]
fn field_mappings_convert_what_the_rules_mean() {
    let mut options = SigmaOptions::default();
    for mapping in [
        "apiGroup=objectRef.apiGroup",
        "hostPath=pod.hostPath",
        "capabilities=pod.capabilities",
    ] {
        options.map_field(mapping).unwrap();
    }
    let import = import_sigma(&files("sigmahq"), &options);
    assert_eq!(import.rules.len(), 15, "{:#?}", refusals(&import));
    assert_eq!(import.refused.len(), 1);
    assert!(import.refused[0].to_string().contains("`file_path`"));
    assert_rules_pass(&import);
    let host_path = import
        .rules
        .iter()
        .find(|r| r.id == "sigma-container-with-a-hostpath-mount-created")
        .unwrap();
    assert!(
        host_path
            .yaml
            .contains("condition: verb:create resource:pods pod.hostPath:*\n"),
        "{}",
        host_path.yaml
    );
    assert!(options.map_field("hostPath=pod.nope").is_err());
    assert!(options.map_field("hostPath").is_err());
}

/// Later SigmaHQ rules: both compare `responseStatus.code` with 'ALLOW' (it is a number, so
/// they never match) and match user agents ignoring case; every problem is named.
#[test]
fn newer_sigmahq_rules_are_refused_with_every_problem() {
    let import = import_sigma(&files("sigmahq-newer"), &SigmaOptions::default());
    assert!(import.rules.is_empty());
    let potential = import.refused[0].to_string();
    assert_eq!(import.refused[0].problems.len(), 6, "{potential}");
    assert!(
        potential
            .contains("`requestURI|contains`: Sigma matches \"%2fbin%2fash\" ignoring letter case"),
        "{potential}"
    );
    assert!(
        potential
            .contains(":57: \"Potential Kubernetes Enumeration Activity\": `userAgent|contains`"),
        "{potential}"
    );
    assert!(
        potential.contains(":63: \"Potential Kubernetes Enumeration Activity\": `responseStatus.code`: `code` is a number in audit events and \"ALLOW\" is not one"),
        "{potential}"
    );
    // Its regular expression converts (it is case-sensitive in Sigma too): only the user
    // agents and the status are refused.
    let suspicious = import.refused[1].to_string();
    assert_eq!(import.refused[1].problems.len(), 2, "{suspicious}");
    assert!(suspicious.contains("`userAgent|contains`"), "{suspicious}");
    assert!(suspicious.contains("\"ALLOW\" is not one"), "{suspicious}");
}

/// Our examples: an event_count and a value_count correlation become thresholds, the temporal
/// ones sequences (one without group-by is refused), and conditions with `all of`, `1 of`, `not` and the modifiers
/// cased, contains, re, startswith and gte convert.
#[test]
fn correlations_and_conditions() {
    let import = import_sigma(&files("ours"), &SigmaOptions::default());
    let ids: Vec<&str> = import.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sigma-many-distinct-secrets-read-from-one-address",
            "sigma-shell-started-through-pods-exec",
            "sigma-many-secrets-read-by-one-user",
            "sigma-role-binding-then-exec-by-one-user",
            "sigma-exec-and-secret-listing-from-one-address",
        ]
    );
    assert_eq!(import.refused.len(), 1, "{:#?}", refusals(&import));
    let anywhere = import.refused[0].to_string();
    assert!(
        anywhere.starts_with("kubetrail_temporal.yml:89: \"Exec And Secret Listing Anywhere\": correlation: a temporal correlation without `group-by` would join unrelated events"),
        "{anywhere}"
    );
    let ordered = &import.rules[3].yaml;
    assert!(
        ordered.contains(
            "sequence:\n  within: 15m\n  by:\n  - user\n  ordered: true\n  steps:\n  - name: kubetrail_rolebinding_created\n    condition: verb:create resource:rolebindings\n  - name: kubetrail_pod_exec\n    condition: resource:pods subresource:exec\n"
        ) && !ordered.contains("\ncondition:"),
        "{ordered}"
    );
    let any_order = &import.rules[4].yaml;
    assert!(
        any_order.contains("  by:\n  - ip\n  ordered: false\n"),
        "{any_order}"
    );
    let counted: Vec<&str> = import
        .correlated_only
        .iter()
        .map(|(_, title)| title.as_str())
        .collect();
    assert_eq!(
        counted,
        [
            "Secret Read In A Namespace",
            "Secret Read",
            "Role Binding Created",
            "Pod Exec",
            "Secret Listed"
        ]
    );
    assert_rules_pass(&import);
    let distinct = &import.rules[0].yaml;
    assert!(
        distinct.contains("condition: verb:get resource:secrets -code>=400\n"),
        "{distinct}"
    );
    assert!(
        distinct
            .contains("threshold:\n  window: 5m\n  by:\n  - ip\n  count: 10\n  distinct: name\n"),
        "{distinct}"
    );
    assert!(distinct.contains("severity: high\n"), "{distinct}");
    let shell = &import.rules[1].yaml;
    assert!(
        shell.contains(
            "condition: resource:pods subresource:exec uri:(*command=sh&* OR *command=bash&* OR *command=%2Fusr%2Fbin%2Fbash&* OR *command=%2Fusr%2Fbin%2Fsh&* OR *command=%2Fbin%2Fbash&* OR *command=%2Fbin%2Fsh&*) NOT (code>=400 OR user:system:*)\n"
        ),
        "{shell}"
    );
    let burst = &import.rules[2].yaml;
    assert!(
        burst.contains("threshold:\n  window: 10m\n  by:\n  - user\n  count: 20\n"),
        "{burst}"
    );
    assert!(burst.contains("- {\"repeat\":20,"), "{burst}");
}

const RULE: &str = "title: T\nlogsource: {product: kubernetes, service: audit}\nlevel: low\n";

fn convert(rest: &str) -> SigmaImport {
    import_sigma(
        &[source("r.yml", &format!("{RULE}{rest}"))],
        &SigmaOptions::default(),
    )
}

#[test]
fn other_logsources_and_documents_are_refused() {
    let windows = import_sigma(
        &[source(
            "w.yml",
            "title: W\nlogsource: {product: windows, service: security}\ndetection: {sel: {EventID: 4625}, condition: sel}\n",
        )],
        &SigmaOptions::default(),
    );
    assert!(
        windows.refused[0].to_string().contains(
            "the logsource {product: windows service: security} is not Kubernetes audit events"
        ),
        "{}",
        windows.refused[0]
    );
    let broken = import_sigma(&[source("b.yml", "title: [\n")], &SigmaOptions::default());
    assert!(broken.refused[0].to_string().contains("not YAML"));
    let correlation = convert(
        "detection: {sel: {verb: get}, condition: sel}\nname: x\n---\ntitle: C\ncorrelation: {type: event_count, rules: [x], timespan: 1h, condition: {lt: 5}}\n",
    );
    assert!(
        correlation.refused[0]
            .to_string()
            .contains("the condition `lt`"),
        "{}",
        correlation.refused[0]
    );
    let unknown = convert(
        "detection: {sel: {verb: get}, condition: sel}\n---\ntitle: C\ncorrelation: {type: event_count, rules: [y], timespan: 1h, condition: {gte: 5}}\n",
    );
    assert!(
        unknown.refused[0]
            .to_string()
            .contains("which no rule given defines"),
        "{}",
        unknown.refused[0]
    );
}

#[test]
fn a_condition_that_never_holds_cannot_be_tested() {
    let never = convert("detection: {sel: {verb: get}, condition: sel and not sel}\n");
    assert!(
        never.refused[0]
            .to_string()
            .contains("no inline tests could be made"),
        "{}",
        never.refused[0]
    );
}

/// A rule reading the stage judges every stage; keywords are free text; a second rule with
/// the same title is refused rather than overriding the first.
#[test]
fn stages_keywords_and_duplicate_ids() {
    let import = convert(
        "detection:\n  keywords: ['kube-hunter']\n  sel:\n    stage: requestreceived\n    requestObject.spec.hostNetwork: true\n  condition: keywords or sel\n---\n{RULE}detection: {sel: {verb: get}, condition: sel}\n"
            .replace("{RULE}", RULE)
            .as_str(),
    );
    assert_eq!(import.rules.len(), 1, "{:#?}", refusals(&import));
    let yaml = &import.rules[0].yaml;
    assert!(
        yaml.contains(
            "condition: '\"kube-hunter\" OR (stage:RequestReceived requestObject.spec.hostNetwork:true)'\n"
        ),
        "{yaml}"
    );
    assert!(yaml.contains("stages:\n- RequestReceived\n"), "{yaml}");
    assert!(
        import.refused[0]
            .to_string()
            .contains("its kubetrail id `sigma-t` is already made from r.yml"),
        "{}",
        import.refused[0]
    );
    assert_rules_pass(&import);
    let regex = convert("detection: {sel: {userAgent|re|i: python}, condition: sel}\n");
    assert!(
        regex.refused[0].to_string().contains("drop the `i` flag"),
        "{}",
        regex.refused[0]
    );
}

/// A correlation over two rules counts either; `gt` is one more than `gte`; `generate: true`
/// converts the counted rules too.
#[test]
fn correlations_over_several_rules_and_generated_ones() {
    let import = import_sigma(
        &[source(
            "c.yml",
            "title: Pod Deleted\nname: pod_deleted\nlogsource: {product: kubernetes, service: audit}\ndetection: {sel: {verb: delete, objectRef.resource: pods}, condition: sel}\nlevel: low\n---\ntitle: Deployment Deleted\nname: deploy_deleted\nlogsource: {product: kubernetes, service: audit}\ndetection: {sel: {verb: delete, objectRef.resource: deployments}, condition: sel}\nlevel: medium\n---\ntitle: Mass Deletion\ncorrelation:\n  type: event_count\n  generate: true\n  rules: [pod_deleted, deploy_deleted]\n  group-by: [user.username, objectRef.namespace]\n  timespan: 1m\n  condition: {gt: 4}\n",
        )],
        &SigmaOptions::default(),
    );
    assert!(import.refused.is_empty(), "{:#?}", refusals(&import));
    assert!(import.correlated_only.is_empty());
    let ids: Vec<&str> = import.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sigma-pod-deleted",
            "sigma-deployment-deleted",
            "sigma-mass-deletion"
        ]
    );
    let mass = &import.rules[2].yaml;
    assert!(
        mass.contains(
            "condition: (verb:delete resource:pods) OR (verb:delete resource:deployments)\nthreshold:\n  window: 1m\n  by:\n  - user\n  - ns\n  count: 5\n"
        ),
        "{mass}"
    );
    // No level of its own: the highest of the rules it counts.
    assert!(mass.contains("severity: medium\n"), "{mass}");
    assert_rules_pass(&import);
}

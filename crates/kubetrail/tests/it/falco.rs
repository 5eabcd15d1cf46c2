//! Conformance with Falco on Falco's own k8s audit tests: the trace files in
//! `tests/data/corpus/falco` and `falco_k8s_audit_tests.yaml`, which says which Falco rule alerts
//! on which trace. For every Falco rule the pack has an equivalent of, the equivalent must reach
//! Falco's verdict on every case, except for the disagreements listed in `DISAGREEMENTS` (and
//! explained in docs/falco-conformance.md), which are asserted as disagreements so that a change
//! in either direction fails with a message saying which entry to update.
//!
//! What a case's verdict means, from Falco's harness (test/falco_test.py in falcosecurity/falco):
//! `detect: False` asserts that Falco reports no event at all, so every loaded rule is silent on
//! the trace; `detect: True` asserts that each rule in `detect_counts` alerts exactly that many
//! times and says nothing about the other rules. Their verdicts are worked out here from their
//! conditions in the k8saudit plugin's `k8s_audit_rules.yaml`: the ones that alert are listed in
//! `ALSO_ALERTS` with the reason, the others are silent.
//!
//! Some cases load test-only rules files, list or macro overrides that change some rules'
//! verdicts (trust the nginx image, allow namespace foo, switch the activity rules off...). Those
//! rules are out of scope for those cases (`TEST_ONLY_RULES_FILES` says which rules each file
//! touches); the case's other rules stay in scope. A case that loads no k8s audit rules at all
//! is out of scope as a whole.
//!
//! Falco ships "Disallowed K8s User" and "Create Disallowed Namespace" enabled with example
//! lists; the pack ships their equivalents (user-outside-allowlist, namespace-outside-allowlist)
//! disabled with example lists. The runs here enable those two, as a user of them would, and
//! leave their example lists as they are. Everything else runs as shipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::{TempDir, data, run, stderr, stdout};

const CASES: &str = "corpus/falco/test/falco_k8s_audit_tests.yaml";
const TRACES: &str = "corpus/falco/test/trace_files/k8s_audit";

/// A Falco rule and the pack rules that together cover what it matches: the pack's verdict is
/// "alerts" when one of `kubetrail` reports an event whose verb is one of `verbs` (any verb when
/// empty, for the rules whose Falco counterparts are split by verb).
struct Equivalent {
    falco: &'static str,
    kubetrail: &'static [&'static str],
    verbs: &'static [&'static str],
}

const fn eq(
    falco: &'static str,
    kubetrail: &'static [&'static str],
    verbs: &'static [&'static str],
) -> Equivalent {
    Equivalent {
        falco,
        kubetrail,
        verbs,
    }
}

const ANY: &[&str] = &[];
const CREATE: &[&str] = &["create"];
const DELETE: &[&str] = &["delete"];

/// Falco's k8s audit rules (by the names falco_k8s_audit_tests.yaml uses; the plugin has since
/// split "K8s Role/Clusterrole …" and "K8s Role/Clusterrolebinding …" into Role, ClusterRole,
/// RoleBinding and ClusterRoleBinding rules with the same conditions) and their equivalents.
const EQUIVALENTS: &[Equivalent] = &[
    eq("Disallowed K8s User", &["user-outside-allowlist"], ANY),
    eq("Create Disallowed Pod", &["image-not-allowlisted"], ANY),
    eq("Create Privileged Pod", &["privileged-container"], ANY),
    eq(
        "Create Sensitive Mount Pod",
        &["sensitive-hostpath-volume"],
        ANY,
    ),
    eq("Create HostNetwork Pod", &["host-network-pod"], ANY),
    eq("Create HostPid Pod", &["host-pid-pod"], ANY),
    eq("Create HostIPC Pod", &["host-ipc-pod"], ANY),
    eq("Create NodePort Service", &["nodeport-service"], ANY),
    eq(
        "Create/Modify Configmap With Private Credentials",
        &["configmap-with-credentials"],
        ANY,
    ),
    // The pack splits anonymous requests by whether they write: writes are critical.
    eq(
        "Anonymous Request Allowed",
        &["anonymous-request-allowed", "anonymous-mutation-allowed"],
        ANY,
    ),
    eq("Attach/Exec Pod", &["exec-into-pod", "attach-to-pod"], ANY),
    eq("port-forward", &["pod-port-forward"], ANY),
    eq(
        "EphemeralContainers Created",
        &["ephemeral-container-added"],
        ANY,
    ),
    eq(
        "Create Disallowed Namespace",
        &["namespace-outside-allowlist"],
        ANY,
    ),
    eq(
        "Pod Created in Kube Namespace",
        &["pod-created-in-system-namespace"],
        ANY,
    ),
    eq(
        "Service Account Created in Kube Namespace",
        &["serviceaccount-created-in-system-namespace"],
        ANY,
    ),
    eq(
        "System ClusterRole Modified/Deleted",
        &["system-role-modified"],
        ANY,
    ),
    eq(
        "Attach to cluster-admin Role",
        &["cluster-admin-binding"],
        ANY,
    ),
    eq("ClusterRole With Wildcard Created", &["wildcard-role"], ANY),
    eq(
        "ClusterRole With Write Privileges Created",
        &["role-write-verbs"],
        ANY,
    ),
    eq("ClusterRole With Pod Exec Created", &["role-pod-exec"], ANY),
    eq(
        "K8s Deployment Created",
        &["deployment-created-or-deleted"],
        CREATE,
    ),
    eq(
        "K8s Deployment Deleted",
        &["deployment-created-or-deleted"],
        DELETE,
    ),
    eq(
        "K8s Service Created",
        &["service-created-or-deleted"],
        CREATE,
    ),
    eq(
        "K8s Service Deleted",
        &["service-created-or-deleted"],
        DELETE,
    ),
    eq(
        "K8s ConfigMap Created",
        &["configmap-created-or-deleted"],
        CREATE,
    ),
    eq(
        "K8s ConfigMap Deleted",
        &["configmap-created-or-deleted"],
        DELETE,
    ),
    eq("K8s Namespace Created", &["namespace-created"], ANY),
    eq("K8s Namespace Deleted", &["namespace-deleted"], ANY),
    // Creations in kube-system and kube-public are reported by the medium rule instead.
    eq(
        "K8s Serviceaccount Created",
        &[
            "serviceaccount-created-or-deleted",
            "serviceaccount-created-in-system-namespace",
        ],
        CREATE,
    ),
    eq(
        "K8s Serviceaccount Deleted",
        &["serviceaccount-created-or-deleted"],
        DELETE,
    ),
    eq(
        "K8s Role/Clusterrole Created",
        &["role-created-or-deleted"],
        CREATE,
    ),
    eq(
        "K8s Role/Clusterrole Deleted",
        &["role-created-or-deleted"],
        DELETE,
    ),
    eq(
        "K8s Role/Clusterrolebinding Created",
        &["rbac-binding-changed"],
        CREATE,
    ),
    eq(
        "K8s Role/Clusterrolebinding Deleted",
        &["rbac-binding-changed"],
        DELETE,
    ),
    eq("K8s Secret Created", &["secret-modified"], CREATE),
    eq("K8s Secret Deleted", &["secret-modified"], DELETE),
    eq(
        "K8s Secret Get Unsuccessfully Tried",
        &["secret-access-denied"],
        ANY,
    ),
    eq(
        "Ingress Object without TLS Certificate Created",
        &["ingress-without-tls"],
        ANY,
    ),
    eq("All K8s Audit Events", &["all-audit-events"], ANY),
];

/// Falco k8s audit rules the pack has no equivalent of, and why.
const WITHOUT_EQUIVALENT: &[(&str, &str)] = &[
    (
        "K8s Secret Get Successfully",
        "reports every successful secret read, controllers' included; the pack reports reads by \
         people, by service accounts using kubectl and by node credentials (secret-read-*)",
    ),
    (
        "Full K8s Administrative Access",
        "off in Falco; admin-credential-from-public-ip also requires a public source address",
    ),
    (
        "Untrusted Node Successfully Joined the Cluster",
        "off in Falco (a node allowlist); the pack records every registration (node-registered)",
    ),
    (
        "Untrusted Node Unsuccessfully Tried to Join the Cluster",
        "off in Falco (a node allowlist); the pack has no node allowlist",
    ),
];

/// Falco's own rules files: anything else a case loads is a test-only override.
const FALCO_RULES_FILES: &[&str] = &[
    "falco_rules.yaml",
    "k8s_audit_rules.yaml",
    "engine_v4_k8s_audit_rules.yaml",
];

const ACTIVITY_RULES: &[&str] = &[
    "K8s Deployment Created",
    "K8s Deployment Deleted",
    "K8s Service Created",
    "K8s Service Deleted",
    "K8s ConfigMap Created",
    "K8s ConfigMap Deleted",
    "K8s Namespace Created",
    "K8s Namespace Deleted",
    "K8s Serviceaccount Created",
    "K8s Serviceaccount Deleted",
    "K8s Role/Clusterrole Created",
    "K8s Role/Clusterrole Deleted",
    "K8s Role/Clusterrolebinding Created",
    "K8s Role/Clusterrolebinding Deleted",
    "K8s Secret Created",
    "K8s Secret Deleted",
    "K8s Secret Get Unsuccessfully Tried",
    "Ingress Object without TLS Certificate Created",
];

/// Falco's test-only rules files, what each does and the rules whose verdicts it changes.
const TEST_ONLY_RULES_FILES: &[(&str, &str, &[&str])] = &[
    (
        "allow_namespace_foo.yaml",
        "appends foo to allowed_namespaces",
        &["Create Disallowed Namespace"],
    ),
    (
        "allow_user_some-user.yaml",
        "appends some-user to allowed_k8s_users",
        &["Disallowed K8s User"],
    ),
    (
        "disallow_kactivity.yaml",
        "switches the activity rules off (consider_activity_events)",
        ACTIVITY_RULES,
    ),
    (
        "trust_nginx_container.yaml",
        "trusts the nginx image for privileged, sensitive-mount and host-network pods",
        &[
            "Create Privileged Pod",
            "Create Sensitive Mount Pod",
            "Create HostNetwork Pod",
        ],
    ),
    (
        "allow_only_apache_container.yaml",
        "replaces the allow-all allowed_k8s_containers with an image list",
        &["Create Disallowed Pod"],
    ),
    (
        "allow_nginx_container.yaml",
        "replaces the allow-all allowed_k8s_containers with an image list",
        &["Create Disallowed Pod"],
    ),
];

/// Verdicts Falco's harness does not check, worked out from the rule conditions: in these
/// `detect: True` cases these rules alert too, though the case does not count them.
const ALSO_ALERTS: &[(&str, &str, &str)] = &[
    (
        "anonymous_user",
        "K8s Namespace Created",
        "a successful namespace create, whoever makes it",
    ),
    (
        "anonymous_user",
        "Create Disallowed Namespace",
        "foo is not in allowed_namespaces",
    ),
    (
        "attach_cluster_admin_role",
        "K8s Role/Clusterrolebinding Created",
        "a successful clusterrolebinding create",
    ),
    (
        "create_cluster_role_wildcard_resources",
        "K8s Role/Clusterrole Created",
        "a successful clusterrole create",
    ),
    (
        "create_cluster_role_wildcard_verbs",
        "K8s Role/Clusterrole Created",
        "a successful clusterrole create",
    ),
    (
        "create_writable_cluster_role",
        "K8s Role/Clusterrole Created",
        "a successful clusterrole create",
    ),
    (
        "create_pod_exec_cluster_role",
        "K8s Role/Clusterrole Created",
        "a successful clusterrole create",
    ),
    (
        "create_serviceaccount_in_kube_system_namespace",
        "K8s Serviceaccount Created",
        "a successful serviceaccount create, in any namespace",
    ),
    (
        "create_serviceaccount_in_kube_public_namespace",
        "K8s Serviceaccount Created",
        "a successful serviceaccount create, in any namespace",
    ),
    (
        "system_clusterrole_deleted",
        "K8s Role/Clusterrole Deleted",
        "a successful clusterrole delete",
    ),
    (
        "user_outside_allowed_set",
        "K8s Namespace Created",
        "a successful namespace create (the case leaves the activity rules on)",
    ),
    (
        "namespace_outside_allowed_set",
        "K8s Namespace Created",
        "a successful namespace create (the case leaves the activity rules on)",
    ),
];

/// Where the pack's verdict differs from Falco's, and why.
struct Disagreement {
    case: &'static str,
    falco_rule: &'static str,
    kubetrail_rule: &'static str,
    /// The pack's verdict; Falco's is the opposite.
    kubetrail_alerts: bool,
    why: &'static str,
}

const CONTROLLER_POD: &str = "the pod is created by the replicaset controller \
    (system:serviceaccount:kube-system:replicaset-controller), which the default exemptions \
    leave out by design: the pack judges the workload template where a person created it (the \
    Deployment), and reports the same pod created by a person";

const fn controller_pod(
    case: &'static str,
    falco_rule: &'static str,
    kubetrail_rule: &'static str,
) -> Disagreement {
    Disagreement {
        case,
        falco_rule,
        kubetrail_rule,
        kubetrail_alerts: false,
        why: CONTROLLER_POD,
    }
}

const DISAGREEMENTS: &[Disagreement] = &[
    controller_pod(
        "compat_engine_v4_create_privileged_pod",
        "Create Privileged Pod",
        "privileged-container",
    ),
    controller_pod(
        "compat_engine_v4_create_hostnetwork_pod",
        "Create HostNetwork Pod",
        "host-network-pod",
    ),
    controller_pod(
        "create_privileged_pod",
        "Create Privileged Pod",
        "privileged-container",
    ),
    controller_pod(
        "create_privileged_no_secctx_1st_container_2nd_container_pod",
        "Create Privileged Pod",
        "privileged-container",
    ),
    controller_pod(
        "create_privileged_2nd_container_pod",
        "Create Privileged Pod",
        "privileged-container",
    ),
    controller_pod(
        "create_sensitive_mount_pod",
        "Create Sensitive Mount Pod",
        "sensitive-hostpath-volume",
    ),
    controller_pod(
        "create_sensitive_mount_2nd_container_pod",
        "Create Sensitive Mount Pod",
        "sensitive-hostpath-volume",
    ),
    controller_pod(
        "create_hostnetwork_pod",
        "Create HostNetwork Pod",
        "host-network-pod",
    ),
    controller_pod(
        "create_pod_in_kube_system_namespace",
        "Pod Created in Kube Namespace",
        "pod-created-in-system-namespace",
    ),
    controller_pod(
        "create_pod_in_kube_public_namespace",
        "Pod Created in Kube Namespace",
        "pod-created-in-system-namespace",
    ),
    Disagreement {
        case: "create_kube_system_secret",
        falco_rule: "K8s Secret Created",
        kubetrail_rule: "secret-modified",
        kubetrail_alerts: true,
        why: "Falco leaves every kube-system secret out to skip service-account token secrets; \
              the pack leaves out the identities that write those (control plane, kube-system \
              controllers) instead, so a person (here admin) writing a kube-system secret, a \
              bootstrap token that lets a machine join as a node, is recorded at info",
    },
    Disagreement {
        case: "system_clusterrole_modified",
        falco_rule: "ClusterRole With Write Privileges Created",
        kubetrail_rule: "role-write-verbs",
        kubetrail_alerts: true,
        why: "Falco judges a role's verbs on create only; the pack judges them on every write \
              (create, update, patch), as a patch can grant the same verbs to an existing role; \
              here a patch of system:node-problem-detector lists create, patch and update",
    },
];

/// One of Falco's test cases.
struct Case {
    name: String,
    detect: bool,
    /// Alerts per Falco rule, from `detect_counts`.
    counts: BTreeMap<String, u64>,
    rules_files: Vec<String>,
    /// The trace file's name in `TRACES`.
    trace: String,
    stderr_contains: Option<String>,
}

fn untagged(value: &Yaml) -> &Yaml {
    match value {
        Yaml::Tagged(tagged) => &tagged.value,
        other => other,
    }
}

/// Falco's test cases, in file order (`trace_files` is an avocado `!mux` mapping).
fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data(CASES)).unwrap();
    let doc: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let cases = untagged(&doc["trace_files"]).as_mapping().unwrap();
    cases
        .iter()
        .map(|(name, case)| {
            let name = name.as_str().unwrap().to_owned();
            let case = untagged(case);
            let counts = case["detect_counts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|entry| entry.as_mapping().unwrap())
                .map(|(rule, n)| (rule.as_str().unwrap().to_owned(), n.as_u64().unwrap()))
                .collect();
            let rules_files = case["rules_file"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            let opts = case["addl_cmdline_opts"].as_str().unwrap();
            let (_, path) = opts.split_once("open_params=").unwrap();
            let trace = path
                .trim()
                .strip_prefix("trace_files/k8s_audit/")
                .unwrap()
                .to_owned();
            Case {
                detect: case["detect"].as_bool().unwrap(),
                counts,
                rules_files,
                trace,
                stderr_contains: case["stderr_contains"].as_str().map(str::to_owned),
                name,
            }
        })
        .collect()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// Why a whole case is out of scope, if it is.
fn case_out_of_scope(case: &Case) -> Option<String> {
    let loads_k8s_rules = case
        .rules_files
        .iter()
        .any(|f| basename(f).ends_with("k8s_audit_rules.yaml"));
    (!loads_k8s_rules).then(|| {
        let files: Vec<&str> = case.rules_files.iter().map(|f| basename(f)).collect();
        format!(
            "loads none of Falco's k8s audit rules, only the test-only {}",
            files.join(", ")
        )
    })
}

/// Falco's verdict on `rule` in `case`: whether it alerts, or why that is out of scope.
fn falco_verdict(case: &Case, rule: &str) -> Result<bool, String> {
    for file in case.rules_files.iter().map(|f| basename(f)) {
        if FALCO_RULES_FILES.contains(&file) {
            continue;
        }
        let Some((_, what, rules)) = TEST_ONLY_RULES_FILES.iter().find(|(f, ..)| *f == file) else {
            panic!(
                "{}: rules file {file} is not classified: add it to TEST_ONLY_RULES_FILES",
                case.name
            );
        };
        if rules.contains(&rule) {
            return Err(format!("{file} {what}"));
        }
    }
    let also = ALSO_ALERTS
        .iter()
        .any(|(c, r, _)| *c == case.name && *r == rule);
    Ok(case.detect && (case.counts.contains_key(rule) || also))
}

/// What one run of the pack over a trace reported.
struct Run {
    findings: Vec<Value>,
    stderr: String,
    code: Option<i32>,
}

impl Run {
    /// How many events the pack reported under `equivalent`.
    fn count(&self, equivalent: &Equivalent) -> u64 {
        let matching = self.findings.iter().filter(|f| {
            let rule = f["rule"].as_str().unwrap();
            let verb = f["verb"].as_str().unwrap_or("");
            equivalent.kubetrail.contains(&rule)
                && (equivalent.verbs.is_empty() || equivalent.verbs.contains(&verb))
        });
        matching.count() as u64
    }
}

/// A rules directory switching on the two allowlist rules Falco ships enabled.
fn allowlist_overrides(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    for rule in ["user-outside-allowlist", "namespace-outside-allowlist"] {
        let path = dir.path().join(format!("{rule}.yaml"));
        std::fs::write(path, format!("override: {rule}\nenabled: true\n")).unwrap();
    }
    dir
}

/// One `kubetrail rules run` over `input` (a file, or `-` for `stdin`).
fn run_pack(rules: &Path, input: &str, stdin: &[u8]) -> Run {
    let rules = rules.to_str().unwrap();
    let output = run(
        &["rules", "run", "-o", "json", "--rules", rules, input],
        stdin,
    );
    Run {
        findings: stdout(&output)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: stderr(&output),
        code: output.status.code(),
    }
}

/// The comparison of the pack with Falco over some cases.
#[derive(Default)]
struct Tally {
    agreements: usize,
    /// Agreements where Falco alerts.
    alerting_agreements: usize,
    /// In-scope cases with no disagreement.
    agreeing_cases: usize,
    disagreements: usize,
    /// (case, Falco rule or "*", reason)
    out_of_scope: Vec<(String, String, String)>,
    failures: Vec<String>,
    used_disagreements: BTreeSet<(&'static str, &'static str)>,
}

/// Compares the pack's verdicts (`runs`, by trace) with Falco's on every in-scope case and rule;
/// only `disagreements` may differ, and they must.
fn compare(cases: &[Case], runs: &BTreeMap<String, Run>, disagreements: &[Disagreement]) -> Tally {
    let mut tally = Tally::default();
    for case in cases {
        if let Some(reason) = case_out_of_scope(case) {
            tally
                .out_of_scope
                .push((case.name.clone(), "*".into(), reason));
            continue;
        }
        let run = &runs[&case.trace];
        let (before, failures_before) = (tally.disagreements, tally.failures.len());
        for equivalent in EQUIVALENTS {
            let falco = match falco_verdict(case, equivalent.falco) {
                Ok(alerts) => alerts,
                Err(reason) => {
                    tally
                        .out_of_scope
                        .push((case.name.clone(), equivalent.falco.into(), reason));
                    continue;
                }
            };
            let count = run.count(equivalent);
            let kubetrail = count > 0;
            let subject = format!(
                "{} ({}): Falco's {:?} {} and {} {}",
                case.name,
                case.trace,
                equivalent.falco,
                if falco { "alerts" } else { "is silent" },
                equivalent.kubetrail.join(" | "),
                if kubetrail {
                    format!("reports {count}")
                } else {
                    "is silent".into()
                },
            );
            let listed = disagreements
                .iter()
                .find(|d| d.case == case.name && d.falco_rule == equivalent.falco);
            match listed {
                Some(d) => {
                    tally.used_disagreements.insert((d.case, d.falco_rule));
                    if kubetrail == falco || kubetrail != d.kubetrail_alerts {
                        tally.failures.push(format!(
                            "{subject}, but DISAGREEMENTS lists this as a disagreement ({}): \
                             update it and docs/falco-conformance.md",
                            d.why
                        ));
                    } else {
                        tally.disagreements += 1;
                    }
                }
                None if kubetrail != falco => tally.failures.push(format!(
                    "{subject}: a new disagreement; fix it, or list it in DISAGREEMENTS and \
                     docs/falco-conformance.md with the reason"
                )),
                None => {
                    tally.agreements += 1;
                    tally.alerting_agreements += usize::from(falco);
                    if let Some(&n) = case.counts.get(equivalent.falco)
                        && n != count
                    {
                        tally.failures.push(format!(
                            "{subject}, but Falco's detect_counts says {n} times"
                        ));
                    }
                }
            }
        }
        if tally.disagreements == before && tally.failures.len() == failures_before {
            tally.agreeing_cases += 1;
        }
    }
    tally
}

fn assert_no_failures(tally: &Tally) {
    assert!(
        tally.failures.is_empty(),
        "{} of Falco's verdicts not met:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
}

/// The tables above name real cases and rules, in the way each is used.
fn check_tables(cases: &[Case]) {
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no Falco test case {name}"))
    };
    let equivalent = |rule: &str| {
        EQUIVALENTS
            .iter()
            .find(|e| e.falco == rule)
            .unwrap_or_else(|| panic!("no equivalent of Falco rule {rule:?}"))
    };
    for (name, rule, _) in ALSO_ALERTS {
        let c = case(name);
        equivalent(rule);
        assert!(c.detect, "ALSO_ALERTS: {name} is a detect: False case");
        assert!(
            !c.counts.contains_key(*rule),
            "ALSO_ALERTS: {name} already counts {rule:?}"
        );
    }
    for d in DISAGREEMENTS {
        case(d.case);
        let e = equivalent(d.falco_rule);
        assert!(
            e.kubetrail.contains(&d.kubetrail_rule),
            "DISAGREEMENTS: {} is not an equivalent of {:?}",
            d.kubetrail_rule,
            d.falco_rule
        );
    }
    // Every rule a case counts is either mapped or listed as without an equivalent.
    for c in cases.iter().filter(|c| case_out_of_scope(c).is_none()) {
        for rule in c.counts.keys() {
            let known = EQUIVALENTS.iter().any(|e| e.falco == rule)
                || WITHOUT_EQUIVALENT.iter().any(|(r, _)| r == rule);
            assert!(
                known,
                "{}: Falco rule {rule:?} is neither in EQUIVALENTS nor WITHOUT_EQUIVALENT",
                c.name
            );
        }
    }
    let listed = run(&["rules", "list", "-o", "json"], b"");
    let pack: BTreeSet<String> = stdout(&listed)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect();
    for e in EQUIVALENTS {
        for rule in e.kubetrail {
            assert!(pack.contains(*rule), "{rule} is not in the pack");
        }
    }
}

/// The pack reaches Falco's verdict on Falco's own traces, but for the listed disagreements.
#[test]
fn the_pack_agrees_with_falco_on_falcos_own_test_cases() {
    let cases = cases();
    check_tables(&cases);
    let rules = allowlist_overrides("falco-allowlists");
    let traces: BTreeSet<&str> = cases.iter().map(|c| c.trace.as_str()).collect();
    let runs: BTreeMap<String, Run> = traces
        .into_iter()
        .map(|trace| {
            let path = data(TRACES).join(trace);
            let run = run_pack(rules.path(), path.to_str().unwrap(), b"");
            (trace.to_owned(), run)
        })
        .collect();
    // Falco's harness also checks that a file that is no audit event is reported as such.
    for case in &cases {
        let run = &runs[&case.trace];
        if case.stderr_contains.is_some() {
            let expected = format!("{}:1: not-an-event", case.trace);
            assert_eq!(run.code, Some(3), "{}: {}", case.name, run.stderr);
            assert!(
                run.stderr.contains(&expected),
                "{}: {}",
                case.name,
                run.stderr
            );
        } else {
            assert_eq!(run.code, Some(0), "{}: {}", case.name, run.stderr);
        }
    }
    let tally = compare(&cases, &runs, DISAGREEMENTS);
    assert_no_failures(&tally);
    for d in DISAGREEMENTS {
        assert!(
            tally.used_disagreements.contains(&(d.case, d.falco_rule)),
            "DISAGREEMENTS: {} / {:?} is out of scope or not compared; remove it",
            d.case,
            d.falco_rule
        );
    }
    let partly: BTreeSet<&str> = tally
        .out_of_scope
        .iter()
        .map(|(c, ..)| c.as_str())
        .collect();
    eprintln!(
        "falco conformance: {} cases, {} agree on every rule in scope; {} verdicts agree ({} of \
         them alerts), {} listed disagreements; {} verdicts in {} cases out of scope",
        cases.len(),
        tally.agreeing_cases,
        tally.agreements,
        tally.alerting_agreements,
        tally.disagreements,
        tally.out_of_scope.len(),
        partly.len()
    );
}

/// The pod disagreements are the controller exemption and nothing else: the same pods created
/// by a person (minikube-user, whom neither side's example allowlist reports) get Falco's
/// verdict on every rule. One run over all of them, auditIDs prefixed with the trace's name.
#[test]
fn controller_made_pods_made_by_a_person_get_falcos_verdicts() {
    let cases = cases();
    let controller_made = |trace: &str| {
        let text = std::fs::read_to_string(data(TRACES).join(trace)).unwrap();
        let events: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let by_controller = |e: &Value| {
            let user = e["user"]["username"].as_str().unwrap_or("");
            e["objectRef"]["resource"] == "pods"
                && e["verb"] == "create"
                && user.starts_with("system:serviceaccount:kube-system:")
                && user.ends_with("-controller")
        };
        (!events.is_empty() && events.iter().all(by_controller)).then_some(events)
    };
    let mut input = String::new();
    let mut traces = BTreeSet::new();
    for case in &cases {
        let Some(events) = controller_made(&case.trace) else {
            continue;
        };
        if !traces.insert(case.trace.clone()) {
            continue;
        }
        for mut event in events {
            event["user"] = serde_json::json!({
                "username": "minikube-user",
                "groups": ["system:masters", "system:authenticated"],
            });
            let id = format!("{}/{}", case.trace, event["auditID"].as_str().unwrap());
            event["auditID"] = Value::String(id);
            input.push_str(&event.to_string());
            input.push('\n');
        }
    }
    let every_controller_disagreement_covered = DISAGREEMENTS
        .iter()
        .filter(|d| d.why == CONTROLLER_POD)
        .all(|d| traces.contains(&cases.iter().find(|c| c.name == d.case).unwrap().trace));
    assert!(every_controller_disagreement_covered, "{traces:?}");

    let rules = allowlist_overrides("falco-allowlists-person");
    let all = run_pack(rules.path(), "-", input.as_bytes());
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for trace in &traces {
        let prefix = format!("{trace}/");
        let findings = all
            .findings
            .iter()
            .filter(|f| f["auditID"].as_str().unwrap().starts_with(&prefix))
            .cloned()
            .collect();
        let run = Run {
            findings,
            stderr: String::new(),
            code: Some(0),
        };
        runs.insert(trace.clone(), run);
    }
    let pod_cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| traces.contains(&c.trace))
        .collect();
    let tally = compare(&pod_cases, &runs, &[]);
    assert_no_failures(&tally);
    assert!(tally.agreements > 0);
}

//! Policy lint: what a careful reviewer would point out in an audit policy that kube-apiserver
//! accepts. Each check is a function below with a comment saying what it catches and why it
//! matters; each finding names the rule, its line, and the fix.
//!
//! Checks that depend on first-match order (credentials in logs, health endpoints, list volume)
//! evaluate the policy on a sweep of representative requests instead of reading rules one by
//! one, so a `Metadata` rule for secrets placed before a `RequestResponse` catch-all is correctly
//! not reported.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use kubetrail_event::{Level, Stage};

use crate::attributes::{RequestAttributes, User};
use crate::eval::Evaluator;
use crate::load::{GroupResources, Loaded, Policy, PolicyRule, Severity as LoadSeverity};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LintSeverity {
    /// Worth knowing.
    Info,
    /// Costs volume, coverage or clarity.
    Warning,
    /// Leaks credentials into the log, or the rule does not do what it says.
    Error,
}

impl LintSeverity {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            LintSeverity::Info => "info",
            LintSeverity::Warning => "warning",
            LintSeverity::Error => "error",
        }
    }
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check that found it, e.g. `shadowed-rule`.
    pub code: &'static str,
    /// How much it matters.
    pub severity: LintSeverity,
    /// The rule concerned (0-based), if one.
    pub rule: Option<usize>,
    /// Its line in the file.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.severity.as_str(), self.code)?;
        if let Some(rule) = self.rule {
            write!(f, " rules[{rule}]")?;
        }
        write!(f, ": {}\n  fix: {}", self.message, self.fix)
    }
}

/// Lints a loaded policy; the strictness warnings of loading come first.
pub fn lint(loaded: &Loaded) -> Vec<Finding> {
    let policy = &loaded.policy;
    let mut findings: Vec<Finding> = loaded
        .warnings
        .iter()
        .filter(|d| d.severity == LoadSeverity::Warning)
        .map(|d| Finding {
            code: "unknown-field",
            severity: LintSeverity::Warning,
            rule: None,
            line: d.line,
            message: d.message.clone(),
            fix: "correct the field name (names are case-sensitive) or remove it; an ignored \
                  field silently widens the rule"
                .to_owned(),
        })
        .collect();
    let evaluator = Evaluator::new(policy);
    let sweep = Sweep::new(policy);
    shadowed_rules(policy, &mut findings);
    credentials_in_logs(policy, &evaluator, &sweep, &mut findings);
    no_catch_all(policy, &mut findings);
    request_received_not_omitted(policy, &mut findings);
    health_endpoints_logged(policy, &evaluator, &sweep, &mut findings);
    list_watch_request_response(policy, &evaluator, &sweep, &mut findings);
    core_group_misnamed(policy, &mut findings);
    resource_names_never_match(policy, &mut findings);
    unknown_verbs(policy, &mut findings);
    findings.sort_by_key(|f| (f.line.unwrap_or(0), std::cmp::Reverse(f.severity)));
    findings
}

fn finding(
    policy: &Policy,
    rule: Option<usize>,
    code: &'static str,
    severity: LintSeverity,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        code,
        severity,
        rule,
        line: rule.map(|r| policy.rules[r].line),
        message,
        fix,
    }
}

/// `shadowed-rule`: a rule that can never match because an earlier rule matches every request
/// it would. First match wins, so such a rule is dead: usually a more specific rule written after
/// a general one (a `None` for leases after `- level: Metadata`), which then does nothing.
fn shadowed_rules(policy: &Policy, findings: &mut Vec<Finding>) {
    for (j, later) in policy.rules.iter().enumerate() {
        if let Some(i) = (0..j).find(|&i| covers(&policy.rules[i], later)) {
            findings.push(finding(
                policy,
                Some(j),
                "shadowed-rule",
                LintSeverity::Warning,
                format!(
                    "rules[{j}] never applies: rules[{i}] (line {}) matches every request it does, and the first matching rule wins",
                    policy.rules[i].line
                ),
                format!("move rules[{j}] above rules[{i}], or remove it"),
            ));
        }
    }
}

/// Whether every request `inner` matches is matched by `outer`.
fn covers(outer: &PolicyRule, inner: &PolicyRule) -> bool {
    let subset = |o: &[String], i: &[String]| {
        o.is_empty() || (!i.is_empty() && i.iter().all(|x| o.contains(x)))
    };
    if !subset(&outer.users, &inner.users)
        || !subset(&outer.user_groups, &inner.user_groups)
        || !subset(&outer.verbs, &inner.verbs)
    {
        return false;
    }
    let outer_resource = !outer.namespaces.is_empty() || !outer.resources.is_empty();
    let inner_resource = !inner.namespaces.is_empty() || !inner.resources.is_empty();
    if !outer_resource && outer.non_resource_urls.is_empty() {
        return true;
    }
    if outer_resource {
        if !inner_resource || !subset(&outer.namespaces, &inner.namespaces) {
            return false;
        }
        if outer.resources.is_empty() {
            return true;
        }
        if inner.resources.is_empty() {
            return outer.resources.iter().any(matches_everything);
        }
        return inner
            .resources
            .iter()
            .all(|i| outer.resources.iter().any(|o| group_covers(o, i)));
    }
    if inner_resource || inner.non_resource_urls.is_empty() {
        return false;
    }
    inner.non_resource_urls.iter().all(|u| {
        outer.non_resource_urls.iter().any(|p| {
            p == "*"
                || p == u
                || (p.ends_with('*')
                    && u.trim_end_matches('*').starts_with(p.trim_end_matches('*')))
        })
    })
}

fn matches_everything(g: &GroupResources) -> bool {
    g.group == "*"
        && (g.resources.is_empty() || g.resources.iter().any(|r| r == "*"))
        && g.resource_names.is_empty()
}

fn group_covers(outer: &GroupResources, inner: &GroupResources) -> bool {
    if outer.group != inner.group && outer.group != "*" {
        return false;
    }
    if outer.resources.is_empty() {
        return true;
    }
    if inner.resources.is_empty() {
        return outer.resources.iter().any(|r| r == "*") && outer.resource_names.is_empty();
    }
    let names_covered = outer.resource_names.is_empty()
        || (!inner.resource_names.is_empty()
            && inner
                .resource_names
                .iter()
                .all(|n| outer.resource_names.contains(n)));
    names_covered
        && inner.resources.iter().all(|r| {
            outer.resources.iter().any(|p| {
                p == r
                    || p == "*"
                    || p.strip_suffix("/*").is_some_and(|base| {
                        r == base || r.strip_prefix(base).is_some_and(|s| s.starts_with('/'))
                    })
                    || p.strip_prefix("*/")
                        .is_some_and(|sub| r.rsplit_once('/').is_some_and(|(_, s)| s == sub))
            })
        })
}

/// Representative requests for the order-aware checks: users and namespaces named anywhere in
/// the policy plus typical ones, so a rule restricted to them is exercised too.
struct Sweep {
    users: Vec<(String, Vec<String>)>,
    namespaces: Vec<String>,
}

impl Sweep {
    fn new(policy: &Policy) -> Self {
        let mut users: Vec<(String, Vec<String>)> = vec![
            ("alice".into(), vec!["system:authenticated".into()]),
            (
                "system:anonymous".into(),
                vec!["system:unauthenticated".into()],
            ),
            (
                "system:serviceaccount:default:app".into(),
                vec![
                    "system:serviceaccounts".into(),
                    "system:authenticated".into(),
                ],
            ),
            (
                "system:node:node-1".into(),
                vec!["system:nodes".into(), "system:authenticated".into()],
            ),
        ];
        let mut namespaces: BTreeSet<String> =
            ["default", "kube-system", ""].map(String::from).into();
        for rule in &policy.rules {
            for user in &rule.users {
                users.push((user.clone(), vec!["system:authenticated".into()]));
            }
            for group in &rule.user_groups {
                users.push((
                    "member".into(),
                    vec![group.clone(), "system:authenticated".into()],
                ));
            }
            namespaces.extend(rule.namespaces.iter().cloned());
        }
        Sweep {
            users,
            namespaces: namespaces.into_iter().collect(),
        }
    }

    /// Every sweep request for `verb` on `group/resource[/subresource]`; calls `check` with the
    /// user name and namespace of each.
    fn resource_requests(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        mut check: impl FnMut(&RequestAttributes<'_>),
    ) {
        for (name, groups) in &self.users {
            for namespace in &self.namespaces {
                let request = RequestAttributes {
                    user: Some(User {
                        name: Cow::Borrowed(name),
                        groups: groups.iter().map(|g| Cow::Borrowed(g.as_str())).collect(),
                    }),
                    verb: Cow::Borrowed(verb),
                    namespace: Cow::Borrowed(namespace),
                    api_group: Cow::Borrowed(group),
                    api_version: Cow::Borrowed("v1"),
                    resource: Cow::Borrowed(resource),
                    subresource: Cow::Borrowed(subresource),
                    name: Cow::Borrowed(if matches!(verb, "list" | "watch" | "create") {
                        ""
                    } else {
                        "x"
                    }),
                    resource_request: true,
                    path: Cow::Borrowed(""),
                };
                check(&request);
            }
        }
    }

    fn non_resource_requests(&self, path: &str, mut check: impl FnMut(&RequestAttributes<'_>)) {
        for (name, groups) in &self.users {
            let request = RequestAttributes {
                user: Some(User {
                    name: Cow::Borrowed(name),
                    groups: groups.iter().map(|g| Cow::Borrowed(g.as_str())).collect(),
                }),
                verb: Cow::Borrowed("get"),
                path: Cow::Borrowed(path),
                ..RequestAttributes::default()
            };
            check(&request);
        }
    }
}

/// `credentials-in-logs`: requests whose bodies carry credentials logged with their bodies.
/// Secrets' data, TokenReview and TokenRequest tokens end up in the audit log (and everywhere it
/// is shipped) when such requests are logged at Request (bodies of writes) or RequestResponse
/// (every response). ConfigMaps often hold credentials too.
fn credentials_in_logs(
    policy: &Policy,
    evaluator: &Evaluator,
    sweep: &Sweep,
    findings: &mut Vec<Finding>,
) {
    let sensitive = [
        ("", "secrets", "", LintSeverity::Error, "Secret data"),
        (
            "authentication.k8s.io",
            "tokenreviews",
            "",
            LintSeverity::Error,
            "bearer tokens under review",
        ),
        (
            "",
            "serviceaccounts",
            "token",
            LintSeverity::Error,
            "issued service-account tokens",
        ),
        (
            "",
            "configmaps",
            "",
            LintSeverity::Warning,
            "ConfigMap data, which often holds credentials",
        ),
    ];
    let mut reported = BTreeSet::new();
    for (group, resource, subresource, severity, what) in sensitive {
        for verb in ["get", "list", "watch", "create", "update", "patch"] {
            sweep.resource_requests(verb, group, resource, subresource, |request| {
                let e = evaluator.evaluate(request);
                let leaks = e.level == Level::RequestResponse
                    || (e.level == Level::Request && matches!(verb, "create" | "update" | "patch"));
                let Some(rule) = e.rule.filter(|_| leaks) else { return };
                if !reported.insert((rule, resource)) {
                    return;
                }
                let key = if subresource.is_empty() { resource.to_owned() } else { format!("{resource}/{subresource}") };
                let group_text = if group.is_empty() { "\"\"" } else { group };
                findings.push(finding(
                    policy,
                    Some(rule),
                    "credentials-in-logs",
                    severity,
                    format!(
                        "{verb} {key} is logged at {} by this rule: {what} would be written to the audit log",
                        e.level
                    ),
                    format!(
                        "add before it: `- level: Metadata` with `resources: [{{group: {group_text}, resources: [\"{key}\"]}}]`"
                    ),
                ));
            });
        }
    }
}

/// `no-catch-all`: no rule without conditions. Requests no rule matches get level None and are
/// not audited at all, so new API groups and unexpected callers go unseen.
fn no_catch_all(policy: &Policy, findings: &mut Vec<Finding>) {
    let is_catch_all = |r: &PolicyRule| {
        r.users.is_empty()
            && r.user_groups.is_empty()
            && r.verbs.is_empty()
            && r.resources.is_empty()
            && r.namespaces.is_empty()
            && r.non_resource_urls.is_empty()
    };
    if !policy.rules.iter().any(is_catch_all) {
        findings.push(finding(
            policy,
            Some(policy.rules.len() - 1),
            "no-catch-all",
            LintSeverity::Warning,
            "no catch-all rule at the end: requests that match no rule are not audited at all"
                .to_owned(),
            "end the policy with `- level: Metadata`".to_owned(),
        ));
    }
}

/// `request-received-not-omitted`: every request is logged twice, at `RequestReceived` and
/// `ResponseComplete`, and the first carries nothing the second lacks. Omitting it halves volume.
fn request_received_not_omitted(policy: &Policy, findings: &mut Vec<Finding>) {
    if policy.omit_stages.contains(&Stage::RequestReceived) {
        return;
    }
    let logged = policy
        .rules
        .iter()
        .any(|r| r.level > Level::None && !r.omit_stages.contains(&Stage::RequestReceived));
    if logged {
        findings.push(Finding {
            code: "request-received-not-omitted",
            severity: LintSeverity::Warning,
            rule: None,
            line: None,
            message: "the RequestReceived stage is logged: every request produces an extra event that adds nothing ResponseComplete lacks".to_owned(),
            fix: "add `omitStages: [RequestReceived]` at the top level of the policy".to_owned(),
        });
    }
}

/// `health-endpoints-logged`: load balancers and kubelets probe `/healthz`, `/livez`, `/readyz`
/// every few seconds, and Prometheus scrapes `/metrics`: logging them is noise and volume.
fn health_endpoints_logged(
    policy: &Policy,
    evaluator: &Evaluator,
    sweep: &Sweep,
    findings: &mut Vec<Finding>,
) {
    let mut reported = BTreeSet::new();
    for path in ["/healthz", "/livez", "/readyz", "/metrics", "/version"] {
        sweep.non_resource_requests(path, |request| {
            let e = evaluator.evaluate(request);
            if let Some(rule) = e.rule.filter(|_| e.level > Level::None)
                && reported.insert(rule)
            {
                findings.push(finding(
                    policy,
                    Some(rule),
                    "health-endpoints-logged",
                    LintSeverity::Warning,
                    format!("GET {path} is logged at {} by this rule: health probes and metric scrapes flood the log", e.level),
                    "add near the top: `- level: None` with `nonResourceURLs: [\"/healthz*\", \"/livez*\", \"/readyz*\", \"/metrics\", \"/version\"]`".to_owned(),
                ));
            }
        });
    }
}

/// `list-watch-request-response`: a list at RequestResponse writes every object of the list into
/// the log (a cluster-wide pod list is megabytes), and controllers list constantly.
fn list_watch_request_response(
    policy: &Policy,
    evaluator: &Evaluator,
    sweep: &Sweep,
    findings: &mut Vec<Finding>,
) {
    let mut reported = BTreeSet::new();
    for (group, resource) in [
        ("", "pods"),
        ("", "events"),
        ("", "nodes"),
        ("", "endpoints"),
        ("apps", "deployments"),
        ("", "configmaps"),
    ] {
        for verb in ["list", "watch"] {
            sweep.resource_requests(verb, group, resource, "", |request| {
                let e = evaluator.evaluate(request);
                if let Some(rule) = e.rule.filter(|_| e.level == Level::RequestResponse)
                    && reported.insert(rule)
                {
                    findings.push(finding(
                        policy,
                        Some(rule),
                        "list-watch-request-response",
                        LintSeverity::Warning,
                        format!("{verb} {resource} is logged at RequestResponse by this rule: list responses hold every listed object, a large share of audit volume"),
                        "log list and watch at Request or Metadata: add before it a rule with `verbs: [\"list\", \"watch\"]` at `level: Request`".to_owned(),
                    ));
                }
            });
        }
    }
}

/// `core-group-name`: the core API group is written `""`. A group named `core` or `v1` is a valid
/// name that matches nothing, so the rule silently never applies to pods, secrets, ….
fn core_group_misnamed(policy: &Policy, findings: &mut Vec<Finding>) {
    for (i, rule) in policy.rules.iter().enumerate() {
        for g in rule
            .resources
            .iter()
            .filter(|g| g.group == "core" || g.group == "v1")
        {
            findings.push(Finding {
                line: Some(g.line),
                ..finding(
                    policy,
                    Some(i),
                    "core-group-name",
                    LintSeverity::Error,
                    format!("group {:?} matches nothing: the core API group (pods, secrets, …) is the empty string", g.group),
                    "write `group: \"\"`".to_owned(),
                )
            });
        }
    }
}

/// `resource-names-never-match`: `resourceNames` compares with the name in the URL, and create,
/// list, watch and deletecollection requests have none (list and watch only with a
/// `metadata.name` field selector), so a rule limited to those verbs never applies.
fn resource_names_never_match(policy: &Policy, findings: &mut Vec<Finding>) {
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.verbs.is_empty() || !rule.resources.iter().any(|g| !g.resource_names.is_empty()) {
            continue;
        }
        let nameless = ["create", "list", "watch", "deletecollection"];
        if rule.verbs.iter().all(|v| nameless.contains(&v.as_str())) {
            findings.push(finding(
                policy,
                Some(i),
                "resource-names-never-match",
                LintSeverity::Error,
                format!(
                    "resourceNames with verbs {:?}: these requests carry no name, so the rule never applies (list and watch only with fieldSelector=metadata.name=…)",
                    rule.verbs
                ),
                "remove resourceNames, or use verbs that address one object (get, update, patch, delete)".to_owned(),
            ));
        }
    }
}

/// `unknown-verb`: verbs are compared exactly, so `GET` or `read` never match; audit events
/// carry Kubernetes verbs, or lower-cased HTTP methods for non-resource URLs.
fn unknown_verbs(policy: &Policy, findings: &mut Vec<Finding>) {
    const KNOWN: [&str; 15] = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "proxy",
        "post",
        "put",
        "head",
        "options",
        "connect",
        "impersonate",
    ];
    for (i, rule) in policy.rules.iter().enumerate() {
        for verb in rule.verbs.iter().filter(|v| !KNOWN.contains(&v.as_str())) {
            findings.push(finding(
                policy,
                Some(i),
                "unknown-verb",
                LintSeverity::Warning,
                format!("verb {verb:?} is not a verb audit events carry, so it never matches"),
                format!("use one of {}", KNOWN.join(", ")),
            ));
        }
    }
}

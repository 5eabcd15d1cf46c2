//! Loading a policy file as kube-apiserver does (reference §2.2), with the line of every problem.
//!
//! The API server decodes strictly first; if the only problems are strictness ones (unknown or
//! duplicate fields) it decodes again leniently and logs a warning, otherwise it fails. Then the
//! group/version must be `audit.k8s.io/v1`, the policy is validated (all errors aggregated, with
//! the API's `field.Error` wording), and a policy without rules is rejected. [`load`] follows the
//! same order and words; strictness problems come back as warnings on a policy that loads.

use std::fmt;

use kubetrail_event::{Level, Stage};

use crate::yaml::{self, Key, Line, Node};

/// A problem found while loading, at a line of the file when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The 1-based line, when the problem is at one place.
    pub line: Option<Line>,
    /// Error (the API server would refuse to start) or warning (it would start, and log it).
    pub severity: Severity,
    /// The message, worded as kube-apiserver words it.
    pub message: String,
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The API server logs it and carries on.
    Warning,
    /// The API server refuses the policy.
    Error,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match self.line {
            Some(line) => write!(f, "line {line}: {severity}: {}", self.message),
            None => write!(f, "{severity}: {}", self.message),
        }
    }
}

/// A validated audit policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Rules in order; the first that matches decides.
    pub rules: Vec<PolicyRule>,
    /// Stages omitted for every request (`omitStages`).
    pub omit_stages: Vec<Stage>,
    /// `omitManagedFields`.
    pub omit_managed_fields: bool,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRule {
    /// `level`.
    pub level: Level,
    /// `users`: authenticated user names; empty matches any.
    pub users: Vec<String>,
    /// `userGroups`; empty matches any.
    pub user_groups: Vec<String>,
    /// `verbs`; empty matches any.
    pub verbs: Vec<String>,
    /// `resources`; empty matches any.
    pub resources: Vec<GroupResources>,
    /// `namespaces`; `""` is cluster-scoped; empty matches any.
    pub namespaces: Vec<String>,
    /// `nonResourceURLs`.
    pub non_resource_urls: Vec<String>,
    /// `omitStages` of the rule alone (the evaluator adds the policy's).
    pub omit_stages: Vec<Stage>,
    /// `omitManagedFields`; None inherits the policy's.
    pub omit_managed_fields: Option<bool>,
    /// The line where the rule starts.
    pub line: Line,
}

/// `resources[]` of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResources {
    /// `group`: `""` core, `"*"` any group (1.36+).
    pub group: String,
    /// `resources`: `pods`, `pods/log`, `*`, `*/scale`, `pods/*`; empty means all.
    pub resources: Vec<String>,
    /// `resourceNames`; empty means any.
    pub resource_names: Vec<String>,
    /// Where the entry starts.
    pub line: Line,
}

/// A policy that loaded, with the warnings the API server would log.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// Strictness problems the lenient decoding got past.
    pub warnings: Vec<Diagnostic>,
}

/// A policy that kube-apiserver would refuse, with every problem found.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// Errors, and the warnings found before them.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<String> = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        f.write_str(&errors.join("; "))
    }
}

impl std::error::Error for LoadError {}

/// Loads and validates a policy from the text of a YAML or JSON file.
pub fn load(text: &str) -> Result<Loaded, LoadError> {
    let mut decoder = PolicyDecoder::default();
    let raw = decoder.decode(text);
    let mut diagnostics = decoder.strict;
    if !decoder.fatal.is_empty() {
        diagnostics.extend(decoder.fatal);
        return Err(LoadError { diagnostics });
    }
    let raw = raw.expect("a decode without fatal errors yields a policy");
    let errors = validate(&raw);
    if !errors.is_empty() {
        diagnostics.extend(errors);
        return Err(LoadError { diagnostics });
    }
    if raw.rules.is_empty() {
        diagnostics.push(error(
            raw.rules_line,
            "loaded illegal policy with 0 rules".to_owned(),
        ));
        return Err(LoadError { diagnostics });
    }
    Ok(Loaded {
        policy: raw.into_policy(),
        warnings: diagnostics,
    })
}

fn error(line: Option<Line>, message: String) -> Diagnostic {
    Diagnostic {
        line,
        severity: Severity::Error,
        message,
    }
}

/// A list of strings with the line of each.
type Strings = Vec<(String, Line)>;

#[derive(Debug, Default)]
struct RawPolicy {
    rules: Vec<RawRule>,
    rules_line: Option<Line>,
    omit_stages: Strings,
    omit_managed_fields: bool,
}

#[derive(Debug, Default)]
struct RawRule {
    line: Line,
    level: Option<(String, Line)>,
    users: Strings,
    user_groups: Strings,
    verbs: Strings,
    resources: Vec<RawGroupResources>,
    namespaces: Strings,
    non_resource_urls: Strings,
    non_resource_urls_line: Line,
    omit_stages: Strings,
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Default)]
struct RawGroupResources {
    line: Line,
    group: (String, Line),
    resources: Strings,
    resource_names: Strings,
}

fn values(list: &Strings) -> Vec<String> {
    list.iter().map(|(s, _)| s.clone()).collect()
}

fn stages(list: &Strings) -> Vec<Stage> {
    list.iter().filter_map(|(s, _)| Stage::parse(s)).collect()
}

impl RawPolicy {
    fn into_policy(self) -> Policy {
        Policy {
            omit_stages: stages(&self.omit_stages),
            omit_managed_fields: self.omit_managed_fields,
            rules: self
                .rules
                .iter()
                .map(|r| PolicyRule {
                    level: r
                        .level
                        .as_ref()
                        .and_then(|(l, _)| Level::parse(l))
                        .unwrap_or(Level::None),
                    users: values(&r.users),
                    user_groups: values(&r.user_groups),
                    verbs: values(&r.verbs),
                    resources: r
                        .resources
                        .iter()
                        .map(|g| GroupResources {
                            group: g.group.0.clone(),
                            resources: values(&g.resources),
                            resource_names: values(&g.resource_names),
                            line: g.line,
                        })
                        .collect(),
                    namespaces: values(&r.namespaces),
                    non_resource_urls: values(&r.non_resource_urls),
                    omit_stages: stages(&r.omit_stages),
                    omit_managed_fields: r.omit_managed_fields,
                    line: r.line,
                })
                .collect(),
        }
    }
}

/// Decodes the tree into a [`RawPolicy`], collecting strictness problems (warnings) and fatal
/// decoding errors separately, as the API server's two decoding passes do.
#[derive(Default)]
struct PolicyDecoder {
    strict: Vec<Diagnostic>,
    fatal: Vec<Diagnostic>,
}

impl PolicyDecoder {
    fn warn(&mut self, line: Line, message: String) {
        self.strict.push(Diagnostic {
            line: Some(line),
            severity: Severity::Warning,
            message: format!(
                "strict decoding error: {message} (kube-apiserver ignores it and logs a warning)"
            ),
        });
    }

    fn fail(&mut self, line: Option<Line>, message: String) {
        self.fatal
            .push(error(line, format!("failed decoding: {message}")));
    }

    fn decode(&mut self, text: &str) -> Option<RawPolicy> {
        let root = match yaml::parse(text) {
            Ok(root) => root,
            Err((line, message)) => {
                self.fail(Some(line), format!("yaml: line {line}: {message}"));
                return None;
            }
        };
        let entries = match root {
            Node::Map(entries) => entries,
            Node::Null(_) => {
                self.fail(
                    None,
                    "Object 'Kind' is missing in the empty policy file".to_owned(),
                );
                return None;
            }
            other => {
                self.fail(
                    Some(other.line()),
                    format!("couldn't get version/kind; json parse error: cannot unmarshal {} into Go value of type struct", other.kind()),
                );
                return None;
            }
        };
        let mut policy = RawPolicy::default();
        let mut api_version = None;
        let mut kind = None;
        for (key, value) in self.fields(entries, "") {
            match key.name.as_str() {
                "apiVersion" => api_version = self.string(&value, "Policy.apiVersion"),
                "kind" => kind = self.string(&value, "Policy.kind"),
                "metadata" => {}
                "rules" => {
                    policy.rules_line = Some(key.line);
                    if let Some(items) = self.seq(value, "Policy.rules", "[]v1.PolicyRule") {
                        policy.rules = items.into_iter().filter_map(|r| self.rule(r)).collect();
                    }
                }
                "omitStages" => {
                    policy.omit_stages = self.strings(value, "Policy.omitStages", "[]v1.Stage")
                }
                "omitManagedFields" => {
                    policy.omit_managed_fields = self
                        .boolean(&value, "Policy.omitManagedFields")
                        .unwrap_or(false)
                }
                _ => self.warn(key.line, format!("unknown field \"{}\"", key.name)),
            }
        }
        match (&kind, &api_version) {
            (None, _) => self.fail(Some(1), "Object 'Kind' is missing in the policy".to_owned()),
            (Some((k, line)), _) if k != "Policy" => self.fail(
                Some(*line),
                format!(
                    "no kind \"{k}\" is registered for version \"{}\"",
                    api_version.as_ref().map_or("", |(v, _)| v)
                ),
            ),
            (Some(_), None) => self.fail(
                Some(1),
                "Object 'apiVersion' is missing in the policy".to_owned(),
            ),
            (Some(_), Some((v, line))) if v != "audit.k8s.io/v1" => {
                // kube-apiserver 1.24+ knows only v1; older group versions decode, then fail here.
                self.fatal.push(error(
                    Some(*line),
                    format!("unknown group version field {v}, Kind=Policy in policy (only audit.k8s.io/v1 is accepted since Kubernetes 1.24)"),
                ));
            }
            _ => {}
        }
        self.fatal.is_empty().then_some(policy)
    }

    /// The entries of a mapping, reporting duplicate keys (the last one wins, as in Go).
    fn fields(&mut self, entries: Vec<(Key, Node)>, context: &str) -> Vec<(Key, Node)> {
        let mut seen: Vec<(Key, Node)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if let Some(i) = seen.iter().position(|(k, _)| k.name == key.name) {
                self.warn(
                    key.line,
                    format!("duplicate field \"{context}{}\"", key.name),
                );
                seen.remove(i);
            }
            seen.push((key, value));
        }
        seen
    }

    fn type_error(&mut self, node: &Node, field: &str, go_type: &str) {
        self.fail(
            Some(node.line()),
            format!(
                "json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
                node.kind()
            ),
        );
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<(String, Line)> {
        match node {
            Node::Str(s, line) => Some((s.clone(), *line)),
            Node::Null(_) => None,
            other => {
                self.type_error(other, field, "string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match node {
            Node::Bool(b, _) => Some(*b),
            Node::Null(_) => None,
            other => {
                self.type_error(other, field, "bool");
                None
            }
        }
    }

    fn seq(&mut self, node: Node, field: &str, go_type: &str) -> Option<Vec<Node>> {
        match node {
            Node::Seq(items) => Some(items),
            Node::Null(_) => None,
            other => {
                self.type_error(&other, field, go_type);
                None
            }
        }
    }

    fn strings(&mut self, node: Node, field: &str, go_type: &str) -> Strings {
        let items = self.seq(node, field, go_type).unwrap_or_default();
        items
            .iter()
            .filter_map(|item| self.string(item, field))
            .collect()
    }

    fn rule(&mut self, node: Node) -> Option<RawRule> {
        let line = node.line();
        let Node::Map(entries) = node else {
            self.type_error(&node, "Policy.rules", "v1.PolicyRule");
            return None;
        };
        let mut rule = RawRule {
            line,
            non_resource_urls_line: line,
            ..RawRule::default()
        };
        for (key, value) in self.fields(entries, "rules.") {
            let field = format!("PolicyRule.{}", key.name);
            match key.name.as_str() {
                "level" => rule.level = self.string(&value, &field),
                "users" => rule.users = self.strings(value, &field, "[]string"),
                "userGroups" => rule.user_groups = self.strings(value, &field, "[]string"),
                "verbs" => rule.verbs = self.strings(value, &field, "[]string"),
                "namespaces" => rule.namespaces = self.strings(value, &field, "[]string"),
                "nonResourceURLs" => {
                    rule.non_resource_urls_line = key.line;
                    rule.non_resource_urls = self.strings(value, &field, "[]string");
                }
                "omitStages" => rule.omit_stages = self.strings(value, &field, "[]v1.Stage"),
                "omitManagedFields" => rule.omit_managed_fields = self.boolean(&value, &field),
                "resources" => {
                    let items = self
                        .seq(value, &field, "[]v1.GroupResources")
                        .unwrap_or_default();
                    rule.resources = items
                        .into_iter()
                        .filter_map(|g| self.group_resources(g))
                        .collect();
                }
                _ => self.warn(key.line, format!("unknown field \"rules.{}\"", key.name)),
            }
        }
        Some(rule)
    }

    fn group_resources(&mut self, node: Node) -> Option<RawGroupResources> {
        let line = node.line();
        let Node::Map(entries) = node else {
            self.type_error(&node, "PolicyRule.resources", "v1.GroupResources");
            return None;
        };
        let mut group = RawGroupResources {
            line,
            group: (String::new(), line),
            ..RawGroupResources::default()
        };
        for (key, value) in self.fields(entries, "rules.resources.") {
            let field = format!("GroupResources.{}", key.name);
            match key.name.as_str() {
                "group" => {
                    if let Some(g) = self.string(&value, &field) {
                        group.group = g;
                    }
                }
                "resources" => group.resources = self.strings(value, &field, "[]string"),
                "resourceNames" => group.resource_names = self.strings(value, &field, "[]string"),
                _ => self.warn(
                    key.line,
                    format!("unknown field \"rules.resources.{}\"", key.name),
                ),
            }
        }
        Some(group)
    }
}

const LEVELS: &str = r#""None", "Metadata", "Request", "RequestResponse""#;
const STAGES: &str = "RequestReceived,ResponseStarted,ResponseComplete,Panic";

/// kube-apiserver's `ValidatePolicy`, with the `field.Error` wording.
fn validate(policy: &RawPolicy) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    validate_stages(&policy.omit_stages, "omitStages", &mut errors);
    for (i, rule) in policy.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        match &rule.level {
            None => errors.push(error(
                Some(rule.line),
                format!("{path}.level: Required value"),
            )),
            Some((level, line)) if level.is_empty() => {
                errors.push(error(Some(*line), format!("{path}.level: Required value")))
            }
            Some((level, line)) if Level::parse(level).is_none() => errors.push(error(
                Some(*line),
                format!("{path}.level: Unsupported value: {level:?}: supported values: {LEVELS}"),
            )),
            Some(_) => {}
        }
        for (j, (url, line)) in rule.non_resource_urls.iter().enumerate() {
            if url == "*" {
                continue;
            }
            let at = format!("{path}.nonResourceURLs[{j}]: Invalid value: {url:?}");
            if !url.starts_with('/') {
                errors.push(error(
                    Some(*line),
                    format!("{at}: non-resource URL rules must begin with a '/' character"),
                ));
            }
            if !url.is_empty() && url[..url.len() - 1].contains('*') {
                errors.push(error(
                    Some(*line),
                    format!("{at}: non-resource URL wildcards '*' must be the final character of the rule"),
                ));
            }
        }
        for group in &rule.resources {
            let (name, line) = &group.group;
            if !name.is_empty() && name != "*" {
                let problems = dns_subdomain_problems(name);
                if !problems.is_empty() {
                    errors.push(error(
                        Some(*line),
                        format!(
                            "{path}.resources.group: Invalid value: {name:?}: {}",
                            problems.join(",")
                        ),
                    ));
                }
            }
            if !group.resource_names.is_empty() && group.resources.is_empty() {
                errors.push(error(
                    Some(group.resource_names[0].1),
                    format!(
                        "{path}.resources.resourceNames: Invalid value: {}: using resourceNames requires at least one resource",
                        go_string_slice(&group.resource_names)
                    ),
                ));
            }
        }
        validate_stages(
            &rule.omit_stages,
            &format!("{path}.omitStages"),
            &mut errors,
        );
        if !rule.non_resource_urls.is_empty()
            && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
        {
            errors.push(error(
                Some(rule.non_resource_urls_line),
                format!(
                    "{path}.nonResourceURLs: Invalid value: {}: rules cannot apply to both regular resources and non-resource URLs",
                    go_string_slice(&rule.non_resource_urls)
                ),
            ));
        }
    }
    errors
}

fn validate_stages(stages: &Strings, path: &str, errors: &mut Vec<Diagnostic>) {
    for (i, (stage, line)) in stages.iter().enumerate() {
        if Stage::parse(stage).is_none() {
            errors.push(error(
                Some(*line),
                format!("{path}[{i}]: Invalid value: {stage:?}: allowed stages are {STAGES}"),
            ));
        }
    }
}

/// Go's `%#v` of a `[]string`.
fn go_string_slice(items: &Strings) -> String {
    let quoted: Vec<String> = items.iter().map(|(s, _)| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// apimachinery's `IsDNS1123Subdomain` messages.
fn dns_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 253 {
        problems.push("must be no more than 253 characters".to_owned());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !value.split('.').all(label_ok) {
        problems.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned(),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        load(text)
            .unwrap_err()
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const HEADER: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";

    #[test]
    fn a_good_policy_loads() {
        let loaded = load(&format!(
            "{HEADER}omitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
        ))
        .unwrap();
        assert_eq!(loaded.policy.rules.len(), 1);
        assert_eq!(loaded.policy.rules[0].line, 5);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn validation_errors_are_worded_like_the_api_server_and_have_lines() {
        let text = format!(
            "{HEADER}rules:\n- level: Loud\n- verbs: [get]\n- level: None\n  nonResourceURLs: [\"logs\", \"/a/*/b\"]\n  namespaces: [x]\n- level: Metadata\n  resources:\n  - group: rbac.authorization.k8s.io/v1\n  - group: \"\"\n    resourceNames: [a]\n  omitStages: [Started]\n"
        );
        assert_eq!(
            errors(&text),
            [
                r#"line 4: error: rules[0].level: Unsupported value: "Loud": supported values: "None", "Metadata", "Request", "RequestResponse""#,
                "line 5: error: rules[1].level: Required value",
                r#"line 7: error: rules[2].nonResourceURLs[0]: Invalid value: "logs": non-resource URL rules must begin with a '/' character"#,
                r#"line 7: error: rules[2].nonResourceURLs[1]: Invalid value: "/a/*/b": non-resource URL wildcards '*' must be the final character of the rule"#,
                r#"line 7: error: rules[2].nonResourceURLs: Invalid value: []string{"logs", "/a/*/b"}: rules cannot apply to both regular resources and non-resource URLs"#,
                r#"line 11: error: rules[3].resources.group: Invalid value: "rbac.authorization.k8s.io/v1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#,
                r#"line 13: error: rules[3].resources.resourceNames: Invalid value: []string{"a"}: using resourceNames requires at least one resource"#,
                r#"line 14: error: rules[3].omitStages[0]: Invalid value: "Started": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic"#,
            ]
        );
    }

    #[test]
    fn unknown_fields_are_warnings_like_the_lenient_fallback() {
        let loaded = load(&format!(
            "{HEADER}rules:\n- level: Metadata\n  verb: [get]\n"
        ))
        .unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(5));
        assert!(
            loaded.warnings[0]
                .message
                .contains(r#"unknown field "rules.verb""#)
        );
        // The misspelt field is ignored: the rule matches every verb.
        assert!(loaded.policy.rules[0].verbs.is_empty());
    }

    #[test]
    fn wrong_version_empty_policy_and_type_errors() {
        assert_eq!(
            errors("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: Metadata\n"),
            [
                "line 1: error: unknown group version field audit.k8s.io/v1beta1, Kind=Policy in policy (only audit.k8s.io/v1 is accepted since Kubernetes 1.24)"
            ]
        );
        assert_eq!(
            errors(&format!("{HEADER}rules: []\n")),
            ["line 3: error: loaded illegal policy with 0 rules"]
        );
        assert_eq!(errors("").len(), 1);
        assert_eq!(
            errors(&format!("{HEADER}rules:\n  level: Metadata\n")),
            [
                "line 4: error: failed decoding: json: cannot unmarshal object into Go struct field Policy.rules of type []v1.PolicyRule"
            ]
        );
    }

    #[test]
    fn group_wildcard_of_1_36_is_valid() {
        assert!(load(&format!("{HEADER}rules:\n- level: None\n  resources:\n  - group: \"*\"\n    resources: [leases]\n")).is_ok());
    }
}

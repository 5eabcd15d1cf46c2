//! RBAC advice from what was observed: the least-privilege roles that would allow what a
//! subject did (`suggest`, in the spirit of audit2rbac), and for every refused request the rule
//! that would have allowed it (`denied`).
//!
//! Rules follow the authorizer rather than the audit event, which is where audit2rbac goes
//! wrong:
//! - `resourceNames` only where the authorizer sees a name: `get`, `update`, `patch`,
//!   `delete`, and `create` on a subresource of a named object (`pods/exec`, `pods/eviction`).
//!   A plain `create`, `list`, `watch` or `deletecollection` is never restricted by name —
//!   RBAC would never match such a rule, and the role would not work;
//! - subresources are kept (`pods/exec` is not `pods`);
//! - one Role per namespace the subject worked in, and one ClusterRole for requests without a
//!   namespace (cluster-scoped resources, lists across all namespaces, non-resource URLs).
//!
//! The subject's requests are counted as the authorizer saw them: by the effective user (the
//! impersonated one, when impersonating), by distinct auditID over every stage (an `exec`
//! still open when the log ends has only its `ResponseStarted` event), 401s left out (nothing
//! was authorized).

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use kubetrail_query::Param;
use kubetrail_store::QueryEngine;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Ctx, ReportError, ReportOptions, RowRef, edit_distance, format_micros, rows};

/// Whose permissions are suggested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user (or any identity that is not a service account).
    User(String),
    /// A service account.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

const SA_PREFIX: &str = "system:serviceaccount:";

impl Subject {
    /// `--user NAME` (a `system:serviceaccount:NS:NAME` user is a service account).
    pub fn user(name: &str) -> Result<Subject, ReportError> {
        if name.is_empty() {
            return Err(ReportError::Argument("the user name is empty".to_owned()));
        }
        match name.strip_prefix(SA_PREFIX) {
            Some(rest) => Subject::service_account(rest),
            None => Ok(Subject::User(name.to_owned())),
        }
    }

    /// `--serviceaccount NAMESPACE:NAME`.
    pub fn service_account(text: &str) -> Result<Subject, ReportError> {
        match text.split_once(':') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
            {
                Ok(Subject::ServiceAccount {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(ReportError::Argument(format!(
                "{text:?} is not a service account: write NAMESPACE:NAME (kube-system:coredns)"
            ))),
        }
    }

    /// The user name the API server authenticates the subject as.
    pub fn username(&self) -> String {
        match self {
            Subject::User(name) => name.clone(),
            Subject::ServiceAccount { namespace, name } => format!("{SA_PREFIX}{namespace}:{name}"),
        }
    }

    /// The subject of a RoleBinding.
    fn binding_subject(&self) -> Value {
        match self {
            Subject::User(name) => {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
            }
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
            }
        }
    }

    /// The name given to the generated roles and bindings: `kubetrail:<user>`, with the
    /// characters a role name may not hold replaced.
    fn role_name(&self) -> String {
        let name: String = self
            .username()
            .chars()
            .map(|c| if c == '/' || c == '%' { '-' } else { c })
            .collect();
        format!("kubetrail:{name}")
    }
}

/// One request shape the subject was seen making, with how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Empty for requests without a namespace.
    pub namespace: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// Plural resource; empty for a non-resource request.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name, if the URL had one.
    pub name: String,
    /// Authorization verb (`get`, `list`, …; the lower-case HTTP method for non-resource URLs).
    pub verb: String,
    /// URL path (for non-resource requests).
    pub path: String,
    /// Requests of this shape.
    pub requests: u64,
    /// How many of them RBAC refused.
    pub denied: u64,
}

impl Observed {
    fn resource_with_subresource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Whether the authorizer sees the object's name for this request, so a rule may name it.
    fn name_is_authorized(&self) -> bool {
        !self.name.is_empty()
            && match self.verb.as_str() {
                "get" | "update" | "patch" | "delete" => true,
                "create" => !self.subresource.is_empty(),
                _ => false,
            }
    }
}

/// A PolicyRule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource` for subresources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names, when the rule is limited to some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs (ClusterRoles only).
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

/// A Role (with a namespace) or the ClusterRole (without), and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestedRole {
    /// `None` for the ClusterRole.
    pub namespace: Option<String>,
    /// Its rules, sorted.
    pub rules: Vec<Rule>,
    /// Requests it allows.
    pub requests: u64,
    /// Of which RBAC refused at the time.
    pub denied: u64,
}

/// The roles and bindings suggested for a subject.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// Who.
    pub subject: Subject,
    /// The range the requests come from, µs.
    pub from_micros: i64,
    /// End of the range (exclusive), µs.
    pub to_micros: i64,
    /// One Role per namespace, then the ClusterRole if needed.
    pub roles: Vec<SuggestedRole>,
    /// Rules that named more objects than allowed and were widened to every object.
    pub widened: Vec<String>,
}

/// How the suggestion is shaped.
#[derive(Debug, Clone)]
pub struct SuggestOptions {
    /// A rule listing more object names than this grants the verb on every object instead.
    pub max_resource_names: usize,
}

impl Default for SuggestOptions {
    fn default() -> Self {
        SuggestOptions {
            max_resource_names: 10,
        }
    }
}

/// The least-privilege roles for what `subject` was observed doing.
pub fn suggest(
    engine: &QueryEngine,
    subject: &Subject,
    options: &ReportOptions,
    shape: &SuggestOptions,
) -> Result<Suggestion, ReportError> {
    let ctx = Ctx::new(engine, options)?;
    let user = subject.username();
    let batches = ctx.query(
        "SELECT namespace, api_group, resource, subresource, name, verb, path, \
         count(DISTINCT audit_id) AS requests, \
         count(DISTINCT CASE WHEN code = 403 AND decision <> 'allow' THEN audit_id END) AS denied \
         FROM events WHERE time >= $1 AND time < $2 AND ($3 = '' OR cluster = $3) \
         AND effective_user = $4 AND (code IS NULL OR code <> 401) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7",
        vec![Param::Text(user.clone())],
    )?;
    let observed = observed_rows(&batches);
    if observed.is_empty() {
        return Err(ReportError::SubjectNotSeen {
            subject: user.clone(),
            nearest: nearest_users(&ctx, &user)?,
        });
    }
    let (roles, widened) = roles_for(&observed, shape);
    Ok(Suggestion {
        subject: subject.clone(),
        from_micros: ctx.from,
        to_micros: ctx.to,
        roles,
        widened,
    })
}

fn observed_rows(batches: &[RecordBatch]) -> Vec<Observed> {
    rows(batches).map(|row| observed(&row)).collect()
}

/// A request shape from a row with the columns of the `suggest` and `denied` statements.
fn observed(row: &RowRef<'_>) -> Observed {
    Observed {
        namespace: row.text("namespace").to_owned(),
        api_group: row.text("api_group").to_owned(),
        resource: row.text("resource").to_owned(),
        subresource: row.text("subresource").to_owned(),
        name: row.text("name").to_owned(),
        verb: row.text("verb").to_owned(),
        path: row.text("path").to_owned(),
        requests: row.int("requests").max(0) as u64,
        denied: row.int("denied").max(0) as u64,
    }
}

/// Users seen in the range whose name is closest to `user`.
fn nearest_users(ctx: &Ctx<'_>, user: &str) -> Result<Vec<String>, ReportError> {
    let batches = ctx.query(
        "SELECT DISTINCT effective_user FROM events WHERE time >= $1 AND time < $2 \
         AND ($3 = '' OR cluster = $3) AND effective_user <> ''",
        Vec::new(),
    )?;
    let mut users: Vec<(usize, String)> = rows(&batches)
        .map(|row| {
            let name = row.text("effective_user");
            (edit_distance(name, user), name.to_owned())
        })
        .collect();
    users.sort();
    Ok(users.into_iter().take(5).map(|(_, u)| u).collect())
}

/// Builds the roles: per scope (namespace, or `""` for the ClusterRole), the verbs granted on
/// each (group, resource, names) are collected, then resources sharing a group, verbs and
/// names are merged into one rule — which grants exactly what the separate rules did.
pub fn roles_for(
    observed: &[Observed],
    shape: &SuggestOptions,
) -> (Vec<SuggestedRole>, Vec<String>) {
    /// Verb → the object names it was used on (`None`: used without a name, so every object).
    type Verbs = BTreeMap<String, Option<BTreeSet<String>>>;
    #[derive(Default)]
    struct Scope {
        /// (group, resource) → verbs.
        grants: BTreeMap<(String, String), Verbs>,
        /// verb → URL paths.
        urls: BTreeMap<String, BTreeSet<String>>,
        requests: u64,
        denied: u64,
    }
    let mut scopes: BTreeMap<String, Scope> = BTreeMap::new();
    for request in observed {
        let scope = scopes.entry(request.namespace.clone()).or_default();
        scope.requests += request.requests;
        scope.denied += request.denied;
        if request.resource.is_empty() {
            scope
                .urls
                .entry(request.verb.clone())
                .or_default()
                .insert(request.path.clone());
            continue;
        }
        let names = scope
            .grants
            .entry((
                request.api_group.clone(),
                request.resource_with_subresource(),
            ))
            .or_default()
            .entry(request.verb.clone())
            .or_insert_with(|| Some(BTreeSet::new()));
        match (names.as_mut(), request.name_is_authorized()) {
            (Some(set), true) => {
                set.insert(request.name.clone());
            }
            (Some(_), false) => *names = None,
            (None, _) => {}
        }
    }
    // Non-resource URLs only exist in ClusterRoles; they have no namespace anyway.
    let mut widened = Vec::new();
    let mut roles = Vec::new();
    for (namespace, scope) in scopes {
        let mut merged: BTreeMap<(String, Vec<String>, Vec<String>), BTreeSet<String>> =
            BTreeMap::new();
        for ((group, resource), verbs) in scope.grants {
            let mut by_names: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
            for (verb, names) in verbs {
                let names: Vec<String> = match names {
                    Some(names) if names.len() > shape.max_resource_names => {
                        widened.push(format!(
                            "{verb} {resource}{}: {} objects named, granted on all",
                            if namespace.is_empty() {
                                String::new()
                            } else {
                                format!(" in {namespace}")
                            },
                            names.len()
                        ));
                        Vec::new()
                    }
                    Some(names) => names.into_iter().collect(),
                    None => Vec::new(),
                };
                by_names.entry(names).or_default().push(verb);
            }
            for (names, verbs) in by_names {
                merged
                    .entry((group.clone(), verbs, names))
                    .or_default()
                    .insert(resource.clone());
            }
        }
        let mut rules: Vec<Rule> = merged
            .into_iter()
            .map(|((group, verbs, names), resources)| Rule {
                api_groups: vec![group],
                resources: resources.into_iter().collect(),
                resource_names: names,
                non_resource_urls: Vec::new(),
                verbs,
            })
            .collect();
        let mut url_rules: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        for (verb, urls) in scope.urls {
            url_rules
                .entry(urls.into_iter().collect())
                .or_default()
                .push(verb);
        }
        rules.extend(url_rules.into_iter().map(|(urls, verbs)| Rule {
            api_groups: Vec::new(),
            resources: Vec::new(),
            resource_names: Vec::new(),
            non_resource_urls: urls,
            verbs,
        }));
        rules.sort();
        roles.push(SuggestedRole {
            namespace: (!namespace.is_empty()).then_some(namespace),
            rules,
            requests: scope.requests,
            denied: scope.denied,
        });
    }
    // Namespaced Roles first, the ClusterRole last.
    roles.sort_by_key(|r| (r.namespace.is_none(), r.namespace.clone()));
    (roles, widened)
}

impl Suggestion {
    /// The Kubernetes objects: each Role or ClusterRole followed by its binding.
    pub fn manifests(&self) -> Vec<Value> {
        let name = self.subject.role_name();
        let mut objects = Vec::new();
        for role in &self.roles {
            let (kind, binding_kind) = if role.namespace.is_some() {
                ("Role", "RoleBinding")
            } else {
                ("ClusterRole", "ClusterRoleBinding")
            };
            let mut metadata = json!({"name": name});
            if let Some(namespace) = &role.namespace {
                metadata["namespace"] = json!(namespace);
            }
            objects.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": metadata,
                "rules": role.rules,
            }));
            objects.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": binding_kind,
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                "subjects": [self.subject.binding_subject()],
            }));
        }
        objects
    }

    /// The manifests as a multi-document YAML stream, each role preceded by a comment saying
    /// what it covers, ready for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> Result<String, ReportError> {
        let mut text = format!(
            "# Least-privilege RBAC for {} from the requests audited between {} and {}.\n",
            self.subject.username(),
            format_micros(self.from_micros),
            format_micros(self.to_micros)
        );
        for widened in &self.widened {
            text.push_str(&format!("# widened: {widened}\n"));
        }
        for (role, pair) in self.roles.iter().zip(self.manifests().chunks(2)) {
            let scope = role
                .namespace
                .as_ref()
                .map_or_else(|| "no namespace".to_owned(), |n| format!("namespace {n}"));
            text.push_str(&format!(
                "---\n# {scope}: {} requests, {} of them refused by RBAC at the time\n",
                role.requests, role.denied
            ));
            for (i, object) in pair.iter().enumerate() {
                if i > 0 {
                    text.push_str("---\n");
                }
                text.push_str(
                    &serde_yaml_ng::to_string(object)
                        .map_err(|e| ReportError::Argument(e.to_string()))?,
                );
            }
        }
        Ok(text)
    }

    /// The suggestion as JSON: subject, range, per-role counts and the manifests.
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject.username(),
            "from": format_micros(self.from_micros),
            "to": format_micros(self.to_micros),
            "roles": self.roles.iter().map(|r| json!({
                "namespace": r.namespace,
                "requests": r.requests,
                "denied": r.denied,
                "rules": r.rules,
            })).collect::<Vec<_>>(),
            "widened": self.widened,
            "manifests": self.manifests(),
        })
    }
}

/// One distinct request RBAC refused.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denied {
    /// Who (the effective user).
    pub user: String,
    /// The request.
    pub verb: String,
    /// API group.
    pub api_group: String,
    /// Resource (`resource/subresource`), empty for a non-resource URL.
    pub resource: String,
    /// Namespace, empty when none.
    pub namespace: String,
    /// Object name, empty when none.
    pub name: String,
    /// URL path of a non-resource request.
    pub path: String,
    /// How often.
    pub requests: u64,
    /// First and last time.
    pub first: String,
    /// Last time.
    pub last: String,
    /// Source IPs seen.
    pub source_ips: Vec<String>,
    /// The authorizer's reason, when it gave one.
    pub reason: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: &'static str,
    /// The rule that would allow it.
    pub rule: Rule,
    /// The same as a `kubectl create role|clusterrole` command.
    pub kubectl: String,
}

/// Every distinct request RBAC refused, most frequent first, with the rule that would allow
/// it; and how many 403s came from admission (not RBAC) in the same range.
pub fn denied(
    engine: &QueryEngine,
    options: &ReportOptions,
) -> Result<(Vec<Denied>, u64), ReportError> {
    let ctx = Ctx::new(engine, options)?;
    let batches = ctx.query(
        "SELECT effective_user AS user, verb, api_group, resource, subresource, namespace, name, path, \
         count(DISTINCT audit_id) AS requests, min(time) AS first, max(time) AS last, \
         array_to_string(array_agg(DISTINCT coalesce(array_element(source_ips, 1), '')), ',') AS ips, \
         max(authz_reason) AS reason \
         FROM events WHERE time >= $1 AND time < $2 AND ($3 = '' OR cluster = $3) \
         AND code = 403 AND decision <> 'allow' \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY requests DESC, user, resource, verb",
        Vec::new(),
    )?;
    let mut denied = Vec::new();
    for row in rows(&batches) {
        let observed = Observed {
            denied: row.int("requests").max(0) as u64,
            ..observed(&row)
        };
        let (roles, _) = roles_for(std::slice::from_ref(&observed), &SuggestOptions::default());
        let Some(rule) = roles
            .into_iter()
            .next()
            .and_then(|r| r.rules.into_iter().next())
        else {
            continue;
        };
        let role_kind = if observed.namespace.is_empty() {
            "ClusterRole"
        } else {
            "Role"
        };
        denied.push(Denied {
            user: row.text("user").to_owned(),
            kubectl: kubectl_command(&observed, &rule),
            verb: observed.verb,
            api_group: observed.api_group,
            resource: rule.resources.first().cloned().unwrap_or_default(),
            namespace: observed.namespace,
            name: observed.name,
            path: observed.path,
            requests: observed.requests,
            first: format_micros(row.timestamp("first")),
            last: format_micros(row.timestamp("last")),
            source_ips: row
                .text("ips")
                .split(',')
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
                .collect(),
            reason: row.text("reason").to_owned(),
            role_kind,
            rule,
        });
    }
    let admission = ctx.query(
        "SELECT count(DISTINCT audit_id) AS n FROM events WHERE time >= $1 AND time < $2 \
         AND ($3 = '' OR cluster = $3) AND code = 403 AND decision = 'allow'",
        Vec::new(),
    )?;
    Ok((
        denied,
        crate::int(&admission, "n").unwrap_or(0).max(0) as u64,
    ))
}

/// `kubectl create role|clusterrole` for one rule (`RESOURCE.GROUP` and `resource/sub` are
/// kubectl's own spellings).
fn kubectl_command(observed: &Observed, rule: &Rule) -> String {
    let mut command = if observed.namespace.is_empty() {
        "kubectl create clusterrole NAME".to_owned()
    } else {
        format!("kubectl create role NAME -n {}", observed.namespace)
    };
    for verb in &rule.verbs {
        command.push_str(&format!(" --verb={verb}"));
    }
    for url in &rule.non_resource_urls {
        command.push_str(&format!(" --non-resource-url={url}"));
    }
    for resource in &rule.resources {
        let (plural, sub) = match resource.split_once('/') {
            Some((plural, sub)) => (plural, format!("/{sub}")),
            None => (resource.as_str(), String::new()),
        };
        let group = rule.api_groups.first().map(String::as_str).unwrap_or("");
        if group.is_empty() {
            command.push_str(&format!(" --resource={plural}{sub}"));
        } else {
            command.push_str(&format!(" --resource={plural}.{group}{sub}"));
        }
    }
    for name in &rule.resource_names {
        command.push_str(&format!(" --resource-name={name}"));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        namespace: &str,
        group: &str,
        resource: &str,
        sub: &str,
        name: &str,
        verb: &str,
    ) -> Observed {
        Observed {
            namespace: namespace.to_owned(),
            api_group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: sub.to_owned(),
            name: name.to_owned(),
            verb: verb.to_owned(),
            path: String::new(),
            requests: 1,
            denied: 0,
        }
    }

    fn url(path: &str, verb: &str) -> Observed {
        Observed {
            path: path.to_owned(),
            ..seen("", "", "", "", "", verb)
        }
    }

    #[test]
    fn names_only_where_the_authorizer_sees_them() {
        let observed = [
            seen("web", "", "pods", "", "web-0", "get"),
            seen("web", "", "pods", "", "", "list"),
            seen("web", "", "pods", "", "web-1", "create"),
            seen("web", "", "pods", "exec", "web-0", "create"),
            seen("web", "apps", "deployments", "scale", "front", "patch"),
        ];
        let (roles, _) = roles_for(&observed, &SuggestOptions::default());
        assert_eq!(roles.len(), 1);
        let rules = &roles[0].rules;
        let rule = |resource: &str| {
            rules
                .iter()
                .filter(|r| r.resources.contains(&resource.to_owned()))
                .cloned()
                .collect::<Vec<_>>()
        };
        // create and list of pods: never by name; get of web-0 by name.
        let pods = rule("pods");
        assert!(
            pods.iter()
                .any(|r| r.verbs == ["create", "list"] && r.resource_names.is_empty()),
            "{pods:?}"
        );
        assert!(
            pods.iter()
                .any(|r| r.verbs == ["get"] && r.resource_names == ["web-0"]),
            "{pods:?}"
        );
        // Subresources kept, create on a subresource named.
        assert_eq!(rule("pods/exec")[0].resource_names, ["web-0"]);
        assert_eq!(rule("pods/exec")[0].verbs, ["create"]);
        assert_eq!(rule("deployments/scale")[0].api_groups, ["apps"]);
    }

    #[test]
    fn one_role_per_namespace_and_a_cluster_role() {
        let observed = [
            seen("a", "", "configmaps", "", "", "list"),
            seen("b", "", "configmaps", "", "", "list"),
            seen("", "", "nodes", "", "n1", "get"),
            seen("", "", "pods", "", "", "list"),
            url("/healthz", "get"),
            url("/version", "get"),
        ];
        let (roles, _) = roles_for(&observed, &SuggestOptions::default());
        let scopes: Vec<_> = roles.iter().map(|r| r.namespace.clone()).collect();
        assert_eq!(scopes, [Some("a".into()), Some("b".into()), None]);
        let cluster = &roles[2].rules;
        assert!(
            cluster
                .iter()
                .any(|r| r.non_resource_urls == ["/healthz", "/version"])
        );
        assert!(
            cluster
                .iter()
                .any(|r| r.resources == ["nodes"] && r.resource_names == ["n1"])
        );
        assert!(
            cluster
                .iter()
                .any(|r| r.resources == ["pods"] && r.verbs == ["list"])
        );
    }

    #[test]
    fn a_grant_on_every_object_absorbs_named_ones() {
        let observed = [
            seen("a", "", "configmaps", "", "", "list"),
            seen("a", "", "secrets", "", "s1", "get"),
            seen("a", "", "secrets", "", "", "list"),
            seen("a", "", "secrets", "", "", "get"),
        ];
        let (roles, _) = roles_for(&observed, &SuggestOptions::default());
        let rules = &roles[0].rules;
        assert_eq!(rules.len(), 2, "{rules:?}");
        // `get` of every secret absorbs `get` of s1; configmaps and secrets differ in verbs.
        assert!(
            rules
                .iter()
                .any(|r| r.resources == ["configmaps"] && r.verbs == ["list"])
        );
        assert!(rules.iter().any(|r| r.resources == ["secrets"]
            && r.verbs == ["get", "list"]
            && r.resource_names.is_empty()));
    }

    #[test]
    fn resources_with_the_same_group_and_verbs_share_a_rule() {
        let observed = [
            seen("a", "", "configmaps", "", "", "list"),
            seen("a", "", "secrets", "", "", "list"),
            seen("a", "apps", "deployments", "", "", "list"),
        ];
        let (roles, _) = roles_for(&observed, &SuggestOptions::default());
        assert_eq!(
            roles[0].rules,
            [
                Rule {
                    api_groups: vec![String::new()],
                    resources: vec!["configmaps".into(), "secrets".into()],
                    resource_names: vec![],
                    non_resource_urls: vec![],
                    verbs: vec!["list".into()],
                },
                Rule {
                    api_groups: vec!["apps".into()],
                    resources: vec!["deployments".into()],
                    resource_names: vec![],
                    non_resource_urls: vec![],
                    verbs: vec!["list".into()],
                },
            ]
        );
    }

    #[test]
    fn too_many_names_widen_the_rule_and_say_so() {
        let observed: Vec<_> = (0..12)
            .map(|i| seen("a", "", "pods", "", &format!("p{i}"), "get"))
            .collect();
        let (roles, widened) = roles_for(&observed, &SuggestOptions::default());
        assert!(roles[0].rules[0].resource_names.is_empty());
        assert_eq!(widened.len(), 1);
        assert!(widened[0].contains("12 objects"), "{widened:?}");
    }

    #[test]
    fn subjects_parse() {
        assert_eq!(
            Subject::user("system:serviceaccount:ci:builder").unwrap(),
            Subject::ServiceAccount {
                namespace: "ci".into(),
                name: "builder".into()
            }
        );
        assert!(Subject::service_account("nocolon").is_err());
        assert_eq!(
            Subject::user("alice@example.com").unwrap().role_name(),
            "kubetrail:alice@example.com"
        );
    }

    #[test]
    fn kubectl_spells_groups_and_subresources() {
        let observed = seen("web", "apps", "deployments", "scale", "front", "patch");
        let (roles, _) = roles_for(std::slice::from_ref(&observed), &SuggestOptions::default());
        assert_eq!(
            kubectl_command(&observed, &roles[0].rules[0]),
            "kubectl create role NAME -n web --verb=patch --resource=deployments.apps/scale --resource-name=front"
        );
    }
}

//! `kubetrail rbac suggest|denied`: the suggested roles allow every request the subject made
//! (checked with RBAC's own matching rules), and every refused request of the generator's
//! incidents is listed with a rule that allows it.

use std::path::Path;

use serde_json::Value;

use super::{TempDir, data, run, sql_rows, stderr, stdout};

fn rbac(store: &Path, args: &[&str]) -> Value {
    let mut all = vec!["rbac"];
    all.extend(args);
    all.extend(["--data", store.to_str().unwrap(), "-o", "json"]);
    let output = run(&all, b"");
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `rule` allows a request, as RBAC's `RuleAllows` decides (no wildcards are
/// generated, so exact matches are the whole story).
fn rule_allows(rule: &Value, request: &Value) -> bool {
    let verb = request["verb"].as_str().unwrap();
    if !strings(&rule["verbs"]).contains(&verb) {
        return false;
    }
    let resource = request["resource"].as_str().unwrap();
    if resource.is_empty() {
        return strings(&rule["nonResourceURLs"]).contains(&request["path"].as_str().unwrap());
    }
    let subresource = request["subresource"].as_str().unwrap();
    let combined = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    let names = strings(&rule["resourceNames"]);
    strings(&rule["apiGroups"]).contains(&request["api_group"].as_str().unwrap())
        && strings(&rule["resources"]).contains(&combined.as_str())
        && (names.is_empty() || names.contains(&request["name"].as_str().unwrap()))
}

/// Every authenticated request of `user` is allowed by the Role of its namespace or by the
/// ClusterRole of the suggestion; no rule names objects on create (of an object), list, watch
/// or deletecollection.
fn assert_suggestion_covers(store: &Path, user: &str, suggestion: &Value) -> usize {
    let requests = sql_rows(
        store,
        &format!(
            "SELECT DISTINCT namespace, api_group, resource, subresource, name, verb, path FROM events \
             WHERE effective_user = '{user}' AND (code IS NULL OR code <> 401)"
        ),
    );
    assert!(!requests.is_empty());
    let roles = suggestion["roles"].as_array().unwrap();
    for request in &requests {
        let namespace = request["namespace"].as_str().unwrap();
        let allowed = roles.iter().any(|role| {
            let scope_fits = role["namespace"].is_null() || role["namespace"] == namespace;
            scope_fits
                && role["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|rule| rule_allows(rule, request))
        });
        assert!(
            allowed,
            "{user}: {request} is not allowed by {suggestion:#}"
        );
    }
    for role in roles {
        for rule in role["rules"].as_array().unwrap() {
            if rule["resourceNames"].is_array() {
                let collection = strings(&rule["verbs"])
                    .into_iter()
                    .any(|v| matches!(v, "list" | "watch" | "deletecollection"));
                let plain_create = strings(&rule["verbs"]).contains(&"create")
                    && strings(&rule["resources"]).iter().any(|r| !r.contains('/'));
                assert!(!collection && !plain_create, "{rule}");
            }
        }
    }
    requests.len()
}

#[test]
fn suggestions_allow_everything_observed_and_no_more_than_needed() {
    let dir = TempDir::new("rbac-suggest");
    let store = dir.path().join("data");
    super::import(&store, &[], &["generated/all.log"]);
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
            .unwrap();

    // The deploying service account: one Role per namespace it touched, nothing cluster-wide.
    let deployer = rbac(&store, &["suggest", "--serviceaccount", "ci:deployer"]);
    assert_eq!(deployer["subject"], "system:serviceaccount:ci:deployer");
    assert_suggestion_covers(&store, "system:serviceaccount:ci:deployer", &deployer);
    let namespaces = sql_rows(
        &store,
        "SELECT DISTINCT namespace FROM events WHERE effective_user = 'system:serviceaccount:ci:deployer' ORDER BY namespace",
    );
    let role_namespaces: Vec<&Value> = deployer["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["namespace"])
        .collect();
    assert_eq!(
        role_namespaces,
        namespaces
            .iter()
            .map(|n| &n["namespace"])
            .collect::<Vec<_>>()
    );
    // Every Role comes with its binding to the service account.
    let manifests = deployer["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2 * role_namespaces.len());
    for binding in manifests.iter().filter(|m| m["kind"] == "RoleBinding") {
        assert_eq!(
            binding["subjects"][0],
            serde_json::json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"})
        );
    }

    // The user who exec'd into a pod: pods/exec kept as a subresource, limited to that pod.
    let exec = &truth["incidents"]["exec"];
    let user = exec["user"].as_str().unwrap();
    let suggestion = rbac(&store, &["suggest", "--user", user]);
    assert_suggestion_covers(&store, user, &suggestion);
    let payments = suggestion["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == exec["namespace"])
        .unwrap();
    assert!(
        payments["rules"].as_array().unwrap().iter().any(|r| {
            strings(&r["resources"]) == ["pods/exec"]
                && strings(&r["resourceNames"]) == [exec["pod"].as_str().unwrap()]
        }),
        "{payments:#}"
    );

    // Every human and controller of the generated traffic.
    for row in sql_rows(
        &store,
        "SELECT DISTINCT effective_user FROM events WHERE effective_user <> '' AND code <> 401 AND stage = 'ResponseComplete'",
    ) {
        let user = row["effective_user"].as_str().unwrap();
        let suggestion = rbac(&store, &["suggest", "--user", user]);
        assert_suggestion_covers(&store, user, &suggestion);
    }

    // The YAML is a stream of documents kubectl can apply.
    let output = run(
        &[
            "rbac",
            "suggest",
            "--data",
            store.to_str().unwrap(),
            "--user",
            user,
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let kinds: Vec<String> = stdout(&output)
        .split("\n---\n")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter_map(|doc| doc["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(kinds.iter().any(|k| k == "Role"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "RoleBinding"), "{kinds:?}");
    assert_eq!(
        kinds.len(),
        suggestion["manifests"].as_array().unwrap().len()
    );
}

#[test]
fn suggestions_from_the_real_api_server_cover_cluster_scope_and_non_resource_urls() {
    let dir = TempDir::new("rbac-real");
    let store = dir.path().join("data");
    super::import(&store, &[], &["fixtures/real-apiserver-v1.36/audit.log"]);
    let users = sql_rows(
        &store,
        "SELECT effective_user, count(DISTINCT namespace) AS namespaces, sum(CASE WHEN resource = '' THEN 1 ELSE 0 END) AS urls \
         FROM events WHERE effective_user <> '' AND code <> 401 AND stage = 'ResponseComplete' GROUP BY 1",
    );
    assert!(users.len() > 5);
    let mut cluster_roles = 0;
    let mut url_rules = 0;
    for row in &users {
        let user = row["effective_user"].as_str().unwrap();
        let suggestion = rbac(&store, &["suggest", "--user", user]);
        assert_suggestion_covers(&store, user, &suggestion);
        for role in suggestion["roles"].as_array().unwrap() {
            if role["namespace"].is_null() {
                cluster_roles += 1;
                url_rules += role["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["nonResourceURLs"].is_array())
                    .count();
            }
        }
    }
    assert!(
        cluster_roles > 0 && url_rules > 0,
        "{cluster_roles} {url_rules}"
    );
}

#[test]
fn denied_lists_every_refused_request_with_a_rule_that_allows_it() {
    let dir = TempDir::new("rbac-denied");
    let store = dir.path().join("data");
    super::import(&store, &[], &["generated/all.log"]);
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
            .unwrap();
    let result = rbac(&store, &["denied"]);
    let denied = result["denied"].as_array().unwrap();

    // The 403 spike: every one of the user's refusals, from the incident's IP.
    let spike = &truth["incidents"]["forbidden-spike"];
    let mallory: Vec<&Value> = denied
        .iter()
        .filter(|d| d["user"] == spike["user"])
        .collect();
    let total: u64 = mallory
        .iter()
        .map(|d| d["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, spike["count"].as_u64().unwrap());
    for d in &mallory {
        assert_eq!(
            strings(&d["sourceIps"]),
            [spike["sourceIP"].as_str().unwrap()]
        );
    }
    // Anonymous reads of secrets: the refused ones (count minus allowed).
    let anonymous = &truth["incidents"]["anonymous-secrets"];
    let refused: u64 = denied
        .iter()
        .filter(|d| d["user"] == "system:anonymous" && d["resource"] == "secrets")
        .map(|d| d["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        refused,
        anonymous["count"].as_u64().unwrap() - anonymous["allowed"].as_u64().unwrap()
    );
    // Every refusal in the store is listed once, and its rule allows it.
    let stored = sql_rows(
        &store,
        "SELECT count(*) AS n FROM events WHERE stage = 'ResponseComplete' AND code = 403 AND decision <> 'allow'",
    );
    let listed: u64 = denied.iter().map(|d| d["requests"].as_u64().unwrap()).sum();
    assert_eq!(listed, stored[0]["n"].as_u64().unwrap());
    for d in denied {
        let (resource, subresource) = match d["resource"].as_str().unwrap().split_once('/') {
            Some((r, s)) => (r.to_owned(), s.to_owned()),
            None => (d["resource"].as_str().unwrap().to_owned(), String::new()),
        };
        let request = serde_json::json!({
            "verb": d["verb"], "api_group": d["apiGroup"], "resource": resource,
            "subresource": subresource, "name": d["name"], "path": d["path"],
        });
        assert!(rule_allows(&d["rule"], &request), "{d:#}");
        assert!(
            d["kubectl"]
                .as_str()
                .unwrap()
                .starts_with("kubectl create "),
            "{d}"
        );
        assert_eq!(
            d["roleKind"],
            if d["namespace"] == "" {
                "ClusterRole"
            } else {
                "Role"
            }
        );
    }

    // The table names the user, the request and the command.
    let output = run(&["rbac", "denied", "--data", store.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("mallory@example.com — list secrets in namespace"),
        "{text}"
    );
    assert!(text.contains("kubectl create role NAME -n"), "{text}");
}

#[test]
fn rbac_mistakes_get_plain_answers() {
    let dir = TempDir::new("rbac-errors");
    let store = dir.path().join("data");
    super::import(&store, &[], &["generated/all.log"]);
    let fail = |args: &[&str]| {
        let mut all = vec!["rbac"];
        all.extend(args);
        all.extend(["--data", store.to_str().unwrap()]);
        let output = run(&all, b"");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        stderr(&output)
    };
    let message = fail(&["suggest", "--user", "bobby@example.com"]);
    assert!(
        message.contains("bobby@example.com made no authenticated request in this range")
            && message.contains("users that were seen: bob@example.com"),
        "{message}"
    );
    let message = fail(&["suggest", "--serviceaccount", "deployer"]);
    assert!(message.contains("write NAMESPACE:NAME"), "{message}");
    let message = fail(&["denied", "--from", "2030-01-01T00:00:00Z"]);
    assert!(message.contains("no events between"), "{message}");
    let empty = dir.path().join("nothing");
    let output = run(&["rbac", "denied", "--data", empty.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("nothing"), "{}", stderr(&output));
}

//! The bundled pack and the rule format, end to end through the public API.

mod sigma;

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_rules::{Engine, RuleSet, Severity, SourceFile, run_inline_tests};

/// Every rule of the pack loads, has a firing and a quiet test, and passes them.
#[test]
fn the_pack_passes_its_inline_tests() {
    let set = RuleSet::load(true, &[]);
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    assert!(!set.rules.is_empty());
    let mut failures = Vec::new();
    for rule in &set.rules {
        if rule.tests.fire.is_empty() || rule.tests.quiet.is_empty() {
            failures.push(format!("{}: needs a fire and a quiet test", rule.id));
        }
        for result in run_inline_tests(rule, &set.defaults) {
            if let Some(failure) = result.failure {
                failures.push(format!(
                    "{} {}[{}]: {failure}",
                    rule.id, result.expect, result.index
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every rule of the pack has an ATT&CK technique, an intent and a description that says
/// something.
#[test]
fn pack_rules_are_documented() {
    for rule in &RuleSet::load(true, &[]).rules {
        // Activity records (info: a namespace or ConfigMap created) are no attack step.
        assert!(
            !rule.mitre.techniques.is_empty() || rule.severity == Severity::Info,
            "{}: no technique",
            rule.id
        );
        assert!(
            rule.mitre.techniques.iter().all(|t| t.starts_with('T')
                && t[1..]
                    .split('.')
                    .all(|p| p.len() >= 3 && p.chars().all(|c| c.is_ascii_digit()))),
            "{}: {:?}",
            rule.id,
            rule.mitre.techniques
        );
        assert!(
            rule.mitre
                .tactics
                .iter()
                .all(|t| t.starts_with("TA") && t.len() == 6),
            "{}: {:?}",
            rule.id,
            rule.mitre.tactics
        );
        assert!(
            rule.description.len() >= 80,
            "{}: a short description",
            rule.id
        );
    }
}

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

const RULE: &str = r#"
id: exec-anywhere
title: Exec into a pod
description: test rule
severity: medium
mitre: {tactics: [TA0002], techniques: [T1609]}
condition: 'resource:pods subresource:exec'
tests:
  fire:
    - {verb: create, objectRef: {resource: pods, subresource: exec, namespace: prod, name: web}}
  quiet:
    - {verb: get, objectRef: {resource: pods, namespace: prod, name: web}}
"#;

#[test]
fn problems_name_the_file_and_line_and_leave_the_rest_loaded() {
    let typo = RULE.replace("severity: medium", "severity: medium\nconditon: x");
    let bad_condition = RULE
        .replace("exec-anywhere", "broken")
        .replace("'resource:pods subresource:exec'", "'verb:get AND OR x'");
    let unknown_field = RULE
        .replace("exec-anywhere", "unknown-field")
        .replace("subresource:exec", "subresourse:exec");
    let set = RuleSet::load(
        false,
        &[
            file("a.yaml", &typo),
            file("b.yaml", &bad_condition),
            file("c.yaml", &unknown_field),
            file("d.yaml", &RULE.replace("exec-anywhere", "fine")),
        ],
    );
    let problems: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("a.yaml:6: unknown field `conditon`"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("b.yaml:7: broken: condition: verb:get AND OR x"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains("c.yaml:7: unknown-field: condition:"),
        "{}",
        problems[2]
    );
    assert!(
        problems[2].contains("did you mean `subresource`"),
        "{}",
        problems[2]
    );
    assert_eq!(set.rules.len(), 1);
    assert_eq!(set.rules[0].id, "fine");
}

#[test]
fn overrides_disable_rescore_and_exempt_without_copying() {
    let user = [
        file("r.yaml", RULE),
        file(
            "o.yaml",
            "override: exec-anywhere\nseverity: high\nexemptions:\n  - reason: the on-call team\n    group: [oncall]\n",
        ),
    ];
    let set = RuleSet::load(false, &user);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let rule = &set.rules[0];
    assert_eq!(rule.severity.as_str(), "high");
    let findings = |user: &str, groups: &str| {
        let line = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/web/exec?command=sh","verb":"create","user":{{"username":"{user}","groups":[{groups}]}},"sourceIPs":["10.0.0.1"],"objectRef":{{"resource":"pods","subresource":"exec","namespace":"prod","name":"web"}},"responseStatus":{{"code":101}},"requestReceivedTimestamp":"2026-07-23T14:47:51.123456Z","stageTimestamp":"2026-07-23T14:47:51.130001Z"}}"#
        );
        let mut engine = Engine::new(&set);
        let mut found = Vec::new();
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(e, _) = d {
                engine.evaluate(&e, "prod", 0, &mut found);
            }
        };
        decoder.feed(line.as_bytes(), &mut out);
        decoder.finish(&mut out);
        found
    };
    assert_eq!(findings("bob", r#""dev""#).len(), 1);
    assert!(findings("carol", r#""dev","oncall""#).is_empty());
    let off = RuleSet::load(
        false,
        &[
            file("r.yaml", RULE),
            file("o.yaml", "override: exec-anywhere\nenabled: false\n"),
        ],
    );
    assert_eq!(off.enabled().count(), 0);
    let unknown = RuleSet::load(false, &[file("o.yaml", "override: nope\nenabled: false\n")]);
    assert!(
        unknown.problems[0]
            .to_string()
            .starts_with("o.yaml:1: no rule has the id \"nope\"")
    );
}

/// Decodes one JSON audit event and hands it to `handle`.
fn with_event(line: &str, handle: impl FnOnce(&kubetrail_event::AuditEvent<'_>)) {
    let mut handle = Some(handle);
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let (Decoded::Event(e, _), Some(handle)) = (d, handle.take()) {
            handle(&e);
        }
    };
    decoder.feed(line.as_bytes(), &mut out);
    decoder.feed(b"\n", &mut out);
    decoder.finish(&mut out);
    assert!(handle.is_none(), "not an audit event: {line}");
}

/// An audit event: `who` does `verb` on `resource` `ns/name` at `seconds` past 14:00, with
/// the keys of `extra` laid over it.
fn audit(
    who: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    seconds: i64,
    extra: serde_json::Value,
) -> (String, i64) {
    let time = 1_784_815_200_000_000 + seconds * 1_000_000;
    let at = kubetrail_event::Timestamp::from_micros(time).to_string();
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let mut event = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request",
        "auditID": format!("id-{seconds}-{who}"), "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{ns}/{resource}"), "verb": verb,
        "user": {"username": who, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.1"], "userAgent": "kubectl/v1.36.0 (linux/amd64) kubernetes/5f4b3c2",
        "objectRef": {"resource": resource, "subresource": subresource, "namespace": ns, "name": "web", "apiVersion": "v1"},
        "responseStatus": {"code": 200}, "requestReceivedTimestamp": at, "stageTimestamp": at,
    });
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            event.insert(k.clone(), v.clone());
        }
    }
    (event.to_string(), time)
}

fn engine_of(rule: &str) -> Engine {
    let set = RuleSet::load(false, &[file("r.yaml", rule)]);
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    Engine::new(&set)
}

/// Evaluates `events` in order; the findings of each.
fn run(engine: &mut Engine, events: &[(String, i64)]) -> Vec<Vec<kubetrail_rules::Finding>> {
    events
        .iter()
        .map(|(line, time)| {
            let mut found = Vec::new();
            with_event(line, |e| engine.evaluate(e, "prod", *time, &mut found));
            found
        })
        .collect()
}

const FIRST_EXEC: &str = r#"
id: first-exec
title: First exec into a namespace by a user
description: test rule
severity: low
mitre: {tactics: [TA0002], techniques: [T1609]}
condition: 'resource:pods subresource:exec'
first_seen:
  fields: [user, ns]
  learning: 1h
"#;

#[test]
fn first_seen_learns_then_reports_each_new_tuple_once() {
    let mut engine = engine_of(FIRST_EXEC);
    let none = serde_json::Value::Null;
    let found = run(
        &mut engine,
        &[
            audit("alice", "create", "pods/exec", "shop", 0, none.clone()),
            // Still learning (within the hour from the first event): remembered, not reported.
            audit("bob", "create", "pods/exec", "shop", 1800, none.clone()),
            audit("alice", "create", "pods/exec", "shop", 4000, none.clone()),
            audit("bob", "create", "pods/exec", "shop", 4001, none.clone()),
            audit(
                "alice",
                "create",
                "pods/exec",
                "payments",
                4002,
                none.clone(),
            ),
            audit(
                "alice",
                "create",
                "pods/exec",
                "payments",
                4003,
                none.clone(),
            ),
            // Not what the rule looks at.
            audit("carol", "get", "pods", "shop", 4004, none.clone()),
            audit("carol", "create", "pods/exec", "shop", 4005, none),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 0, 0, 0, 1, 0, 0, 1]);
    let finding = &found[4][0];
    assert_eq!(
        finding.group,
        [
            ("user".to_owned(), "alice".to_owned()),
            ("ns".to_owned(), "payments".to_owned())
        ]
    );
    assert!(
        finding.explanation.contains(
            "first time for user=alice, ns=payments since 2026-07-23T14:00:00.000000Z (learning 1h)"
        ),
        "{}",
        finding.explanation
    );
}

/// How `serve` warms the engine: stored history through `learn`, then live events.
#[test]
fn learned_history_counts_as_seen_and_as_learning_time() {
    let mut engine = engine_of(FIRST_EXEC);
    assert_eq!(engine.history_span(), Some(3_600_000_000));
    // Filed under its subresource, the most selective of its equalities.
    match engine.history_filter() {
        Some(kubetrail_query::Expr::Or(any)) => match any.as_slice() {
            [kubetrail_query::Expr::In { field, values }] => {
                assert_eq!(field.display_name(), "subresource");
                assert_eq!(values.values(), ["exec"]);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let none = serde_json::Value::Null;
    for (line, time) in [
        audit("alice", "create", "pods/exec", "shop", 0, none.clone()),
        audit(
            "alice",
            "create",
            "pods/exec",
            "payments",
            5000,
            none.clone(),
        ),
    ] {
        with_event(&line, |e| engine.learn(e, "prod", time));
    }
    let found = run(
        &mut engine,
        &[
            audit(
                "alice",
                "create",
                "pods/exec",
                "payments",
                5001,
                none.clone(),
            ),
            audit("alice", "create", "pods/exec", "shop", 5002, none.clone()),
            audit("bob", "create", "pods/exec", "shop", 5003, none),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 0, 1]);

    // A replay of only the matching events declares where the history it read starts.
    let mut engine = engine_of(FIRST_EXEC);
    engine.history_starts_at(1_784_815_200_000_000 - 3_600_000_000);
    let found = run(
        &mut engine,
        &[audit(
            "bob",
            "create",
            "pods/exec",
            "shop",
            0,
            serde_json::Value::Null,
        )],
    );
    assert_eq!(found[0].len(), 1);
}

const RBAC_THEN_WORKLOAD: &str = r#"
id: rbac-then-workload
title: RBAC change then workload change
description: test rule
severity: high
mitre: {tactics: [TA0004], techniques: [T1098]}
condition: 'code<400'
sequence:
  within: 5m
  by: [user]
  steps:
    - name: rbac-change
      condition: 'resource:clusterrolebindings verb:create'
    - name: workload-change
      condition: 'resource:deployments verb:(create OR patch)'
"#;

#[test]
fn sequences_fire_on_the_last_step_by_the_same_key_within_the_span() {
    let mut engine = engine_of(RBAC_THEN_WORKLOAD);
    let none = serde_json::Value::Null;
    let denied = serde_json::json!({"responseStatus": {"code": 403}});
    let found = run(
        &mut engine,
        &[
            // A workload change before any RBAC change: nothing.
            audit("mallory", "patch", "deployments", "shop", 0, none.clone()),
            audit(
                "mallory",
                "create",
                "clusterrolebindings",
                "",
                10,
                none.clone(),
            ),
            // Someone else's workload change does not join.
            audit("bob", "patch", "deployments", "shop", 20, none.clone()),
            // The common condition holds for every step: a denied change is no step.
            audit("mallory", "patch", "deployments", "shop", 25, denied),
            audit("mallory", "patch", "deployments", "shop", 30, none.clone()),
            // The partial sequence was used up by the finding.
            audit("mallory", "patch", "deployments", "shop", 40, none.clone()),
            audit(
                "bob",
                "create",
                "clusterrolebindings",
                "",
                100,
                none.clone(),
            ),
            // Past the span.
            audit("bob", "patch", "deployments", "shop", 401, none),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 0, 0, 0, 1, 0, 0, 0]);
    let finding = &found[4][0];
    assert_eq!(finding.user, "mallory");
    assert_eq!(finding.audit_id, "id-30-mallory");
    assert_eq!(finding.group, [("user".to_owned(), "mallory".to_owned())]);
    assert!(
        finding.explanation.starts_with(
            "rbac-change at 2026-07-23T14:00:10.000000Z (auditID id-10-mallory: code=200, resource=clusterrolebindings, verb=create), then workload-change: "
        ) && finding.explanation.ends_with("; same user=mallory, within 5m"),
        "{}",
        finding.explanation
    );
}

/// `ordered: false` (Sigma's `temporal`): every step by the same key within the span, in any
/// order, each by a distinct event; the latest event of each step counts.
#[test]
fn sequences_in_any_order_fire_when_every_step_happened_within_the_span() {
    let rule = RBAC_THEN_WORKLOAD
        .replace("id: rbac-then-workload", "id: rbac-and-workload")
        .replace("  within: 5m\n", "  within: 5m\n  ordered: false\n")
        .replace(
            "'resource:deployments verb:(create OR patch)'",
            "'resource:(deployments OR clusterrolebindings) verb:(create OR patch)'",
        );
    let mut engine = engine_of(&rule);
    let none = serde_json::Value::Null;
    let found = run(
        &mut engine,
        &[
            // The workload change first, then the RBAC change: complete.
            audit("mallory", "patch", "deployments", "shop", 0, none.clone()),
            audit(
                "mallory",
                "create",
                "clusterrolebindings",
                "",
                10,
                none.clone(),
            ),
            // Used up: one more RBAC change alone is one step.
            audit(
                "mallory",
                "create",
                "clusterrolebindings",
                "",
                20,
                none.clone(),
            ),
            // It matches both steps but plays one, the one the key lacks: complete again.
            audit(
                "mallory",
                "create",
                "clusterrolebindings",
                "",
                30,
                none.clone(),
            ),
            // bob: a workload change, then another 400 s later (the first is past the span),
            // then an RBAC change within the span of the second.
            audit("bob", "patch", "deployments", "shop", 100, none.clone()),
            audit("bob", "patch", "deployments", "shop", 500, none.clone()),
            audit(
                "bob",
                "create",
                "clusterrolebindings",
                "",
                700,
                none.clone(),
            ),
            // erin: two steps 400 s apart, never within 5m.
            audit(
                "erin",
                "create",
                "clusterrolebindings",
                "",
                800,
                none.clone(),
            ),
            audit("erin", "patch", "deployments", "shop", 1_200, none),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 1, 0, 1, 0, 0, 1, 0, 0]);
    let finding = &found[1][0];
    assert_eq!(finding.audit_id, "id-10-mallory");
    assert!(
        finding
            .explanation
            .starts_with("workload-change at 2026-07-23T14:00:00.000000Z (auditID id-0-mallory: ")
            && finding
                .explanation
                .ends_with(", in any order; same user=mallory, within 5m"),
        "{}",
        finding.explanation
    );
    assert_eq!(found[6][0].user, "bob");
}

#[test]
fn sequence_steps_may_join_on_different_fields_and_one_event_is_one_step() {
    let rule = r#"
id: created-then-exec
title: Pod created then exec'd into
description: test rule
severity: high
mitre: {tactics: [TA0002], techniques: [T1609]}
sequence:
  within: 10m
  steps:
    - condition: 'resource:pods -subresource:* verb:create'
      by: [ns, requestObject.metadata.name]
    - condition: 'resource:pods subresource:exec'
      by: [ns, name]
    - condition: 'resource:pods subresource:exec'
      by: [ns, name]
"#;
    let mut engine = engine_of(rule);
    let pod = |name: &str| serde_json::json!({"requestObject": {"metadata": {"name": name}}});
    let named = |name: &str| serde_json::json!({"objectRef": {"resource": "pods", "subresource": "exec", "namespace": "shop", "name": name}});
    let found = run(
        &mut engine,
        &[
            audit("bob", "create", "pods", "shop", 0, pod("tools")),
            // A different pod does not join; the first exec into tools is step 2 only.
            audit("bob", "create", "pods/exec", "shop", 5, named("other")),
            audit("bob", "create", "pods/exec", "shop", 6, named("tools")),
            audit("eve", "create", "pods/exec", "shop", 7, named("tools")),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 0, 0, 1]);
    assert!(
        found[3][0]
            .explanation
            .contains("step 1 at 2026-07-23T14:00:00.000000Z (auditID id-0-bob")
    );
    assert!(
        found[3][0]
            .explanation
            .contains("step 2 at 2026-07-23T14:00:06.000000Z (auditID id-6-bob")
    );

    // Learned history plays steps too, without reporting.
    let mut engine = engine_of(rule);
    for (line, time) in [
        audit("bob", "create", "pods", "shop", 0, pod("tools")),
        audit("bob", "create", "pods/exec", "shop", 6, named("tools")),
    ] {
        with_event(&line, |e| engine.learn(e, "prod", time));
    }
    let found = run(
        &mut engine,
        &[audit(
            "eve",
            "create",
            "pods/exec",
            "shop",
            8,
            named("tools"),
        )],
    );
    assert_eq!(found[0].len(), 1);
}

#[test]
fn stateful_keys_are_checked_when_loading() {
    let both = RBAC_THEN_WORKLOAD.replace(
        "sequence:",
        "first_seen: {fields: [user], learning: 1d}\nsequence:",
    );
    let uneven = RBAC_THEN_WORKLOAD.replace(
        "      condition: 'resource:deployments verb:(create OR patch)'",
        "      condition: 'resource:deployments verb:(create OR patch)'\n      by: [user, ns]",
    );
    let one_step = r#"
id: one-step
title: t
description: test rule
severity: low
sequence: {within: 5m, by: [user], steps: [{condition: 'verb:get'}]}
"#;
    let no_condition = FIRST_EXEC.replace("condition: 'resource:pods subresource:exec'\n", "");
    let bad_fields = FIRST_EXEC.replace("[user, ns]", "[user, pod.image]");
    let long = FIRST_EXEC.replace("learning: 1h", "learning: 400d");
    for (text, expected) in [
        (
            both.as_str(),
            "at most one of `threshold:`, `first_seen:` and `sequence:`",
        ),
        (uneven.as_str(), "every step joins on as many fields"),
        (one_step, "a sequence has 2 to 5 steps"),
        (no_condition.as_str(), "missing field `condition`"),
        (
            bad_fields.as_str(),
            "\"pod.image\" is not a field a group can be made of",
        ),
        (
            long.as_str(),
            "learning: \"400d\" is not a duration between 0s and 366d",
        ),
    ] {
        let set = RuleSet::load(false, &[file("r.yaml", text)]);
        assert!(set.rules.is_empty(), "{expected}");
        assert!(
            set.problems.iter().any(|p| p.message.contains(expected)),
            "{expected}: {:#?}",
            set.problems
        );
    }
}

/// The inline-test syntax for stateful rules: `learn:` history, then a `sequence:` whose last
/// event is judged, with `wait:` moving the clock.
#[test]
fn inline_sequence_cases_judge_the_last_event() {
    let rule = format!(
        "{RBAC_THEN_WORKLOAD}{}",
        r#"
tests:
  fire:
    - sequence:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
        - wait: 4m
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
    - learn:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
      sequence:
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
  quiet:
    - sequence:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
        - wait: 6m
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
    - learn:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
      sequence:
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
    - sequence:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
        - wait: 1m
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
        - {verb: get, objectRef: {resource: pods, namespace: shop, name: web}}
    - sequence:
        - {verb: create, user: {username: mallory}, objectRef: {resource: clusterrolebindings, apiGroup: rbac.authorization.k8s.io, name: x}}
        - {verb: patch, user: {username: mallory}, objectRef: {resource: deployments, apiGroup: apps, namespace: shop, name: web}}
"#
    );
    let set = RuleSet::load(false, &[file("r.yaml", &rule)]);
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    let results = run_inline_tests(&set.rules[0], &set.defaults);
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{}[{}]: {f}", r.expect, r.index))
        })
        .collect();
    // The last quiet case is wrong on purpose.
    assert_eq!(
        failures,
        [
            "quiet[3]: the rule reported it: rbac-change at 2026-07-23T14:47:51.000000Z (auditID test-rbac-then-workload-3-0: code=201, resource=clusterrolebindings, verb=create), then workload-change: code=200, resource=deployments, verb=patch; same user=mallory, within 5m"
        ]
    );
    let typo = rule.replacen("    - learn:", "    - lean: []\n      learn:", 1);
    let set = RuleSet::load(false, &[file("r.yaml", &typo)]);
    let results = run_inline_tests(&set.rules[0], &set.defaults);
    assert!(
        results[1]
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("`sequence:` is not an event key")),
        "{:?}",
        results[2].failure
    );
}

/// Regression (detections issue, item 5): the default exemptions judged the impersonated
/// identity, so a person acting `--as` a kube-system controller evaded every rule.
#[test]
fn default_exemptions_judge_the_authenticated_user_not_the_impersonated_one() {
    let set = RuleSet::load(true, &[]);
    let rule = set
        .rules
        .iter()
        .find(|r| r.id == "exec-into-pod")
        .expect("the pack has exec-into-pod")
        .clone();
    let mut engine = Engine::with_rules(vec![rule], set.defaults.clone());
    let controller = "system:serviceaccount:kube-system:replicaset-controller";
    let found = run(
        &mut engine,
        &[
            audit(
                "bob@example.com",
                "create",
                "pods/exec",
                "shop",
                0,
                serde_json::json!({
                    "impersonatedUser": {"username": controller, "groups": ["system:serviceaccounts"]}
                }),
            ),
            audit(
                controller,
                "create",
                "pods/exec",
                "shop",
                1,
                serde_json::Value::Null,
            ),
            audit(
                "bob@example.com",
                "create",
                "pods/exec",
                "shop",
                2,
                serde_json::json!({
                    "user": {"username": "system:kube-controller-manager", "groups": ["system:authenticated"]},
                    "impersonatedUser": {"username": "bob@example.com"}
                }),
            ),
        ],
    );
    let counts: Vec<usize> = found.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 0, 0]);
}

//! The query language on real events, and its error messages.

use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder};
use kubetrail_query::{Matcher, parse};

mod limits;

fn decode(path: &str) -> Vec<AuditEvent<'static>> {
    let path = format!("{}/../../tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(path).unwrap();
    let mut events = Vec::new();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let Decoded::Event(e, _) = d {
            events.push((*e).into_owned());
        }
    };
    decoder.feed(&bytes, &mut out);
    decoder.finish(&mut out);
    events
}

fn count(events: &[AuditEvent<'_>], query: &str) -> usize {
    let matcher = Matcher::parse(query).unwrap_or_else(|e| panic!("{}", e.render(query)));
    events.iter().filter(|e| matcher.matches(e, "prod")).count()
}

#[test]
fn searches_on_the_real_log() {
    let events = decode("fixtures/real-apiserver-v1.36/audit.log");
    // Expected counts computed independently from the file.
    for (query, expected) in [
        ("", 2823),
        ("*", 2823),
        ("\"*\"", 38),
        ("code>=400", 388),
        ("user:system:serviceaccount:kube-system:*", 438),
        ("resource:leases", 693),
        ("objectRef.resource:leases", 693),
        ("verb:(create OR update OR patch OR delete)", 1226),
        ("verb:(create, update, patch, delete)", 1226),
        ("decision:forbid", 52),
        ("annotations.authorization.k8s.io/decision:forbid", 52),
        ("latency>1s", 215),
        ("-user:system:serviceaccount:kube-system:* code:4xx", 306),
        (
            "NOT user:system:serviceaccount:kube-system:* AND code>=400 AND code<500",
            306,
        ),
        ("\"forbidden\"", 57),
        ("user:system:anonymous", 25),
        ("group:system:masters", 1107),
        ("ns:kube-system resource:pods", 0),
        (
            "user:system:anonymous OR user:alice OR user:bob",
            25 + 72 + 6,
        ),
        (
            "(user:alice OR user:bob) verb:get",
            count(&events, "user:alice verb:get") + count(&events, "user:bob verb:get"),
        ),
        ("cluster:prod", 2823),
        ("sa:kube-system:*", 438),
        ("user_kind:anonymous", 25),
    ] {
        assert_eq!(count(&events, query), expected, "{query}");
    }
}

#[test]
fn json_paths_reach_into_bodies() {
    let privileged =
        decode("corpus/falco/test/trace_files/k8s_audit/create_nginx_pod_privileged.json");
    let unprivileged =
        decode("corpus/falco/test/trace_files/k8s_audit/create_nginx_pod_unprivileged.json");
    let query = "requestObject.spec.containers.securityContext.privileged:true";
    assert_eq!(count(&privileged, query), 1);
    assert_eq!(count(&unprivileged, query), 0);
    assert_eq!(
        count(&privileged, "requestObject.spec.containers.image:nginx*"),
        1
    );
}

#[test]
fn body_text_is_searched_in_that_body_only() {
    let events = decode("corpus/falco/test/trace_files/k8s_audit/create_nginx_pod_privileged.json");
    // In the request body, whatever the case and with redundant stars.
    for query in [
        "requestObject:NGINX",
        "requestObject:*nginx*",
        "requestObject:\"privileged\"",
        "requestObject:*",
    ] {
        assert_eq!(count(&events, query), 1, "{query}");
    }
    // Text elsewhere in the event is not in a body: the user, the stage.
    assert_eq!(count(&events, "\"ResponseComplete\""), 1);
    assert_eq!(count(&events, "requestObject:ResponseComplete"), 0);
    assert_eq!(count(&events, "-requestObject:ResponseComplete"), 1);
    assert_eq!(count(&events, "responseObject:pending"), 1);
    assert_eq!(count(&events, "requestObject:pending"), 0);
}

/// Every error case: the position and the message.
#[test]
fn mistakes_point_at_their_position() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "verb:",
            5,
            "expected a value after `verb:`, found the end of the query",
        ),
        (
            "verbb:get",
            0,
            "unknown field `verbb`; did you mean `verb`?",
        ),
        (
            "verb:get AND",
            9,
            "expected a search term after AND, found the end of the query",
        ),
        (
            "verb:get AND OR user:x",
            9,
            "expected a search term after AND, found `OR`",
        ),
        ("verb:get OR", 9, "expected a search term after OR"),
        ("(verb:get", 0, "this `(` is never closed: expected `)`"),
        ("verb:get)", 8, "this `)` closes nothing"),
        ("verb:(get OR", 12, "expected a value after `verb:`"),
        (
            "verb:(get update)",
            10,
            "expected OR or `)` in the value list, found `update`",
        ),
        ("code>abc", 5, "`code` is a number: `abc` is not one"),
        (
            "latency>fast",
            8,
            "`latency` is a duration such as 250ms, 1s or 2m: `fast` is not one",
        ),
        (
            "time>yesterday",
            5,
            "`time` is a time: `yesterday` is not RFC 3339",
        ),
        (
            "time:2026-01-01T00:00:00Z",
            5,
            "`time` is a time: compare it",
        ),
        ("code:9xx", 5, "`9xx` is not a status class"),
        (
            "mutating:maybe",
            9,
            "`mutating` is true or false, not `maybe`",
        ),
        ("group>x", 0, "`group` holds several values"),
        ("\"unclosed", 0, "this quoted string is never closed"),
        ("verb!get", 4, "`!` must be followed by `=`"),
        (
            "NOT",
            0,
            "expected a search term to negate, found the end of the query",
        ),
        ("()", 1, "empty parentheses"),
        (
            "| stat count()",
            2,
            "unknown command `stat`; commands are stats, timechart, top, sort, fields, limit",
        ),
        ("|", 1, "expected a command after `|`"),
        (
            "| stats",
            7,
            "expected an aggregate like count() or p99(latency), found the end of the query",
        ),
        ("| stats count", 13, "expected `(` after `count`"),
        ("| stats count(", 14, "expected a field inside count(…)"),
        (
            "| stats count(latency",
            21,
            "expected `)` to close count(, found the end of the query",
        ),
        ("| stats median(latency)", 8, "unknown aggregate `median`"),
        ("| stats p99()", 8, "p99 needs a numeric field"),
        (
            "| stats avg(user)",
            8,
            "avg needs a numeric field such as latency or code, not `user`",
        ),
        ("| stats dc()", 8, "dc needs a field"),
        (
            "| stats count(), count()",
            17,
            "two aggregates are named `count`",
        ),
        ("| stats count() as 1x", 19, "expected a name after `as`"),
        (
            "| stats count() by",
            18,
            "expected a field name, found the end of the query",
        ),
        ("| stats count() by nope", 19, "unknown field `nope`"),
        (
            "requestObject:debug*tools",
            19,
            "`requestObject:` finds text anywhere in the body, so `*` only fits at its ends",
        ),
        (
            "responseObject:**a*b*",
            18,
            "`responseObject:` finds text anywhere in the body",
        ),
        (
            "requestObject>3",
            0,
            "`requestObject` is a whole body: search its text",
        ),
        ("| stats count() user", 16, "unexpected `user` in `stats`"),
        (
            "| timechart count()",
            12,
            "expected the bucket width after timechart",
        ),
        (
            "| timechart 1m count() by user, verb",
            12,
            "timechart splits by one field at most",
        ),
        ("| top 10", 8, "expected a field name"),
        ("| top 10 user, verb", 2, "top takes one field"),
        ("| sort", 6, "expected a column to sort by"),
        ("| limit ten", 8, "expected a number of rows after limit"),
        (
            "verb:get user:x | limit 5 5",
            26,
            "unexpected `5` in `limit`",
        ),
        (
            "verb:get stats count()",
            9,
            "expected `|` before the command `stats`",
        ),
        (
            "verb:get | limit 5 verb:x",
            19,
            "unexpected `verb` in `limit`",
        ),
    ];
    for (query, position, message) in cases {
        let error = parse(query).expect_err(query);
        assert!(
            error.message.starts_with(message) && error.position == *position,
            "{query:?}: got {} at {}, expected {message:?} at {position}\n{}",
            error.message,
            error.position,
            error.render(query)
        );
    }
}

#[test]
fn errors_render_with_a_caret() {
    let query = "verb:get AND OR user:bob";
    let rendered = parse(query).unwrap_err().render(query);
    assert_eq!(
        rendered,
        "verb:get AND OR user:bob\n         ^ expected a search term after AND, found `OR`"
    );
}

#[test]
fn filters_refuse_commands() {
    assert!(Matcher::parse("verb:get | stats count()").is_err());
}

#[test]
fn the_pod_view_reads_pods_and_workload_templates_alike() {
    let trace = |name: &str| {
        decode(&format!(
            "corpus/falco/test/trace_files/k8s_audit/{name}.json"
        ))
    };
    let privileged = trace("create_nginx_pod_privileged");
    let second = trace("create_nginx_pod_privileged_2nd_container");
    let unprivileged = trace("create_nginx_pod_unprivileged");
    assert_eq!(count(&privileged, "pod.privileged:true"), 1);
    assert_eq!(count(&second, "pod.privileged:true"), 1);
    assert_eq!(count(&unprivileged, "pod.privileged:true"), 0);
    assert_eq!(count(&unprivileged, "pod.image:nginx*"), 1);
    assert_eq!(
        count(
            &trace("create_nginx_pod_hostnetwork"),
            "pod.hostNetwork:true"
        ),
        1
    );
    assert_eq!(
        count(
            &trace("create_nginx_pod_nohostnetwork"),
            "pod.hostNetwork:true"
        ),
        0
    );
    assert_eq!(
        count(
            &trace("create_nginx_pod_sensitive_mount"),
            "pod.hostPath:/etc*"
        ),
        1
    );
    // A Deployment's template is read at its own path; its status answers are not pod specs.
    let deployment = trace("create_deployment");
    assert_eq!(count(&deployment, "resource:deployments pod.image:*"), 1);

    // Hand-made bodies: a CronJob's template, an init container, a pods/status update.
    let event = |resource: &str, subresource: &str, body: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a","stage":"ResponseComplete","requestURI":"/x","verb":"create","user":{{"username":"alice"}},"objectRef":{{"resource":"{resource}","subresource":"{subresource}","namespace":"ns","name":"n"}},"responseStatus":{{"code":201}},"requestObject":{body},"requestReceivedTimestamp":"2026-07-23T14:47:51.123456Z","stageTimestamp":"2026-07-23T14:47:51.130001Z"}}"#
        )
    };
    let cronjob = event(
        "cronjobs",
        "",
        r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"hostPID":true,"initContainers":[{"name":"i","image":"busybox","securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}}]}}}}}}"#,
    );
    let status = event(
        "pods",
        "status",
        r#"{"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}}"#,
    );
    let debug = event(
        "pods",
        "ephemeralcontainers",
        r#"{"spec":{"ephemeralContainers":[{"name":"debugger","image":"nicolaka/netshoot"}]}}"#,
    );
    let events = decode_text(&[cronjob, status, debug]);
    assert_eq!(count(&events, "pod.hostPID:true"), 1);
    assert_eq!(count(&events, "pod.capabilities:SYS_ADMIN"), 1);
    assert_eq!(count(&events, "pod.image:busybox"), 1);
    assert_eq!(count(&events, "pod.privileged:true"), 0, "a status update");
    assert_eq!(count(&events, "pod.image:nicolaka/*"), 1);
    assert_eq!(count(&events, "pod.container:*"), 2);
    assert_eq!(count(&events, "-pod.image:*"), 1);
}

fn decode_text(lines: &[String]) -> Vec<AuditEvent<'static>> {
    let mut events = Vec::new();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let Decoded::Event(e, _) = d {
            events.push((*e).into_owned());
        }
    };
    for line in lines {
        decoder.feed(line.as_bytes(), &mut out);
        decoder.feed(b"\n", &mut out);
    }
    decoder.finish(&mut out);
    assert_eq!(events.len(), lines.len());
    events
}

#[test]
fn query_parameters_are_decoded_and_every_value_counts() {
    let exec = decode("corpus/falco/test/trace_files/k8s_audit/exec_pod.json");
    assert_eq!(count(&exec, "param.command:*"), 1);
    let uri = "/api/v1/namespaces/ns/pods/web/exec?command=sh&command=-c&command=cat+%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken&container=web&stdin=true";
    let values = kubetrail_query::uri_param_values(uri, "command");
    assert_eq!(
        values,
        [
            "sh",
            "-c",
            "cat /var/run/secrets/kubernetes.io/serviceaccount/token"
        ]
    );
    assert_eq!(
        kubetrail_query::uri_param_values("/x?a=%zz&a=%&a=%41", "a"),
        ["%zz", "%", "A"],
        "bad escapes are kept as written"
    );
    assert!(kubetrail_query::uri_param_values("/x", "a").is_empty());
}

#[test]
fn a_match_explains_itself() {
    let events = decode("corpus/falco/test/trace_files/k8s_audit/create_nginx_pod_privileged.json");
    let matcher = Matcher::parse(
        "verb:(create OR update) (pod.privileged:true OR pod.hostPID:true) -ns:kube-system",
    )
    .unwrap();
    let evidence = matcher.explain(&events[0], "prod").unwrap();
    let pairs: Vec<(&str, &str)> = evidence
        .iter()
        .map(|e| (e.field.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(pairs, [("verb", "create"), ("pod.privileged", "true")]);
    assert!(
        Matcher::parse("verb:delete")
            .unwrap()
            .explain(&events[0], "prod")
            .is_none()
    );
}

#[test]
fn view_fields_are_for_searching_only() {
    for query in [
        "* | stats count() by pod.image",
        "* | top param.command",
        "* | fields pod.image",
    ] {
        let error = parse(query).unwrap_err();
        assert!(
            error.message.contains("can be searched"),
            "{query}: {}",
            error.message
        );
    }
    assert!(
        parse("pod.nonsense:1")
            .unwrap_err()
            .message
            .contains("pod.privileged")
    );
}

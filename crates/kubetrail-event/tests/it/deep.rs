//! Input nested as deep as kube-apiserver allows (10,000 levels in a request body) and far
//! deeper: decoded, redacted and searched without recursion, never a stack overflow (which
//! would abort the process, whatever thread it happens on).

use super::{decode, decode_chunked};
use kubetrail_event::json::values_at_path;
use kubetrail_event::{
    DEFAULT_MAX_DEPTH, DecodeOptions, NESTING_ANNOTATION, RedactionConfig, Redactor, SkipReason,
};

/// A v1 event line whose request body is `body`.
fn event(audit_id: &str, resource: &str, body: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/{resource}/x","verb":"patch","user":{{"username":"mallory"}},"objectRef":{{"resource":"{resource}","namespace":"a","name":"x","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{body},"requestReceivedTimestamp":"2026-03-02T08:00:00.000000Z","stageTimestamp":"2026-03-02T08:00:00.001000Z"}}"#
    )
}

fn nested_arrays(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// `{"a":{"a":…{"a":LEAF}…}}`, `levels` objects deep.
fn nested_objects(levels: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
}

#[test]
fn an_event_list_with_an_event_nested_ten_thousand_deep_between_two_ordinary_ones() {
    let deep_body = nested_arrays(10_000);
    let deep_event = event("deep", "configmaps", &deep_body);
    let body = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{},{deep_event},{}]}}"#,
        event("before", "configmaps", r#"{"data":{"k":"v"}}"#),
        event("after", "configmaps", "{}"),
    );
    let d = decode(body.as_bytes());
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    let ids: Vec<&str> = d.events.iter().map(|e| e.0.audit_id.as_ref()).collect();
    assert_eq!(ids, ["before", "deep", "after"]);
    let deep = &d.events[1].0;
    // The body is kept as it came, and the event is marked with its depth.
    assert_eq!(deep.request_object.as_ref().unwrap().as_str(), deep_body);
    assert_eq!(deep.annotation(NESTING_ANNOTATION), Some("10001"));
    // Its text is the original, byte for byte, with the mark added.
    assert_eq!(
        deep.raw.as_str(),
        format!(
            r#"{},"annotations":{{"kubetrail.io/nesting-depth":"10001"}}}}"#,
            &deep_event[..deep_event.len() - 1]
        )
    );
    // Ordinary neighbours are untouched.
    assert_eq!(d.events[0].0.annotation(NESTING_ANNOTATION), None);
    assert_eq!(
        d.events[0].0.request_object.as_ref().unwrap().as_str(),
        r#"{"data":{"k":"v"}}"#
    );
}

#[test]
fn a_line_nested_a_hundred_thousand_deep_is_skipped_and_its_neighbours_are_not() {
    let mut log = String::new();
    for i in 0..50 {
        log.push_str(&event(&format!("good-{i}"), "pods", "{}"));
        log.push('\n');
    }
    let bad_line = event("bad", "pods", &nested_arrays(100_000));
    let bad_offset = log.len() as u64;
    log.push_str(&bad_line);
    log.push('\n');
    for i in 50..100 {
        log.push_str(&event(&format!("good-{i}"), "pods", "{}"));
        log.push('\n');
    }
    let options = DecodeOptions {
        keep_skipped_input: true,
        ..DecodeOptions::default()
    };
    for chunk in [1 << 20, 4096, 7] {
        let d = decode_chunked(log.as_bytes(), chunk, options.clone());
        assert_eq!(d.events.len(), 100, "chunk {chunk}");
        assert_eq!(d.skipped.len(), 1);
        let skip = &d.skipped[0];
        assert_eq!(skip.reason, SkipReason::TooDeep);
        assert_eq!(skip.line, 51);
        assert_eq!(skip.offset, Some(bad_offset));
        assert_eq!(skip.input.as_deref(), Some(bad_line.as_bytes()));
        assert_eq!(
            skip.message,
            format!(
                "the event nests 100001 levels of JSON, deeper than the limit of {DEFAULT_MAX_DEPTH}"
            )
        );
        assert!(skip.is_event_level());
    }
}

#[test]
fn a_too_deep_item_of_an_event_list_is_skipped_with_its_own_text() {
    let bad = event("bad", "pods", &nested_objects(20_000, "1"));
    let body = format!(
        r#"{{"kind":"EventList","items":[{},{bad}]}}"#,
        event("good", "pods", "{}")
    );
    let d = decode_chunked(
        body.as_bytes(),
        1 << 20,
        DecodeOptions {
            keep_skipped_input: true,
            ..DecodeOptions::default()
        },
    );
    assert_eq!(d.events.len(), 1);
    let skip = &d.skipped[0];
    assert_eq!((skip.reason, skip.item), (SkipReason::TooDeep, Some(1)));
    assert_eq!(skip.input.as_deref(), Some(bad.as_bytes()));
}

#[test]
fn broken_json_nested_deep_is_invalid_not_a_crash() {
    let broken = format!(
        "{}\n{}\n",
        &event("x", "pods", &nested_arrays(50_000))[..60_000],
        event("ok", "pods", "{}")
    );
    let d = decode(broken.as_bytes());
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.skipped[0].reason, SkipReason::InvalidJson);
    assert!(!d.skipped[0].is_event_level());
    // Deep junk inside a field the decoder reads itself (user) is ignored as other unknown
    // keys there are, and kept in the event's text.
    let junk = event("j", "pods", "{}").replace(
        r#"{"username":"mallory"}"#,
        &format!(r#"{{"username":"m","x":{}}}"#, nested_arrays(5_000)),
    );
    let d = decode(junk.as_bytes());
    assert_eq!(d.events.len(), 1, "{:?}", d.skipped);
    assert_eq!(d.events[0].0.user.username, "m");
    assert!(d.events[0].0.raw.as_str().contains(&nested_arrays(5_000)));
}

#[test]
fn a_limit_can_be_lowered() {
    let d = decode_chunked(
        event("x", "pods", &nested_arrays(500)).as_bytes(),
        1 << 20,
        DecodeOptions {
            max_depth: 300,
            ..DecodeOptions::default()
        },
    );
    assert_eq!(d.skipped[0].reason, SkipReason::TooDeep);
}

#[test]
fn credentials_are_redacted_at_any_depth() {
    // A Secret patch with real data next to deep junk (the API server records the patch as
    // written), and a token buried 5,000 levels down in a ConfigMap.
    let secret_patch = format!(
        r#"{{"data":{{"password":"c2VjcmV0"}},"junk":{}}}"#,
        nested_arrays(9_000)
    );
    let buried = nested_objects(
        5_000,
        r#""Authorization: Bearer abcdefghijklmnopqrstuvwxyz""#,
    );
    let log = format!(
        "{}\n{}\n",
        event("s", "secrets", &secret_patch),
        event("c", "configmaps", &buried)
    );
    let mut d = decode(log.as_bytes());
    assert_eq!(d.events.len(), 2);
    let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
    for (event, _, _) in &mut d.events {
        assert!(redactor.redact(event) > 0, "{}", event.audit_id);
        let text = event.raw.as_str();
        assert!(!text.contains("c2VjcmV0"));
        assert!(!text.contains("abcdefghijklmnopqrstuvwxyz"));
    }
    let secret = d.events[0].0.request_object.as_ref().unwrap().as_str();
    assert!(secret.starts_with(r#"{"data":{"password":"<redacted>"},"junk":[[[["#));
    let configmap = d.events[1].0.request_object.as_ref().unwrap().as_str();
    let path = vec!["a"; 5_000];
    assert_eq!(
        values_at_path(configmap, &path),
        ["Authorization: <redacted:bearer>"]
    );
}

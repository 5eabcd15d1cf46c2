//! Redaction of credentials.

use super::{decode, decode_file};
use kubetrail_event::{AuditEvent, REDACTED_ANNOTATION, RedactionConfig, Redactor};

fn redacted(events: &mut [AuditEvent<'static>], redactor: &Redactor) -> usize {
    events
        .iter_mut()
        .map(|e| redactor.redact(e))
        .filter(|n| *n > 0)
        .count()
}

fn everything(e: &AuditEvent<'_>) -> String {
    let mut out = Vec::new();
    kubetrail_event::write_event_json(e, kubetrail_event::JsonOptions { derived: true }, &mut out);
    format!("{}{}", String::from_utf8(out).unwrap(), e.raw.as_str())
}

#[test]
fn the_generated_secret_leak_is_removed_everywhere() {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(super::data("generated/secret-leak.truth.json")).unwrap(),
    )
    .unwrap();
    let forbidden: Vec<String> = truth["incidents"]["secret-leak"]["forbidden_strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let mut events: Vec<_> = decode_file("generated/secret-leak.log")
        .events
        .into_iter()
        .map(|e| e.0)
        .collect();
    let before = events
        .iter()
        .filter(|e| forbidden.iter().any(|f| everything(e).contains(f)))
        .count();
    assert_eq!(before, 2);
    let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
    assert_eq!(redacted(&mut events, &redactor), 2);
    for e in &events {
        let text = everything(e);
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{f} survived in {text}");
        }
    }
}

#[test]
fn real_secrets_and_tokens_keep_their_keys_and_lose_their_values() {
    let mut events: Vec<_> = decode_file("fixtures/real-apiserver-v1.36/audit.log")
        .events
        .into_iter()
        .map(|e| e.0)
        .collect();
    let originals: Vec<String> = events.iter().map(|e| e.raw.as_str().to_owned()).collect();
    let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
    assert_eq!(redacted(&mut events, &redactor), 26);
    for (event, original) in events.iter().zip(&originals) {
        let resource = event
            .object_ref
            .as_ref()
            .map(|r| (r.resource.as_ref(), r.subresource.as_ref()));
        match resource {
            Some(("secrets", "")) => {
                for body in [&event.request_object, &event.response_object]
                    .into_iter()
                    .flatten()
                {
                    let v: serde_json::Value = serde_json::from_str(body.as_str()).unwrap();
                    let items = v["items"]
                        .as_array()
                        .cloned()
                        .unwrap_or_else(|| vec![v.clone()]);
                    for item in items {
                        if let Some(data) = item["data"].as_object() {
                            assert!(data.values().all(|d| d == "<redacted>"), "{data:?}");
                        }
                    }
                }
            }
            Some(("serviceaccounts", "token")) => {
                let v: serde_json::Value =
                    serde_json::from_str(event.response_object.as_ref().unwrap().as_str()).unwrap();
                assert_eq!(v["status"]["token"], "<redacted>");
                assert!(event.annotation(REDACTED_ANNOTATION).is_some());
            }
            _ => {
                // Nothing to redact: the original text is untouched.
                assert_eq!(event.raw.as_str(), original);
            }
        }
    }
}

fn one(line: &str, config: &RedactionConfig) -> AuditEvent<'static> {
    let mut event = decode(line.as_bytes()).events.remove(0).0;
    Redactor::new(config).unwrap().redact(&mut event);
    event
}

const PREFIX: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"r","stage":"ResponseComplete","verb":"patch","user":{"username":"u"}"#;

#[test]
fn patterns_in_bodies_annotations_and_uris() {
    let line = format!(
        r#"{PREFIX},"requestURI":"/api/v1/namespaces/a/configmaps/c?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc","objectRef":{{"resource":"configmaps","namespace":"a","name":"c","apiVersion":"v1"}},"requestObject":{{"data":{{"kubeconfig":"user: {{token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig}}","db":"postgres://app:s3cret@db:5432/x","key":"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----","aws":"AKIAABCDEFGHIJKLMNOP","plain":"hello"}}}},"annotations":{{"example.com/auth":"Bearer abcdefghijklmnop"}}}}"#
    );
    let event = one(&line, &RedactionConfig::default());
    let text = everything(&event);
    for secret in [
        "eyJzdWIiOiIxIn0",
        "s3cret",
        "MIIE",
        "AKIAABCDEFGHIJKLMNOP",
        "abcdefghijklmnop",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("hello"));
    assert!(
        text.contains("<redacted:jwt>") && text.contains("<redacted:url-password>"),
        "{text}"
    );
}

#[test]
fn json_patches_to_secrets() {
    let line = format!(
        r#"{PREFIX},"requestURI":"/api/v1/namespaces/a/secrets/s","objectRef":{{"resource":"secrets","namespace":"a","name":"s","apiVersion":"v1"}},"requestObject":[{{"op":"replace","path":"/data/password","value":"c2VjcmV0"}},{{"op":"replace","path":"/metadata/labels/x","value":"y"}}]}}"#
    );
    let event = one(&line, &RedactionConfig::default());
    let body = event.request_object.as_ref().unwrap().as_str();
    assert_eq!(
        body,
        r#"[{"op":"replace","path":"/data/password","value":"<redacted>"},{"op":"replace","path":"/metadata/labels/x","value":"y"}]"#
    );
}

#[test]
fn configured_paths_and_patterns() {
    let config = RedactionConfig {
        paths: vec![
            "requestObject.spec.*.apiKey".into(),
            "annotations.example.com/pin".into(),
        ],
        patterns: vec!["ACME-[0-9]{6}".into()],
    };
    let line = format!(
        r#"{PREFIX},"requestURI":"/apis/x.io/v1/things/t","objectRef":{{"resource":"things","name":"t","apiGroup":"x.io","apiVersion":"v1"}},"requestObject":{{"spec":{{"a":{{"apiKey":"k1"}},"b":{{"apiKey":"k2"}},"note":"id ACME-123456"}}}},"annotations":{{"example.com/pin":"1234"}}}}"#
    );
    let event = one(&line, &config);
    let text = everything(&event);
    for secret in ["k1", "k2", "ACME-123456", "1234\""] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(event.annotation(REDACTED_ANNOTATION), Some("4 values"));
    let bad = Redactor::new(&RedactionConfig {
        patterns: vec!["(".into()],
        ..RedactionConfig::default()
    })
    .unwrap_err();
    assert!(
        bad.to_string()
            .starts_with("redaction pattern \"(\" is not a valid regular expression")
    );
}

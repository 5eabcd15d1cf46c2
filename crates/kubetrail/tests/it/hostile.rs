//! Hostile input against a real `kubetrail serve` (issue #24): request bodies, log lines and
//! queries built to knock the server over — nested as deep as the API server allows and far
//! deeper, thousands of parentheses, huge value lists. For each: the server stays up, answers
//! success or a clear 4xx, keeps acknowledging webhook batches, and stores the neighbours of
//! every bad event once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TempDir;
use super::serve::{Serve, free_port};

const API_TOKEN: &str = "hostile-api-token-0123456789";

fn event(audit_id: &str, verb: &str, body: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/configmaps/x","verb":"{verb}","user":{{"username":"mallory"}},"objectRef":{{"resource":"configmaps","namespace":"a","name":"x","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{body},"requestReceivedTimestamp":"2026-11-21T05:16:47.000000Z","stageTimestamp":"2026-11-21T05:16:47.001000Z"}}"#
    )
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

fn event_list(items: &[String]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

/// A server with a fast flush, the test API token and optionally a tailed file.
fn start(dir: &Path, tail: Option<&Path>) -> Serve {
    start_with(dir, tail, "")
}

/// [`start`] with more configuration.
fn start_with(dir: &Path, tail: Option<&Path>, config_text: &str) -> Serve {
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!("store:\n  flushInterval: 1s\n{config_text}"),
    )
    .unwrap();
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--api-token",
        API_TOKEN,
    ];
    let tail = tail.map(|t| t.to_str().unwrap().to_owned());
    if let Some(tail) = &tail {
        args.extend(["--tail", tail]);
    }
    Serve::start(&args)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post_audit(serve: &Serve, body: &str) -> (u16, Value) {
    let response = client()
        .post(serve.url("/audit?timeout=30s"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn api_get(serve: &Serve, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(&serve.url(path), query).unwrap();
    let response = client().get(url).bearer_auth(API_TOKEN).send().unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or(Value::Null),
    )
}

fn api_post(serve: &Serve, path: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(serve.url(path))
        .bearer_auth(API_TOKEN)
        .json(body)
        .send()
        .unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or(Value::Null),
    )
}

/// The stored events of `audit_id` as JSON text (an empty list when none). Read as raw values:
/// a client's JSON parser with a depth limit (serde_json's is 128) cannot hold a tree of them.
fn stored_events(serve: &Serve, audit_id: &str) -> Vec<Box<serde_json::value::RawValue>> {
    #[derive(serde::Deserialize)]
    struct Stages {
        events: Vec<Box<serde_json::value::RawValue>>,
    }
    let response = client()
        .get(serve.url(&format!("/api/v1/events/{audit_id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .unwrap();
    if response.status().as_u16() != 200 {
        return Vec::new();
    }
    serde_json::from_str::<Stages>(&response.text().unwrap())
        .unwrap()
        .events
}

/// Waits until `audit_id` is stored, and returns its events.
fn wait_stored(serve: &Serve, audit_id: &str) -> Vec<Box<serde_json::value::RawValue>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = stored_events(serve, audit_id);
        if !events.is_empty() {
            return events;
        }
        assert!(Instant::now() < deadline, "{audit_id} was never stored");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server answers and still takes webhook batches.
fn assert_alive(serve: &Serve, probe: &str) {
    let healthz = client().get(serve.url("/healthz")).send().unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    let (status, body) = post_audit(serve, &event_list(&[event(probe, "get", "null")]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
}

fn server_status(serve: &Serve) -> Value {
    client()
        .get(serve.url("/api/v1/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn webhook_bodies_nested_as_deep_as_the_api_server_allows_and_deeper() {
    let dir = TempDir::new("hostile-webhook");
    let serve = start(dir.path(), None);

    // The API server's own limit, between two ordinary events: all three stored once.
    let deep_body = nested(10_000);
    let (status, answer) = post_audit(
        &serve,
        &event_list(&[
            event("before", "get", "null"),
            event("deep-10000", "patch", &deep_body),
            event("after", "get", "null"),
        ]),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    for id in ["before", "deep-10000", "after"] {
        assert_eq!(wait_stored(&serve, id).len(), 1, "{id}");
    }
    // Answered as stored: the whole body, the event marked with its depth.
    let deep = wait_stored(&serve, "deep-10000")[0].get().to_owned();
    assert!(deep.contains(&format!(r#""requestObject":{deep_body}"#)));
    assert!(deep.contains(r#""kubetrail.io/nesting-depth":"10001""#));
    // The annotation marks it, and the query language finds it.
    let (code, found) = api_get(
        &serve,
        "/api/v1/query",
        &[(
            "q",
            "annotations.kubetrail.io/nesting-depth:* | fields id, annotations.kubetrail.io/nesting-depth",
        )],
    );
    assert_eq!(code, 200, "{found}");
    assert_eq!(
        found["rows"][0]["annotations.kubetrail.io/nesting-depth"],
        "10001"
    );
    // A retry of the same batch is stored once.
    let (status, answer) = post_audit(
        &serve,
        &event_list(&[event("deep-10000", "patch", &deep_body)]),
    );
    assert_eq!((status, answer["duplicates"].clone()), (200, json!(1)));

    // 9,500 deep (the reported crash) and far beyond the limit, each between good events.
    for (levels, id) in [(9_500, "deep-9500"), (100_000, "deep-100000")] {
        let (status, answer) = post_audit(
            &serve,
            &event_list(&[
                event(&format!("{id}-before"), "get", "null"),
                event(id, "patch", &nested(levels)),
                event(&format!("{id}-after"), "get", "null"),
            ]),
        );
        assert_eq!(status, 200, "{answer}");
        assert_alive(&serve, &format!("probe-{id}"));
        for neighbour in [format!("{id}-before"), format!("{id}-after")] {
            assert_eq!(wait_stored(&serve, &neighbour).len(), 1);
        }
    }
    // Stored within the limit, quarantined beyond it.
    assert_eq!(wait_stored(&serve, "deep-9500").len(), 1);
    assert!(stored_events(&serve, "deep-100000").is_empty());
    let (code, quarantine) = api_get(&serve, "/api/v1/quarantine", &[]);
    assert_eq!(code, 200);
    let entries = quarantine["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{quarantine}");
    assert_eq!(entries[0]["reason"], "too-deep");
    assert_eq!(entries[0]["source"], "webhook");
    assert_eq!(entries[0]["item"], 1);
    assert_eq!(
        server_status(&serve)["quarantine"]["byReason"]["too-deep"],
        1
    );
    let metrics = client()
        .get(serve.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            r#"kubetrail_quarantined_events_total{source="webhook",reason="too-deep"} 1"#
        ),
        "{metrics}"
    );

    // A batch of nothing but bad events is answered 2xx (it is kept), so the API server does
    // not retry it; a body that is not an EventList at all is refused.
    let (status, answer) = post_audit(
        &serve,
        &event_list(&[event("only-bad", "patch", &nested(20_000))]),
    );
    assert_eq!((status, answer["quarantined"].clone()), (200, json!(1)));
    let (status, _) = post_audit(&serve, &nested(50_000));
    assert_eq!(status, 400);
    let (status, _) = post_audit(&serve, "this is not JSON");
    assert_eq!(status, 400);
    assert_alive(&serve, "probe-end");
    serve.terminate();

    // With a higher limit, the quarantined events are replayed into the store; the body that
    // was no EventList was never kept.
    let serve = start_with(dir.path(), None, "events:\n  maxDepth: 200000\n");
    let data = dir.path().join("data");
    let url = serve.url("");
    let output = super::run(
        &[
            "quarantine",
            "replay",
            "--all",
            "--data",
            data.to_str().unwrap(),
            "--url",
            &url,
            "--token",
            API_TOKEN,
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(0), "{}", super::stderr(&output));
    assert_eq!(super::stdout(&output).matches(" stored").count(), 2);
    assert_eq!(wait_stored(&serve, "deep-100000").len(), 1);
    assert_eq!(wait_stored(&serve, "only-bad").len(), 1);
    let (_, quarantine) = api_get(&serve, "/api/v1/quarantine", &[]);
    assert_eq!(quarantine["total"], 0, "{quarantine}");
    serve.terminate();
}

#[test]
fn a_tailed_line_nested_a_hundred_thousand_deep_is_quarantined_and_tailing_goes_on() {
    let dir = TempDir::new("hostile-tail");
    let log = dir.path().join("audit.log");
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&event(&format!("line-{i}"), "get", "null"));
        text.push('\n');
    }
    let bad_offset = text.len();
    text.push_str(&event("line-bad", "patch", &nested(100_000)));
    text.push('\n');
    for i in 50..100 {
        text.push_str(&event(&format!("line-{i}"), "get", "null"));
        text.push('\n');
    }
    std::fs::write(&log, &text).unwrap();
    let serve = start(dir.path(), Some(&log));
    wait_stored(&serve, "line-99");
    wait_stored(&serve, "line-0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server_status(&serve)["tail"]["events"] != 100 {
        assert!(Instant::now() < deadline, "{}", server_status(&serve));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, quarantine) = api_get(&serve, "/api/v1/quarantine", &[]);
    let entry = &quarantine["entries"][0];
    assert_eq!(entry["reason"], "too-deep", "{quarantine}");
    assert_eq!(entry["offset"], bad_offset as u64);
    assert_eq!(entry["line"], 51);
    assert_eq!(entry["location"], log.to_str().unwrap());
    assert_eq!(server_status(&serve)["tail"]["quarantinedLines"], 1);
    serve.terminate();

    // After a restart the tailer carries on past the bad line: new lines are stored, nothing
    // is quarantined twice.
    let serve = start(dir.path(), Some(&log));
    let mut more = String::new();
    for i in 100..110 {
        more.push_str(&event(&format!("line-{i}"), "get", "null"));
        more.push('\n');
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, more.as_bytes()))
        .unwrap();
    wait_stored(&serve, "line-109");
    let (_, quarantine) = api_get(&serve, "/api/v1/quarantine", &[]);
    assert_eq!(quarantine["total"], 1, "{quarantine}");
    assert_eq!(stored_events(&serve, "line-0").len(), 1);
    serve.terminate();
}

#[test]
fn hostile_queries_are_refused_or_answered_and_never_stop_the_server() {
    let dir = TempDir::new("hostile-queries");
    let serve = start(dir.path(), None);
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let batch: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, u)| event(&format!("q-{i}"), "get", "null").replace("mallory", u))
        .collect();
    assert_eq!(post_audit(&serve, &event_list(&batch)).0, 200);
    wait_stored(&serve, "q-19");

    let refused: Vec<(String, &str)> = vec![
        (
            format!("{}verb:get{}", "(".repeat(5_000), ")".repeat(5_000)),
            "query.maxDepth",
        ),
        (
            format!("{}verb:get", "NOT ".repeat(50_000)),
            "query.maxDepth",
        ),
        (format!("{}verb:get", "-".repeat(100_000)), "query.maxDepth"),
        (format!("{}verb:get", "-".repeat(2_000)), "query.maxDepth"),
        (
            format!("\"{}\"", "x".repeat(1 << 20)),
            "query.maxValueLength",
        ),
        ("| timechart 1s count()".to_owned(), "query.maxBuckets"),
    ];
    for (query, limit) in &refused {
        for post in [false, true] {
            let (code, body) = if post {
                api_post(
                    &serve,
                    "/api/v1/query",
                    &json!({"q": query, "since": "30d"}),
                )
            } else if query.len() < 100_000 {
                api_get(&serve, "/api/v1/query", &[("q", query), ("since", "30d")])
            } else {
                continue;
            };
            assert_eq!(code, 400, "{:.60}: {body}", query);
            assert_eq!(body["limit"], *limit, "{body}");
            assert!(
                body["position"].is_u64() || *limit == "query.maxBuckets",
                "{body}"
            );
        }
    }
    // A user's mistake is a 400 in the language's terms, never an engine message.
    let (code, body) = api_get(
        &serve,
        "/api/v1/query",
        &[("q", "| stats count() by user, user")],
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already in this list")
    );
    assert_eq!(body["position"], 25);

    // Value lists of ordinary and allowlist size work, and answer correctly.
    for size in [2_000, 100_000] {
        let mut values: Vec<String> = (0..size - 5).map(|i| format!("nobody-{i}")).collect();
        values.extend(users[..5].iter().cloned());
        let q = format!("user:({}) | stats count() as n", values.join(" OR "));
        let (code, body) = api_post(&serve, "/api/v1/query", &json!({"q": q}));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["rows"][0]["n"], 5, "{body}");
    }
    // Facets: a repeated field is answered once, and the number of fields is bounded.
    let (code, body) = api_get(&serve, "/api/v1/facets", &[("fields", "user,user,verb")]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["facets"].as_array().unwrap().len(), 2);
    let many: Vec<String> = (0..3_000).map(|i| format!("annotations.k{i}")).collect();
    let started = Instant::now();
    let (code, body) = api_get(&serve, "/api/v1/facets", &[("fields", &many.join(","))]);
    assert_eq!(
        (code, body["limit"].clone()),
        (400, json!("query.maxFacetFields"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The query engine's threads run at a lower priority than ingest.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", serve.pid())).unwrap();
    let mut niceness = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "kubetrail-query" {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // Fields after the command's closing parenthesis; niceness is the 19th field.
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            niceness.push(fields[16].to_owned());
        }
    }
    assert!(!niceness.is_empty());
    assert!(niceness.iter().all(|n| n == "10"), "{niceness:?}");
    assert_alive(&serve, "probe-queries");
    serve.terminate();
}

#[test]
fn an_import_quarantines_what_it_cannot_store_and_stores_the_rest() {
    let dir = TempDir::new("hostile-import");
    let log = dir.path().join("audit.log");
    let data = dir.path().join("data");
    let lines = [
        event("i-1", "get", "null"),
        event("i-deep", "patch", &nested(100_000)),
        "not json at all".to_owned(),
        event("i-2", "get", "null"),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let output = super::run(
        &[
            "import",
            "--data",
            data.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(3), "{}", super::stderr(&output));
    let summary: Value = serde_json::from_str(&super::stdout(&output)).unwrap();
    assert_eq!(summary["imported"], 2);
    assert_eq!(summary["quarantined"], 2);
    let listed = super::run(
        &[
            "quarantine",
            "list",
            "--data",
            data.to_str().unwrap(),
            "-o",
            "json",
        ],
        b"",
    );
    let reasons: Vec<String> = super::stdout(&listed)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(reasons, ["too-deep", "invalid-json"]);
}

//! The HTTP API of `kubetrail serve`, end to end: a real server fed through its webhook by
//! `kubetrail send`, then asked over HTTP with and without its token. Answers are checked
//! against the generator's ground truth and against the same questions asked of the CLI.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::serve::{Serve, TOKEN};
use super::{TempDir, data, run, stderr};

const API_TOKEN: &str = "api-token-0123456789abcdef";

struct Api {
    server: Serve,
    client: reqwest::blocking::Client,
}

impl Api {
    /// GET `path` (under `/api/v1`) with the API token: status and JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, Some(API_TOKEN))
    }

    fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(self.server.url(&format!("/api/v1{path}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.server.url(&format!("/api/v1{path}")))
            .bearer_auth(API_TOKEN)
            .json(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }
}

/// Starts a server whose store flushes quickly and feeds it `file` through the webhook.
fn serve_with(dir: &Path, file: &str) -> Api {
    let config = dir.join("kubetrail.yaml");
    std::fs::write(&config, "store:\n  flushInterval: 200ms\n").unwrap();
    let store = dir.join("data");
    let token_arg = format!("prod={TOKEN}");
    let server = Serve::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--webhook-token",
        &token_arg,
        "--api-token",
        API_TOKEN,
    ]);
    let url = server.url("/audit");
    let path = data(file);
    let output = run(
        &[
            "send",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--json",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let sent: Value = serde_json::from_slice(&output.stdout).unwrap();
    let api = Api {
        server,
        client: reqwest::blocking::Client::new(),
    };
    // Acknowledged means in the write-ahead log; searchable once flushed to Parquet.
    let expected = sent["events_stored"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get("/query?q=%7C%20stats%20count()%20as%20n");
        if status == 200 && body["rows"][0]["n"].as_u64() == Some(expected) {
            break;
        }
        assert!(Instant::now() < deadline, "not searchable: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    api
}

fn truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
        .unwrap()
}

pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_api_answers_investigations_behind_its_token() {
    let dir = TempDir::new("api");
    let api = serve_with(dir.path(), "generated/all.log");
    let truth = truth();
    let incidents = &truth["incidents"];

    // No token, a wrong token: 401 with a message; the OpenAPI document needs none.
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = api.get_with("/search", token);
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }
    let (status, spec) = api.get_with("/openapi.yaml", None);
    assert_eq!(status, 200);
    let spec: Value = serde_yaml_ng::from_str(spec.as_str().unwrap()).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    // Search: every 403, newest first, paged 50 at a time without loss or repetition.
    let total = api.ok("/query?q=code:403%20%7C%20stats%20count()%20as%20n")["rows"][0]["n"]
        .as_u64()
        .unwrap();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut previous_time = String::from("9999");
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/search?q=code:403&limit=50".to_owned(),
            Some(c) => format!("/search?q=code:403&limit=50&cursor={c}"),
        };
        let page = api.ok(&path);
        pages += 1;
        for hit in page["events"].as_array().unwrap() {
            let time = hit["time"].as_str().unwrap().to_owned();
            assert!(
                time <= previous_time,
                "not newest first: {time} after {previous_time}"
            );
            previous_time = time;
            assert_eq!(hit["event"]["responseStatus"]["code"], 403);
            assert!(seen.insert((
                hit["auditID"].as_str().unwrap().to_owned(),
                hit["stage"].as_str().unwrap().to_owned()
            )));
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, total);
    assert_eq!(pages, total.div_ceil(50));
    // POST takes the same parameters in a body.
    let (status, page) = api.post("/search", &serde_json::json!({"q": "code:403", "limit": 3}));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 3);

    // The cluster parameter: every event came from the webhook's cluster "prod".
    let in_prod = api.ok("/query?q=code:403%20%7C%20stats%20count()%20as%20n&cluster=prod");
    assert_eq!(in_prod["rows"][0]["n"].as_u64().unwrap(), total);
    let elsewhere = api.ok("/search?q=code:403&cluster=staging");
    assert!(elsewhere["events"].as_array().unwrap().is_empty());

    // Stats and time series: the 403 spike's user and count.
    let spike = &incidents["forbidden-spike"];
    let by_user = api.ok(&format!(
        "/query?q={}",
        encode("code:403 | stats count() as n by user | sort -n")
    ));
    assert_eq!(by_user["columns"], serde_json::json!(["user", "n"]));
    assert_eq!(by_user["rows"][0]["user"], spike["user"]);
    assert_eq!(by_user["rows"][0]["n"], spike["count"]);
    let series = api.ok(&format!(
        "/query?q={}",
        encode(&format!(
            "user:\"{}\" | timechart 1m count() as n",
            spike["user"].as_str().unwrap()
        ))
    ));
    let in_series: u64 = series["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .sum();
    assert!(in_series >= spike["count"].as_u64().unwrap());

    // Facets: top users and source IPs of the 403s.
    let facets = api.ok("/facets?q=code:403&fields=user,ip&limit=3");
    assert_eq!(facets["total"].as_u64().unwrap(), total);
    assert_eq!(facets["facets"][0]["field"], "user");
    assert_eq!(facets["facets"][0]["values"][0]["value"], spike["user"]);
    assert_eq!(facets["facets"][0]["values"][0]["count"], spike["count"]);
    assert_eq!(facets["facets"][1]["values"][0]["value"], spike["sourceIP"]);

    // One event by auditID: the original, as sent.
    let first = api.ok("/search?q=code:403&limit=1");
    let id = first["events"][0]["auditID"].as_str().unwrap().to_owned();
    let by_id = api.ok(&format!("/events/{id}"));
    assert_eq!(by_id["events"][0]["event"]["auditID"], id.as_str());
    let (status, body) = api.get("/events/no-such-request");
    assert_eq!(status, 404, "{body}");

    // Object history: why the pod was evicted.
    let eviction = &incidents["pod-eviction"];
    let object = format!(
        "pods/{}/{}",
        eviction["namespace"].as_str().unwrap(),
        eviction["pod"].as_str().unwrap()
    );
    let history = api.ok(&format!("/objects/{object}"));
    let requests = &history["sections"][0]["rows"];
    assert_eq!(requests[0]["subresource"], "eviction");
    assert_eq!(requests[0]["user"], eviction["evicted_by"]);

    // Every report, with the same answer as the CLI's.
    let listed = api.ok("/reports");
    for report in listed["reports"].as_array().unwrap() {
        let name = report["name"].as_str().unwrap();
        let path = match name {
            "object" => format!("/reports/object?object={object}"),
            "rollout" => format!(
                "/reports/rollout?object=deployments/{}/{}",
                incidents["deployment-rollout"]["namespace"]
                    .as_str()
                    .unwrap(),
                incidents["deployment-rollout"]["deployment"]
                    .as_str()
                    .unwrap()
            ),
            _ => format!("/reports/{name}"),
        };
        let over_http = api.ok(&path);
        assert_eq!(over_http["report"], name);
        assert!(
            !over_http["sections"].as_array().unwrap().is_empty(),
            "{name}"
        );
    }
    let auth = api.ok("/reports/auth-failures");
    let by_user = auth["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "by-user")
        .unwrap();
    assert!(
        by_user["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == spike["user"] && r["requests"] == spike["count"]),
        "{by_user}"
    );

    // RBAC advice.
    let suggestion = api.ok("/rbac/suggest?serviceaccount=ci:deployer");
    assert_eq!(suggestion["subject"], "system:serviceaccount:ci:deployer");
    assert!(
        suggestion["yaml"]
            .as_str()
            .unwrap()
            .contains("kind: RoleBinding")
    );
    let denied = api.ok("/rbac/denied");
    let refused: u64 = denied["denied"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["user"] == spike["user"])
        .map(|d| d["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(refused, spike["count"].as_u64().unwrap());

    // Mistakes: status and a message (with the position for query mistakes).
    let (status, body) = api.get("/query?q=code%3A403%20AND");
    assert_eq!(status, 400);
    assert_eq!(body["position"], 9, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("expected a search term"),
        "{body}"
    );
    for (path, status, words) in [
        (
            "/search?q=code:403%20%7C%20top%2010%20user",
            400,
            "/api/v1/query",
        ),
        ("/search?limit=0", 400, "at least 1"),
        ("/search?cursor=nonsense", 400, "cursor"),
        ("/search?lmit=5", 400, "lmit"),
        (
            "/search?since=1h&from=2026-03-02T08:00:00Z",
            400,
            "not both",
        ),
        ("/reports/latncy", 400, "did you mean \"latency\""),
        ("/reports/object", 400, "needs an object"),
        (
            "/objects/pods/payments/no-such-pod",
            404,
            "no request touched",
        ),
        (
            "/reports/changes?from=2030-01-01T00:00:00Z",
            404,
            "no events between",
        ),
        (
            "/rbac/suggest?user=nobody@example.com",
            404,
            "users that were seen",
        ),
        ("/rbac/suggest", 400, "serviceaccount"),
        ("/facets?fields=usr", 400, "usr"),
    ] {
        let (got, body) = api.get(path);
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["status"], status, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{path}: {body}"
        );
    }
    api.server.terminate();
}

#[test]
fn an_empty_server_says_so_and_generates_a_kept_token() {
    let dir = TempDir::new("api-empty");
    let store = dir.path().join("data");
    let start = || Serve::start(&["--data", store.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let server = start();
    let token_file = store.join("api-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(server.url("/api/v1/reports/latency"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no events"),
        "{body}"
    );
    server.terminate();
    // A restart keeps the token.
    let server = start();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    server.terminate();
}

//! The web UI served by `kubetrail serve`: its page and assets with a strict
//! Content-Security-Policy, the API routes it relies on (session, fields, validate, span),
//! read-only tokens; then the whole UI in a real browser (`tests/ui/`, Playwright driving
//! Debian's Chromium) against a real server holding the bundled fixtures and an event full of
//! script payloads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::api::encode;
use super::serve::Serve;
use super::{TempDir, data, run, stderr};

const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
/// The real kube-apiserver's log and the XSS event.
const EVENTS: u64 = 2824;

/// A server tailing the fixture log, with an admin and a viewer token, and the XSS event sent
/// through its webhook; returns once every event is searchable.
fn serve(dir: &Path) -> Serve {
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  flushInterval: 200ms\napi:\n  tokens: [{ADMIN}]\n  viewerTokens: [{VIEWER}]\n"
        ),
    )
    .unwrap();
    let logs = data("fixtures/real-apiserver-v1.36/audit*.log");
    let server = Serve::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tail",
        logs.to_str().unwrap(),
    ]);
    let xss = data("ui/xss-event.json");
    let url = server.url("/audit");
    let sent = run(
        &["send", "--url", &url, "--json", xss.to_str().unwrap()],
        b"",
    );
    assert!(sent.status.success(), "{}", stderr(&sent));
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let span: Value = client
            .get(server.url("/api/v1/span"))
            .bearer_auth(VIEWER)
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        if span["events"].as_u64() == Some(EVENTS) {
            break;
        }
        assert!(Instant::now() < deadline, "not all stored: {span}");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn get(server: &Serve, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

#[test]
fn the_ui_is_served_with_a_strict_policy_and_viewers_only_read() {
    let dir = TempDir::new("ui-http");
    let server = serve(dir.path());

    // The page answers every UI route (links in notifications are paths), without a token.
    for path in [
        "/",
        "/explore?q=code:403&from=2026-11-21T05:00:00Z",
        "/object?object=pods/a/b",
    ] {
        let page = get(&server, path, None);
        assert_eq!(page.status(), 200, "{path}");
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        assert!(page.text().unwrap().contains("/ui/js/app.js"));
    }
    let script = get(&server, "/ui/js/app.js", None);
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    let again = reqwest::blocking::Client::new()
        .get(server.url("/ui/js/app.js"))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(get(&server, "/ui/nothing.js", None).status(), 404);
    // Unknown API paths stay JSON errors, not the page.
    let missing = get(&server, "/api/v1/nothing", Some(ADMIN));
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().unwrap()["error"].is_string());

    // Roles.
    let role = |token| {
        get(&server, "/api/v1/session", Some(token))
            .json::<Value>()
            .unwrap()
    };
    assert_eq!(role(ADMIN), json!({"role": "admin"}));
    assert_eq!(role(VIEWER), json!({"role": "viewer"}));
    assert_eq!(
        get(&server, "/api/v1/session", Some("not-a-token-at-all")).status(),
        401
    );
    // A viewer reads, POST search and query included, and changes nothing.
    let client = reqwest::blocking::Client::new();
    let post = |path: &str, token: &str, body: Value| {
        client
            .post(server.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap()
    };
    assert_eq!(
        post("/api/v1/query", VIEWER, json!({"q": "| stats count()"})).status(),
        200
    );
    assert_eq!(
        post("/api/v1/search", VIEWER, json!({"q": "code:403"})).status(),
        200
    );
    let monitor =
        json!({"name": "viewer-made", "query": "code:403", "window": "5m", "alert": "> 1"});
    let refused = post("/api/v1/monitors", VIEWER, monitor.clone());
    assert_eq!(refused.status(), 403);
    assert!(refused.text().unwrap().contains("read-only"));
    assert_eq!(
        post("/api/v1/quarantine/replay", VIEWER, json!({"all": true})).status(),
        403
    );
    let deleted = client
        .delete(server.url("/api/v1/monitors/anything"))
        .bearer_auth(VIEWER)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 403);
    assert_ne!(post("/api/v1/monitors", ADMIN, monitor).status(), 403);

    // What the UI asks besides the investigations.
    let fields = get(&server, "/api/v1/fields", Some(VIEWER))
        .json::<Value>()
        .unwrap();
    let names: Vec<&str> = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in ["verb", "user", "user_kind", "code", "latency", "cluster"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let validate = |q: &str| {
        let response = get(
            &server,
            &format!("/api/v1/validate?q={}", encode(q)),
            Some(VIEWER),
        );
        assert_eq!(
            response.status(),
            200,
            "a query that does not parse is an answer"
        );
        response.json::<Value>().unwrap()
    };
    assert_eq!(
        validate("verb:get | stats count() by user"),
        json!({"ok": true, "search": false, "command": "stats"})
    );
    let wrong = validate("verb:get AND OR x");
    assert_eq!(wrong["ok"], false);
    assert_eq!(wrong["position"], 9);
    assert!(wrong["error"].as_str().unwrap().contains("after AND"));
    let span = get(&server, "/api/v1/span", Some(VIEWER))
        .json::<Value>()
        .unwrap();
    assert_eq!(span["events"], EVENTS);
    assert_eq!(span["oldest"], "2026-11-21T05:16:47.371937Z");

    // First and last seen: min and max of time, for the actor view.
    let q = "user:admin verb:create resource:namespaces | stats count(), min(time) as first, max(time) as last";
    let seen = get(
        &server,
        &format!("/api/v1/query?q={}", encode(q)),
        Some(VIEWER),
    )
    .json::<Value>()
    .unwrap();
    let row = &seen["rows"][0];
    assert!(
        row["first"].as_str().unwrap() < row["last"].as_str().unwrap(),
        "{seen}"
    );
}

/// What the browser tests need: Node, the npm packages of `tests/ui`, and Chromium.
fn browser_prerequisites(root: &Path) -> Result<PathBuf, String> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if !root.join("tests/ui/node_modules/playwright-core").exists()
        || !root.join("tests/ui/node_modules/axe-core").exists()
    {
        return Err("tests/ui/node_modules lacks playwright-core or axe-core".to_owned());
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(chromium),
        _ => Err("node is not installed".to_owned()),
    }
}

#[test]
fn the_ui_works_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = match browser_prerequisites(&root) {
        Ok(chromium) => chromium,
        // CI installs them and sets KUBETRAIL_UI_TESTS=required: there, missing is a failure.
        Err(missing) if std::env::var("KUBETRAIL_UI_TESTS").as_deref() == Ok("required") => {
            panic!("the browser tests cannot run: {missing} (see tests/ui/README.md)")
        }
        Err(missing) => {
            eprintln!(
                "SKIPPED the browser tests: {missing}. Install them with tests/ui/setup.sh (CI does)."
            );
            return;
        }
    };
    let dir = TempDir::new("ui-browser");
    let server = serve(dir.path());
    let artifacts = root.join("target/ui-artifacts");
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "tests/ui/"])
        .current_dir(&root)
        .env("KUBETRAIL_URL", server.url(""))
        .env("KUBETRAIL_TOKEN", ADMIN)
        .env("KUBETRAIL_VIEWER_TOKEN", VIEWER)
        .env("KUBETRAIL_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "browser tests failed (screenshots in {}):\n{report}",
        artifacts.display()
    );
    assert!(report.contains("pass 15"), "{report}");
}

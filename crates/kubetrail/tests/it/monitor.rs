//! `kubetrail monitor`: checking files and replaying stored history (backtests against the
//! generator's ground truth).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubetrail_event::Timestamp;
use serde_json::Value;

use super::serve::Serve;
use super::{TempDir, data, import, run, stderr, stdout};

fn micros(text: &str) -> i64 {
    Timestamp::parse(text).unwrap().as_micros()
}

/// The backtest monitors over the generated incidents fire for exactly the truth file's users
/// and addresses, inside each incident's time range, and for nothing else among 200,000
/// background events.
#[test]
fn backtests_fire_for_exactly_the_injected_incidents() {
    let dir = TempDir::new("monitor-backtest");
    let summary = import(dir.path(), &[], &["generated/backtest.log.gz"]);
    assert_eq!(summary["imported"], 200_664);
    let monitors = data("monitors/backtest.yaml");
    let output = run(
        &[
            "monitor",
            "test",
            "--data",
            dir.path().to_str().unwrap(),
            "-o",
            "json",
            monitors.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let transitions: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(data("generated/backtest.truth.json")).unwrap(),
    )
    .unwrap();
    let incidents = &truth["incidents"];
    let firing = |monitor: &str| -> Vec<&Value> {
        transitions
            .iter()
            .filter(|t| t["monitor"] == monitor && t["state"] == "firing")
            .collect()
    };
    // Every firing is inside its incident: from its start to its end plus one window.
    let within = |t: &Value, incident: &Value, seconds: i64| {
        let at = micros(t["at"].as_str().unwrap());
        let start = micros(incident["start"].as_str().unwrap());
        at > start && at <= start + (seconds + 300) * 1_000_000
    };
    // The values of one group field among transitions, and a truth list, as sets.
    let values = |ts: &[&Value], field: &str| -> BTreeSet<String> {
        ts.iter()
            .map(|t| t["group"][field].as_str().unwrap().to_owned())
            .collect()
    };
    let strings = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let forbidden = firing("forbidden-spike");
    let users = values(&forbidden, "user");
    assert_eq!(
        users,
        BTreeSet::from([incidents["forbidden-spike"]["user"]
            .as_str()
            .unwrap()
            .to_owned()])
    );
    assert!(
        forbidden
            .iter()
            .all(|t| within(t, &incidents["forbidden-spike"], 240))
    );

    let unauthorized = firing("unauthorized-spike");
    assert_eq!(
        values(&unauthorized, "ip"),
        strings(&incidents["unauthorized-spike"]["sourceIPs"])
    );
    assert!(
        unauthorized
            .iter()
            .all(|t| within(t, &incidents["unauthorized-spike"], 360))
    );

    let anonymous = firing("anonymous-requests");
    assert_eq!(
        values(&anonymous, "ip"),
        strings(&incidents["anonymous-secrets"]["sourceIPs"])
    );
    assert!(
        anonymous
            .iter()
            .all(|t| within(t, &incidents["anonymous-secrets"], 60))
    );

    let freeze = firing("freeze-mutations");
    let incident = &incidents["freeze-mutation"];
    assert!(!freeze.is_empty());
    for t in &freeze {
        assert_eq!(t["group"]["user"], incident["user"]);
        assert_eq!(t["group"]["verb"], incident["verb"]);
        assert_eq!(t["group"]["ns"], incident["namespace"]);
        assert!(within(t, incident, 180));
    }
    // Nothing else fired, and every firing group resolved once its incident ended.
    let all_firing = transitions
        .iter()
        .filter(|t| t["state"] == "firing")
        .count();
    assert_eq!(
        all_firing,
        forbidden.len() + unauthorized.len() + anonymous.len() + freeze.len()
    );
    let resolved = transitions
        .iter()
        .filter(|t| t["state"] == "resolved")
        .count();
    assert_eq!(resolved, all_firing, "{transitions:#?}");
    for t in &transitions {
        assert!(t["value"].is_number(), "{t}");
        assert!(t["at"].as_str().unwrap().ends_with('Z'));
    }
}

/// Mistakes are reported with the file, the line, the key and the fix; the good monitors of
/// the same file still load, and the exit status says a check found problems.
#[test]
fn monitor_check_reports_lines_and_fixes() {
    let dir = TempDir::new("monitor-check");
    let file = dir.path().join("monitors.yaml");
    std::fs::write(
        &file,
        "- name: ok\n  query: 'code:401 | stats count() by ip'\n  alert: '> 5'\n\
         - name: bad\n  query: 'code:401 | stats count() by ip'\n  alert: '> 50'\n  recover: '< 60'\n  every: 1x\n\
         - name: typo\n  query: 'code:(401'\n  alert: '> 1'\n  sevrity: critical\n",
    )
    .unwrap();
    let output = run(&["monitor", "check", file.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(4));
    let errors = stderr(&output);
    let path = file.to_str().unwrap();
    assert!(
        errors.contains(&format!(
            "{path}:7: bad: recover: overlaps the alert condition `> 50`"
        )),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{path}:8: bad: every: \"1x\" is not a duration")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{path}:10: typo: query:")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!(
            "{path}:12: typo: sevrity: unknown key (did you mean `severity`?)"
        )),
        "{errors}"
    );
    assert!(
        stdout(&output).starts_with("1 monitor(s) and 0 channel(s) valid, 4 problem(s)"),
        "{}",
        stdout(&output)
    );
    let good = data("monitors/backtest.yaml");
    let output = run(&["monitor", "check", good.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A local HTTP receiver standing in for Slack, Alertmanager and PagerDuty: it records every
/// request and answers with the status it is set to.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    /// Every request's path, answered or not.
    attempts: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (answer, seen, tried) = (status.clone(), requests.clone(), attempts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                tried.lock().unwrap().push(path.clone());
                // `/reject…` stands for a channel that refuses the request itself (a 4xx).
                let code = if path.starts_with("/reject") {
                    400
                } else {
                    answer.load(Ordering::SeqCst)
                };
                if code == 200 {
                    seen.lock()
                        .unwrap()
                        .push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                let reason = if code == 200 {
                    "OK"
                } else {
                    "Service Unavailable"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Receiver {
            port,
            status,
            requests,
            attempts,
        }
    }

    fn requests(&self, path: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits until `done` holds for the requests to `path`; how long it took.
    fn wait(&self, path: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Duration {
        let started = Instant::now();
        while !done(&self.requests(path)) {
            assert!(
                started.elapsed() < timeout,
                "waited {timeout:?} for {path}: {:#?}",
                self.requests(path)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }
}

/// 403s of mallory recorded long ago, sent with `kubetrail send --now` as live traffic.
fn send_forbidden(server: &Serve, count: usize) {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::SeqCst);
    let recorded = Timestamp::parse("2026-03-02T08:00:00.000000Z")
        .unwrap()
        .as_micros();
    let mut lines = String::new();
    for i in 0..count {
        let time = kubetrail_alert::rfc3339::format(recorded + 1 + i as i64 * 1000);
        lines.push_str(&format!(
            "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{call:08x}-0000-4000-8000-{i:012x}\",\"stage\":\"ResponseComplete\",\"requestURI\":\"/api/v1/secrets\",\"verb\":\"list\",\"user\":{{\"username\":\"mallory\"}},\"sourceIPs\":[\"203.0.113.50\"],\"objectRef\":{{\"resource\":\"secrets\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"code\":403}},\"requestReceivedTimestamp\":\"{time}\",\"stageTimestamp\":\"{time}\"}}\n"
        ));
    }
    // Recorded in March: only `--now` makes them count in the monitor's current windows.
    let output = run(
        &["send", "--now", "--url", &server.url("/audit"), "-"],
        lines.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Mallory's alerts of `status` in webhook bodies.
fn alerts_of(bodies: &[Value], status: &str) -> usize {
    bodies
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["status"] == status && a["labels"]["user"] == "mallory")
        .count()
}

fn firing_of(bodies: &[Value]) -> usize {
    alerts_of(bodies, "firing")
}

fn resolved_of(bodies: &[Value]) -> usize {
    alerts_of(bodies, "resolved")
}

/// Live: the receiver gets "firing" within `every` plus the watermark delay, `kill -9` while
/// firing and a restart send no second "firing", a receiver answering
/// 503 gets the resolution once it recovers, and PagerDuty gets one trigger and one resolve.
#[test]
fn live_monitors_notify_once_across_kill_9_and_outages() {
    let dir = TempDir::new("monitor-live");
    let receiver = Receiver::start();
    let port = super::serve::free_port();
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nmonitoring:\n  delay: 2s\n  externalUrl: http://kubetrail.example\n\
             store:\n  flushInterval: 1s\n\
             channels:\n  - name: hook\n    type: webhook\n    url: http://127.0.0.1:{r}/hook\n    hmac_secret: s3cret\n\
             \x20 - name: pager\n    type: pagerduty\n    url: http://127.0.0.1:{r}/pd\n    routing_key: R0UT1NG\n\
             \x20 - name: slack\n    type: slack\n    url: http://127.0.0.1:{r}/slack\n\
             \x20 - name: teams\n    type: teams\n    url: http://127.0.0.1:{r}/teams\n\
             \x20 - name: am\n    type: alertmanager\n    url: http://127.0.0.1:{r}/am\n\
             \x20 - name: file\n    type: file\n    path: {file}\n\
             \x20 - name: reject\n    type: webhook\n    url: http://127.0.0.1:{r}/reject\n\
             monitors:\n  - name: forbidden\n    query: 'code:403 | stats count() by user'\n    window: 10s\n    every: 5s\n    alert: '> 5'\n    notify: [hook, pager, slack, teams, am, file, reject]\n",
            r = receiver.port,
            file = dir.path().join("alerts.jsonl").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    let server = Serve::start(&args);
    let started = Instant::now();
    send_forbidden(&server, 20);
    let waited = receiver.wait("/hook", Duration::from_secs(30), |b| firing_of(b) == 1);
    // every (5 s) + delay (2 s) + the rounds' pace (the monitor is fed by the stream: it does
    // not wait for the store's flush): 7–8 s when the machine is free; the bound leaves room
    // for the other tests running beside this one (bench/monitors.sh measures the latency).
    assert!(waited < Duration::from_secs(20), "firing after {waited:?}");
    let firing = receiver.requests("/hook")[0].clone();
    assert_eq!(firing["alerts"][0]["annotations"]["value"], "20");
    assert!(
        firing["alerts"][0]["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://kubetrail.example/explore?q=code%3A403%20user%3A%22mallory%22")
    );
    assert_eq!(firing["alerts"][0]["samples"].as_array().unwrap().len(), 3);
    receiver.wait("/pd", Duration::from_secs(10), |b| {
        b.iter().any(|e| e["event_action"] == "trigger")
    });

    // kill -9 while firing, restart, keep the incident going: no second "firing". (Delivery is
    // at least once: killed between a receiver's answer and the outbox recording it, the same
    // notification, with the same id, would go again. The kill waits for the record, so any
    // second "firing" here is a new notification.)
    let pending = data.join("monitors/outbox/pending");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&pending).unwrap().any(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        name.ends_with(".hook.json") || name.ends_with(".pager.json")
    }) {
        assert!(
            Instant::now() < deadline,
            "hook and pager deliveries never recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill_9();
    let server = Serve::start(&args);
    for _ in 0..3 {
        send_forbidden(&server, 10);
        std::thread::sleep(Duration::from_secs(2));
    }
    // The receiver goes down as the incident ends: the resolution waits for it.
    receiver.status.store(503, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(resolved_of(&receiver.requests("/hook")), 0);
    receiver.status.store(200, Ordering::SeqCst);
    receiver.wait("/hook", Duration::from_secs(60), |b| resolved_of(b) == 1);
    receiver.wait("/pd", Duration::from_secs(30), |b| {
        b.iter().any(|e| e["event_action"] == "resolve")
    });
    assert_eq!(
        firing_of(&receiver.requests("/hook")),
        1,
        "{:#?}",
        receiver.requests("/hook")
    );
    let pd = receiver.requests("/pd");
    let triggers = pd.iter().filter(|e| e["event_action"] == "trigger").count();
    assert_eq!(triggers, 1, "{pd:#?}");
    assert!(pd.iter().all(|e| e["routing_key"] == "R0UT1NG"));

    // Every other channel got the incident too, in its own format.
    let slack = receiver.requests("/slack");
    assert!(
        slack.iter().any(|m| m["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING:1] forbidden")),
        "{slack:#?}"
    );
    assert!(
        slack.iter().any(|m| m["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED:1] forbidden")),
        "{slack:#?}"
    );
    let teams = receiver.requests("/teams");
    assert!(
        teams.iter().all(
            |m| m["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
        )
    );
    assert!(teams.len() >= 2, "{teams:#?}");
    let am = receiver.requests("/am/api/v2/alerts");
    assert!(
        am.iter().any(
            |a| a[0]["labels"]["user"] == "mallory" && a[0]["endsAt"] != "0001-01-01T00:00:00Z"
        ),
        "{am:#?}"
    );
    let file = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    let statuses: Vec<String> = file
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["alerts"][0]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);

    // The state and its history are queryable.
    let output = run(
        &[
            "monitor",
            "status",
            "--url",
            &server.url(""),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(status["monitors"][0]["name"], "forbidden");
    assert_eq!(status["monitors"][0]["alerts"].as_array().unwrap().len(), 0);
    // The refusing channel was tried once per notification (firing, resolved), never again.
    let rejected = receiver
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("/reject"))
        .count();
    assert_eq!(rejected, 2);
    assert_eq!(status["failedNotifications"], 2);
    let transitions = std::fs::read_to_string(data.join("monitors/transitions.jsonl")).unwrap();
    assert!(
        transitions.contains("\"state\":\"firing\""),
        "{transitions}"
    );
    assert!(
        transitions.contains("\"state\":\"resolved\""),
        "{transitions}"
    );
    server.terminate();
    assert!(started.elapsed() < Duration::from_secs(150));
}

/// The sum of a metric's samples whose labels contain every `labels` pair.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Traffic metrics count every request once (exclusion filters notwithstanding), log-based
/// metrics follow the config, and an exclusion filter switched off through the API stops
/// dropping.
#[test]
fn audit_metrics_and_exclusion_filters_at_runtime() {
    let dir = TempDir::new("monitor-metrics");
    let port = super::serve::free_port();
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstore:\n  flushInterval: 1s\n\
             exclusions:\n  - name: leases\n    query: 'resource:leases'\n\
             metrics:\n  - name: secret_reads\n    query: 'resource:secrets verb:(get OR list OR watch)'\n    by: [user]\n"
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let server = Serve::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data_dir.to_str().unwrap(),
    ]);
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A request counts once: at ResponseComplete or Panic, or at ResponseStarted without a user.
    let counted: Vec<&Value> = events
        .iter()
        .filter(|e| match e["stage"].as_str().unwrap() {
            "ResponseComplete" | "Panic" => true,
            "ResponseStarted" => e["user"]["username"].as_str().unwrap_or("").is_empty(),
            _ => false,
        })
        .collect();
    let code = |e: &&Value| e["responseStatus"]["code"].as_i64();
    let leases = events
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "leases")
        .count();
    let secret_reads = counted
        .iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "secrets"
                && matches!(e["verb"].as_str(), Some("get" | "list" | "watch"))
        })
        .count();
    assert!(leases > 0 && secret_reads > 0);
    let output = run(
        &[
            "send",
            "--url",
            &server.url("/audit"),
            log.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let client = reqwest::blocking::Client::new();
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let requests = metrics_sum_total(&metrics, "kubetrail_apiserver_requests");
    assert_eq!(requests, counted.len() as f64, "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "kubetrail_apiserver_auth_failures_total",
            &[("code", "403")]
        ),
        counted.iter().filter(|e| code(e) == Some(403)).count() as f64
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "kubetrail_apiserver_auth_failures_total",
            &[("code", "401")]
        ),
        counted.iter().filter(|e| code(e) == Some(401)).count() as f64
    );
    assert_eq!(
        metric_sum(&metrics, "kubetrail_audit_secret_reads_total", &[]),
        secret_reads as f64
    );
    assert!(
        metrics.contains("kubetrail_apiserver_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    // Watches are long-running: counted as requests, not in the latency histograms.
    assert!(
        metric_sum(
            &metrics,
            "kubetrail_apiserver_requests_total",
            &[("verb", "watch")]
        ) > 0.0
    );
    assert!(
        !metrics.contains("kubetrail_apiserver_request_duration_seconds_bucket{verb=\"watch\"")
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "kubetrail_exclusion_dropped_events_total",
            &[("filter", "leases")]
        ),
        leases as f64
    );

    // Capture everything: switch the filter off; the same events again (new auditIDs) are kept.
    let answer: Value = client
        .put(server.url("/api/v1/exclusions/leases"))
        .bearer_auth(
            std::fs::read_to_string(data_dir.join("api-token"))
                .unwrap()
                .trim(),
        )
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["enabled"], false);
    let again = std::fs::read_to_string(&log)
        .unwrap()
        .replace("\"auditID\":\"", "\"auditID\":\"again-");
    let output = run(
        &["send", "--url", &server.url("/audit"), "-"],
        again.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric_sum(
            &metrics,
            "kubetrail_exclusion_dropped_events_total",
            &[("filter", "leases")]
        ),
        leases as f64
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "kubetrail_exclusion_enabled",
            &[("filter", "leases")]
        ),
        0.0
    );
    server.terminate();
    let stored = super::sql_rows(
        &data_dir,
        "SELECT COUNT(*) AS n FROM events WHERE resource = 'leases'",
    );
    assert_eq!(stored[0]["n"], leases as u64);
}

fn metrics_sum_total(text: &str, name: &str) -> f64 {
    metric_sum(text, &format!("{name}_total"), &[])
}

/// Monitors come from a directory read again when a file changes, from SIGHUP, and from the
/// API (kept in the data directory); a bad file is reported, never fatal.
#[test]
fn monitors_reload_from_files_signals_and_the_api() {
    let dir = TempDir::new("monitor-reload");
    let monitors = dir.path().join("monitors");
    std::fs::create_dir_all(&monitors).unwrap();
    std::fs::write(
        monitors.join("a.yaml"),
        "- name: from-file\n  query: 'code:401'\n  alert: '> 5'\n",
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let server = Serve::start(&[
        "--data",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--monitors",
        monitors.to_str().unwrap(),
    ]);
    let token = std::fs::read_to_string(data_dir.join("api-token")).unwrap();
    let client = reqwest::blocking::Client::new();
    let names = || -> (Vec<String>, Vec<String>) {
        let answer: Value = client
            .get(server.url("/api/v1/monitors"))
            .bearer_auth(token.trim())
            .send()
            .unwrap()
            .json()
            .unwrap();
        let names = answer["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        let problems = answer["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        (names, problems)
    };
    let wait_for = |expected: &[&str]| {
        let started = Instant::now();
        loop {
            let (names, problems) = names();
            if names == expected {
                return problems;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{names:?} {problems:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&["from-file"]);
    // A new file and a broken one: the new monitor loads, the broken one is reported.
    std::fs::write(
        monitors.join("b.yaml"),
        "- name: second\n  query: 'code:403 | stats count() by user'\n  alert: '> 5'\n",
    )
    .unwrap();
    std::fs::write(
        monitors.join("c.yaml"),
        "- name: broken\n  query: 'code:(403'\n",
    )
    .unwrap();
    let problems = wait_for(&["from-file", "second"]);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("c.yaml:2: broken: query:")),
        "{problems:?}"
    );
    // Through the API: created, listed, refused when the name belongs to a file, deleted.
    let post = |body: &str| {
        client
            .post(server.url("/api/v1/monitors"))
            .bearer_auth(token.trim())
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let created = post("name: from-api\nquery: 'user:system:anonymous'\nalert: '> 0'\n");
    assert_eq!(created.status(), 201, "{}", created.text().unwrap());
    assert!(data_dir.join("monitors/api/from-api.yaml").exists());
    wait_for(&["from-api", "from-file", "second"]);
    let conflict = post("name: second\nquery: 'code:500'\nalert: '> 0'\n");
    assert_eq!(conflict.status(), 409);
    let bad = post("name: bad\nquery: 'code:500'\nalert: '> 0'\nrecover: '< 1'\n");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("recover: overlaps"));
    let deleted = client
        .delete(server.url("/api/v1/monitors/from-api"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let refused = client
        .delete(server.url("/api/v1/monitors/second"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(refused.status(), 409);
    wait_for(&["from-file", "second"]);
    // SIGHUP reads everything again (here: after a change the poll has not seen yet).
    std::fs::remove_file(monitors.join("b.yaml")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(&["from-file"]);
    server.terminate();
}

//! `kubetrail serve` end to end: the real binary on a real port, a replay client that behaves
//! like the API server's webhook backend, `kill -9`, TLS and mTLS handshakes, and the file
//! source across rotations.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{TempDir, count_events, data, kubetrail, run, stderr, stdout};

/// A running `kubetrail serve`.
pub(crate) struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    /// Starts the server and waits for its banner.
    pub(crate) fn start(args: &[&str]) -> Serve {
        // The workspace's reqwest has no default TLS provider; the tests use ring like the server.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = kubetrail()
            .arg("serve")
            .args(args)
            .env("KUBETRAIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("kubetrail serve exited: {:?}", child.wait());
            }
            if line.starts_with("kubetrail:") {
                panic!("kubetrail serve failed: {line}");
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap();
                break url.split("://").nth(1).unwrap().to_owned();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Serve { child, addr }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: a graceful shutdown stores everything.
    pub(crate) fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit}");
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) const TOKEN: &str = "prod-token-0123456789abcdef";

/// The distinct (auditID, stage) pairs in the webhook bodies.
fn distinct_in_bodies(bodies: &[String]) -> u64 {
    let mut keys = HashSet::new();
    for body in bodies {
        let list: serde_json::Value = serde_json::from_str(body).unwrap();
        for item in list["items"].as_array().unwrap() {
            keys.insert(format!("{}/{}", item["auditID"], item["stage"]));
        }
    }
    keys.len() as u64
}

fn bodies() -> Vec<String> {
    std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/webhook-bodies.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// POSTs like the API server's webhook backend: `?timeout=30s`, JSON, retry with backoff on
/// anything but 2xx (connection refused while the server restarts included).
fn post_until_accepted(client: &reqwest::blocking::Client, url: &str, body: &str) -> u32 {
    let mut wait = Duration::from_millis(20);
    for attempt in 1..=200 {
        let response = client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send();
        if let Ok(response) = response
            && response.status().is_success()
        {
            return attempt;
        }
        std::thread::sleep(wait);
        wait = (wait * 3 / 2).min(Duration::from_millis(500));
    }
    panic!("a batch was never accepted");
}

#[test]
fn webhook_replay_survives_kill_9_and_stores_every_event_exactly_once() {
    let dir = TempDir::new("serve-replay");
    let store = dir.path().join("data");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let token_arg = format!("prod={TOKEN}");
    let args = [
        "--data",
        store.to_str().unwrap(),
        "--listen",
        &listen,
        "--webhook-token",
        &token_arg,
    ];
    let server = Serve::start(&args);
    let url = format!("http://{listen}/audit/{TOKEN}?timeout=30s");
    let bodies = bodies();
    let expected = distinct_in_bodies(&bodies);
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let client_thread = {
        let (acked, done, bodies, url) = (acked.clone(), done.clone(), bodies.clone(), url.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut retried = 0;
            for body in &bodies {
                retried += post_until_accepted(&client, &url, body) - 1;
                acked.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
            retried
        })
    };
    let started = Instant::now();
    while acked.load(Ordering::SeqCst) < bodies.len() / 2 {
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill_9();
    std::thread::sleep(Duration::from_millis(300));
    let server = Serve::start(&args);
    let retried = client_thread.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert!(retried > 0, "the client never saw the server down");
    // The same batches once more, as an API server retrying after lost answers would.
    let client = reqwest::blocking::Client::new();
    for body in bodies.iter().take(5) {
        post_until_accepted(&client, &url, body);
    }
    server.terminate();
    assert_eq!(count_events(&store), (expected, expected));
}

#[test]
fn refused_requests_get_the_right_status_and_are_counted() {
    let dir = TempDir::new("serve-refusals");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata: {}\nwebhook:\n  maxBodySize: 64KiB\n  clusters:\n    - name: prod\n      token: {TOKEN}\n    - name: staging\n      token: staging-token-0123456789\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let server = Serve::start(&["--config", config.to_str().unwrap()]);
    // The server restarted itself (same process) with glibc's mmap threshold fixed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let environ = std::fs::read(format!("/proc/{}/environ", server.child.id())).unwrap();
        assert!(
            environ
                .split(|&b| b == 0)
                .any(|var| var == b"MALLOC_MMAP_THRESHOLD_=8388608"),
            "serve runs without its allocator setting"
        );
    }
    let client = reqwest::blocking::Client::new();
    let small = bodies()
        .into_iter()
        .find(|b| b.len() < 60_000)
        .expect("a small batch");
    let post = |path: &str, content_type: &str, body: String, bearer: Option<&str>| {
        let mut request = client
            .post(server.url(path))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, text)
    };
    let json = "application/json";
    assert_eq!(post("/audit", json, small.clone(), None).0, 401);
    assert_eq!(
        post("/audit/not-a-configured-token", json, small.clone(), None).0,
        401
    );
    assert_eq!(
        post("/audit", json, small.clone(), Some("wrong-token-000000000")).0,
        401
    );
    let (status, text) = post(
        &format!("/audit/{TOKEN}?cluster=staging"),
        json,
        small.clone(),
        None,
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not \\\"staging\\\""), "{text}");
    let (status, text) = post(
        &format!("/audit/{TOKEN}"),
        json,
        small.clone(),
        Some("staging-token-0123456789"),
    );
    assert_eq!(status, 403, "{text}");
    let big = format!(
        "{{\"kind\":\"EventList\",\"items\":[],\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    assert_eq!(post(&format!("/audit/{TOKEN}"), json, big, None).0, 413);
    let (status, text) = post(
        &format!("/audit/{TOKEN}"),
        json,
        "{\"kind\":".to_owned(),
        None,
    );
    assert_eq!(status, 400);
    assert!(text.contains("not a valid audit EventList"), "{text}");
    assert_eq!(
        post(
            &format!("/audit/{TOKEN}"),
            "text/plain",
            small.clone(),
            None
        )
        .0,
        415
    );
    // Accepted both ways: path token (plain http, as the API server sends it) and bearer.
    assert_eq!(
        post(
            &format!("/audit/{TOKEN}?timeout=30s"),
            json,
            small.clone(),
            None
        )
        .0,
        200
    );
    let (status, text) = post(
        "/audit?timeout=30s",
        "application/json; charset=utf-8",
        small.clone(),
        Some(TOKEN),
    );
    assert_eq!(status, 200);
    assert!(
        text.contains("\"accepted\":0"),
        "the retry stored duplicates: {text}"
    );
    // A batch with one broken item: the others are taken, the broken one is counted.
    let mut mixed: serde_json::Value = serde_json::from_str(&small).unwrap();
    let items = mixed["items"].as_array_mut().unwrap();
    let good = items.len();
    items.insert(1, serde_json::json!({"kind": "Event", "auditID": 7}));
    let (status, text) = post(&format!("/audit/{TOKEN}"), json, mixed.to_string(), None);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["duplicates"], good, "{text}");
    assert_eq!(answer["skipped"], 1, "{text}");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "kubetrail_rejected_total{source=\"webhook\",reason=\"unauthorized\"} 3",
        "kubetrail_rejected_total{source=\"webhook\",reason=\"wrong-cluster\"} 2",
        "kubetrail_rejected_total{source=\"webhook\",reason=\"too-large\"} 1",
        "kubetrail_rejected_total{source=\"webhook\",reason=\"malformed\"} 1",
        "kubetrail_rejected_total{source=\"webhook\",reason=\"unsupported-media-type\"} 1",
        "kubetrail_webhook_requests_total{code=\"200\"} 3",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let status = run(&["status", "--url", &server.url("")], b"");
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains("healthy"), "{}", stdout(&status));
    assert!(
        stdout(&status).contains("prod, staging"),
        "{}",
        stdout(&status)
    );
    let year = stdout(&status)
        .lines()
        .find_map(|line| line.trim().strip_prefix("last accepted: "))
        .and_then(|time| time.get(..4)?.parse::<u32>().ok());
    assert!(
        year.is_some_and(|y| y >= 2026),
        "accepted events and no time: {}",
        stdout(&status)
    );
    server.terminate();
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client: reqwest::Identity,
    stranger: reqwest::Identity,
    ca_der: Vec<u8>,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubetrail test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        "kubetrail",
        &issuer,
    );
    let (client_pem, client_key) = leaf(vec![], "kube-apiserver-prod", &issuer);
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_params, other_key);
    let (stranger_pem, stranger_key) = leaf(vec![], "kube-apiserver-prod", &other_issuer);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.crt", &ca_cert.pem()),
        server_cert: write("server.crt", &server_pem),
        server_key: write("server.key", &server_key),
        client: reqwest::Identity::from_pem(format!("{client_pem}{client_key}").as_bytes())
            .unwrap(),
        stranger: reqwest::Identity::from_pem(format!("{stranger_pem}{stranger_key}").as_bytes())
            .unwrap(),
        ca_der: ca_cert.der().to_vec(),
    }
}

fn https_client(pki: &Pki, identity: Option<reqwest::Identity>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&pki.ca_der).unwrap()]);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

#[test]
fn tls_and_mtls_handshakes_succeed_and_fail_as_they_should() {
    let dir = TempDir::new("serve-tls");
    let pki = pki(dir.path());
    let store = dir.path().join("data");
    let token_arg = format!("prod={TOKEN}");
    let body = bodies().into_iter().find(|b| b.len() < 60_000).unwrap();
    let tls = Serve::start(&[
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--webhook-token",
        &token_arg,
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
    ]);
    let url = format!("https://{}/audit?timeout=30s", tls.addr);
    let client = https_client(&pki, None);
    let send = |client: &reqwest::blocking::Client, token: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().map(|r| r.status().as_u16())
    };
    assert_eq!(send(&client, Some(TOKEN)).unwrap(), 200);
    assert_eq!(send(&client, None).unwrap(), 401);
    // Plain HTTP to the TLS port is not answered as HTTP.
    let plain = reqwest::blocking::Client::new()
        .post(format!("http://{}/audit/{TOKEN}", tls.addr))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A client that does not trust the server's CA refuses the handshake.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_certs_only(Vec::new())
        .build()
        .unwrap();
    assert!(send(&untrusting, Some(TOKEN)).is_err());
    tls.terminate();

    let config = dir.path().join("mtls.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata: {}\ntls:\n  certFile: {}\n  keyFile: {}\n  clientCAFile: {}\nwebhook:\n  clusters:\n    - name: prod\n      clientCertCN: kube-apiserver-prod\n",
            store.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let mtls = Serve::start(&["--config", config.to_str().unwrap()]);
    let url = format!("https://{}/audit?timeout=30s", mtls.addr);
    let send = |client: &reqwest::blocking::Client| {
        client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(
        send(&https_client(&pki, Some(pki.client.clone()))).unwrap(),
        200
    );
    assert!(
        send(&https_client(&pki, None)).is_err(),
        "no client certificate must fail"
    );
    assert!(
        send(&https_client(&pki, Some(pki.stranger.clone()))).is_err(),
        "a certificate from another CA must fail"
    );
    mtls.terminate();
}

fn append(path: &Path, lines: &[&str]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        file.write_all(line.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.sync_all().unwrap();
}

fn gzip(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
    std::fs::remove_file(path).unwrap();
}

fn wait_for_tail_events(server: &Serve, expected: u64) {
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    loop {
        let status: serde_json::Value = client
            .get(server.url("/api/v1/status"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if status["tail"]["events"].as_u64() == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the tailer read {} events, expected {expected}",
            status["tail"]["events"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tailing_follows_rename_gzip_copytruncate_and_restarts_with_exact_counts() {
    let dir = TempDir::new("serve-tail");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let store = dir.path().join("data");
    let log = logs.join("audit.log");
    let text = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let chunks: Vec<&[&str]> = lines.chunks(lines.len() / 6 + 1).collect();
    assert_eq!(chunks.len(), 6);
    let pattern = format!("{}/audit*.log*", logs.display());
    let args = [
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tail",
        &pattern,
    ];
    let mut read = 0u64;
    let server = Serve::start(&args);
    // 1: plain appends, the last line written in two parts (a partial line must wait).
    append(&log, &chunks[0][..chunks[0].len() - 1]);
    let last = chunks[0][chunks[0].len() - 1];
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(&last.as_bytes()[..last.len() / 2]).unwrap();
    file.sync_all().unwrap();
    read += chunks[0].len() as u64 - 1;
    wait_for_tail_events(&server, read);
    file.write_all(&last.as_bytes()[last.len() / 2..]).unwrap();
    file.write_all(b"\n").unwrap();
    file.sync_all().unwrap();
    read += 1;
    wait_for_tail_events(&server, read);
    // 2: rotation by rename (lumberjack's name), new file, more lines; then the rotated file is
    // gzipped while the new one is written. A broken line among them is skipped and counted.
    append(&log, &["{\"kind\":\"Event\",\"auditID\":"]);
    append(&log, chunks[1]);
    let rotated = logs.join("audit-2026-11-21T08-00-00.000.log");
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, chunks[2]);
    read += (chunks[1].len() + chunks[2].len()) as u64;
    wait_for_tail_events(&server, read);
    let status: serde_json::Value = reqwest::blocking::get(server.url("/api/v1/status"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["tail"]["skippedLines"], 1, "{status}");
    gzip(&rotated);
    // 3: copytruncate.
    append(&log, chunks[3]);
    read += chunks[3].len() as u64;
    wait_for_tail_events(&server, read);
    let copy = logs.join("audit.log.1");
    std::fs::copy(&log, &copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, chunks[4]);
    read += chunks[4].len() as u64;
    wait_for_tail_events(&server, read);
    server.terminate();
    // 4: stopped across a rotation: lines written before and after it while kubetrail is down.
    let half = chunks[5].len() / 2;
    append(&log, &chunks[5][..half]);
    std::fs::rename(&log, logs.join("audit-2026-11-21T09-00-00.000.log")).unwrap();
    append(&log, &chunks[5][half..]);
    let server = Serve::start(&args);
    wait_for_tail_events(&server, chunks[5].len() as u64);
    let metrics = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let events = format!("kubetrail_tail_events_total {}", chunks[5].len());
    assert!(metrics.contains(&events), "{metrics}");
    assert!(
        metrics.contains("kubetrail_tail_file_lag_bytes{path=\""),
        "{metrics}"
    );
    server.terminate();
    assert_eq!(count_events(&store), (2823, 2823));
    let checkpoints = std::fs::read_to_string(store.join("checkpoints.json")).unwrap();
    assert!(checkpoints.contains("\"offset\""), "{checkpoints}");
}

/// An API server logging to stdout: the container runtime splits long lines into pieces. When
/// kubetrail stops after the first piece of a line was acknowledged but before its last was
/// written, the restart must read that piece again, or the event is lost.
#[test]
fn a_container_line_split_across_a_restart_is_stored_whole() {
    let dir = TempDir::new("serve-tail-cri");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let store = dir.path().join("data");
    let log = logs.join("kube-apiserver.log");
    let text = std::fs::read_to_string(data("envelopes/kube-apiserver.cri.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains(" stdout P "), "{}", lines[1]);
    let args = [
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tail",
        log.to_str().unwrap(),
    ];
    let server = Serve::start(&args);
    // A whole event, then the first piece of the next one.
    append(&log, &lines[..2]);
    wait_for_tail_events(&server, 1);
    // Give the tailer time to checkpoint past the piece it has acknowledged.
    std::thread::sleep(Duration::from_millis(1500));
    server.terminate();
    append(&log, &lines[2..]);
    let server = Serve::start(&args);
    // The split event and the three after it.
    wait_for_tail_events(&server, 4);
    server.terminate();
    assert_eq!(count_events(&store), (5, 5));
}

#[test]
fn send_delivers_like_the_api_server_and_repeats_with_fresh_audit_ids() {
    let dir = TempDir::new("serve-send");
    let store = dir.path().join("data");
    let token_arg = format!("prod={TOKEN}");
    let server = Serve::start(&[
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--webhook-token",
        &token_arg,
    ]);
    let url = server.url("/audit");
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let send = |extra: &[&str]| {
        let mut args = vec!["send", "--url", &url, "--json"];
        args.extend(extra);
        args.push(log.to_str().unwrap());
        run(&args, b"")
    };
    // Once, then again: the second delivery is all duplicates.
    for expected_new in [2823, 0] {
        let output = send(&["--token", TOKEN, "--concurrency", "3"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["events_sent"], 2823);
        assert_eq!(summary["events_acknowledged"], 2823);
        assert_eq!(summary["events_stored"], expected_new);
        assert_eq!(summary["requests"], 8, "400-event batches: {summary}");
        assert_eq!(summary["answers"]["200"], 8);
    }
    // Load testing: every pass after the first gets fresh auditIDs, so all of it is stored.
    // Unpaced and long enough for several passes even on a busy machine with a debug build.
    let output = send(&["--token", TOKEN, "--duration", "8s", "--concurrency", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let acknowledged = summary["events_acknowledged"].as_u64().unwrap();
    assert!(acknowledged > 2823, "{summary}");
    assert_eq!(summary["events_dropped"], 0);
    // The first pass repeats the stored IDs; every later one is new.
    assert_eq!(summary["duplicates"], 2823);
    let load_stored = summary["events_stored"].as_u64().unwrap();
    assert_eq!(load_stored, acknowledged - 2823);
    // A wrong token is refused on every attempt, and the batches are reported as dropped.
    let output = send(&[
        "--token",
        "not-the-token-0123456789",
        "--attempts",
        "2",
        "--initial-backoff",
        "10ms",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The 401 is sent before the body is read; an upload still under way may see the
    // connection close instead (an error to the sender, retried the same way).
    let refused = summary["answers"]["401"].as_u64().unwrap();
    let errors = summary["answers"]["error"].as_u64().unwrap_or(0);
    assert!(refused > 0);
    assert_eq!(refused + errors, 16, "{summary}");
    assert_eq!(summary["events_dropped"], 2823);
    assert!(stderr(&output).contains("2823 events were not delivered after 2 attempts"));
    server.terminate();
    assert_eq!(
        count_events(&store),
        (2823 + load_stored, 2823 + load_stored)
    );
}

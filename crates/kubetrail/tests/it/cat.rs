//! `kubetrail cat`.

use super::{TempDir, data, kubetrail, run, stderr, stdout};
use std::io::Write;

fn stats(args: &[&str]) -> serde_json::Value {
    let output = run(args, b"");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)))
}

#[test]
fn stats_of_the_real_fixtures() {
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let hook = data("fixtures/real-apiserver-v1.36/webhook-bodies.jsonl");
    let s = stats(&[
        "cat",
        "--stats",
        log.to_str().unwrap(),
        hook.to_str().unwrap(),
    ]);
    assert_eq!(s["events"], 2823 + 2785);
    assert_eq!(s["formats"]["jsonl"], 2823);
    assert_eq!(s["formats"]["eventlist"], 2785);
    assert_eq!(s["apiVersions"]["audit.k8s.io/v1"], 2823);
    assert_eq!(s["apiVersions"]["(none)"], 2785);
    assert_eq!(s["skipped"], serde_json::json!({}));
}

#[test]
fn json_output_is_one_normalized_event_per_line_and_byte_identical_for_v1_logs() {
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let output = run(&["cat", "--no-redact", log.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), std::fs::read_to_string(&log).unwrap());
}

#[test]
fn credentials_are_redacted_by_default() {
    let log = data("generated/secret-leak.log");
    let forbidden = [
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IkxFQUtFRC1UT0tFTi1ETy1OT1QtU1RPUkUifQ.c2VjcmV0",
        "cGFzc3dvcmQtZG8tbm90LXN0b3Jl",
    ];
    for args in [&["cat"][..], &["cat", "--derived"], &["cat", "-o", "table"]] {
        let mut args = args.to_vec();
        args.push(log.to_str().unwrap());
        let out = stdout(&run(&args, b""));
        assert!(forbidden.iter().all(|f| !out.contains(f)), "{args:?}");
    }
    let out = stdout(&run(&["cat", "--no-redact", log.to_str().unwrap()], b""));
    assert!(forbidden.iter().all(|f| out.contains(f)));
    let s = stats(&["cat", "--stats", log.to_str().unwrap()]);
    assert_eq!(s["redacted"], 2);
}

#[test]
fn gzip_files_and_stdin_are_read() {
    let dir = TempDir::new("gzip");
    let log = std::fs::read(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let gz = dir.path().join("audit-2026-11-21T05-25-51.157.log.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(&log).unwrap();
    encoder.finish().unwrap();
    assert_eq!(
        stats(&["cat", "--stats", gz.to_str().unwrap()])["events"],
        2823
    );

    let from_stdin = run(&["cat", "--stats", "-"], &log);
    let s: serde_json::Value = serde_json::from_slice(&from_stdin.stdout).unwrap();
    assert_eq!(s["events"], 2823);
    let no_args = run(&["cat", "--stats"], &log);
    assert_eq!(no_args.stdout, from_stdin.stdout);
}

#[test]
fn bad_input_is_reported_with_file_and_line_and_sets_exit_status_3() {
    let dir = TempDir::new("bad");
    let path = dir.path().join("mixed.log");
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let mut lines: Vec<&str> = log.lines().take(4).collect();
    lines.insert(2, "garbage");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let output = run(&["cat", path.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output).lines().count(), 4);
    let expected = format!("kubetrail: {}:3: invalid-json: not JSON", path.display());
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );

    let falco = data("corpus/falco/test/trace_files/k8s_audit/fal_01_003.json");
    let s = run(&["cat", "--stats", falco.to_str().unwrap()], b"");
    assert_eq!(s.status.code(), Some(3));
    let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(s["skipped"]["not-an-event"], 1);
    assert_eq!(s["events"], 0);
}

#[test]
fn a_missing_file_is_fatal_for_that_file_only() {
    let log = data("corpus/audit2rbac/testdata/demo.log");
    let output = run(
        &["cat", "/nonexistent/audit.log", log.to_str().unwrap()],
        b"",
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output).lines().count(), 37);
    assert!(
        stderr(&output).contains("cannot open /nonexistent/audit.log"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_error_limit_caps_messages_but_not_counts() {
    let input = "x\n".repeat(50);
    let output = run(
        &["cat", "--stats", "--error-limit", "5", "-"],
        input.as_bytes(),
    );
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["skipped"]["invalid-json"], 50);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 6, "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("45 more problems not shown")
    );
}

#[test]
fn table_output_for_people() {
    let log = data("corpus/audit2rbac/testdata/demo.log");
    let output = run(&["cat", "-o", "table", log.to_str().unwrap()], b"");
    let out = stdout(&output);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("TIME"));
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("2017-09-11T19:55:05.000000Z ResponseComplete"),
        "{first}"
    );
    assert!(first.contains("bob") && first.contains("core/pods default") && first.contains("403"));
}

#[test]
fn derived_fields_on_request() {
    let log = data("corpus/falco/test/trace_files/k8s_audit/create_serviceaccount.json");
    let output = run(&["cat", "--derived", log.to_str().unwrap()], b"");
    let event: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let derived = &event["_kubetrail"];
    assert_eq!(derived["userKind"], "human");
    assert_eq!(derived["mutating"], true);
    assert_eq!(derived["resourceKey"], "core/serviceaccounts");
    // Reading the output back drops the derived fields instead of keeping them as unknown.
    let again = run(&["cat", "-"], &output.stdout);
    assert!(!stdout(&again).contains("_kubetrail"));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let mut child = kubetrail()
        .args(["cat", log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[test]
fn exclusion_filters_and_policies_drop_events() {
    let log = data("fixtures/real-apiserver-v1.36/audit.log");
    let s = stats(&[
        "cat",
        "--stats",
        "--exclude",
        "resource:leases",
        log.to_str().unwrap(),
    ]);
    assert_eq!(s["excluded"], 693);
    let bad = run(&["cat", "--exclude", "verb:", log.to_str().unwrap()], b"");
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        stderr(&bad),
        "kubetrail: --exclude has a mistake:\nverb:\n     ^ expected a value after `verb:`, found the end of the query\n"
    );
    let dir = TempDir::new("cat-policy");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [system:apiserver]\n- level: Metadata\n",
    )
    .unwrap();
    let out = run(
        &[
            "cat",
            "--policy",
            policy.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        b"",
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2823 - 722);
    assert!(!text.contains("\"requestObject\"") && !text.contains("\"responseObject\""));
}

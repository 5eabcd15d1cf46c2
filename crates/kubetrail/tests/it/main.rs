//! End-to-end tests of the `kubetrail` binary: real processes, real files, real pipes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod api;
mod cat;
mod deploy;
mod durability;
mod falco;
mod hostile;
mod monitor;
mod policy;
mod rbac;
mod report;
mod rules;
mod serve;
mod sigma;
mod store;
mod ui;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

fn kubetrail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubetrail"))
}

/// Runs kubetrail with `args`, feeding `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = kubetrail()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may stop reading early; that is not this test's concern.
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Imports test data `files` into `store` with `extra` options; the import's JSON summary.
fn import(store: &Path, extra: &[&str], files: &[&str]) -> serde_json::Value {
    let mut args = vec!["import", "--data", store.to_str().unwrap()];
    args.extend(extra);
    let paths: Vec<String> = files
        .iter()
        .map(|f| data(f).to_str().unwrap().to_owned())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let output = run(&args, b"");
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The rows of a SQL statement over `store`, one JSON object each.
fn sql_rows(store: &Path, statement: &str) -> Vec<serde_json::Value> {
    let output = run(
        &[
            "sql",
            "--data",
            store.to_str().unwrap(),
            "-o",
            "json",
            statement,
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Stored events and distinct (auditID, stage) pairs in a data directory: equal when nothing is
/// stored twice.
fn count_events(store: &Path) -> (u64, u64) {
    let rows = sql_rows(
        store,
        "SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM events",
    );
    (
        rows[0]["n"].as_u64().unwrap(),
        rows[0]["d"].as_u64().unwrap(),
    )
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kubetrail-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! End-to-end tests of the `kubetrail` binary: real processes, real files, real pipes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod cat;
mod deploy;
mod durability;
mod policy;
mod report;
mod serve;
mod store;

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

/// Stored events and distinct (auditID, stage) pairs in a data directory: equal when nothing is
/// stored twice.
fn count_events(store: &Path) -> (u64, u64) {
    let output = run(
        &[
            "sql",
            "--data",
            store.to_str().unwrap(),
            "-o",
            "json",
            "SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM events",
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let row: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    (row["n"].as_u64().unwrap(), row["d"].as_u64().unwrap())
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

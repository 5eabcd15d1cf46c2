//! Crash recovery with a real process and a real `kill -9`.
//!
//! A child process (this test binary re-run with `KUBETRAIL_CRASH_CHILD` set) appends events,
//! commits every 100 and prints the index of the last committed event: that print is the
//! acknowledgement a webhook client or an import would rely on. The parent kills the child at
//! different points — before the first hand-off to Parquet, while segments are being written,
//! after several — and reopens the store: every acknowledged event must be there exactly once,
//! and nothing that was never appended.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow::array::Array;
use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_store::{EventWriter, QueryEngine, WriterOptions};

const CHILD_ENV: &str = "KUBETRAIL_CRASH_CHILD";
const EVENTS: usize = 40_000;

fn event_json(i: usize) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id-{i:06}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns-{ns}/pods/p-{i}","verb":"get","user":{{"username":"user-{u}"}},"sourceIPs":["10.0.0.{u}"],"objectRef":{{"resource":"pods","namespace":"ns-{ns}","name":"p-{i}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-03-0{day}T10:{m:02}:{s:02}.000000Z","stageTimestamp":"2026-03-0{day}T10:{m:02}:{s:02}.004000Z"}}"#,
        ns = i % 7,
        u = i % 13,
        day = 1 + i % 3,
        m = (i / 60) % 60,
        s = i % 60,
    )
}

fn options() -> WriterOptions {
    WriterOptions {
        flush_rows: 4_000,
        ..WriterOptions::default()
    }
}

/// The child: append everything, acknowledging each commit on stdout.
fn child(dir: &Path) {
    let mut writer = EventWriter::open(dir, options()).unwrap();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut acked = String::new();
    for i in 0..EVENTS {
        let line = format!("{}\n", event_json(i));
        let mut result = None;
        decoder.feed(line.as_bytes(), &mut |d| {
            if let Decoded::Event(event, _) = d {
                result = Some(writer.append(&event, "prod", 0).unwrap());
            }
        });
        assert!(result.is_some(), "event {i} did not decode");
        if i % 100 == 99 {
            writer.commit().unwrap();
            acked.clear();
            acked.push_str(&format!("{i}\n"));
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(acked.as_bytes()).unwrap();
            out.flush().unwrap();
        }
    }
    writer.close().unwrap();
    println!("done");
}

/// Runs the child until it has acknowledged `kill_after` events, then kills it with SIGKILL.
fn run_child_and_kill(dir: &Path, kill_after: Option<usize>) -> Option<usize> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Ok(i) = line.trim().parse::<usize>() {
            last_acked = Some(i);
            if kill_after.is_some_and(|k| i + 1 >= k) {
                child.kill().unwrap();
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    if kill_after.is_none() {
        assert!(status.success());
    }
    last_acked
}

/// Opens the store as a writer (replaying the WAL), closes it, and returns the stored IDs.
fn recover_and_read(dir: &Path) -> (Vec<String>, u64) {
    let writer = EventWriter::open(dir, options()).unwrap();
    let replayed = writer.recovery().replayed;
    assert!(
        writer
            .recovery()
            .wal_damage
            .iter()
            .all(|d| d.reason.contains("incomplete"))
    );
    writer.close().unwrap();
    let engine = QueryEngine::open(dir).unwrap();
    let batches = engine
        .sql("SELECT audit_id FROM events", Vec::new())
        .unwrap();
    let mut ids = Vec::new();
    for batch in batches {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .clone();
        ids.extend((0..column.len()).map(|i| column.value(i).to_owned()));
    }
    (ids, replayed)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubetrail-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "run by kill_9_at_any_point_recovers_every_acknowledged_event_exactly_once"]
fn crash_child() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn kill_9_at_any_point_recovers_every_acknowledged_event_exactly_once() {
    let dir = temp_dir("kill9");
    let mut total_replayed = 0;
    // Each run starts on the store the previous one crashed; the child re-appends from the
    // start, so already stored events come back as duplicates.
    for kill_after in [300, 3_900, 9_000, 21_000, 33_500] {
        let acked = run_child_and_kill(&dir, Some(kill_after)).expect("the child acknowledged");
        let (ids, replayed) = recover_and_read(&dir);
        total_replayed += replayed;
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "an event is stored twice");
        for i in 0..=acked {
            assert!(
                unique.contains(&format!("id-{i:06}")),
                "acknowledged event {i} lost (killed after {kill_after})"
            );
        }
        assert!(ids.len() <= EVENTS);
    }
    assert!(
        total_replayed > 0,
        "no kill happened while events were only in the WAL; the test proves nothing"
    );
    run_child_and_kill(&dir, None);
    let (ids, _) = recover_and_read(&dir);
    assert_eq!(ids.len(), EVENTS);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), EVENTS);
    std::fs::remove_dir_all(&dir).unwrap();
}

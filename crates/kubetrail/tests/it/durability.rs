//! The store under faults, through the binary: `kill -9` during an import, a full disk (a real
//! small tmpfs in a private mount namespace), retention and compaction.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, count_events, data, kubetrail, run, stderr};

/// The real fixture `copies` times, each copy with its own audit IDs.
fn many_events(copies: usize) -> Vec<u8> {
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let mut out = String::new();
    for copy in 0..copies {
        out.push_str(&log.replace("\"auditID\":\"", &format!("\"auditID\":\"c{copy}-")));
    }
    out.into_bytes()
}

fn wal_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store.join("wal"))
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map_or(0, |m| m.len()).saturating_sub(8))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_during_import_then_import_again_stores_everything_once() {
    let dir = TempDir::new("kill-import");
    let store = dir.path().join("data");
    let input = many_events(12);
    let total = 12 * 2823;
    let mut child = kubetrail()
        .args([
            "import",
            "--no-redact",
            "--data",
            store.to_str().unwrap(),
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Feed two thirds, wait for the first group commit (16 MiB), then kill mid-import.
    stdin.write_all(&input[..input.len() * 2 / 3]).unwrap();
    let started = Instant::now();
    while wal_bytes(&store) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no commit happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    let output = run(
        &[
            "import",
            "--no-redact",
            "--data",
            store.to_str().unwrap(),
            "-",
        ],
        &input,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("recovered"),
        "the WAL was not replayed: {}",
        stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let imported = summary["imported"].as_u64().unwrap();
    let duplicates = summary["duplicates"].as_u64().unwrap();
    assert_eq!(imported + duplicates, total);
    assert!(
        duplicates > 0,
        "the recovered events were not counted as stored"
    );
    assert_eq!(count_events(&store), (total, total));
}

fn segment_files(store: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![store.join("events")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn kill_9_during_a_file_import_then_import_again_stores_everything_once() {
    let dir = TempDir::new("kill-file-import");
    let store = dir.path().join("data");
    let file = dir.path().join("audit.log");
    std::fs::write(&file, many_events(12)).unwrap();
    let total = 12 * 2823;
    let import = || {
        kubetrail()
            .args(["import", "--no-redact", "--data", store.to_str().unwrap()])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = import();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // A file's events skip the WAL: what survives is in committed segments, consistent.
    assert_eq!(wal_bytes(&store), 0, "a file's events went through the WAL");
    let stored = if segment_files(&store) > 0 {
        let (stored, distinct) = count_events(&store);
        assert_eq!(stored, distinct);
        stored
    } else {
        0
    };

    let output = import().wait_with_output().unwrap();
    assert!(output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["imported"].as_u64().unwrap(), total - stored);
    assert_eq!(summary["duplicates"].as_u64().unwrap(), stored);
    assert_eq!(count_events(&store), (total, total));
}

/// Runs `script` as root of a private user and mount namespace, where a tmpfs can be mounted
/// without privileges. `None` when the kernel does not allow it here.
fn in_mount_namespace(script: &str, env: &[(&str, &Path)]) -> Option<String> {
    let mut command = Command::new("unshare");
    command.args(["--user", "--map-root-user", "--mount", "sh", "-c", script]);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("NAMESPACE-UNAVAILABLE") {
        return None;
    }
    Some(text)
}

/// Imports `$INPUT` into a tmpfs of `$SIZE`, from stdin when `$VIA` is `stdin` (through the WAL)
/// or else as a file (straight to segments), then again after space is freed.
const FULL_DISK_SCRIPT: &str = r#"
mount -t tmpfs -o size=$SIZE tmpfs "$MNT" || { echo NAMESPACE-UNAVAILABLE; exit 0; }
import() {
  if [ "$VIA" = stdin ]; then "$KT" import --no-redact --data "$MNT/data" - < "$INPUT"
  else "$KT" import --no-redact --data "$MNT/data" "$INPUT"; fi
}
import 2>&1 >/dev/null; echo "first-exit=$?"
echo "tmp-files=$(find "$MNT/data/events" -name '*.tmp' | wc -l)"
"$KT" sql --data "$MNT/data" -o json "SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM events"; echo "sql-exit=$?"
mount -o remount,size=64m "$MNT"
import 2>&1 >/dev/null; echo "second-exit=$?"
"$KT" sql --data "$MNT/data" -o json "SELECT count(*) AS n, count(DISTINCT audit_id || '/' || stage) AS d FROM events"
"#;

fn full_disk(size: &str, via: &str) -> Option<String> {
    let dir = TempDir::new(&format!("full-disk-{size}"));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let size_path = std::path::PathBuf::from(size);
    in_mount_namespace(
        FULL_DISK_SCRIPT,
        &[
            ("SIZE", &size_path),
            ("VIA", Path::new(via)),
            ("MNT", &mnt),
            ("KT", Path::new(env!("CARGO_BIN_EXE_kubetrail"))),
            ("INPUT", &data("fixtures/real-apiserver-v1.36/audit.log")),
        ],
    )
}

fn check_full_disk(text: &str, what_failed: &str) {
    assert!(text.contains("first-exit=1"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains(what_failed), "{text}");
    assert!(text.contains("tmp-files=0"), "{text}");
    assert!(text.contains("second-exit=0"), "{text}");
    // Whatever the failed import left visible was consistent (no half segment, no duplicate);
    // after space was freed, everything is there once.
    let counts: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with("{\"n\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = counts.last().expect("the final count");
    assert_eq!(last["n"], 2823, "{text}");
    assert_eq!(last["d"], 2823, "{text}");
    for c in &counts {
        assert_eq!(c["n"], c["d"], "{text}");
    }
}

#[test]
fn a_full_disk_stops_the_import_cleanly_and_nothing_is_lost_after_space_is_freed() {
    // From stdin, events go through the write-ahead log. 4 MiB: the log itself does not fit
    // (the 8.5 MB fixture is committed at the end).
    let Some(wal_full) = full_disk("4m", "stdin") else {
        eprintln!("SKIPPED: this kernel does not allow a tmpfs in a user namespace");
        return;
    };
    check_full_disk(&wal_full, "write-ahead log failed");
    // 8.4 MiB: the log fits, the Parquet segment does not; the log is kept and replayed.
    let segment_full = full_disk("8600k", "stdin").expect("namespaces worked a moment ago");
    check_full_disk(&segment_full, "cannot write segments");
    assert!(
        segment_full.contains("recovered 2823 accepted events"),
        "{segment_full}"
    );
    // A file goes straight to segments, and the log stays empty: 128 KiB do not hold the
    // segment; nothing is stored, and importing the file again stores it all.
    let file_full = full_disk("128k", "file").expect("namespaces worked a moment ago");
    check_full_disk(&file_full, "cannot write segments");
    assert!(!file_full.contains("recovered"), "{file_full}");
}

fn import_files(store: &Path, files: &[&str]) {
    super::import(store, &["--no-redact"], files);
}

fn days(store: &Path) -> Vec<String> {
    let mut days: Vec<String> = std::fs::read_dir(store.join("events"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    days.sort();
    days
}

const MARCH: &str = "generated/all.log";
const NOVEMBER: &str = "fixtures/real-apiserver-v1.36/audit.log";

#[test]
fn retention_by_age_deletes_whole_old_days() {
    let dir = TempDir::new("retention-age");
    let store = dir.path().join("data");
    import_files(&store, &[MARCH, NOVEMBER]);
    assert_eq!(days(&store), ["date=2026-03-02", "date=2026-11-21"]);
    // An age that ends between the two days, whenever this test runs.
    let march_4 = chrono_days_since(2026, 3, 4);
    let age = format!("{march_4}d");
    let output = run(
        &[
            "store",
            "prune",
            "--data",
            store.to_str().unwrap(),
            "--max-age",
            &age,
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("days removed: date=2026-03-02"),
        "{}",
        stderr(&output)
    );
    assert_eq!(days(&store), ["date=2026-11-21"]);
    assert_eq!(count_events(&store), (2823, 2823));
}

/// Whole days from a date to now.
fn chrono_days_since(year: i32, month: u32, day: u32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year } as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let epoch_days = era * 146_097 + doe - 719_468;
    now / 86_400 - epoch_days
}

#[test]
fn retention_by_size_deletes_the_oldest_data_first() {
    let dir = TempDir::new("retention-size");
    let store = dir.path().join("data");
    import_files(&store, &[NOVEMBER]);
    let november_bytes: u64 = std::fs::read_dir(store.join("events/date=2026-11-21"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    import_files(&store, &[MARCH]);
    let limit = (november_bytes + 1000).to_string();
    let output = run(
        &[
            "store",
            "prune",
            "--data",
            store.to_str().unwrap(),
            "--max-size",
            &limit,
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(days(&store), ["date=2026-11-21"]);
    let output = run(&["store", "prune", "--data", store.to_str().unwrap()], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--max-age"), "{}", stderr(&output));
}

#[test]
fn compaction_merges_small_segments_and_keeps_every_event() {
    let dir = TempDir::new("compaction");
    let store = dir.path().join("data");
    let input = many_events(3);
    // Three imports of one copy each: three small segments in one partition.
    for copy in 0..3 {
        let part = &input[copy * input.len() / 3..(copy + 1) * input.len() / 3];
        let output = run(
            &[
                "import",
                "--no-redact",
                "--data",
                store.to_str().unwrap(),
                "-",
            ],
            part,
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let segments = |store: &Path| {
        std::fs::read_dir(store.join("events/date=2026-11-21"))
            .unwrap()
            .count()
    };
    assert_eq!(segments(&store), 3);
    let output = run(
        &["store", "compact", "--data", store.to_str().unwrap()],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("merged 3 segments into 1"),
        "{}",
        stderr(&output)
    );
    assert_eq!(segments(&store), 1);
    assert_eq!(count_events(&store), (3 * 2823, 3 * 2823));
}

//! Events appended without the WAL (`append_unlogged`): acknowledged by `stored_then` only once
//! their segment is committed, never written to the WAL, and gone after a crash before that.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_store::{EventWriter, QueryEngine, WriterOptions};

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kubetrail-unlogged-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn append(writer: &mut EventWriter, from: usize, to: usize, logged: bool) {
    let mut decoder = Decoder::new(DecodeOptions::default());
    for i in from..to {
        let line = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id-{i}","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"list","user":{{"username":"u"}},"requestReceivedTimestamp":"2026-03-02T10:00:00.000000Z"}}
"#
        );
        decoder.feed(line.as_bytes(), &mut |d| {
            if let Decoded::Event(event, _) = d {
                if logged {
                    writer.append(&event, "c", 0).unwrap();
                } else {
                    writer.append_unlogged(&event, "c", 0).unwrap();
                }
            }
        });
    }
}

/// A `stored_then` acknowledgement, as a channel.
fn when_stored(writer: &mut EventWriter) -> Receiver<Result<(), String>> {
    let (done, wait) = channel();
    writer.stored_then(Box::new(move |result| {
        let _ = done.send(result);
    }));
    wait
}

fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len().saturating_sub(8))
        .sum()
}

fn stored(dir: &Path) -> i64 {
    let engine = QueryEngine::open(dir).unwrap();
    let batches = engine
        .sql("SELECT count(*) AS n FROM events", Vec::new())
        .unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn unlogged_events_are_acknowledged_when_their_segment_is_committed() {
    let dir = temp_dir("ack");
    let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
    append(&mut writer, 0, 100, false);
    let first = when_stored(&mut writer);
    writer.commit().unwrap();
    assert!(
        first.recv_timeout(Duration::from_millis(200)).is_err(),
        "acknowledged before any segment"
    );
    assert_eq!(wal_bytes(&dir), 0, "unlogged events reached the WAL");
    writer.flush().unwrap();
    assert_eq!(first.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(()));
    assert_eq!(stored(&dir), 100);
    // Nothing pending: acknowledged once the last hand-off is done, at once here.
    let idle = when_stored(&mut writer);
    assert_eq!(idle.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(()));

    // Dropped (a crash, as far as the store knows) before the next segment: the waiting
    // acknowledgement fails and the unlogged events are gone, the logged ones replayed.
    append(&mut writer, 100, 150, false);
    append(&mut writer, 150, 160, true);
    writer.commit().unwrap();
    let lost = when_stored(&mut writer);
    drop(writer);
    assert!(lost.recv_timeout(Duration::from_secs(30)).unwrap().is_err());
    let reopened = EventWriter::open(&dir, WriterOptions::default()).unwrap();
    assert_eq!(reopened.recovery().replayed, 10);
    reopened.close().unwrap();
    assert_eq!(stored(&dir), 110);
    std::fs::remove_dir_all(&dir).unwrap();
}

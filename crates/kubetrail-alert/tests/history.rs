//! Reading stored history in slices of time and pages: every matching event once, oldest
//! first, whatever the shape of the traffic (steady, a burst within one microsecond, days of
//! nothing) and however small the pages.

use std::path::PathBuf;

use kubetrail_alert::history::scan_store_in_pages;
use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_store::{EventWriter, QueryEngine, WriterOptions};

/// 2026-03-02T00:00:00Z.
const DAY: i64 = 86_400_000_000;
const START: i64 = 20_514 * DAY;
const SECOND: i64 = 1_000_000;

struct Store {
    dir: PathBuf,
    engine: QueryEngine,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Events at `times` (µs), by alternating users `alice` and `bob`, their audit IDs in order.
fn store(name: &str, times: &[i64]) -> Store {
    let dir = std::env::temp_dir().join(format!("kubetrail-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
    let mut decoder = Decoder::new(DecodeOptions::default());
    for (i, at) in times.iter().enumerate() {
        let time = kubetrail_alert::rfc3339::format(*at);
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let line = format!(
            "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{i:08}-0000-0000-0000-000000000000\",\"stage\":\"ResponseComplete\",\"requestURI\":\"/api/v1/namespaces/default/pods\",\"verb\":\"list\",\"user\":{{\"username\":\"{user}\"}},\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"default\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"code\":200}},\"requestReceivedTimestamp\":\"{time}\",\"stageTimestamp\":\"{time}\"}}\n"
        );
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                writer.append_unlogged(&event, "c", 0).unwrap();
            }
        };
        decoder.feed(line.as_bytes(), &mut out);
    }
    decoder.finish(&mut |_| {});
    writer.close().unwrap();
    let engine = QueryEngine::open(&dir).unwrap();
    Store { dir, engine }
}

/// The audit IDs and times read, in the order read.
fn scan(
    store: &Store,
    search: &str,
    from: Option<i64>,
    to: Option<i64>,
    page: u64,
) -> Vec<(String, i64)> {
    let filter = kubetrail_query::parse(search).unwrap().filter;
    let mut read = Vec::new();
    let count = scan_store_in_pages(&store.engine, filter, from, to, page, |event, _, time| {
        read.push((event.audit_id.to_string(), time));
        Ok(())
    })
    .unwrap();
    assert_eq!(count as usize, read.len());
    read
}

#[test]
fn every_matching_event_is_read_once_oldest_first() {
    let mut times = Vec::new();
    // An hour of steady traffic, one event every 7 s.
    times.extend((0..514).map(|i| START + i * 7 * SECOND));
    // A burst: 300 events within one microsecond, then 3 days of nothing.
    times.extend((0..300).map(|_| START + 2 * 3_600 * SECOND));
    // A last day of sparse events.
    times.extend((0..97).map(|i| START + 5 * DAY + i * 900 * SECOND));
    let store = store("slices", &times);
    let expected = |user: Option<usize>, from: i64, to: i64| -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = times
            .iter()
            .enumerate()
            .filter(|(i, t)| user.is_none_or(|u| i % 2 == u) && (from..to).contains(*t))
            .map(|(i, t)| (format!("{i:08}-0000-0000-0000-000000000000"), *t))
            .collect();
        all.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        all
    };
    for page in [7, 64, 20_000] {
        assert_eq!(
            scan(&store, "", None, None, page),
            expected(None, i64::MIN, i64::MAX),
            "page {page}"
        );
        assert_eq!(
            scan(&store, "user:alice", None, None, page),
            expected(Some(0), i64::MIN, i64::MAX),
            "page {page}"
        );
        // A range that starts within the steady hour and ends within the last day.
        let (from, to) = (START + 1_000 * SECOND, START + 5 * DAY + 40_000 * SECOND);
        assert_eq!(
            scan(&store, "user:bob", Some(from), Some(to), page),
            expected(Some(1), from, to),
            "page {page}"
        );
    }
    assert!(scan(&store, "user:carol", None, None, 7).is_empty());
    assert!(scan(&store, "", Some(START + 7 * DAY), None, 7).is_empty());
}

#[test]
fn a_handler_that_fails_stops_the_scan() {
    let times: Vec<i64> = (0..200).map(|i| START + i * SECOND).collect();
    let store = store("fails", &times);
    let mut seen = 0;
    let result = scan_store_in_pages(&store.engine, None, None, None, 10, |_, _, _| {
        seen += 1;
        if seen == 25 {
            return Err(std::io::Error::other("disk full"));
        }
        Ok(())
    });
    assert_eq!(result.unwrap_err().to_string(), "disk full");
    assert_eq!(seen, 25);
}

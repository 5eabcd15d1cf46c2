//! Behaviour of the decoder on real inputs: the public corpus, the genuine kube-apiserver 1.36
//! fixtures, container-runtime envelopes, and bad input mixed with good.

use std::path::PathBuf;

use kubetrail_event::{
    AuditEvent, DecodeOptions, Decoded, Decoder, IgnoreReason, InputFormat, JsonOptions, Skip,
    SkipReason, UserKind, write_event_json,
};

mod deep;
mod derived;
mod redact;

/// Everything decoding an input produced.
#[derive(Debug, Default)]
struct Decoding {
    events: Vec<(AuditEvent<'static>, InputFormat, u64)>,
    skipped: Vec<Skip>,
    ignored: Vec<IgnoreReason>,
}

impl Decoding {
    fn count(&self, reason: SkipReason) -> usize {
        self.skipped.iter().filter(|s| s.reason == reason).count()
    }

    /// The normalized JSON lines of all events.
    fn normalized(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|(e, _, _)| {
                let mut out = Vec::new();
                write_event_json(e, JsonOptions::default(), &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }
}

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

/// Decodes `bytes` fed in pieces of `chunk` bytes.
fn decode_chunked(bytes: &[u8], chunk: usize, options: DecodeOptions) -> Decoding {
    let mut decoding = Decoding::default();
    let mut out = |d: Decoded<'_>| match d {
        Decoded::Event(e, origin) => {
            decoding
                .events
                .push(((*e).into_owned(), origin.format, origin.line))
        }
        Decoded::Skipped(s) => decoding.skipped.push(s),
        Decoded::Ignored { reason, .. } => decoding.ignored.push(reason),
    };
    let mut decoder = Decoder::new(options);
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.feed(piece, &mut out);
    }
    decoder.finish(&mut out);
    decoding
}

fn decode(bytes: &[u8]) -> Decoding {
    decode_chunked(bytes, 1 << 20, DecodeOptions::default())
}

fn decode_file(path: &str) -> Decoding {
    decode(&std::fs::read(data(path)).unwrap())
}

#[test]
fn real_apiserver_log_backend() {
    let d = decode_file("fixtures/real-apiserver-v1.36/audit.log");
    assert_eq!(d.events.len(), 2823);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert!(
        d.events
            .iter()
            .all(|(_, f, _)| *f == InputFormat::JsonLines)
    );
    // Line numbers are those of the file.
    assert_eq!(d.events[2822].2, 2823);
}

#[test]
fn real_apiserver_webhook_bodies() {
    let d = decode_file("fixtures/real-apiserver-v1.36/webhook-bodies.jsonl");
    assert_eq!(d.events.len(), 2785);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert!(
        d.events
            .iter()
            .all(|(_, f, _)| *f == InputFormat::EventList)
    );
}

#[test]
fn webhook_bodies_are_the_log_events_minus_the_log_only_ones() {
    let log = decode_file("fixtures/real-apiserver-v1.36/audit.log");
    let hook = decode_file("fixtures/real-apiserver-v1.36/webhook-bodies.jsonl");
    let key = |e: &AuditEvent<'_>| (e.audit_id.to_string(), e.stage);
    let log_by_key: std::collections::HashMap<_, _> =
        log.events.iter().map(|(e, _, _)| (key(e), e)).collect();
    for (event, _, _) in &hook.events {
        let in_log = log_by_key[&key(event)];
        assert_eq!(event.user, in_log.user);
        assert_eq!(event.object_ref, in_log.object_ref);
        assert_eq!(event.request_object, in_log.request_object);
    }
    // summary.txt: both=2785 log-only=38 webhook-only=0
    assert_eq!(log.events.len() - hook.events.len(), 38);
}

/// Expected events per corpus file, from `corpus/SOURCES.md`.
const CORPUS: &[(&str, usize)] = &[
    ("aks-audit-log/samples/event.json", 22),
    ("aks-audit-log/samples/sample_EventHubs_event.json", 1),
    ("aks-audit-log/samples/sample_KubeAuditLog_event.json", 1),
    (
        "apisnoop/apps/snoopdb/postgres/testdata/audit_event.json",
        1,
    ),
    (
        "apisnoop/apps/snoopdb/postgres/testdata/audit_event_bad_verb.json",
        1,
    ),
    (
        "apisnoop/apps/snoopdb/postgres/testdata/audit_event_dummy_request.json",
        1,
    ),
    (
        "apisnoop/apps/snoopdb/postgres/testdata/audit_event_part_count_too_high.json",
        1,
    ),
    (
        "apisnoop/apps/snoopdb/postgres/testdata/bad_audit_event.json",
        1,
    ),
    ("audit2rbac/history-883f4e80/testdata/demo.log", 37),
    ("audit2rbac/testdata/demo.log", 37),
];

#[test]
fn every_corpus_file_parses_with_its_event_count() {
    for (path, expected) in CORPUS {
        let d = decode_file(&format!("corpus/{path}"));
        assert_eq!(d.events.len(), *expected, "{path}");
        assert!(d.skipped.is_empty(), "{path}: {:?}", d.skipped);
    }
    let falco = data("corpus/falco/test/trace_files/k8s_audit");
    let mut files = 0;
    let mut events = 0;
    for entry in std::fs::read_dir(falco).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let d = decode(&std::fs::read(&path).unwrap());
        files += 1;
        events += d.events.len();
        if name == "fal_01_003.json" {
            assert_eq!(d.events.len(), 0);
            assert_eq!(d.skipped.len(), 1);
            assert_eq!(d.skipped[0].reason, SkipReason::NotAnEvent);
            assert_eq!(d.skipped[0].line, 1);
        } else {
            assert!(d.skipped.is_empty(), "{name}: {:?}", d.skipped);
            let expected = if name == "create_configmap_sensitive_values.json" {
                6
            } else {
                1
            };
            assert_eq!(d.events.len(), expected, "{name}");
        }
    }
    assert_eq!((files, events), (47, 51));
}

#[test]
fn corpus_formats_are_detected() {
    let format_of = |path: &str| decode_file(&format!("corpus/{path}")).events[0].1;
    assert_eq!(
        format_of("aks-audit-log/samples/event.json"),
        InputFormat::Azure
    );
    assert_eq!(
        format_of("aks-audit-log/samples/sample_EventHubs_event.json"),
        InputFormat::Azure
    );
    assert_eq!(
        format_of("aks-audit-log/samples/sample_KubeAuditLog_event.json"),
        InputFormat::Json
    );
    assert_eq!(
        format_of("apisnoop/apps/snoopdb/postgres/testdata/audit_event.json"),
        InputFormat::Json
    );
    assert_eq!(
        format_of("audit2rbac/testdata/demo.log"),
        InputFormat::JsonLines
    );
}

#[test]
fn audit2rbac_v1_and_v1beta1_normalize_identically() {
    let v1 = decode_file("corpus/audit2rbac/testdata/demo.log");
    let v1beta1 = decode_file("corpus/audit2rbac/history-883f4e80/testdata/demo.log");
    assert_eq!(v1.normalized(), v1beta1.normalized());
    for ((a, _, _), (b, _, _)) in v1.events.iter().zip(&v1beta1.events) {
        assert_eq!(a.source_api_version.as_deref(), Some("audit.k8s.io/v1"));
        assert_eq!(
            b.source_api_version.as_deref(),
            Some("audit.k8s.io/v1beta1")
        );
        // The originals differ only in that one string.
        assert_eq!(
            a.raw.as_str(),
            b.raw
                .as_str()
                .replace("audit.k8s.io/v1beta1", "audit.k8s.io/v1")
        );
        // v1beta1 carries only `timestamp` and `metadata.creationTimestamp`; the v1 fields
        // are filled from them as the API server's conversion does.
        assert!(a.request_received_timestamp.is_some() && a.stage_timestamp.is_some());
    }
}

#[test]
fn v1alpha1_object_ref_is_split_into_group_and_version() {
    let line = br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1alpha1","metadata":{"creationTimestamp":"2017-07-01T10:00:01Z"},"level":"Metadata","timestamp":"2017-07-01T10:00:00Z","auditID":"x","stage":"ResponseComplete","requestURI":"/apis/apps/v1beta1/namespaces/default/deployments","verb":"create","user":{"username":"alice"},"objectRef":{"resource":"deployments","namespace":"default","apiVersion":"apps/v1beta1"},"responseStatus":{"metadata":{},"code":201}}
"#;
    let d = decode(line);
    let event = &d.events[0].0;
    let r = event.object_ref.as_ref().unwrap();
    assert_eq!(
        (r.api_group.as_ref(), r.api_version.as_ref()),
        ("apps", "v1beta1")
    );
    assert_eq!(
        event.derived.resource_key.as_deref(),
        Some("apps/deployments")
    );
    assert_eq!(event.derived.latency_micros, Some(1_000_000));
    assert!(d.normalized()[0].contains(r#""apiGroup":"apps","apiVersion":"v1beta1""#));
}

#[test]
fn bodies_and_unknown_fields_are_kept_byte_for_byte() {
    let line = br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"b","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/x/configmaps","verb":"create","user":{"username":"bob"},"requestObject":{"data":{"n":1.50,"e":"\u003ctag\u003e"},"z":[ 1, 2 ]},"requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z","stageTimestamp":"2026-01-01T00:00:00.000002Z","futureField":{"b":2,"a":1.0e3}}
"#;
    let d = decode(line);
    let event = &d.events[0].0;
    assert_eq!(
        event.request_object.as_ref().unwrap().as_str(),
        r#"{"data":{"n":1.50,"e":"\u003ctag\u003e"},"z":[ 1, 2 ]}"#
    );
    assert_eq!(event.unknown_fields[0].0, "futureField");
    assert_eq!(event.unknown_fields[0].1.as_str(), r#"{"b":2,"a":1.0e3}"#);
    assert_eq!(event.raw.as_str().as_bytes(), &line[..line.len() - 1]);
    assert!(d.normalized()[0].ends_with(
        r#""stageTimestamp":"2026-01-01T00:00:00.000002Z","futureField":{"b":2,"a":1.0e3}}
"#
    ));
}

#[test]
fn normalized_output_of_the_real_log_reads_back_identically() {
    let d = decode_file("fixtures/real-apiserver-v1.36/audit.log");
    let once = d.normalized();
    let again = decode(once.concat().as_bytes()).normalized();
    assert_eq!(once, again);
    // The log backend already writes v1 in API order: normalizing changes nothing.
    let original =
        std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let original: Vec<&str> = original.lines().collect();
    let same = once
        .iter()
        .zip(&original)
        .filter(|(n, o)| n.trim_end() == **o)
        .count();
    assert_eq!(same, original.len());
}

#[test]
fn a_malformed_line_between_good_lines_costs_none_of_them() {
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let lines: Vec<&str> = log.lines().take(6).collect();
    let bad = [
        "this is not json",
        r#"{"kind":"Event","auditID":"cut-off","#,
        r#"{"insertId":"1","protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog"},"logName":"projects/p/logs/cloudaudit.googleapis.com%2Factivity"}"#,
        r#"{"kind":0}"#,
        r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"pod.1"},"reason":"Scheduled"}"#,
        r#"{"kind":"Event","level":"Metadata","auditID":"y","stage":"Sideways"}"#,
    ];
    let mut input = String::new();
    for (good, bad) in lines.iter().zip(bad) {
        input.push_str(good);
        input.push('\n');
        input.push_str(bad);
        input.push('\n');
    }
    let d = decode(input.as_bytes());
    assert_eq!(d.events.len(), 6);
    let reasons: Vec<(u64, SkipReason)> = d.skipped.iter().map(|s| (s.line, s.reason)).collect();
    assert_eq!(
        reasons,
        [
            (2, SkipReason::InvalidJson),
            (4, SkipReason::InvalidJson),
            (6, SkipReason::NotAnEvent),
            (8, SkipReason::NotAnEvent),
            (10, SkipReason::NotAnEvent),
            (12, SkipReason::InvalidEvent),
        ]
    );
    assert!(d.skipped[2].message.contains("Google Cloud Logging"));
    assert!(d.skipped[4].message.contains("not audit.k8s.io"));
    assert!(
        d.skipped[5].message.contains("Sideways"),
        "{}",
        d.skipped[5].message
    );
}

#[test]
fn a_field_of_the_wrong_type_is_named() {
    let d = decode(br#"{"kind":"Event","level":"Metadata","auditID":"a","stage":"ResponseComplete","user":"bob"}"#);
    assert_eq!(d.count(SkipReason::InvalidEvent), 1);
    assert!(
        d.skipped[0].message.contains("field `user`"),
        "{}",
        d.skipped[0].message
    );
}

#[test]
fn a_truncated_last_line_is_reported_as_truncated() {
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let cut = &log[..log.len() - 200];
    let d = decode(cut.as_bytes());
    assert_eq!(d.events.len(), 2822);
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(
        (d.skipped[0].line, d.skipped[0].reason),
        (2823, SkipReason::Truncated)
    );
}

#[test]
fn invalid_utf8_is_reported_and_skipped() {
    let mut input = b"{\"kind\":\"Event\",\"level\":\"Metadata\",\"auditID\":\"\xff\xfe\",\"stage\":\"ResponseComplete\"}\n".to_vec();
    input.extend_from_slice(br#"{"level":"Metadata","auditID":"ok","stage":"ResponseComplete"}"#);
    let d = decode(&input);
    assert_eq!(d.events.len(), 1);
    assert_eq!(
        (d.skipped[0].line, d.skipped[0].reason),
        (1, SkipReason::InvalidUtf8)
    );
}

#[test]
fn events_above_the_size_limit_are_skipped() {
    let log = std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let options = DecodeOptions {
        max_event_bytes: 4096,
        max_document_bytes: 8192,
        ..DecodeOptions::default()
    };
    let whole = decode_chunked(log.as_bytes(), 1 << 20, options.clone());
    let small = log.lines().filter(|l| l.len() <= 4096).count();
    assert_eq!(whole.events.len(), small);
    assert_eq!(whole.events.len() + whole.count(SkipReason::TooLarge), 2823);
    // Lines above the document limit are dropped while streaming, never buffered whole.
    let streamed = decode_chunked(log.as_bytes(), 1000, options);
    assert_eq!(streamed.events.len(), small);
    assert_eq!(streamed.skipped, whole.skipped);
}

#[test]
fn chunk_boundaries_do_not_matter() {
    for path in [
        "fixtures/real-apiserver-v1.36/webhook-bodies.jsonl",
        "corpus/aks-audit-log/samples/sample_EventHubs_event.json",
        "corpus/aks-audit-log/samples/sample_KubeAuditLog_event.json",
        "corpus/apisnoop/apps/snoopdb/postgres/testdata/audit_event.json",
        "envelopes/kube-apiserver.cri.log",
        "envelopes/kube-apiserver.docker.log",
    ] {
        let bytes = std::fs::read(data(path)).unwrap();
        let whole = decode(&bytes).normalized();
        for chunk in [1, 2, 7, 4093] {
            let pieces = decode_chunked(&bytes, chunk, DecodeOptions::default()).normalized();
            assert_eq!(pieces, whole, "{path} in chunks of {chunk}");
        }
    }
}

#[test]
fn cri_lines_with_partial_pieces_are_joined() {
    let d = decode_file("envelopes/kube-apiserver.cri.log");
    let plain = decode(
        std::fs::read_to_string(data("fixtures/real-apiserver-v1.36/audit.log"))
            .unwrap()
            .lines()
            .take(5)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    assert_eq!(d.normalized(), plain.normalized());
    assert!(d.events.iter().all(|(_, f, _)| *f == InputFormat::Cri));
    assert_eq!(d.ignored, [IgnoreReason::ContainerOutput]);
    // The split event is attributed to the line of its first piece.
    assert_eq!(d.events[1].2, 2);
}

#[test]
fn docker_json_file_lines_are_unwrapped_and_joined() {
    let d = decode_file("envelopes/kube-apiserver.docker.log");
    let cri = decode_file("envelopes/kube-apiserver.cri.log");
    assert_eq!(d.normalized(), cri.normalized());
    assert!(d.events.iter().all(|(_, f, _)| *f == InputFormat::Docker));
    assert_eq!(d.ignored, [IgnoreReason::ContainerOutput]);
}

/// A tailer stops after any line and resumes from a checkpoint with a fresh decoder: resuming
/// where [`Decoder::pending_line_start`] says (else where it stopped) must lose no event of a
/// container line split in pieces, whatever the framing and a byte-order mark.
#[test]
fn resuming_at_the_pending_line_start_loses_no_split_container_line() {
    for path in [
        "envelopes/kube-apiserver.cri.log",
        "envelopes/kube-apiserver.docker.log",
    ] {
        for bom in [&b""[..], b"\xEF\xBB\xBF"] {
            let bytes = [bom, &std::fs::read(data(path)).unwrap()].concat();
            let whole = decode(&bytes);
            assert!(whole.skipped.is_empty(), "{path}: {:?}", whole.skipped);
            let mut expected = whole.normalized();
            expected.sort();
            let mut split_lines = 0;
            let cuts = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1);
            for cut in cuts {
                let mut first = Decoding::default();
                let mut decoder = Decoder::new(DecodeOptions::default());
                decoder.feed(&bytes[..cut], &mut |d| {
                    if let Decoded::Event(e, _) = d {
                        first.events.push(((*e).into_owned(), InputFormat::Json, 0));
                    }
                });
                let resume = decoder.pending_line_start().map_or(cut, |start| {
                    split_lines += 1;
                    start as usize
                });
                assert!(resume <= cut, "{path}: resume {resume} after cut {cut}");
                let rest = decode(&bytes[resume..]);
                assert!(
                    rest.skipped.is_empty(),
                    "{path} cut at {cut}: {:?}",
                    rest.skipped
                );
                let mut got = first.normalized();
                got.extend(rest.normalized());
                got.sort();
                got.dedup();
                assert_eq!(got, expected, "{path} cut at {cut}, resumed at {resume}");
            }
            assert!(split_lines > 0, "{path} has no split line to test");
        }
    }
}

#[test]
fn a_split_container_line_that_never_ends_is_truncated() {
    let d = decode(b"2026-01-01T00:00:00Z stdout P {\"kind\":\"Event\",\n");
    assert_eq!(d.count(SkipReason::Truncated), 1);
}

#[test]
fn byte_order_marks_and_concatenated_pretty_objects() {
    let one = std::fs::read(data(
        "corpus/apisnoop/apps/snoopdb/postgres/testdata/audit_event.json",
    ))
    .unwrap();
    let mut input = b"\xEF\xBB\xBF".to_vec();
    for _ in 0..3 {
        input.extend_from_slice(&one);
    }
    let d = decode(&input);
    assert_eq!(d.events.len(), 3);
    assert_eq!(
        d.events.iter().map(|e| e.2).collect::<Vec<_>>(),
        [1, 34, 67]
    );
    // A JSON array of events, too.
    let array = format!("[{0},{0}]", String::from_utf8_lossy(&one));
    assert_eq!(decode(array.as_bytes()).events.len(), 2);
}

#[test]
fn pretty_printed_bodies_are_compacted_in_normalized_output() {
    let d = decode_file("corpus/aks-audit-log/samples/sample_KubeAuditLog_event.json");
    let line = &d.normalized()[0];
    assert_eq!(line.matches('\n').count(), 1);
    // Whitespace inside strings survives.
    let original = &d.events[0].0.request_object.as_ref().unwrap().0;
    assert!(original.contains('\n'));
}

#[test]
fn forcing_a_format_rejects_other_input() {
    let log = std::fs::read(data("fixtures/real-apiserver-v1.36/webhook-bodies.jsonl")).unwrap();
    let forced = |format| DecodeOptions {
        format: Some(format),
        ..DecodeOptions::default()
    };
    let as_eventlist = decode_chunked(&log, 1 << 20, forced(InputFormat::EventList));
    assert_eq!(as_eventlist.events.len(), 2785);
    let as_jsonl = decode_chunked(&log, 1 << 20, forced(InputFormat::JsonLines));
    assert_eq!(as_jsonl.events.len(), 0);
    assert_eq!(as_jsonl.count(SkipReason::NotAnEvent), 110);
    assert!(as_jsonl.skipped[0].message.contains("forced to jsonl"));
}

#[test]
fn azure_records_of_other_categories_are_ignored() {
    let input = br#"{"records":[{"category":"kube-apiserver","properties":{"log":"I1121 started"}},{"category":"kube-audit","properties":{"log":{"kind":"Event","level":"Metadata","auditID":"z","stage":"ResponseComplete"}}}]}"#;
    let d = decode(input);
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.ignored, [IgnoreReason::AzureCategory]);
}

#[test]
fn user_kinds_in_the_real_log() {
    let d = decode_file("fixtures/real-apiserver-v1.36/audit.log");
    let count = |kind| {
        d.events
            .iter()
            .filter(|(e, _, _)| e.derived.user_kind == kind)
            .count()
    };
    // summary.txt: 11 events without a user (failed authentication), 25 system:anonymous,
    // 106 from system:node:fake-node-1.
    assert_eq!(count(UserKind::Unauthenticated), 11);
    assert_eq!(count(UserKind::Anonymous), 25);
    assert_eq!(count(UserKind::Node), 106);
}

/// Found by the fuzz target (2026-12-02): a first line longer than `max_document_bytes` was
/// read as lines when it arrived in small chunks and as a stream when it arrived whole.
#[test]
fn an_overlong_first_line_is_framed_the_same_in_any_chunks() {
    let input = format!("{{\"a\":\"{}\"\n not json\n{{\"b\":1}}\n", "x".repeat(300));
    let options = DecodeOptions {
        max_document_bytes: 100,
        ..DecodeOptions::default()
    };
    let whole = decode_chunked(input.as_bytes(), input.len(), options.clone());
    let reasons = |d: &Decoding| -> Vec<(u64, SkipReason)> {
        d.skipped.iter().map(|s| (s.line, s.reason)).collect()
    };
    assert_eq!(reasons(&whole)[0], (1, SkipReason::TooLarge));
    for chunk in 1..=9 {
        let chunked = decode_chunked(input.as_bytes(), chunk, options.clone());
        assert_eq!(reasons(&chunked), reasons(&whole), "chunk {chunk}");
    }
}

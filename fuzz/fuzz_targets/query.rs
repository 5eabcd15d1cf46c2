//! Fuzzes the query language as a user reaches it: any text is parsed (under the default
//! limits), what parses is compiled to SQL, and what compiles runs on a small real store. The
//! only acceptable outcomes are an error of the language (with a position inside the query) or
//! an answer: a panic, a stack overflow or SQL the engine refuses is a finding.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_query::{CompileOptions, DataFusionDialect, Matcher, compile, parse};
use kubetrail_store::{EventWriter, QueryEngine, WriterOptions};
use libfuzzer_sys::fuzz_target;

/// Events of several shapes: bodies, groups, source IPs, annotations, a denied request.
const EVENTS: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns1/pods","verb":"create","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.36.0","objectRef":{"resource":"pods","namespace":"ns1","name":"p1","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"spec":{"containers":[{"image":"nginx","securityContext":{"privileged":true}}]}},"responseObject":{"status":{"phase":"Pending"}},"requestReceivedTimestamp":"2026-11-21T05:16:47.000000Z","stageTimestamp":"2026-11-21T05:16:47.250000Z","annotations":{"authorization.k8s.io/decision":"allow"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/api/v1/secrets","verb":"list","user":{"username":"system:anonymous"},"sourceIPs":["192.0.2.7"],"objectRef":{"resource":"secrets","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":403},"requestReceivedTimestamp":"2026-11-21T05:17:00.000000Z","stageTimestamp":"2026-11-21T05:17:00.002000Z","annotations":{"authorization.k8s.io/decision":"forbid"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseStarted","requestURI":"/api/v1/pods?watch=true","verb":"watch","user":{"username":"system:serviceaccount:kube-system:ctrl"},"requestReceivedTimestamp":"2026-11-21T05:18:00.000000Z"}
"#;

fn engine() -> &'static QueryEngine {
    static ENGINE: OnceLock<QueryEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("kubetrail-fuzz-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                writer.append_unlogged(&event, "prod", 0).unwrap();
            }
        };
        decoder.feed(EVENTS.as_bytes(), &mut out);
        decoder.finish(&mut out);
        writer.close().unwrap();
        QueryEngine::open(&dir).unwrap()
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let query = match parse(text) {
        Ok(query) => query,
        Err(e) => {
            assert!(e.position <= text.len(), "{e} past the end of {text:?}");
            return;
        }
    };
    // A search also runs in memory, as exclusions and detections run it.
    if let Ok(matcher) = Matcher::new(&query) {
        let mut decoder = Decoder::new(DecodeOptions::default());
        decoder.feed(EVENTS.as_bytes(), &mut |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                let _ = matcher.matches(&event, "prod");
            }
        });
    }
    let options = CompileOptions {
        from_micros: Some(1_763_000_000_000_000),
        to_micros: Some(1_764_000_000_000_000),
        default_limit: 10,
        ..CompileOptions::default()
    };
    let Ok(compiled) = compile(&query, &DataFusionDialect, &options) else {
        return;
    };
    if let Err(e) = engine().query(&compiled) {
        panic!("{text:?} compiled to SQL the engine refused: {e}\n{}", compiled.sql);
    }
});

//! The query language against the engine: whatever a user types either is refused with an
//! error of the language or runs; value lists of any size answer correctly; a query stops at
//! its memory budget, its deadline, or when whoever asked goes away.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_query::{CompileOptions, DataFusionDialect, QueryLimits, compile, parse};
use kubetrail_store::{EventWriter, QueryBudget, QueryEngine, StoreError, WriterOptions};
use proptest::prelude::*;

/// A store holding the real kube-apiserver 1.36 log (2823 events), made once per test run.
fn store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kubetrail-queries-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = std::fs::read(format!(
            "{}/../../tests/data/fixtures/real-apiserver-v1.36/audit.log",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                writer.append_unlogged(&event, "prod", 0).unwrap();
            }
        };
        decoder.feed(&log, &mut out);
        decoder.finish(&mut out);
        writer.close().unwrap();
        dir
    })
}

fn engine() -> &'static QueryEngine {
    static ENGINE: OnceLock<QueryEngine> = OnceLock::new();
    ENGINE.get_or_init(|| QueryEngine::open(store()).unwrap())
}

fn count(engine: &QueryEngine, query: &str) -> i64 {
    let compiled = compile(
        &parse(&format!("{query} | stats count() as n")).unwrap(),
        &DataFusionDialect,
        &CompileOptions::default(),
    )
    .unwrap();
    let batches = engine.query(&compiled).unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn a_value_list_of_a_hundred_thousand_answers_like_a_short_one() {
    let engine = engine();
    let real = [
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:apiserver",
    ];
    let short = count(engine, &format!("user:({})", real.join(" OR ")));
    assert!(short > 100, "{short}");
    let mut values: Vec<String> = (0..99_997).map(|i| format!("nobody-{i}")).collect();
    values.extend(real.iter().map(|u| (*u).to_owned()));
    assert_eq!(
        count(engine, &format!("user:({})", values.join(" OR "))),
        short
    );
    // List columns (any group of the user) too.
    let masters = count(engine, "group:system:masters");
    assert!(masters > 0);
    let groups: Vec<String> = (0..50_000)
        .map(|i| format!("nobody-{i}"))
        .chain(["system:masters".to_owned()])
        .collect();
    assert_eq!(
        count(engine, &format!("group:({})", groups.join(" OR "))),
        masters
    );
    // Negated, the set is an exemption list.
    let all = count(engine, "");
    assert_eq!(
        count(engine, &format!("-user:({})", values.join(", "))),
        all - short
    );
}

#[test]
fn the_deepest_allowed_query_runs() {
    let depth = QueryLimits::default().max_depth;
    let query = format!("{}verb:get", "-".repeat(depth));
    let even = count(engine(), &query);
    assert_eq!(even, count(engine(), "verb:get"));
    let parens = format!("{}verb:get{}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(count(engine(), &parens), even);
    let wide: Vec<String> = (0..1_000).map(|i| format!("code:{i}")).collect();
    assert_eq!(
        count(engine(), &wide.join(" OR ")),
        count(engine(), "code<1000")
    );
}

#[test]
fn a_query_stops_at_its_memory_budget() {
    let engine = QueryEngine::open_with(
        store(),
        QueryBudget {
            timeout: None,
            max_memory: Some(256 << 10),
        },
        0,
        None,
    )
    .unwrap();
    let error = engine
        .sql(
            "SELECT event, count(*) FROM events GROUP BY event ORDER BY 2",
            Vec::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::QueryLimit {
                limit: "query.maxMemory",
                ..
            }
        ),
        "{error}"
    );
    // A small query fits.
    engine
        .sql("SELECT count(*) FROM events", Vec::new())
        .unwrap();
}

#[test]
fn a_query_stops_at_its_deadline_and_when_its_asker_goes_away() {
    let engine = QueryEngine::open_with(
        store(),
        QueryBudget {
            timeout: Some(Duration::from_nanos(1)),
            max_memory: None,
        },
        0,
        None,
    )
    .unwrap();
    let error = engine
        .sql(
            "SELECT count(*) FROM events WHERE event LIKE '%x%'",
            Vec::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::QueryLimit {
                limit: "query.timeout",
                ..
            }
        ),
        "{error}"
    );
    let (asker, cancelled) = tokio::sync::watch::channel(());
    drop(asker);
    let error = super::queries::engine()
        .controlled(cancelled)
        .sql("SELECT count(*) FROM events", Vec::new())
        .unwrap_err();
    assert!(matches!(error, StoreError::Cancelled), "{error}");
}

/// Pieces queries are made of: fields of every kind, values, operators, keywords, commands.
fn fragment() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "user",
        "verb",
        "resource",
        "ns",
        "name",
        "code",
        "latency",
        "time",
        "group",
        "ip",
        "client",
        "decision",
        "auditID",
        "stage",
        "level",
        "ua",
        "sa",
        "as",
        "subresource",
        "requestObject",
        "responseObject",
        "requestObject.spec.replicas",
        "responseObject.status.phase",
        "annotations.authorization.k8s.io/decision",
        "objectRef.resource",
        "user.groups",
        "get",
        "list",
        "403",
        "2xx",
        "1s",
        "250ms",
        "2026-11-21T05:16:47Z",
        "system:*",
        "*",
        "kube*",
        "\"a b\"",
        "\"\"",
        "AND",
        "OR",
        "NOT",
        "-",
        "(",
        ")",
        ":",
        ">=",
        "<",
        "!=",
        "=",
        ",",
        "|",
        "by",
        "as",
        "stats",
        "count()",
        "dc(user)",
        "p99(latency)",
        "avg(code)",
        "timechart",
        "1m",
        "top",
        "5",
        "sort",
        "-count",
        "fields",
        "limit",
        "3",
        "x\u{e9}",
        "\\",
    ]);
    prop_oneof![
        8 => words.prop_map(str::to_owned),
        1 => "[a-z:*.]{1,8}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::collection::vec(fragment(), 0..24).prop_map(|f| f.join(" ")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any text parses or is refused; what parses compiles or is refused; what compiles, the
    /// engine runs.
    #[test]
    fn whatever_is_typed_is_refused_or_runs(text in query_text()) {
        let Ok(query) = parse(&text) else { return Ok(()) };
        let options = CompileOptions {
            from_micros: Some(1_700_000_000_000_000),
            to_micros: Some(1_900_000_000_000_000),
            default_limit: 10,
            ..CompileOptions::default()
        };
        let Ok(compiled) = compile(&query, &DataFusionDialect, &options) else { return Ok(()) };
        if let Err(e) = engine().query(&compiled) {
            prop_assert!(false, "{text:?} compiled to SQL the engine refused: {e}\n{}", compiled.sql);
        }
    }
}

//! Hostile and unlucky queries: every limit answers with an error that names it and points at
//! the place in the query, never a crash; large value lists work, as one set lookup.

use kubetrail_query::{
    CompileOptions, DataFusionDialect, Expr, Matcher, QueryError, QueryLimits, compile, parse,
};

fn refused(query: &str) -> QueryError {
    match parse(query) {
        Err(e) => e,
        Ok(parsed) => compile(&parsed, &DataFusionDialect, &CompileOptions::default())
            .expect_err(&format!("{query:.80} was accepted")),
    }
}

#[test]
fn nesting_is_limited_not_recursed() {
    for query in [
        format!("{}verb:get{}", "(".repeat(5_000), ")".repeat(5_000)),
        format!("{}verb:get", "NOT ".repeat(50_000)),
        format!("{}verb:get", "-".repeat(100_000)),
        format!("{}verb:get", "-".repeat(2_000)),
    ] {
        let e = refused(&query);
        assert_eq!(e.limit, Some("query.maxDepth"), "{}", e.message);
        assert!(e.position < 200, "{}", e.position);
        assert!(e.message.contains("32 levels"), "{}", e.message);
    }
    // Within the limit, every level compiles.
    let ok = format!("{}verb:get", "-".repeat(32));
    let parsed = parse(&ok).unwrap();
    compile(&parsed, &DataFusionDialect, &CompileOptions::default()).unwrap();
}

#[test]
fn value_lists_become_one_set_lookup() {
    let values: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    let query = format!("user:({})", values.join(" OR "));
    let parsed = parse(&query).unwrap();
    let Some(Expr::In { values: set, .. }) = &parsed.filter else {
        panic!("not a set: {:?}", parsed.filter.map(|_| ()));
    };
    assert_eq!(set.values().len(), 100_000);
    let compiled = compile(&parsed, &DataFusionDialect, &CompileOptions::default()).unwrap();
    assert!(
        compiled.sql.contains("kt_in_set(\"user\", $1)"),
        "{:.300}",
        compiled.sql
    );
    // One parameter however many values: planning does not copy 100,000 of them per pass.
    assert_eq!(compiled.params.len(), 1);
    // The same with commas, and field-by-field ORs.
    let commas = parse(&format!("user:({})", values[..2_000].join(", "))).unwrap();
    assert!(matches!(commas.filter, Some(Expr::In { .. })));
    let spelled = parse("user:alice OR user:bob OR user:carol").unwrap();
    assert!(matches!(spelled.filter, Some(Expr::In { .. })));
    // Wildcards stay patterns beside the set.
    let mixed = parse("user:(alice OR bob OR system:serviceaccount:*)").unwrap();
    let Some(Expr::Or(parts)) = &mixed.filter else {
        panic!("{:?}", mixed.filter);
    };
    assert_eq!(parts.len(), 2);
    // The matcher looks values up in the set.
    let matcher = Matcher::new(&parsed).unwrap();
    let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api","verb":"get","user":{"username":"user-054321"}}
"#;
    let mut decoder = kubetrail_event::Decoder::new(kubetrail_event::DecodeOptions::default());
    let mut matched = Vec::new();
    let mut out = |d: kubetrail_event::Decoded<'_>| {
        if let kubetrail_event::Decoded::Event(e, _) = d {
            matched.push(matcher.matches(&e, ""));
        }
    };
    decoder.feed(line.as_bytes(), &mut out);
    decoder.feed(line.replace("054321", "154321").as_bytes(), &mut out);
    decoder.finish(&mut out);
    assert_eq!(matched, [true, false]);
}

#[test]
fn wide_boolean_searches_compile_to_shallow_sql() {
    let terms: Vec<String> = (0..1_000).map(|i| format!("code:{i}")).collect();
    let parsed = parse(&terms.join(" OR ")).unwrap();
    let sql = compile(&parsed, &DataFusionDialect, &CompileOptions::default())
        .unwrap()
        .sql;
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for c in sql.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    assert!(deepest < 30, "{deepest}");
}

#[test]
fn every_size_has_a_limit() {
    let cases: Vec<(String, &str)> = vec![
        (
            (0..1_100)
                .map(|i| format!("code:{i}"))
                .collect::<Vec<_>>()
                .join(" OR "),
            "query.maxTerms",
        ),
        (
            format!("\"{}\"", "x".repeat(1 << 20)),
            "query.maxValueLength",
        ),
        (
            format!("user:{}", "x".repeat(5_000)),
            "query.maxValueLength",
        ),
        ("x".repeat(5 << 20), "query.maxLength"),
        (
            format!(
                "user:({})",
                (0..200_001)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "query.maxValues",
        ),
        (
            "| stats count() by user, verb, resource, ns, name, code, client, ip, group, ua, level"
                .to_owned(),
            "query.maxGroupBy",
        ),
        ("| top 1000000000 user".to_owned(), "query.maxRows"),
        ("| limit 20000".to_owned(), "query.maxRows"),
    ];
    for (query, limit) in cases {
        let e = refused(&query);
        assert_eq!(e.limit, Some(limit), "{:.80}: {}", query, e.message);
        assert!(e.message.contains(limit), "{}", e.message);
    }
}

#[test]
fn timechart_buckets_are_counted_over_the_range() {
    let options = CompileOptions {
        from_micros: Some(0),
        to_micros: Some(86_400_000_000),
        ..CompileOptions::default()
    };
    let e = compile(
        &parse("| timechart 1s count()").unwrap(),
        &DataFusionDialect,
        &options,
    )
    .unwrap_err();
    assert_eq!(e.limit, Some("query.maxBuckets"));
    assert_eq!(e.position, 12);
    compile(
        &parse("| timechart 1m count()").unwrap(),
        &DataFusionDialect,
        &options,
    )
    .unwrap();
    let wider = CompileOptions {
        limits: QueryLimits {
            max_buckets: 100_000,
            ..QueryLimits::default()
        },
        ..options
    };
    compile(
        &parse("| timechart 1s count()").unwrap(),
        &DataFusionDialect,
        &wider,
    )
    .unwrap();
}

#[test]
fn repeated_names_are_refused_where_they_are() {
    for (query, position, message) in [
        (
            "| stats count() by user, user",
            25,
            "`user` is already in this list",
        ),
        (
            "| stats count() by user, user.username",
            25,
            "`user` is already in this list",
        ),
        ("| fields verb, verb", 15, "`verb` is already in this list"),
        (
            "| stats count() as user by user",
            27,
            "`user` names both an aggregate and a field to group by",
        ),
    ] {
        let e = refused(query);
        assert_eq!(e.position, position, "{query}: {}", e.message);
        assert!(e.message.starts_with(message), "{}", e.message);
    }
}

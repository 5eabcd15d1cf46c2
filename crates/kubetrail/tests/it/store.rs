//! `kubetrail import`, `query`, `sql`, `store stats` on real files.

use super::{TempDir, data, run, stderr, stdout};

fn import(dir: &TempDir, extra: &[&str], files: &[&str]) -> serde_json::Value {
    super::import(&dir.path().join("data"), extra, files)
}

fn sql(dir: &TempDir, statement: &str) -> Vec<serde_json::Value> {
    super::sql_rows(&dir.path().join("data"), statement)
}

fn query(dir: &TempDir, q: &str) -> Vec<serde_json::Value> {
    let store = dir.path().join("data");
    let output = run(
        &["query", "--data", store.to_str().unwrap(), "-o", "json", q],
        b"",
    );
    assert!(output.status.success(), "{q}: {}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn round_trip_keeps_originals_byte_identical_and_dedups() {
    let dir = TempDir::new("store-roundtrip");
    let log = "fixtures/real-apiserver-v1.36/audit.log";
    let first = import(&dir, &["--no-redact"], &[log]);
    assert_eq!(first["imported"], 2823);
    let again = import(
        &dir,
        &["--no-redact"],
        &[log, "fixtures/real-apiserver-v1.36/webhook-bodies.jsonl"],
    );
    assert_eq!(again["imported"], 0);
    assert_eq!(again["duplicates"], 2823 + 2785);
    let mut stored: Vec<String> = sql(&dir, "SELECT event FROM events")
        .into_iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    let mut original: Vec<String> = std::fs::read_to_string(data(log))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    stored.sort();
    original.sort();
    assert_eq!(stored, original);

    let stats = run(
        &[
            "store",
            "stats",
            "--data",
            dir.path().join("data").to_str().unwrap(),
        ],
        b"",
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["events"], 2823);
    assert_eq!(stats["first_event"], "2026-11-21T05:16:47.371937Z");
}

#[test]
fn answers_match_the_generator_truth() {
    let dir = TempDir::new("store-truth");
    import(&dir, &[], &["generated/all.log"]);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
            .unwrap();
    let spike = &truth["incidents"]["forbidden-spike"];
    let user = spike["user"].as_str().unwrap();
    let rows = query(
        &dir,
        &format!("code:403 user:{user} | stats count() as n, dc(ip) as ips"),
    );
    assert_eq!(rows[0]["n"], spike["count"]);
    assert_eq!(rows[0]["ips"], 1);
    let top = query(&dir, "code:403 | top 1 user");
    assert_eq!(top[0]["user"], user);

    let anonymous = &truth["incidents"]["anonymous-secrets"];
    let rows = query(
        &dir,
        "user:system:anonymous resource:secrets ns:kube-system | stats count() as n by decision | sort decision",
    );
    let allowed = rows
        .iter()
        .find(|r| r["decision"] == "allow")
        .map_or(0, |r| r["n"].as_i64().unwrap());
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, anonymous["count"].as_i64().unwrap());
    assert_eq!(allowed, anonymous["allowed"].as_i64().unwrap());

    let slow = &truth["incidents"]["slow-list"];
    let rows = query(
        &dir,
        &format!(
            "user:{} verb:list latency>=3s | stats count() as n",
            slow["user"].as_str().unwrap()
        ),
    );
    assert_eq!(rows[0]["n"], slow["count"]);

    let privileged = &truth["incidents"]["privileged-pod"];
    let rows = query(
        &dir,
        "requestObject.spec.containers.securityContext.privileged:true | fields user, ns, name",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["user"], privileged["user"]);
    assert_eq!(rows[0]["name"], privileged["pod"]);

    // Free text in one body: the pod's name is in both bodies of its create, the user who made
    // it in neither.
    let pod = privileged["pod"].as_str().unwrap();
    let user = privileged["user"].as_str().unwrap();
    let count = |q: &str| query(&dir, &format!("{q} | stats count() as n"))[0]["n"].clone();
    assert_eq!(count(&format!("requestObject:{}", pod.to_uppercase())), 1);
    assert_eq!(count(&format!("responseObject:\"{pod}\"")), 1);
    assert_eq!(count(&format!("requestObject:{user}")), 0);
    assert_eq!(count(&format!("responseObject:{user}")), 0);
    assert!(count(&format!("\"{user}\"")).as_i64().unwrap() > 0);
}

#[test]
fn request_bodies_have_a_column_of_their_own() {
    let dir = TempDir::new("store-bodies");
    let log = "generated/all.log";
    import(&dir, &["--no-redact"], &[log]);
    let original = std::fs::read_to_string(data(log)).unwrap();
    let with_body: Vec<serde_json::Value> = original
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| !e["requestObject"].is_null())
        .collect();
    assert!(!with_body.is_empty());
    let count = |q: &str| query(&dir, &format!("{q} | stats count() as n"))[0]["n"].clone();
    assert_eq!(count("requestObject:*"), with_body.len());
    // Each stored body is the original's text, byte for byte.
    let rows = sql(
        &dir,
        "SELECT request_object, event FROM events WHERE request_object <> ''",
    );
    assert_eq!(rows.len(), with_body.len());
    for row in rows {
        let body = row["request_object"].as_str().unwrap();
        let event = row["event"].as_str().unwrap();
        assert!(
            event.contains(&format!("\"requestObject\":{body}")),
            "{body}"
        );
        let parsed: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            parsed["requestObject"]
        );
    }
}

#[test]
fn no_forbidden_string_reaches_the_data_directory_or_results() {
    let dir = TempDir::new("store-redaction");
    import(&dir, &[], &["generated/all.log"]);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("generated/all.truth.json")).unwrap())
            .unwrap();
    let forbidden: Vec<String> = truth["incidents"]["secret-leak"]["forbidden_strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    // Every stored value of every column, decompressed.
    let everything = sql(&dir, "SELECT * FROM events");
    assert_eq!(everything.len(), truth["total"].as_u64().unwrap() as usize);
    let text = serde_json::to_string(&everything).unwrap();
    // And the files themselves, for anything stored uncompressed.
    let mut files = Vec::new();
    let mut stack = vec![dir.path().join("data")];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path)
            } else {
                files.push(std::fs::read(path).unwrap())
            }
        }
    }
    for f in &forbidden {
        assert!(!text.contains(f.as_str()), "{f} is stored");
        assert!(
            !files
                .iter()
                .any(|bytes| bytes.windows(f.len()).any(|w| w == f.as_bytes())),
            "{f} in a file"
        );
        let hits = query(&dir, &format!("\"{f}\" | stats count() as n"));
        assert_eq!(hits[0]["n"], 0);
    }
}

#[test]
fn mistakes_and_empty_stores_are_explained() {
    let dir = TempDir::new("store-errors");
    let store = dir.path().join("data");
    let missing = run(
        &["query", "--data", store.to_str().unwrap(), "verb:get"],
        b"",
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no kubetrail data in"),
        "{}",
        stderr(&missing)
    );

    let bad = run(
        &[
            "query",
            "--data",
            store.to_str().unwrap(),
            "verb:get AND OR user:x",
        ],
        b"",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad)
            .contains("verb:get AND OR user:x\n         ^ expected a search term after AND"),
        "{}",
        stderr(&bad)
    );

    import(&dir, &[], &["corpus/audit2rbac/testdata/demo.log"]);
    let none = run(
        &["query", "--data", store.to_str().unwrap(), "user:nobody"],
        b"",
    );
    assert!(none.status.success());
    assert!(stderr(&none).contains("no results"), "{}", stderr(&none));
    let empty = run(
        &[
            "query",
            "--data",
            store.to_str().unwrap(),
            "--from",
            "2026-01-02T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
            "",
        ],
        b"",
    );
    assert_eq!(empty.status.code(), Some(1));
    assert!(stderr(&empty).contains("the time range is empty"));
}

#[test]
fn import_applies_policies_and_exclusions() {
    let dir = TempDir::new("store-policy");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n- level: Metadata\n",
    )
    .unwrap();
    let summary = import(
        &dir,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--exclude",
            "user:system:apiserver",
        ],
        &["fixtures/real-apiserver-v1.36/audit.log"],
    );
    let excluded = summary["excluded"].as_u64().unwrap();
    let dropped = summary["droppedByPolicy"].as_u64().unwrap();
    assert_eq!(excluded, 722);
    assert_eq!(
        summary["imported"].as_u64().unwrap() + excluded + dropped,
        2823
    );
    assert_eq!(
        query(&dir, "resource:leases | stats count() as n")[0]["n"],
        0
    );
    assert_eq!(
        query(&dir, "level:RequestResponse | stats count() as n")[0]["n"],
        0
    );
}

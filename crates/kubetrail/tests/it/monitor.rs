//! `kubetrail monitor`: checking files and replaying stored history (backtests against the
//! generator's ground truth).

use std::collections::BTreeSet;

use kubetrail_event::Timestamp;
use serde_json::Value;

use super::{TempDir, data, import, run, stderr, stdout};

fn micros(text: &str) -> i64 {
    Timestamp::parse(text).unwrap().as_micros()
}

/// The backtest monitors over the generated incidents fire for exactly the truth file's users
/// and addresses, inside each incident's time range, and for nothing else among 200,000
/// background events.
#[test]
fn backtests_fire_for_exactly_the_injected_incidents() {
    let dir = TempDir::new("monitor-backtest");
    let summary = import(dir.path(), &[], &["generated/backtest.log.gz"]);
    assert_eq!(summary["imported"], 200_664);
    let monitors = data("monitors/backtest.yaml");
    let output = run(
        &[
            "monitor",
            "test",
            "--data",
            dir.path().to_str().unwrap(),
            "-o",
            "json",
            monitors.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let transitions: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(data("generated/backtest.truth.json")).unwrap(),
    )
    .unwrap();
    let incidents = &truth["incidents"];
    let firing = |monitor: &str| -> Vec<&Value> {
        transitions
            .iter()
            .filter(|t| t["monitor"] == monitor && t["state"] == "firing")
            .collect()
    };
    // Every firing is inside its incident: from its start to its end plus one window.
    let within = |t: &Value, incident: &Value, seconds: i64| {
        let at = micros(t["at"].as_str().unwrap());
        let start = micros(incident["start"].as_str().unwrap());
        at > start && at <= start + (seconds + 300) * 1_000_000
    };
    let forbidden = firing("forbidden-spike");
    let users: BTreeSet<&str> = forbidden
        .iter()
        .map(|t| t["group"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from([incidents["forbidden-spike"]["user"].as_str().unwrap()])
    );
    assert!(
        forbidden
            .iter()
            .all(|t| within(t, &incidents["forbidden-spike"], 240))
    );

    let unauthorized = firing("unauthorized-spike");
    let ips: BTreeSet<&str> = unauthorized
        .iter()
        .map(|t| t["group"]["ip"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = incidents["unauthorized-spike"]["sourceIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ips, expected);
    assert!(
        unauthorized
            .iter()
            .all(|t| within(t, &incidents["unauthorized-spike"], 360))
    );

    let anonymous = firing("anonymous-requests");
    let ips: BTreeSet<&str> = anonymous
        .iter()
        .map(|t| t["group"]["ip"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = incidents["anonymous-secrets"]["sourceIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ips, expected);
    assert!(
        anonymous
            .iter()
            .all(|t| within(t, &incidents["anonymous-secrets"], 60))
    );

    let freeze = firing("freeze-mutations");
    let incident = &incidents["freeze-mutation"];
    assert!(!freeze.is_empty());
    for t in &freeze {
        assert_eq!(t["group"]["user"], incident["user"]);
        assert_eq!(t["group"]["verb"], incident["verb"]);
        assert_eq!(t["group"]["ns"], incident["namespace"]);
        assert!(within(t, incident, 180));
    }
    // Nothing else fired, and every firing group resolved once its incident ended.
    let all_firing = transitions
        .iter()
        .filter(|t| t["state"] == "firing")
        .count();
    assert_eq!(
        all_firing,
        forbidden.len() + unauthorized.len() + anonymous.len() + freeze.len()
    );
    let resolved = transitions
        .iter()
        .filter(|t| t["state"] == "resolved")
        .count();
    assert_eq!(resolved, all_firing, "{transitions:#?}");
    for t in &transitions {
        assert!(t["value"].is_number(), "{t}");
        assert!(t["at"].as_str().unwrap().ends_with('Z'));
    }
}

/// Mistakes are reported with the file, the line, the key and the fix; the good monitors of
/// the same file still load, and the exit status says a check found problems.
#[test]
fn monitor_check_reports_lines_and_fixes() {
    let dir = TempDir::new("monitor-check");
    let file = dir.path().join("monitors.yaml");
    std::fs::write(
        &file,
        "- name: ok\n  query: 'code:401 | stats count() by ip'\n  alert: '> 5'\n\
         - name: bad\n  query: 'code:401 | stats count() by ip'\n  alert: '> 50'\n  recover: '< 60'\n  every: 1x\n\
         - name: typo\n  query: 'code:(401'\n  alert: '> 1'\n  sevrity: critical\n",
    )
    .unwrap();
    let output = run(&["monitor", "check", file.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(4));
    let errors = stderr(&output);
    let path = file.to_str().unwrap();
    assert!(
        errors.contains(&format!(
            "{path}:7: bad: recover: overlaps the alert condition `> 50`"
        )),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{path}:8: bad: every: \"1x\" is not a duration")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{path}:10: typo: query:")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!(
            "{path}:12: typo: sevrity: unknown key (did you mean `severity`?)"
        )),
        "{errors}"
    );
    assert!(
        stdout(&output).starts_with("1 monitor(s) and 0 channel(s) valid, 4 problem(s)"),
        "{}",
        stdout(&output)
    );
    let good = data("monitors/backtest.yaml");
    let output = run(&["monitor", "check", good.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", stderr(&output));
}

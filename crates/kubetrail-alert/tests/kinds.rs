//! Every kind of condition over a real store: synthetic traffic with a known shape is written
//! with the store's writer, then replayed through monitors with [`backtest`].

use std::path::PathBuf;
use std::sync::Arc;

use kubetrail_alert::evaluate::{Transition, backtest};
use kubetrail_alert::live::{Live, LiveOptions};
use kubetrail_alert::spec::parse;
use kubetrail_alert::state::Change;
use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_store::{EventWriter, QueryEngine, WriterOptions};

/// 2026-03-02T00:00:00Z, a Monday.
const DAY: i64 = 1_772_409_600_000_000;
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;

struct Store {
    dir: PathBuf,
    engine: QueryEngine,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request: (time µs, user, cluster, code).
type Request = (i64, &'static str, &'static str, u16);

fn store(name: &str, requests: &[Request]) -> Store {
    let dir = std::env::temp_dir().join(format!("kubetrail-alert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
    let mut decoder = Decoder::new(DecodeOptions::default());
    for (i, (at, user, cluster, code)) in requests.iter().enumerate() {
        let time = kubetrail_alert::rfc3339::format(*at);
        let line = format!(
            "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{i:08}-0000-0000-0000-000000000000\",\"stage\":\"ResponseComplete\",\"requestURI\":\"/api/v1/namespaces/default/pods\",\"verb\":\"list\",\"user\":{{\"username\":\"{user}\"}},\"sourceIPs\":[\"10.0.0.1\"],\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"default\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"code\":{code}}},\"requestReceivedTimestamp\":\"{time}\",\"stageTimestamp\":\"{time}\"}}\n"
        );
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                writer.append_unlogged(&event, cluster, 0).unwrap();
            }
        };
        decoder.feed(line.as_bytes(), &mut out);
    }
    decoder.finish(&mut |_| {});
    writer.close().unwrap();
    let engine = QueryEngine::open(&dir).unwrap();
    Store { dir, engine }
}

/// `per_minute` requests in every minute of `[from, to)`.
fn steady(
    from: i64,
    to: i64,
    per_minute: i64,
    user: &'static str,
    cluster: &'static str,
) -> Vec<Request> {
    (from / MINUTE..to / MINUTE)
        .flat_map(|m| {
            (0..per_minute)
                .map(move |i| (m * MINUTE + i * (MINUTE / per_minute), user, cluster, 200))
        })
        .collect()
}

fn run(store: &Store, monitors: &str, from: i64, to: i64) -> Vec<Transition> {
    let defs = parse(monitors, None);
    assert!(defs.problems.is_empty(), "{:?}", defs.problems);
    let monitors: Vec<_> = defs.monitors.into_iter().map(Arc::new).collect();
    let (transitions, errors) = backtest(&store.engine, &monitors, from, to, 2);
    assert!(errors.is_empty(), "{errors:?}");
    transitions
}

fn firing(transitions: &[Transition], monitor: &str) -> Vec<(i64, Option<f64>)> {
    transitions
        .iter()
        .filter(|t| t.monitor == monitor && t.state == Change::Firing)
        .map(|t| (t.at, t.value))
        .collect()
}

#[test]
fn change_and_pct_change_compare_with_the_same_window_in_the_past() {
    // Yesterday: 10 a minute all hour. Today: the same, but 40 a minute from :20 to :25.
    let today = DAY + 24 * HOUR;
    let mut requests = steady(DAY, DAY + HOUR, 10, "alice", "prod");
    requests.extend(steady(today, today + 20 * MINUTE, 10, "alice", "prod"));
    requests.extend(steady(
        today + 20 * MINUTE,
        today + 25 * MINUTE,
        40,
        "alice",
        "prod",
    ));
    requests.extend(steady(
        today + 25 * MINUTE,
        today + HOUR,
        10,
        "alice",
        "prod",
    ));
    let store = store("change", &requests);
    let transitions = run(
        &store,
        "- name: more\n  query: 'verb:list'\n  change: 1d\n  alert: '> 100'\n  recover: '< 20'\n\
         - name: pct\n  query: 'verb:list'\n  pct_change: 1d\n  alert: '> 150'\n\
         - name: steady\n  query: 'verb:list'\n  change: 1d\n  alert: '> 5'\n  window: 5m\n\
         - name: no-past\n  query: 'verb:list'\n  pct_change: 2d\n  alert: '> 0'\n",
        today + 5 * MINUTE,
        today + HOUR,
    );
    // 30 more a minute: +120 once four spike minutes are in the window, at :24.
    assert_eq!(
        firing(&transitions, "more"),
        vec![(today + 24 * MINUTE, Some(120.0))]
    );
    // +90 of 50 is +180 %, the first value over 150 %, with three spike minutes, at :23.
    assert_eq!(
        firing(&transitions, "pct"),
        vec![(today + 23 * MINUTE, Some(180.0))]
    );
    assert_eq!(
        firing(&transitions, "steady").len(),
        1,
        "only the spike changes anything"
    );
    let resolved: Vec<_> = transitions
        .iter()
        .filter(|t| t.monitor == "more" && t.state == Change::Resolved)
        .map(|t| t.at)
        .collect();
    // Under +20 once no spike minute is left in the window: at :30.
    assert_eq!(resolved, vec![today + 30 * MINUTE]);
}

#[test]
fn new_values_fire_once_after_learning_from_history() {
    let mut requests = steady(DAY, DAY + 2 * HOUR, 2, "alice", "prod");
    requests.extend(steady(DAY, DAY + 2 * HOUR, 1, "bob", "prod"));
    // Eve shows up at 01:30 for 10 minutes; mallory once at 01:45.
    requests.extend(steady(
        DAY + 90 * MINUTE,
        DAY + 100 * MINUTE,
        1,
        "eve",
        "prod",
    ));
    requests.push((DAY + 105 * MINUTE + 5_000_000, "mallory", "prod", 403));
    let store = store("new-value", &requests);
    let transitions = run(
        &store,
        "- name: new-user\n  query: 'verb:list | stats count() by user'\n  new_value: 1h\n  window: 5m\n  every: 1m\n",
        DAY + HOUR,
        DAY + 2 * HOUR,
    );
    let fired: Vec<(i64, String)> = transitions
        .iter()
        .filter(|t| t.state == Change::Firing)
        .map(|t| (t.at, t.group["user"].clone()))
        .collect();
    assert_eq!(
        fired,
        vec![
            (DAY + 91 * MINUTE, "eve".to_owned()),
            (DAY + 106 * MINUTE, "mallory".to_owned())
        ]
    );
    // Each resolves at the next evaluation: a new value is news once.
    let resolved = transitions
        .iter()
        .filter(|t| t.state == Change::Resolved)
        .count();
    assert_eq!(resolved, 2, "{transitions:#?}");
}

#[test]
fn absence_fires_for_the_cluster_that_went_quiet() {
    let mut requests = steady(DAY, DAY + 3 * HOUR, 3, "kubelet", "east");
    requests.extend(steady(
        DAY,
        DAY + 2 * HOUR + 30 * MINUTE,
        3,
        "kubelet",
        "west",
    ));
    // West comes back at 02:50.
    requests.extend(steady(
        DAY + 2 * HOUR + 50 * MINUTE,
        DAY + 3 * HOUR,
        3,
        "kubelet",
        "west",
    ));
    let store = store("absence", &requests);
    let transitions = run(
        &store,
        "- name: silent-cluster\n  query: '* | stats count() by cluster'\n  absence: 10m\n  every: 1m\n",
        DAY + 2 * HOUR,
        DAY + 3 * HOUR,
    );
    let summary: Vec<(i64, Change, String)> = transitions
        .iter()
        .map(|t| (t.at, t.state, t.group["cluster"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                DAY + 2 * HOUR + 40 * MINUTE,
                Change::Firing,
                "west".to_owned()
            ),
            (
                DAY + 2 * HOUR + 51 * MINUTE,
                Change::Resolved,
                "west".to_owned()
            ),
        ]
    );
}

#[test]
fn anomalies_are_judged_against_a_seasonal_baseline_from_history() {
    // Two days of a daily rhythm: 5 a minute at night, 30 a minute 09:00-17:00. On the third
    // day the rhythm repeats, except for 20 a minute at 03:00-03:10: busy for a night, quiet
    // for a day. A plain threshold cannot tell; a baseline per hour of day can.
    let mut requests = Vec::new();
    for day in 0..3 {
        let start = DAY + day * 24 * HOUR;
        requests.extend(steady(start, start + 9 * HOUR, 5, "app", "prod"));
        requests.extend(steady(
            start + 9 * HOUR,
            start + 17 * HOUR,
            30,
            "app",
            "prod",
        ));
        requests.extend(steady(
            start + 17 * HOUR,
            start + 24 * HOUR,
            5,
            "app",
            "prod",
        ));
    }
    let third = DAY + 48 * HOUR;
    let spike = third + 3 * HOUR..third + 3 * HOUR + 10 * MINUTE;
    requests.retain(|(at, ..)| !spike.contains(at));
    requests.extend(steady(spike.start, spike.end, 20, "app", "prod"));
    let store = store("anomaly", &requests);
    let transitions = run(
        &store,
        "- name: unusual\n  query: 'verb:list'\n  window: 5m\n  every: 5m\n  anomaly:\n    baseline: 2d\n    seasonality: hour_of_day\n    deviations: 4\n",
        third,
        third + 24 * HOUR,
    );
    let fired = firing(&transitions, "unusual");
    assert!(!fired.is_empty(), "{transitions:#?}");
    assert!(
        fired
            .iter()
            .all(|(at, _)| (spike.start..=spike.end + 5 * MINUTE).contains(at)),
        "{transitions:#?}"
    );
    assert_eq!(
        transitions
            .iter()
            .filter(|t| t.state == Change::Resolved)
            .count(),
        1,
        "{transitions:#?}"
    );
}

/// Alice's steady traffic for an hour from `DAY`, and Mallory refused (403) 20 times a minute
/// from 00:10 to `until`.
fn mallory_refused(name: &str, until: i64) -> Store {
    let mut requests = steady(DAY, DAY + HOUR, 2, "alice", "prod");
    requests.extend(
        steady(DAY + 10 * MINUTE, until, 20, "mallory", "prod")
            .into_iter()
            .map(|(at, user, cluster, _)| (at, user, cluster, 403)),
    );
    store(name, &requests)
}

/// Live monitors defined by `text`, their state in `state`, started at `now`.
fn start_live(state: &std::path::Path, text: &str, store: &Store, now: i64) -> Live {
    let mut defs = kubetrail_alert::spec::parse(text, None);
    defs.check_channels();
    assert!(defs.problems.is_empty(), "{:?}", defs.problems);
    let mut live = Live::open(LiveOptions {
        dir: state.to_owned(),
        delay: 0,
        external_url: None,
        tap: None,
    })
    .unwrap();
    live.configure(defs, &store.engine, now);
    live
}

/// Notifications queued in the outbox so far: (status, monitor) of each alert, by notification.
fn queued(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("outbox/pending")) else {
        return out;
    };
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let entry: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let statuses = entry["notification"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_str().unwrap().to_owned())
            .collect();
        out.push((
            entry["notification"]["at"].as_str().unwrap().to_owned(),
            statuses,
        ));
    }
    out.sort();
    out
}

#[test]
fn mute_windows_hold_notifications_and_active_windows_limit_evaluation() {
    // Mallory is refused 20 times a minute from 00:10 to 00:18.
    let store = mallory_refused("mute", DAY + 18 * MINUTE);
    let state = std::env::temp_dir().join(format!("kubetrail-alert-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "monitors:\n\
         - name: muted\n  query: 'code:403 | stats count() by user'\n  window: 2m\n  every: 1m\n  alert: '> 10'\n  notify: [log]\n  mute:\n    - from: {}\n      to: {}\n\
         - name: office\n  query: 'code:403 | stats count() by user'\n  window: 2m\n  every: 1m\n  alert: '> 10'\n  active:\n    - from: {}\n      to: {}\n\
         channels:\n  - name: log\n    type: file\n    path: {}\n",
        kubetrail_alert::rfc3339::format(DAY + 10 * MINUTE),
        kubetrail_alert::rfc3339::format(DAY + 14 * MINUTE),
        kubetrail_alert::rfc3339::format(DAY + 15 * MINUTE),
        kubetrail_alert::rfc3339::format(DAY + 40 * MINUTE),
        state.join("alerts.jsonl").display()
    );
    let mut live = start_live(&state, &text, &store, DAY + 5 * MINUTE);
    let mut transitions = Vec::new();
    let mut held_until_mute_end = true;
    for minute in 5..=40 {
        let now = DAY + minute * MINUTE;
        transitions.extend(live.round(&store.engine, |delay, _| Some(now - delay), now));
        if minute < 14 {
            held_until_mute_end &= queued(&state).is_empty();
        }
    }
    assert!(held_until_mute_end, "{:?}", queued(&state));
    // Firing since 00:11, told when the mute ends at 00:14; resolved at 00:20.
    assert_eq!(
        queued(&state),
        vec![
            ("2026-03-02T00:14:00Z".to_owned(), vec!["firing".to_owned()]),
            (
                "2026-03-02T00:20:00Z".to_owned(),
                vec!["resolved".to_owned()]
            ),
        ]
    );
    let muted: Vec<(i64, Change)> = transitions
        .iter()
        .filter(|t| t.monitor == "muted")
        .map(|t| (t.at, t.state))
        .collect();
    assert_eq!(
        muted,
        vec![
            (DAY + 11 * MINUTE, Change::Firing),
            (DAY + 20 * MINUTE, Change::Resolved)
        ],
        "the state moves while muted"
    );
    // Active from 00:15 only: the minutes before do not count, so it fires later.
    let office: Vec<(i64, Change)> = transitions
        .iter()
        .filter(|t| t.monitor == "office")
        .map(|t| (t.at, t.state))
        .collect();
    assert_eq!(
        office,
        vec![
            (DAY + 16 * MINUTE, Change::Firing),
            (DAY + 20 * MINUTE, Change::Resolved)
        ]
    );
    // The state survives a restart: a new Live resumes where this one stopped.
    drop(live);
    let again = start_live(&state, &text, &store, DAY + 41 * MINUTE);
    let status = again.status(DAY + 41 * MINUTE, |_, _| Some(DAY + 41 * MINUTE));
    let muted = status.iter().find(|s| s.name == "muted").unwrap();
    assert_eq!(muted.next_evaluation, DAY + 41 * MINUTE);
    assert_eq!(muted.behind_micros, 0);
    assert!(!muted.no_data);
    let _ = std::fs::remove_dir_all(&state);
}

/// The live stream must compute what the store's query does: the generated traffic of
/// `tests/data/generated/backtest.log.gz` (200,000 events with incidents) is stored and fed to
/// the tap at once, then every monitor is evaluated twice over the whole range — once from the
/// store only, once with every bucket from the stream, once with a cut halfway — and must make
/// the same transitions.
/// The monitors cover each aggregate, group keys of text, integers, booleans and a list, and
/// filters the index selects by and those it cannot.
#[test]
fn the_live_stream_computes_what_the_store_query_does() {
    use kubetrail_alert::evaluate::MonitorEval;
    use kubetrail_alert::stream::Tap;
    use std::io::Read;

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/generated/backtest.log.gz");
    let mut log = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut log)
        .unwrap();
    let defs = parse(
        "- name: forbidden-by-user\n  query: 'code:403 | stats count() by user'\n  window: 5m\n  alert: '> 20'\n\
         - name: unauthorized-by-ip\n  query: 'code:401 | stats count() by ip'\n  window: 5m\n  alert: '> 5'\n\
         - name: anonymous-by-ip\n  query: 'user:system:anonymous stage:ResponseComplete | stats count() by ip'\n  alert: '> 0'\n\
         - name: p99-by-verb-resource\n  query: 'verb:(get OR list) | stats p99(latency) by verb, resource'\n  alert: '> 200ms'\n\
         - name: avg-by-kind\n  query: 'stage:ResponseComplete | stats avg(latency) by user_kind'\n  window: 2m\n  alert: '> 20ms'\n\
         - name: resources-per-user\n  query: '* | stats dc(resource) by user'\n  alert: '> 6'\n\
         - name: ips-per-human\n  query: 'user_kind:human | stats dc(ip) by user'\n  alert: '> 0'\n\
         - name: mutations-by-code\n  query: 'mutating:true | stats count() by code'\n  alert: '> 300'\n\
         - name: slowest-failure\n  query: 'code>=400 | stats max(latency) by mutating'\n  alert: '> 10ms'\n\
         - name: fastest-human\n  query: '-user:system:* | stats min(latency)'\n  alert: '< 5ms'\n\
         - name: deletes\n  query: 'verb:delete'\n  alert: '> 10'\n\
         - name: privileged-text\n  query: '\"privileged\"'\n  alert: '> 0'\n\
         - name: latency-sum-by-ns\n  query: 'verb:(create OR update OR patch) | stats sum(latency) by ns'\n  alert: '> 2s'\n\
         - name: new-secret-readers\n  query: 'resource:secrets verb:(get OR list) | stats count() by user'\n  new_value: 30m\n\
         - name: forbidden-change\n  query: 'code:403'\n  change: 10m\n  alert: '> 10'\n",
        None,
    );
    assert!(defs.problems.is_empty(), "{:?}", defs.problems);
    let specs: Vec<Arc<_>> = defs.monitors.into_iter().map(Arc::new).collect();

    let feed = |spec: &Arc<_>| {
        MonitorEval::new(Arc::clone(spec), 0)
            .unwrap()
            .feed_spec()
            .unwrap_or_else(|| panic!("{} is not computed from the stream", spec.name))
    };
    // One tap sees every event; the other has its monitors registered halfway through, so
    // their windows straddle the cut: before it from the store, after it from the stream.
    let tap = Tap::new();
    let halfway = Tap::new();
    let mut cuts = std::collections::HashMap::new();
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    for spec in &specs {
        assert_eq!(tap.register(&spec.name, feed(spec)), i64::MIN);
    }
    let total = log.iter().filter(|b| **b == b'\n').count();
    let mut seen = 0;
    let dir = std::env::temp_dir().join(format!("kubetrail-alert-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let mut writer = EventWriter::open(&dir, WriterOptions::default()).unwrap();
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut out = |d: Decoded<'_>| {
            if let Decoded::Event(event, _) = d {
                let time = event.time().unwrap().as_micros();
                first = first.min(time);
                last = last.max(time);
                writer.append_unlogged(&event, "prod", 0).unwrap();
                tap.add(&event, "prod", time);
                halfway.add(&event, "prod", time);
                seen += 1;
                if seen == total / 2 {
                    for spec in &specs {
                        cuts.insert(spec.name.clone(), halfway.register(&spec.name, feed(spec)));
                    }
                }
            }
        };
        decoder.feed(&log, &mut out);
        decoder.finish(&mut out);
        writer.close().unwrap();
    }
    let store = Store {
        engine: QueryEngine::open(&dir).unwrap(),
        dir,
    };
    let (from, to) = (first + 10 * MINUTE, last);
    let mut compared = 0;
    let sampled = std::cell::Cell::new(0);
    for spec in &specs {
        let evaluate = |feed: Option<(&Tap, i64)>| {
            let mut eval = MonitorEval::new(spec.clone(), from).unwrap();
            eval.warm_up(&store.engine).unwrap();
            if let Some((tap, cut)) = feed {
                eval.stream_from(cut);
                eval.absorb(tap.drain(&spec.name));
            }
            let mut transitions = Vec::new();
            // Window by window, so the samples of each firing are still there to check.
            while eval.next_eval <= to {
                let at = eval.next_eval;
                let before = transitions.len();
                eval.advance(&store.engine, at, &mut transitions);
                if feed.is_none() {
                    continue;
                }
                for t in &transitions[before..] {
                    if t.state != Change::Firing || t.at - spec.window < cuts[&spec.name] {
                        continue;
                    }
                    // The stream kept the first events of the group: the notification's samples
                    // (up to a byte budget per round: this test drains once, so past it a
                    // notification would read them from the store).
                    let key: Arc<[String]> =
                        eval.group_by().iter().map(|f| t.group[f].clone()).collect();
                    let Some(samples) = eval.stream_samples(&key, t.at - spec.window, t.at) else {
                        continue;
                    };
                    sampled.set(sampled.get() + 1);
                    assert!(samples.len() <= 3);
                    for sample in samples {
                        let event: serde_json::Value = serde_json::from_str(sample).unwrap();
                        if let Some(user) = t.group.get("user") {
                            assert_eq!(event["user"]["username"], user.as_str(), "{}", spec.name);
                        }
                    }
                }
            }
            transitions
        };
        let queried = evaluate(None);
        let streamed = evaluate(Some((&tap, i64::MIN)));
        assert_eq!(streamed, queried, "{}", spec.name);
        let cut = cuts[&spec.name];
        assert!(cut > from && cut < to);
        let straddling = evaluate(Some((&halfway, cut)));
        assert_eq!(straddling, queried, "{} cut at {cut}", spec.name);
        compared += queried.len();
        assert!(!queried.is_empty(), "{} never changed state", spec.name);
    }
    assert!(compared > 100, "{compared} transitions");
    assert!(sampled.get() > 20, "{} firings with samples", sampled.get());
}

/// NoData and Error are states of their own: when the watermark stays behind the next window
/// for longer than `no_data_after`, the groups go to NoData (a firing group is not resolved,
/// receivers are told once that the monitor has no data) and come back to their own state when
/// data does; when the store's queries fail for a minute, the groups go to Error.
#[test]
fn groups_without_data_or_with_failing_queries_have_states_of_their_own() {
    let store = mallory_refused("nodata", DAY + 30 * MINUTE);
    let state = std::env::temp_dir().join(format!(
        "kubetrail-alert-nodata-state-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "monitors:\n\
         - name: forbidden\n  query: 'code:403 | stats count() by user'\n  window: 2m\n  every: 1m\n  alert: '> 10'\n  no_data_after: 3m\n  notify: [log]\n\
         channels:\n  - name: log\n    type: file\n    path: {}\n",
        state.join("alerts.jsonl").display()
    );
    let mut live = start_live(&state, &text, &store, DAY + 5 * MINUTE);
    let mut transitions = Vec::new();
    let group_state = |live: &Live, now: i64| {
        live.status(now, |_, _| None)[0]
            .alerts
            .iter()
            .map(|a| a.state.clone())
            .collect::<Vec<_>>()
    };
    // Mallory fires at 00:11; the watermark then stops at 00:12 while the clock goes on.
    for minute in 5..=20 {
        let now = DAY + minute * MINUTE;
        let watermark = (now).min(DAY + 12 * MINUTE);
        transitions.extend(live.round(&store.engine, |_, _| Some(watermark), now));
        if minute == 16 {
            assert_eq!(
                group_state(&live, now),
                ["firing"],
                "3 minutes behind is allowed"
            );
        }
    }
    assert_eq!(group_state(&live, DAY + 20 * MINUTE), ["no_data"]);
    let changes: Vec<(i64, Change)> = transitions.iter().map(|t| (t.at, t.state)).collect();
    assert_eq!(
        changes,
        vec![
            (DAY + 11 * MINUTE, Change::Firing),
            (DAY + 17 * MINUTE, Change::NoData)
        ]
    );
    assert_eq!(transitions[1].group["user"], "mallory");
    let no_data = queued(&state);
    assert_eq!(no_data.len(), 2, "{no_data:?}");
    // Data comes back: the windows are evaluated, mallory is still firing (never resolved).
    transitions.clear();
    for minute in 21..=25 {
        let now = DAY + minute * MINUTE;
        transitions.extend(live.round(&store.engine, |_, _| Some(now), now));
    }
    let changes: Vec<(i64, Change)> = transitions.iter().map(|t| (t.at, t.state)).collect();
    assert_eq!(changes, vec![(DAY + 21 * MINUTE, Change::Firing)]);
    assert_eq!(group_state(&live, DAY + 25 * MINUTE), ["firing"]);
    let told: Vec<Vec<String>> = queued(&state).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        told,
        [["firing"], ["firing"], ["resolved"]],
        "no data told, then over"
    );
    // A segment of the store is damaged: after a minute of failed queries the group is in
    // Error.
    let day = std::fs::read_dir(store.dir.join("events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(day.join("damaged.parquet"), b"not parquet").unwrap();
    transitions.clear();
    for minute in 26..=29 {
        let now = DAY + minute * MINUTE;
        transitions.extend(live.round(&store.engine, |_, _| Some(now), now));
    }
    assert_eq!(
        group_state(&live, DAY + 29 * MINUTE),
        ["error"],
        "{transitions:?}"
    );
    assert!(transitions.iter().any(|t| t.state == Change::Error));
    let _ = std::fs::remove_dir_all(&state);
}

/// Sample events read from the store cost a query each: a notification reads them for its
/// first few alerts only, however many groups fire.
#[test]
fn a_notification_reads_store_samples_for_a_few_alerts_only() {
    const USERS: [&str; 8] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
    let requests: Vec<Request> = USERS
        .iter()
        .flat_map(|user| steady(DAY, DAY + 10 * MINUTE, 20, user, "prod"))
        .map(|(at, user, cluster, _)| (at, user, cluster, 403))
        .collect();
    let store = store("sample-budget", &requests);
    let state = std::env::temp_dir().join(format!(
        "kubetrail-alert-sample-budget-state-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "monitors:\n\
         - name: forbidden\n  query: 'code:403 | stats count() by user'\n  window: 2m\n  every: 1m\n  alert: '> 10'\n  notify: [log]\n\
         channels:\n  - name: log\n    type: file\n    path: {}\n",
        state.join("alerts.jsonl").display()
    );
    let mut live = start_live(&state, &text, &store, DAY + 3 * MINUTE);
    for minute in 3..=5 {
        let now = DAY + minute * MINUTE;
        live.round(&store.engine, |_, _| Some(now), now);
    }
    let pending = std::fs::read_dir(state.join("outbox/pending")).unwrap();
    let firing: Vec<serde_json::Value> = pending
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .flat_map(|entry: serde_json::Value| {
            entry["notification"]["alerts"].as_array().unwrap().clone()
        })
        .collect();
    assert_eq!(firing.len(), USERS.len(), "one firing alert per user");
    let sampled: Vec<usize> = firing
        .iter()
        .map(|a| a["samples"].as_array().unwrap().len())
        .collect();
    assert_eq!(sampled, [3, 3, 3, 3, 3, 0, 0, 0], "{sampled:?}");
    let _ = std::fs::remove_dir_all(&state);
}

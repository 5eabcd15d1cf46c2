//! Monitors running live: evaluation up to the ingest watermark, notifications reconciled
//! with what receivers were last told, and state that survives restarts and `kill -9`.
//!
//! Each round ([`Live::round`]):
//! 1. every monitor evaluates the windows the watermark has passed (the same
//!    [`MonitorEval`] as `monitor test`), recording its transitions in
//!    `<data>/monitors/transitions.jsonl`;
//! 2. for each group, what receivers should believe (firing at a level, or nothing) is
//!    compared with what they were last told; the differences of one monitor become one
//!    notification (re-sent every `renotify` while firing; held while muted), written to the
//!    outbox before anything else is saved;
//! 3. the state — where each monitor is, its groups, what was notified — is saved atomically.
//!
//! A crash between 2 and 3 repeats the round after the restart; the notification it makes
//! has the same id, which the outbox recognises, so receivers never get a second "firing";
//! a crash before 2 simply evaluates again.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kubetrail_query::{
    CompileOptions, DataFusionDialect, Expr, Field, Pattern, Query, compile_search,
};
use kubetrail_store::QueryEngine;
use serde::{Deserialize, Serialize};

use crate::evaluate::{GroupRecord, Health, MonitorEval, Transition};
use crate::notify::{Alert, Notification, Status};
use crate::outbox::{Outbox, write_atomically};
use crate::spec::{ChannelKind, ChannelSpec, Definitions, Kind, MonitorSpec};
use crate::state::{Change, GroupState, Level};
use crate::stream::Tap;
use crate::window::GroupKey;
use crate::{format_duration, format_value, template};

/// What receivers were last told about a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Notified {
    level: Level,
    since: i64,
    /// When it was last (re)sent, µs.
    sent: i64,
}

/// What an alert tells receivers.
struct Told<'r> {
    status: Status,
    level: Option<Level>,
    /// When it started firing.
    since: i64,
    record: &'r GroupRecord,
}

/// Why a monitor cannot be evaluated: its groups are in the NoData or Error state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Unevaluated {
    /// The ingest watermark has stayed behind the next window for longer than `no_data_after`.
    NoData {
        since: i64,
        #[serde(default)]
        notified: bool,
    },
    /// Querying the store has failed for [`ERROR_AFTER`].
    Error {
        since: i64,
        message: String,
        #[serde(default)]
        notified: bool,
    },
}

impl Unevaluated {
    fn name(&self) -> &'static str {
        match self {
            Unevaluated::NoData { .. } => "no_data",
            Unevaluated::Error { .. } => "error",
        }
    }

    fn since(&self) -> i64 {
        match self {
            Unevaluated::NoData { since, .. } | Unevaluated::Error { since, .. } => *since,
        }
    }

    fn notified(&self) -> bool {
        match self {
            Unevaluated::NoData { notified, .. } | Unevaluated::Error { notified, .. } => *notified,
        }
    }

    fn set_notified(&mut self) {
        match self {
            Unevaluated::NoData { notified, .. } | Unevaluated::Error { notified, .. } => {
                *notified = true;
            }
        }
    }

    fn change(&self) -> Change {
        match self {
            Unevaluated::NoData { .. } => Change::NoData,
            Unevaluated::Error { .. } => Change::Error,
        }
    }
}

/// How long queries must fail before a monitor's groups go to the Error state: one failed
/// round (a compaction replacing files under a query) is retried quietly.
const ERROR_AFTER: i64 = 60_000_000;

/// Without `no_data_after`, the watermark may stay behind a monitor's next window for its
/// window, and at least this long, before the groups go to NoData.
const NO_DATA_AFTER: i64 = 300_000_000;

/// The alerts of one notification that may read their sample events from the store when the
/// stream kept none for them (a monitor not fed by the stream, a window older than its cut, a
/// group beyond the feed's sample budget); the others go without samples. Each such read is a
/// query at the monitors' low priority: one per alert made a window where hundreds of groups
/// fire hold up every monitor after it.
const STORE_SAMPLED_ALERTS: usize = 5;

/// Saved state of one monitor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedMonitor {
    fingerprint: String,
    next_eval: i64,
    groups: Vec<(GroupKey, GroupRecord)>,
    seen: Vec<(GroupKey, i64)>,
    notified: Vec<(GroupKey, Notified)>,
    am_refreshed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unevaluated: Option<Unevaluated>,
}

/// The state file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    monitors: BTreeMap<String, SavedMonitor>,
}

struct LiveMonitor {
    eval: MonitorEval,
    fingerprint: String,
    notified: HashMap<GroupKey, Notified>,
    am_refreshed: i64,
    /// When the monitor last evaluated a window (µs, wall clock).
    last_evaluated: Option<i64>,
    /// Set while it cannot be evaluated (its groups are in NoData or Error).
    unevaluated: Option<Unevaluated>,
    /// Since when its queries have been failing (wall clock).
    failing_since: Option<i64>,
    /// Whether the history it decides with was read (retried each round until it is).
    warmed: bool,
}

/// One monitor's status, for `monitor status` and the API.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorStatus {
    /// Name.
    pub name: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Its query.
    pub query: String,
    /// ok, capped, error.
    #[serde(flatten)]
    pub health: Health,
    /// The next window's end.
    #[serde(with = "crate::rfc3339")]
    pub next_evaluation: i64,
    /// True while its groups are in the NoData state: the watermark has not reached the next
    /// window for longer than `no_data_after` (no data is arriving from the monitored
    /// clusters, or ingest is stuck).
    pub no_data: bool,
    /// How far evaluation lags behind the watermark, µs (0 when it keeps up): more than a
    /// window or two means the monitors cost more than the machine has.
    pub behind_micros: i64,
    /// Groups pending or firing.
    pub alerts: Vec<AlertStatus>,
    /// Where it is defined.
    pub source: String,
}

/// A group's state.
#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    /// The group.
    pub group: BTreeMap<String, String>,
    /// pending or firing.
    pub state: String,
    /// The level while firing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Since when.
    #[serde(with = "crate::rfc3339")]
    pub since: i64,
    /// The last value.
    pub value: Option<f64>,
}

/// Settings of live evaluation.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// `<data>/monitors`.
    pub dir: PathBuf,
    /// How long after a window's end it is evaluated, by default (µs).
    pub delay: i64,
    /// kubetrail's address for links.
    pub external_url: Option<String>,
    /// The live stream of accepted events: monitors it can compute are fed from it instead of
    /// querying the store every round (None: from the store only).
    pub tap: Option<Arc<Tap>>,
}

/// The live monitors.
pub struct Live {
    options: LiveOptions,
    monitors: BTreeMap<String, LiveMonitor>,
    channels: Arc<Mutex<BTreeMap<String, ChannelSpec>>>,
    outbox: Arc<Mutex<Outbox>>,
    saved: SavedState,
    /// Whether the tap knows the newest stored event.
    tap_seeded: bool,
    /// The tap's generation the feeds were started in.
    tap_generation: u64,
    /// Problems of the definitions in force.
    pub problems: Vec<String>,
}

impl Live {
    /// Opens the state in `options.dir` (monitors start when [`configure`](Self::configure)
    /// gives their definitions).
    pub fn open(options: LiveOptions) -> std::io::Result<Live> {
        std::fs::create_dir_all(&options.dir)?;
        let saved = match std::fs::read(options.dir.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "monitor state unreadable; monitors start afresh");
                SavedState::default()
            }),
            Err(_) => SavedState::default(),
        };
        let outbox = Outbox::open(&options.dir.join("outbox"))?;
        Ok(Live {
            options,
            monitors: BTreeMap::new(),
            channels: Arc::new(Mutex::new(BTreeMap::new())),
            outbox: Arc::new(Mutex::new(outbox)),
            saved,
            tap_seeded: false,
            tap_generation: 0,
            problems: Vec::new(),
        })
    }

    /// The live stream's tap, if monitors are fed by it.
    pub fn tap(&self) -> Option<&Arc<Tap>> {
        self.options.tap.as_ref()
    }

    /// The outbox, shared with the deliverer.
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.outbox.clone()
    }

    /// The channels, shared with the deliverer.
    pub fn channels(&self) -> Arc<Mutex<BTreeMap<String, ChannelSpec>>> {
        self.channels.clone()
    }

    /// Puts `defs` in force: new monitors start (from their saved state when their definition
    /// is unchanged, else warmed up from history), removed or changed ones stop (their firing
    /// alerts are resolved with receivers).
    pub fn configure(&mut self, defs: Definitions, engine: &QueryEngine, now: i64) {
        self.problems = defs.problems.iter().map(ToString::to_string).collect();
        *self.channels.lock().unwrap_or_else(|e| e.into_inner()) = defs
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        let mut wanted: BTreeMap<String, Arc<MonitorSpec>> = defs
            .monitors
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        let names: Vec<String> = self.monitors.keys().cloned().collect();
        let mut switched = Vec::new();
        for name in names {
            let keep = wanted
                .get(&name)
                .is_some_and(|spec| fingerprint(spec) == self.monitors[&name].fingerprint);
            if keep {
                let spec = wanted.remove(&name).unwrap_or_else(|| unreachable!());
                if let Some(m) = self.monitors.get_mut(&name) {
                    // Same evaluation; notification settings may have changed.
                    if m.eval.spec.enabled != spec.enabled {
                        switched.push(name.clone());
                    }
                    m.eval.spec = spec;
                }
                continue;
            }
            if let Some(old) = self.monitors.remove(&name) {
                self.resolve_all(&old, now);
                self.saved.monitors.remove(&name);
            }
            if let Some(tap) = &self.options.tap {
                tap.unregister(&name);
            }
        }
        self.seed_tap(engine);
        // A monitor switched off stops costing ingest; switched on again, it is fed from a
        // new cut (the store fills the buckets in between).
        for name in switched {
            if let Some(mut monitor) = self.monitors.remove(&name) {
                if monitor.eval.spec.enabled {
                    monitor.eval.forget_buckets();
                    self.feed_from_stream(&name, &mut monitor.eval);
                } else {
                    if let Some(tap) = &self.options.tap {
                        tap.unregister(&name);
                    }
                    // A monitor switched off has nothing to say about its data any more.
                    if let Some(unevaluated) = monitor.unevaluated.take().filter(|u| u.notified()) {
                        self.notify_unevaluated(
                            &monitor.eval.spec,
                            &unevaluated,
                            Status::Resolved,
                            now,
                        );
                    }
                }
                self.monitors.insert(name, monitor);
            }
        }
        for (name, spec) in wanted {
            let print = fingerprint(&spec);
            let eval = match MonitorEval::new(spec.clone(), now) {
                Ok(eval) => eval,
                Err(e) => {
                    self.problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let mut monitor = LiveMonitor {
                eval,
                fingerprint: print.clone(),
                notified: HashMap::new(),
                am_refreshed: 0,
                last_evaluated: None,
                unevaluated: None,
                failing_since: None,
                warmed: true,
            };
            if let Err(e) = monitor.eval.warm_up(engine) {
                monitor.eval.health = Health::Error { message: e };
                monitor.warmed = false;
            }
            match self.saved.monitors.get(&name) {
                Some(saved) if saved.fingerprint == print => {
                    monitor.eval.restore(
                        saved.next_eval,
                        saved.groups.iter().cloned().collect(),
                        saved.seen.iter().cloned().collect(),
                    );
                    monitor.notified = saved.notified.iter().cloned().collect();
                    monitor.am_refreshed = saved.am_refreshed;
                    monitor.unevaluated = saved.unevaluated.clone();
                    tracing::info!(monitor = %name, "monitor resumed from its saved state");
                }
                _ => tracing::info!(monitor = %name, "monitor started"),
            }
            self.feed_from_stream(&name, &mut monitor.eval);
            self.monitors.insert(name, monitor);
        }
        self.save();
    }

    /// Keeps the tap in step at the start of a round: gives it the clock; seeds it if that
    /// failed at the start; and after a writer failure (or that late seeding) starts every
    /// feed again from a new cut, forgetting what was absorbed — it may hold events that were
    /// never stored and that their sources send again.
    fn sync_tap(&mut self, engine: &QueryEngine, now: i64) {
        let Some(tap) = self.options.tap.clone() else {
            return;
        };
        tap.set_clock(now);
        let seeded_now = !self.tap_seeded && {
            self.seed_tap(engine);
            self.tap_seeded
        };
        let generation = tap.generation();
        if !seeded_now && generation == self.tap_generation {
            return;
        }
        self.tap_generation = generation;
        let names: Vec<String> = self.monitors.keys().cloned().collect();
        for name in names {
            if let Some(mut monitor) = self.monitors.remove(&name) {
                if monitor.eval.spec.enabled {
                    tap.unregister(&name);
                    monitor.eval.forget_buckets();
                    self.feed_from_stream(&name, &mut monitor.eval);
                }
                self.monitors.insert(name, monitor);
            }
        }
    }

    /// Tells the tap the newest stored event, once: buckets up to it are the store's.
    fn seed_tap(&mut self, engine: &QueryEngine) {
        let Some(tap) = &self.options.tap else {
            return;
        };
        if self.tap_seeded {
            return;
        }
        match crate::evaluate::last_event_time(engine) {
            Ok(newest) => {
                if let Some(newest) = newest {
                    tap.stored_up_to(newest);
                }
                self.tap_seeded = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the newest stored event; monitors query the store until it can be read");
            }
        }
    }

    /// Feeds `eval` from the live stream when it can be.
    fn feed_from_stream(&self, name: &str, eval: &mut MonitorEval) {
        let Some(tap) = self.options.tap.as_ref().filter(|_| self.tap_seeded) else {
            return;
        };
        if !eval.spec.enabled {
            return;
        }
        match eval.feed_spec() {
            Some(feed) => {
                let cut = tap.register(name, feed);
                eval.stream_from(cut);
                tracing::debug!(monitor = %name, cut = %crate::rfc3339::format(cut.max(0)), "monitor fed by the live stream");
            }
            None => {
                tracing::info!(monitor = %name, "monitor evaluated by querying the store each round (it groups by a list or a JSON path)");
            }
        }
    }

    /// The names of the monitors in force.
    pub fn names(&self) -> Vec<String> {
        self.monitors.keys().cloned().collect()
    }

    /// One round: evaluates what the watermark allows, notifies, saves. `watermark(delay,
    /// streamed)` gives the event time up to which windows are complete for a monitor waiting
    /// `delay` — of the accepted events for a monitor fed by the stream (`streamed`), of the
    /// committed ones for a monitor that queries the store; absence monitors use the wall clock
    /// instead (their clusters may have gone quiet).
    pub fn round(
        &mut self,
        engine: &QueryEngine,
        watermark: impl Fn(i64, bool) -> Option<i64>,
        now: i64,
    ) -> Vec<Transition> {
        let mut all = Vec::new();
        let mut changed = false;
        self.sync_tap(engine, now);
        let names: Vec<String> = self.monitors.keys().cloned().collect();
        for name in names {
            let Some(mut monitor) = self.monitors.remove(&name) else {
                continue;
            };
            if monitor.eval.spec.enabled && !monitor.warmed {
                match monitor.eval.warm_up(engine) {
                    Ok(()) => {
                        monitor.warmed = true;
                        monitor.eval.health = Health::Ok;
                    }
                    Err(message) => monitor.eval.health = Health::Error { message },
                }
            }
            if monitor.eval.spec.enabled {
                let delay = monitor.eval.spec.delay.unwrap_or(self.options.delay);
                if let Some(tap) = &self.options.tap {
                    monitor.eval.absorb(tap.drain(&name));
                }
                let until = match monitor.eval.spec.kind {
                    Kind::Absence { .. } => Some(now - delay),
                    _ => watermark(delay, monitor.eval.streamed()),
                };
                let before = monitor.eval.next_eval;
                let mut transitions = Vec::new();
                if let Some(until) = until.filter(|_| monitor.warmed) {
                    monitor.eval.advance(engine, until, &mut transitions);
                }
                if monitor.eval.next_eval != before {
                    monitor.last_evaluated = Some(now);
                    changed = true;
                }
                changed |= self.check_evaluable(&mut monitor, until, now, &mut transitions);
                if !transitions.is_empty() {
                    self.record(&transitions);
                }
                all.extend(transitions);
            }
            changed |= self.notify(&mut monitor, engine, now);
            self.monitors.insert(name, monitor);
        }
        if changed {
            self.save();
        }
        all
    }

    /// Moves the monitor's groups to NoData or Error, or back to their own state, as the
    /// watermark (`until`) and its queries allow; true when something changed.
    fn check_evaluable(
        &mut self,
        monitor: &mut LiveMonitor,
        until: Option<i64>,
        now: i64,
        out: &mut Vec<Transition>,
    ) -> bool {
        let spec = monitor.eval.spec.clone();
        let next = monitor.eval.next_eval;
        let wanted = if let Health::Error { message } = &monitor.eval.health {
            let since = *monitor.failing_since.get_or_insert(now);
            if now - since < ERROR_AFTER {
                // Failing, not for long yet: whatever the groups are in, they stay there.
                return false;
            }
            Some(Unevaluated::Error {
                since,
                message: message.clone(),
                notified: false,
            })
        } else {
            monitor.failing_since = None;
            let delay = spec.delay.unwrap_or(self.options.delay);
            let allowed = spec
                .no_data_after
                .unwrap_or_else(|| spec.window.max(NO_DATA_AFTER));
            let behind = until.is_none_or(|w| w < next);
            (behind && now - delay - next > allowed).then_some(Unevaluated::NoData {
                since: next + allowed,
                notified: false,
            })
        };
        let same = match (&monitor.unevaluated, &wanted) {
            (None, None) => true,
            (Some(a), Some(b)) => a.name() == b.name(),
            _ => false,
        };
        let muted = !spec.mute.is_empty() && spec.mute.contains(now);
        if same {
            // Told once it can be: after a mute window, or when the outbox takes it again.
            if let Some(current) = monitor.unevaluated.as_mut()
                && !current.notified()
                && !muted
                && self.notify_unevaluated(&spec, current, Status::Firing, now)
            {
                current.set_notified();
                return true;
            }
            return false;
        }
        if let Some(old) = monitor.unevaluated.take() {
            // Back to the groups' own states; receivers keep what they were told of them.
            self.group_transitions(&monitor.eval, now, out, |state| match state {
                GroupState::Pending { .. } => Change::Pending,
                GroupState::Firing { .. } => Change::Firing,
                GroupState::Ok => Change::Ok,
            });
            if old.notified() {
                self.notify_unevaluated(&spec, &old, Status::Resolved, now);
            }
        }
        if let Some(mut new) = wanted {
            tracing::warn!(monitor = %spec.name, state = new.name(), "monitor cannot be evaluated");
            let change = new.change();
            self.group_transitions(&monitor.eval, now, out, |_| change);
            if !muted && self.notify_unevaluated(&spec, &new, Status::Firing, now) {
                new.set_notified();
            }
            monitor.unevaluated = Some(new);
        }
        true
    }

    /// A transition to `change(state)` for each group pending or firing, or for the monitor
    /// itself (an empty group) when none is.
    fn group_transitions(
        &self,
        eval: &MonitorEval,
        now: i64,
        out: &mut Vec<Transition>,
        change: impl Fn(&GroupState) -> Change,
    ) {
        let ok = GroupRecord::ok();
        let empty: GroupKey = Vec::new().into();
        let groups: Vec<(&GroupKey, &GroupRecord)> = if eval.groups.is_empty() {
            vec![(&empty, &ok)]
        } else {
            eval.groups.iter().collect()
        };
        for (key, record) in groups {
            out.push(Transition {
                monitor: eval.spec.name.clone(),
                group: if key.is_empty() {
                    BTreeMap::new()
                } else {
                    eval.group_map(key)
                },
                state: change(&record.state),
                level: record.state.firing(),
                at: now,
                value: record.value,
                threshold: record.threshold,
            });
        }
    }

    /// Queues the message that the monitor cannot be evaluated (firing), or can again
    /// (resolved): one alert of its own, whatever its groups.
    fn notify_unevaluated(
        &self,
        spec: &MonitorSpec,
        unevaluated: &Unevaluated,
        status: Status,
        now: i64,
    ) -> bool {
        let since = unevaluated.since();
        let state = unevaluated.name();
        let (title, message) = match unevaluated {
            Unevaluated::NoData { .. } => (
                format!("{}: no data", spec.name),
                format!(
                    "no events have passed the ingest watermark since {}: the monitored clusters stopped sending, or ingest is stuck; windows are evaluated again when data comes back",
                    crate::rfc3339::format(since)
                ),
            ),
            Unevaluated::Error { message, .. } => (
                format!("{}: cannot be evaluated", spec.name),
                format!(
                    "querying the store has failed since {}: {message}",
                    crate::rfc3339::format(since)
                ),
            ),
        };
        let alert = Alert {
            group: BTreeMap::from([("state".to_owned(), state.to_owned())]),
            status,
            level: None,
            severity: spec.severity.name().to_owned(),
            value: "-".to_owned(),
            threshold: None,
            title,
            message,
            starts_at: since,
            ends_at: (status == Status::Resolved).then(|| crate::rfc3339::format(now)),
            key: format!("{}/{state}", spec.name),
            samples: Vec::new(),
            link: self.link(spec, &BTreeMap::new(), since - spec.window, now),
        };
        let notification = Notification {
            id: format!(
                "{}-{state}-{}-{}",
                spec.name,
                since / 1_000_000,
                status.name()
            ),
            monitor: spec.name.clone(),
            description: spec.description.clone(),
            query: spec.query_text.clone(),
            at: now,
            alerts: vec![alert],
            external_url: self.options.external_url.clone(),
        };
        self.enqueue(&notification, &spec.notify)
    }

    fn record(&self, transitions: &[Transition]) {
        let path = self.options.dir.join("transitions.jsonl");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                let mut bytes = Vec::new();
                for t in transitions {
                    serde_json::to_writer(&mut bytes, t)?;
                    bytes.push(b'\n');
                }
                file.write_all(&bytes)?;
                file.sync_data()
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, file = %path.display(), "cannot record monitor transitions");
        }
    }

    /// Notifies the differences between the monitor's groups and what receivers were told;
    /// true when something was queued.
    fn notify(&mut self, monitor: &mut LiveMonitor, engine: &QueryEngine, now: i64) -> bool {
        let spec = monitor.eval.spec.clone();
        if !spec.mute.is_empty() && spec.mute.contains(now) {
            return false;
        }
        let at = monitor.eval.next_eval - spec.every;
        let mut alerts = Vec::new();
        let mut told = Vec::new();
        for (key, record) in &monitor.eval.groups {
            let GroupState::Firing { since, level, .. } = record.state else {
                continue;
            };
            let renotify = match monitor.notified.get(key) {
                None => true,
                Some(n) if n.level != level => true,
                Some(n) => spec.renotify > 0 && now - n.sent >= spec.renotify,
            };
            if renotify {
                alerts.push(self.alert(
                    &monitor.eval,
                    key,
                    Told {
                        status: Status::Firing,
                        level: Some(level),
                        since,
                        record,
                    },
                    at,
                ));
                told.push((
                    key.clone(),
                    Some(Notified {
                        level,
                        since,
                        sent: now,
                    }),
                ));
            }
        }
        for (key, notified) in &monitor.notified {
            let firing = monitor
                .eval
                .groups
                .get(key)
                .is_some_and(|r| r.state.firing().is_some());
            if !firing {
                let record = GroupRecord {
                    state: GroupState::Ok,
                    value: None,
                    threshold: None,
                };
                alerts.push(self.alert(
                    &monitor.eval,
                    key,
                    Told {
                        status: Status::Resolved,
                        level: None,
                        since: notified.since,
                        record: &record,
                    },
                    at,
                ));
                told.push((key.clone(), None));
            }
        }
        let mut queued = false;
        if !alerts.is_empty() {
            alerts.sort_by(|a, b| {
                (a.status != Status::Firing, &a.group).cmp(&(b.status != Status::Firing, &b.group))
            });
            sample_from_store(&mut alerts, engine, &spec, at);
            let notification = self.notification(&spec, at, alerts, &told, now);
            if self.enqueue(&notification, &spec.notify) {
                monitor.am_refreshed = now;
                for (key, notified) in told {
                    match notified {
                        Some(n) => monitor.notified.insert(key, n),
                        None => monitor.notified.remove(&key),
                    };
                }
                queued = true;
            }
        }
        // Alertmanager forgets alerts whose end passes: while firing, they are sent again
        // every minute with an end five minutes ahead.
        let am: Vec<String> = self.channels_of_kind(&spec, ChannelKind::Alertmanager);
        if !am.is_empty()
            && !monitor.notified.is_empty()
            && now - monitor.am_refreshed >= 60_000_000
        {
            let alerts: Vec<Alert> = monitor
                .notified
                .iter()
                .filter_map(|(key, n)| {
                    let record = monitor.eval.groups.get(key)?;
                    Some(self.alert(
                        &monitor.eval,
                        key,
                        Told {
                            status: Status::Firing,
                            level: Some(n.level),
                            since: n.since,
                            record,
                        },
                        at,
                    ))
                })
                .collect();
            if !alerts.is_empty() {
                let mut refresh = self.notification(&spec, at, alerts, &[], now);
                refresh.id = format!("{}-refresh-{}", spec.name, now / 60_000_000);
                if self.enqueue(&refresh, &am) {
                    monitor.am_refreshed = now;
                    queued = true;
                }
            }
        }
        queued
    }

    fn channels_of_kind(&self, spec: &MonitorSpec, kind: ChannelKind) -> Vec<String> {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        spec.notify
            .iter()
            .filter(|n| channels.get(*n).is_some_and(|c| c.kind == kind))
            .cloned()
            .collect()
    }

    fn enqueue(&self, notification: &Notification, channels: &[String]) -> bool {
        if channels.is_empty() {
            return true;
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        match outbox.enqueue(notification, channels, crate::now_micros()) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, monitor = %notification.monitor, "cannot queue a notification; it will be tried at the next round");
                false
            }
        }
    }

    /// A notification with an id that the same round reproduces after a restart.
    fn notification(
        &self,
        spec: &MonitorSpec,
        at: i64,
        alerts: Vec<Alert>,
        told: &[(GroupKey, Option<Notified>)],
        now: i64,
    ) -> Notification {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for alert in &alerts {
            digest.update(alert.key.as_bytes());
            digest.update(alert.status.name().as_bytes());
            digest.update(alert.level.as_deref().unwrap_or("").as_bytes());
        }
        // Re-notifications of the same state differ by when they are due.
        let renotified = told.iter().any(|(_, n)| n.is_some()) && spec.renotify > 0;
        if renotified {
            digest.update(&(now / spec.renotify).to_le_bytes());
        }
        let hash: String = digest.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Notification {
            id: format!("{}-{}-{hash}", spec.name, at / 1_000_000),
            monitor: spec.name.clone(),
            description: spec.description.clone(),
            query: spec.query_text.clone(),
            at,
            alerts,
            external_url: self.options.external_url.clone(),
        }
    }

    /// One alert of a notification, with the sample events the stream kept for it (the
    /// notification reads the store for a few that have none: [`Live::sample_from_store`]).
    fn alert(&self, eval: &MonitorEval, key: &GroupKey, told: Told<'_>, at: i64) -> Alert {
        let Told {
            status,
            level,
            since,
            record,
        } = told;
        let spec = &eval.spec;
        let group = eval.group_map(key);
        let value = record
            .value
            .map_or("-".to_owned(), |v| format_value(v, eval.duration_value));
        let threshold = record
            .threshold
            .map(|v| format_value(v, eval.duration_value));
        let severity = match level {
            Some(Level::Warn) => "warning".to_owned(),
            _ => spec.severity.name().to_owned(),
        };
        let group_text = group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let lookup = |name: &str| -> Option<String> {
            Some(match name {
                "monitor" => spec.name.clone(),
                "value" => value.clone(),
                "threshold" => threshold.clone().unwrap_or_default(),
                "window" => format_duration(spec.window),
                "severity" => severity.clone(),
                "level" => level.map_or(String::new(), |l| format!("{l:?}").to_lowercase()),
                "group" => group_text.clone(),
                "state" => status.name().to_owned(),
                field => group.get(field)?.clone(),
            })
        };
        let default_title = if group_text.is_empty() {
            format!("{}: {value}", spec.name)
        } else {
            format!("{} {group_text}: {value}", spec.name)
        };
        let title = spec
            .title
            .as_deref()
            .map_or(default_title, |t| template::render(t, lookup));
        let message = spec.message.as_deref().map_or_else(
            || {
                let over = threshold
                    .as_ref()
                    .map(|t| format!(" (threshold {t})"))
                    .unwrap_or_default();
                format!(
                    "{} is {value}{over} over {} ending {}",
                    spec.query_text,
                    format_duration(spec.window),
                    crate::rfc3339::format(at)
                )
            },
            |t| template::render(t, lookup),
        );
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(spec.name.as_bytes());
        for part in key.iter() {
            digest.update(&[0]);
            digest.update(part.as_bytes());
        }
        let hex: String = digest.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (samples, link) = if status == Status::Firing {
            let (from, to) = (at - spec.window, at);
            let kept = eval.stream_samples(key, from, to).map(|events| {
                events
                    .into_iter()
                    .filter_map(|e| serde_json::from_str(e).ok())
                    .collect()
            });
            (kept.unwrap_or_default(), self.link(spec, &group, from, to))
        } else {
            (Vec::new(), self.link(spec, &group, since - spec.window, at))
        };
        Alert {
            group,
            status,
            level: level.map(|l| format!("{l:?}").to_lowercase()),
            severity,
            value,
            threshold,
            title,
            message,
            starts_at: since,
            ends_at: (status == Status::Resolved).then(|| crate::rfc3339::format(at)),
            key: format!("{}/{hex}", spec.name),
            samples,
            link,
        }
    }

    /// `<external>/explore?q=…&from=…&to=…`: the query's search with the group's values.
    fn link(
        &self,
        spec: &MonitorSpec,
        group: &BTreeMap<String, String>,
        from: i64,
        to: i64,
    ) -> Option<String> {
        let base = self.options.external_url.as_deref()?;
        let mut q = search_part(&spec.query_text).trim().to_owned();
        for (k, v) in group {
            q.push_str(&format!(
                " {k}:\"{}\"",
                v.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        Some(format!(
            "{}/explore?q={}&from={}&to={}",
            base.trim_end_matches('/'),
            percent_encode(q.trim()),
            percent_encode(&crate::rfc3339::format(from)),
            percent_encode(&crate::rfc3339::format(to))
        ))
    }

    fn resolve_all(&mut self, monitor: &LiveMonitor, now: i64) {
        let spec = &monitor.eval.spec;
        if let Some(unevaluated) = monitor.unevaluated.as_ref().filter(|u| u.notified()) {
            self.notify_unevaluated(spec, unevaluated, Status::Resolved, now);
        }
        if monitor.notified.is_empty() {
            return;
        }
        let alerts: Vec<Alert> = monitor
            .notified
            .iter()
            .map(|(key, n)| Alert {
                group: monitor.eval.group_map(key),
                status: Status::Resolved,
                level: None,
                severity: spec.severity.name().to_owned(),
                value: "-".into(),
                threshold: None,
                title: format!("{}: monitor changed or removed", spec.name),
                message: "the monitor was changed or removed while this alert was firing".into(),
                starts_at: n.since,
                ends_at: Some(crate::rfc3339::format(now)),
                key: String::new(),
                samples: Vec::new(),
                link: None,
            })
            .collect();
        let notification = self.notification(spec, now, alerts, &[], now);
        self.enqueue(&notification, &spec.notify);
    }

    fn save(&mut self) {
        for (name, m) in &self.monitors {
            self.saved.monitors.insert(
                name.clone(),
                SavedMonitor {
                    fingerprint: m.fingerprint.clone(),
                    next_eval: m.eval.next_eval,
                    groups: m
                        .eval
                        .groups
                        .iter()
                        .map(|(k, r)| (k.clone(), r.clone()))
                        .collect(),
                    seen: m.eval.seen().iter().map(|(k, t)| (k.clone(), *t)).collect(),
                    notified: m
                        .notified
                        .iter()
                        .map(|(k, n)| (k.clone(), n.clone()))
                        .collect(),
                    am_refreshed: m.am_refreshed,
                    unevaluated: m.unevaluated.clone(),
                },
            );
        }
        self.saved
            .monitors
            .retain(|name, _| self.monitors.contains_key(name));
        let path = self.options.dir.join("state.json");
        let written = serde_json::to_vec(&self.saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(e) = written {
            tracing::error!(error = %e, file = %path.display(), "cannot save the monitor state");
        }
    }

    /// Every monitor's status.
    pub fn status(
        &self,
        now: i64,
        watermark: impl Fn(i64, bool) -> Option<i64>,
    ) -> Vec<MonitorStatus> {
        self.monitors
            .values()
            .map(|m| {
                let spec = &m.eval.spec;
                let mut alerts: Vec<AlertStatus> = m
                    .eval
                    .groups
                    .iter()
                    .filter_map(|(key, record)| {
                        let (state, level, since) = match record.state {
                            GroupState::Pending { since, .. } => ("pending", None, since),
                            GroupState::Firing { since, level, .. } => {
                                ("firing", Some(level), since)
                            }
                            GroupState::Ok => return None,
                        };
                        Some(AlertStatus {
                            group: m.eval.group_map(key),
                            state: state.to_owned(),
                            level,
                            since,
                            value: record.value,
                        })
                    })
                    .collect();
                if let Some(unevaluated) = &m.unevaluated {
                    for alert in &mut alerts {
                        alert.state = unevaluated.name().to_owned();
                    }
                    if alerts.is_empty() {
                        alerts.push(AlertStatus {
                            group: BTreeMap::new(),
                            state: unevaluated.name().to_owned(),
                            level: None,
                            since: unevaluated.since(),
                            value: None,
                        });
                    }
                }
                alerts.sort_by(|a, b| a.group.cmp(&b.group));
                let delay = spec.delay.unwrap_or(self.options.delay);
                let until = match spec.kind {
                    Kind::Absence { .. } => Some(now - delay),
                    _ => watermark(delay, m.eval.streamed()),
                };
                let behind = until.map_or(0, |w| (w - m.eval.next_eval).max(0));
                MonitorStatus {
                    name: spec.name.clone(),
                    enabled: spec.enabled,
                    query: spec.query_text.clone(),
                    health: m.eval.health.clone(),
                    next_evaluation: m.eval.next_eval,
                    no_data: spec.enabled
                        && matches!(m.unevaluated, Some(Unevaluated::NoData { .. })),
                    behind_micros: behind,
                    alerts,
                    source: spec.source.file.as_ref().map_or_else(
                        || "api".to_owned(),
                        |f| format!("{}:{}", f.display(), spec.source.line),
                    ),
                }
            })
            .collect()
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

/// A stable digest of what decides a monitor's evaluation: a changed query, window or
/// condition restarts it; a changed message or channel does not.
fn fingerprint(spec: &MonitorSpec) -> String {
    let text = format!(
        "{}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}\u{0}{:?}",
        spec.query_text,
        spec.window,
        spec.every,
        spec.kind,
        spec.alert,
        spec.warn,
        spec.recover,
        spec.pending_for,
        spec.keep_firing_for,
        spec.max_groups,
        spec.active
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The search of a query: the text before its first `|` outside quotes.
fn search_part(query: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in query.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '|' if !quoted => return &query[..i],
            _ => {}
        }
    }
    query
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Up to three events of the group in the window, newest first, as stored (redacted).
/// Sample events from the store for the first firing alerts the stream kept none for (a
/// monitor not fed by the stream, a window older than its cut, a group beyond the feed's
/// sample budget), [`STORE_SAMPLED_ALERTS`] at most: each is a query.
fn sample_from_store(alerts: &mut [Alert], engine: &QueryEngine, spec: &MonitorSpec, at: i64) {
    let lacking = alerts
        .iter_mut()
        .filter(|a| a.status == Status::Firing && a.samples.is_empty());
    for alert in lacking.take(STORE_SAMPLED_ALERTS) {
        alert.samples = samples(engine, spec, &alert.group, at - spec.window, at);
    }
}

fn samples(
    engine: &QueryEngine,
    spec: &MonitorSpec,
    group: &BTreeMap<String, String>,
    from: i64,
    to: i64,
) -> Vec<serde_json::Value> {
    let mut terms: Vec<Expr> = spec.query.filter.iter().cloned().collect();
    for (name, value) in group {
        let Ok(field) = Field::resolve(name, 0) else {
            return Vec::new();
        };
        terms.push(Expr::Match {
            field,
            pattern: Pattern::Exact(value.clone()),
        });
    }
    let query = Query {
        filter: (!terms.is_empty()).then_some(Expr::And(terms)),
        pipes: Vec::new(),
    };
    let options = CompileOptions {
        from_micros: Some(from),
        to_micros: Some(to),
        ..CompileOptions::default()
    };
    let compiled = compile_search(&query, &DataFusionDialect, &options, None, 3);
    let Ok(batches) = engine.query(&compiled) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for batch in &batches {
        let Some(column) = batch.column_by_name("event") else {
            continue;
        };
        let Ok(text) = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8) else {
            continue;
        };
        let text = arrow::array::AsArray::as_string::<i32>(&text);
        for i in 0..arrow::array::Array::len(text) {
            if let Ok(value) = serde_json::from_str(text.value(i)) {
                out.push(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_search_and_add_the_group() {
        assert_eq!(search_part("code:403 | stats count() by user"), "code:403 ");
        assert_eq!(search_part("ua:\"a|b\" | stats count()"), "ua:\"a|b\" ");
        assert_eq!(percent_encode("a b:\"c\""), "a%20b%3A%22c%22");
    }
}

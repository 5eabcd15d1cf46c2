//! Monitor and channel definitions, read from YAML with the line of every problem.
//!
//! A file holds a list of monitors, one monitor, or a mapping with `monitors:` and `channels:`
//! lists (the serve config; its other keys are left to the server). Every problem is a
//! [`Problem`] with the file, the line, the monitor and the key, and the fix; a bad monitor is
//! left out and the others load, so one typo never stops the server or its other monitors.
//! Keys are documented in `docs/monitors.md`.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use kubetrail_policy::yaml::{self, Key, Line, Node};
use kubetrail_query::{Query, QueryLimits, parse_duration_micros, parse_with};

use crate::calendar::{Calendar, TimeInterval};
use crate::condition::Comparison;

/// What a monitor compares its value against.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The aggregate of the window itself.
    Threshold,
    /// The difference with the same window `offset` ago (`change:`).
    Change {
        /// How far back, µs.
        offset: i64,
    },
    /// The difference with the same window `offset` ago, in percent of the past value
    /// (`pct_change:`).
    PctChange {
        /// How far back, µs.
        offset: i64,
    },
    /// The group's first appearance after a learning period taken from history (`new_value:`).
    NewValue {
        /// How much history defines the known groups, µs.
        learning: i64,
    },
    /// No events for the window (`absence: 10m` sets it) from a group that sent some within
    /// the day before.
    Absence {
        /// How far back groups are known from, µs (a day).
        lookback: i64,
    },
    /// Deviation from a seasonal baseline of the same monitor's history (`anomaly:`).
    Anomaly(AnomalySpec),
}

/// The anomaly baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySpec {
    /// How much history the baseline is built from, µs.
    pub baseline: i64,
    /// How windows are matched with their past: same hour of the week, of the day, or any.
    pub seasonality: Seasonality,
    /// How many (scaled) median absolute deviations above the median a value must be.
    pub deviations: f64,
    /// Which direction is anomalous.
    pub direction: Direction,
}

/// Seasonality of an anomaly baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seasonality {
    /// Same hour of the same weekday.
    HourOfWeek,
    /// Same hour of any day.
    HourOfDay,
    /// Every past window.
    None,
}

/// Which side of the baseline is anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above.
    Above,
    /// Below.
    Below,
    /// Either.
    Both,
}

/// How bad a firing monitor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// For information.
    Info,
    /// Should be looked at.
    Warning,
    /// Page someone.
    Critical,
}

impl Severity {
    /// The name used in files and payloads.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One monitor.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The query text.
    pub query_text: String,
    /// The parsed query.
    pub query: Query,
    /// The evaluation window, µs.
    pub window: i64,
    /// How often it is evaluated, µs.
    pub every: i64,
    /// What it compares against.
    pub kind: Kind,
    /// The alert condition.
    pub alert: Comparison,
    /// The weaker warning condition.
    pub warn: Option<Comparison>,
    /// The recovery condition (hysteresis); without it, recovery is the alert and warning
    /// conditions no longer holding.
    pub recover: Option<Comparison>,
    /// How long a condition must hold before firing, µs.
    pub pending_for: i64,
    /// How long an alert keeps firing after its condition stops holding, µs.
    pub keep_firing_for: i64,
    /// Severity of the alert level (the warning level is always `warning`).
    pub severity: Severity,
    /// Channel names.
    pub notify: Vec<String>,
    /// Title template.
    pub title: Option<String>,
    /// Message template.
    pub message: Option<String>,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// The most groups it may track; beyond, it goes to the Error state and says so.
    pub max_groups: usize,
    /// How long after firing it notifies again while still firing, µs (0: never).
    pub renotify: i64,
    /// How long after a window's end the window is evaluated, µs: waits for late events.
    pub delay: Option<i64>,
    /// How long the ingest watermark may stay behind the next window before the monitor's
    /// groups go to the NoData state, µs (None: the window, at least 5 minutes).
    pub no_data_after: Option<i64>,
    /// Only evaluated inside these intervals (none: always).
    pub active: Calendar,
    /// Notifications held inside these intervals.
    pub mute: Calendar,
    /// Where it was defined.
    pub source: Source,
}

/// Where a definition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file (None for the API's monitors read from a request).
    pub file: Option<PathBuf>,
    /// The line of its first key.
    pub line: Line,
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    /// Its name, as monitors' `notify:` write it.
    pub name: String,
    /// What it talks to.
    pub kind: ChannelKind,
    /// The URL (webhooks) or the file path (`file`).
    pub target: String,
    /// A secret: the webhook's HMAC key, PagerDuty's routing key.
    pub secret: Option<String>,
    /// Where it was defined.
    pub source: Source,
}

/// The channel types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A generic webhook receiving Alertmanager's webhook (v4) payload.
    Webhook,
    /// Alertmanager's API v2.
    Alertmanager,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams workflow webhook (Adaptive Card).
    Teams,
    /// PagerDuty Events API v2.
    PagerDuty,
    /// A JSON-lines file.
    File,
}

impl ChannelKind {
    /// The `type:` name.
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Alertmanager => "alertmanager",
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::PagerDuty => "pagerduty",
            ChannelKind::File => "file",
        }
    }
}

/// A problem in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: Option<PathBuf>,
    /// The line.
    pub line: Line,
    /// The monitor or channel it belongs to, when known.
    pub name: Option<String>,
    /// The key, when the problem is one key's.
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}: ", file.display(), self.line)?,
            None => write!(f, "line {}: ", self.line)?,
        }
        if let Some(name) = &self.name {
            write!(f, "{name}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What a file defined.
#[derive(Debug, Default)]
pub struct Definitions {
    /// The monitors that are valid.
    pub monitors: Vec<MonitorSpec>,
    /// The channels that are valid.
    pub channels: Vec<ChannelSpec>,
    /// Every problem.
    pub problems: Vec<Problem>,
}

impl Definitions {
    /// Adds another file's definitions; a name defined twice is a problem and the later one is
    /// left out.
    pub fn extend(&mut self, other: Definitions) {
        for monitor in other.monitors {
            if self.monitors.iter().any(|m| m.name == monitor.name) {
                self.problems.push(Problem {
                    file: monitor.source.file.clone(),
                    line: monitor.source.line,
                    name: Some(monitor.name.clone()),
                    key: Some("name".into()),
                    message: "another monitor has this name: names must be unique".into(),
                });
            } else {
                self.monitors.push(monitor);
            }
        }
        self.channels.extend(other.channels);
        self.problems.extend(other.problems);
    }

    /// Checks that every monitor's `notify:` names a channel; a monitor naming an unknown one
    /// is a problem and is left out.
    pub fn check_channels(&mut self) {
        let known: HashSet<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
        let mut problems = Vec::new();
        self.monitors.retain(|m| {
            let unknown: Vec<&String> = m
                .notify
                .iter()
                .filter(|n| !known.contains(n.as_str()))
                .collect();
            if unknown.is_empty() {
                return true;
            }
            let mut names: Vec<&str> = known.iter().copied().collect();
            names.sort_unstable();
            problems.push(Problem {
                file: m.source.file.clone(),
                line: m.source.line,
                name: Some(m.name.clone()),
                key: Some("notify".into()),
                message: format!(
                    "no channel is named {}: define it under `channels:` ({})",
                    unknown
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if names.is_empty() {
                        "there are none".to_owned()
                    } else {
                        format!("known: {}", names.join(", "))
                    }
                ),
            });
            false
        });
        self.problems.extend(problems);
    }
}

/// Reads a file of definitions.
pub fn load_file(path: &Path) -> Definitions {
    read_path(path, false)
}

/// Reads definitions from YAML text (`file` names it in problems).
pub fn parse(text: &str, file: Option<&Path>) -> Definitions {
    read(text, file, false)
}

/// Reads the `monitors:` and `channels:` sections of a serve configuration file.
pub fn load_serve_config(path: &Path) -> Definitions {
    read_path(path, true)
}

fn read_path(path: &Path, sections_only: bool) -> Definitions {
    match std::fs::read_to_string(path) {
        Ok(text) => read(&text, Some(path), sections_only),
        Err(e) => Definitions {
            problems: vec![Problem {
                file: Some(path.to_owned()),
                line: 1,
                name: None,
                key: None,
                message: format!("cannot read: {e}"),
            }],
            ..Definitions::default()
        },
    }
}

fn read(text: &str, file: Option<&Path>, sections_only: bool) -> Definitions {
    let mut reader = Reader {
        file: file.map(Path::to_owned),
        problems: Vec::new(),
        name: None,
    };
    let mut out = Definitions::default();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err((line, message)) => {
            reader.problem(line, None, format!("not valid YAML: {message}"));
            out.problems = reader.problems;
            return out;
        }
    };
    let (monitors, channels) = match &root {
        Node::Seq(_) if !sections_only => (Some(&root), None),
        Node::Map(entries) if entries.iter().any(|(k, _)| k.name == "query") => (Some(&root), None),
        Node::Map(entries) => {
            let find = |name: &str| entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
            (find("monitors"), find("channels"))
        }
        Node::Null(_) => (None, None),
        other => {
            reader.problem(
                other.line(),
                None,
                format!(
                    "expected a list of monitors, a monitor, or `monitors:` and `channels:`, found {}",
                    other.kind()
                ),
            );
            (None, None)
        }
    };
    let mut names = BTreeSet::new();
    for node in items(monitors) {
        reader.name = None;
        if let Some(monitor) = reader.monitor(node)
            && !reader.duplicate(&mut names, &monitor.name, monitor.source.line)
        {
            out.monitors.push(monitor);
        }
    }
    let mut channel_names = BTreeSet::new();
    for node in items(channels) {
        reader.name = None;
        if let Some(channel) = reader.channel(node)
            && !reader.duplicate(&mut channel_names, &channel.name, channel.source.line)
        {
            out.channels.push(channel);
        }
    }
    out.problems = reader.problems;
    out
}

/// The entries of a list, or the one mapping given instead of a list.
fn items(node: Option<&Node>) -> Vec<&Node> {
    match node {
        Some(Node::Seq(items)) => items.iter().collect(),
        Some(map @ Node::Map(_)) => vec![map],
        _ => Vec::new(),
    }
}

struct Reader {
    file: Option<PathBuf>,
    problems: Vec<Problem>,
    /// The monitor or channel being read.
    name: Option<String>,
}

/// A mapping's keys, each taken at most once; what is left are unknown keys.
struct Fields<'n> {
    entries: Vec<(&'n Key, &'n Node)>,
    line: Line,
}

impl<'n> Fields<'n> {
    fn take(&mut self, name: &str) -> Option<(&'n Key, &'n Node)> {
        let at = self.entries.iter().position(|(k, _)| k.name == name)?;
        Some(self.entries.remove(at))
    }
}

impl Reader {
    fn problem(&mut self, line: Line, key: Option<&str>, message: String) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            name: self.name.clone(),
            key: key.map(str::to_owned),
            message,
        });
    }

    fn duplicate(&mut self, seen: &mut BTreeSet<String>, name: &str, line: Line) -> bool {
        if seen.insert(name.to_owned()) {
            return false;
        }
        self.problem(
            line,
            Some("name"),
            "defined twice in this file: names must be unique".into(),
        );
        true
    }

    fn fields<'n>(&mut self, node: &'n Node, what: &str) -> Option<Fields<'n>> {
        let Node::Map(entries) = node else {
            self.problem(
                node.line(),
                None,
                format!("a {what} is a mapping of keys, found {}", node.kind()),
            );
            return None;
        };
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        for (key, value) in entries {
            if seen.insert(key.name.as_str()) {
                fields.push((key, value));
            } else {
                self.problem(key.line, Some(&key.name), "given twice: keep one".into());
            }
        }
        Some(Fields {
            entries: fields,
            line: node.line(),
        })
    }

    fn unknown(&mut self, fields: Fields<'_>, known: &[&str]) -> bool {
        let any = !fields.entries.is_empty();
        for (key, _) in fields.entries {
            let hint = known
                .iter()
                .find(|k| similar(k, &key.name))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            self.problem(
                key.line,
                Some(&key.name),
                format!("unknown key{hint}; the keys are {}", known.join(", ")),
            );
        }
        any
    }

    fn string(&mut self, field: Option<(&Key, &Node)>) -> Option<(String, Line)> {
        let (key, node) = field?;
        match node {
            Node::Str(s, l) | Node::Number(s, l) => Some((s.clone(), *l)),
            other => {
                self.problem(
                    key.line,
                    Some(&key.name),
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A duration, None when absent or wrong (a problem is recorded).
    fn duration(&mut self, field: Option<(&Key, &Node)>, minimum: i64) -> Option<i64> {
        let name = field.map(|(k, _)| k.name.clone()).unwrap_or_default();
        let (text, line) = self.string(field)?;
        match parse_duration_micros(text.trim()) {
            Some(d) if d >= minimum => Some(d),
            Some(_) => {
                self.problem(
                    line,
                    Some(&name),
                    format!(
                        "{text:?} is too short: at least {}",
                        crate::format_duration(minimum)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    line,
                    Some(&name),
                    format!("{text:?} is not a duration: write e.g. `30s`, `5m`, `2h`, `7d`"),
                );
                None
            }
        }
    }

    fn bool(&mut self, field: Option<(&Key, &Node)>, default: bool) -> bool {
        match field {
            None => default,
            Some((_, Node::Bool(b, _))) => *b,
            Some((key, other)) => {
                self.problem(
                    key.line,
                    Some(&key.name),
                    format!("expected true or false, found {}", other.kind()),
                );
                default
            }
        }
    }

    fn strings(&mut self, field: Option<(&Key, &Node)>) -> Vec<String> {
        let Some((key, node)) = field else {
            return Vec::new();
        };
        match node {
            Node::Str(s, _) => vec![s.clone()],
            Node::Seq(items) => items
                .iter()
                .filter_map(|item| match item {
                    Node::Str(s, _) | Node::Number(s, _) => Some(s.clone()),
                    other => {
                        self.problem(
                            other.line(),
                            Some(&key.name),
                            format!("expected a list of strings, found {}", other.kind()),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.problem(
                    key.line,
                    Some(&key.name),
                    format!("expected a list of strings, found {}", other.kind()),
                );
                Vec::new()
            }
        }
    }

    /// A condition, None when absent or wrong (a problem is recorded).
    fn comparison(&mut self, field: Option<(&Key, &Node)>) -> Option<Comparison> {
        let name = field.map(|(k, _)| k.name.clone()).unwrap_or_default();
        let (text, line) = self.string(field)?;
        match Comparison::parse(&text) {
            Ok(c) => Some(c),
            Err(message) => {
                self.problem(line, Some(&name), message);
                None
            }
        }
    }

    /// The `name:` of a monitor or channel, which later problems are reported under.
    fn name(&mut self, f: &mut Fields<'_>, what: &str) -> String {
        let name = match self.string(f.take("name")) {
            Some((name, l)) => {
                if !valid_name(&name) {
                    self.problem(
                        l,
                        Some("name"),
                        format!("{name:?}: use letters, digits, `-`, `_` and `.` (at most 100)"),
                    );
                }
                name
            }
            None => {
                self.problem(f.line, Some("name"), format!("every {what} needs a name"));
                String::new()
            }
        };
        self.name = Some(name.clone());
        name
    }

    fn monitor(&mut self, node: &Node) -> Option<MonitorSpec> {
        let merged;
        let node = match self.expand_pack(node) {
            Ok(Some(from_pack)) => {
                merged = from_pack;
                &merged
            }
            Ok(None) => node,
            Err(()) => return None,
        };
        let mut f = self.fields(node, "monitor")?;
        let line = f.line;
        let before = self.problems.len();
        let name = self.name(&mut f, "monitor");
        let description = self.string(f.take("description")).unwrap_or_default().0;
        let query_field = f.take("query");
        let query_line = query_field.map_or(line, |(k, _)| k.line);
        let (query_text, query) = match self.string(query_field) {
            Some((text, l)) => match parse_with(&text, &QueryLimits::default()).and_then(|q| {
                let options = kubetrail_query::CompileOptions::default();
                kubetrail_query::compile_partials(
                    &q,
                    &kubetrail_query::DataFusionDialect,
                    &options,
                    60_000_000,
                )
                .map(|_| q)
            }) {
                Ok(query) => (text, Some(query)),
                Err(e) => {
                    self.problem(
                        l,
                        Some("query"),
                        format!("{} (at character {})", e.message, e.position + 1),
                    );
                    (text, None)
                }
            },
            None => {
                self.problem(
                    query_line,
                    Some("query"),
                    "every monitor needs a query, e.g. `code:403 | stats count() by user`".into(),
                );
                (String::new(), None)
            }
        };
        let window = self.duration(f.take("window"), 1_000_000);
        let every = self.duration(f.take("every"), 1_000_000);
        let alert_field = f.take("alert");
        let alert_line = alert_field.map(|(k, _)| k.line);
        let alert_given = alert_field.is_some();
        let alert = self.comparison(alert_field);
        let warn = self.comparison(f.take("warn"));
        let recover_field = f.take("recover");
        let recover_line = recover_field.map(|(k, _)| k.line);
        let recover = self.comparison(recover_field);
        let pending_for = self.duration(f.take("for"), 0).unwrap_or(0);
        let keep_firing_for = self.duration(f.take("keep_firing_for"), 0).unwrap_or(0);
        let severity = match self.string(f.take("severity")) {
            None => Severity::Warning,
            Some((s, l)) => match s.as_str() {
                "info" => Severity::Info,
                "warning" => Severity::Warning,
                "critical" => Severity::Critical,
                _ => {
                    self.problem(
                        l,
                        Some("severity"),
                        format!("{s:?}: write info, warning or critical"),
                    );
                    Severity::Warning
                }
            },
        };
        let notify = self.strings(f.take("notify"));
        let title = self.template(f.take("title"), query.as_ref());
        let message = self.template(f.take("message"), query.as_ref());
        let enabled = self.bool(f.take("enabled"), true);
        let max_groups = match f.take("max_groups") {
            None => 1000,
            Some((_, Node::Number(n, l))) => match n.parse::<usize>() {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    self.problem(
                        *l,
                        Some("max_groups"),
                        "a whole number from 1 to 100000".into(),
                    );
                    1000
                }
            },
            Some((k, other)) => {
                self.problem(
                    k.line,
                    Some("max_groups"),
                    format!("expected a number, found {}", other.kind()),
                );
                1000
            }
        };
        let renotify = self.duration(f.take("renotify"), 60_000_000).unwrap_or(0);
        let delay = self.duration(f.take("delay"), 0);
        let no_data_after = self.duration(f.take("no_data_after"), 1_000_000);
        let active = self.calendar(f.take("active"));
        let mute = self.calendar(f.take("mute"));
        let window_given = window.is_some();
        let (kind, silence) = self.kind(&mut f).unzip();
        self.unknown(f, MONITOR_KEYS);
        if window_given && silence.flatten().is_some() {
            self.problem(
                line,
                Some("window"),
                "an absence monitor's window is its `absence:` duration: remove `window:`".into(),
            );
        }
        let window = silence.flatten().or(window).unwrap_or(5 * 60_000_000);
        let every = every.unwrap_or(60_000_000.min(window));
        if window % every != 0 && every % window != 0 && window / gcd(window, every) > 10_000 {
            self.problem(
                line,
                Some("every"),
                "window and every must share a step of at least 1/10000 of the window: use round durations".into(),
            );
        }
        let kind = kind.unwrap_or(Kind::Threshold);
        let implicit = matches!(
            kind,
            Kind::NewValue { .. } | Kind::Absence { .. } | Kind::Anomaly(_)
        );
        let alert = match (alert, implicit) {
            _ if alert_given && alert.is_none() => None,
            (Some(_), true) => {
                self.problem(
                    alert_line.unwrap_or(line),
                    Some("alert"),
                    "new_value, absence and anomaly monitors decide by themselves when to fire: remove `alert:`".into(),
                );
                None
            }
            (None, true) => Some(Comparison::parse("> 0").ok()?),
            (Some(a), false) => Some(a),
            (None, false) => {
                self.problem(
                    line,
                    Some("alert"),
                    "a threshold or change monitor needs an alert condition, e.g. `alert: '> 50'`"
                        .into(),
                );
                None
            }
        };
        if let (Some(alert), Some(recover)) = (alert, recover)
            && let Some(both) = alert.overlap(&recover)
        {
            self.problem(
                recover_line.unwrap_or(line),
                Some("recover"),
                format!(
                    "overlaps the alert condition `{alert}` (a value of {both} satisfies both): the recovery must be the other side of the threshold, e.g. `{}`",
                    suggest_recovery(&alert)
                ),
            );
        }
        if let (Some(alert), Some(warn)) = (alert, warn)
            && alert.op != warn.op
        {
            self.problem(
                line,
                Some("warn"),
                format!("use the same operator as the alert condition `{alert}`, with a threshold the alert's would reach later"),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(MonitorSpec {
            name,
            description,
            query_text,
            query: query?,
            window,
            every,
            kind,
            alert: alert?,
            warn,
            recover,
            pending_for,
            keep_firing_for,
            severity,
            notify,
            title,
            message,
            enabled,
            max_groups,
            renotify,
            delay,
            no_data_after,
            active,
            mute,
            source: Source {
                file: self.file.clone(),
                line,
            },
        })
    }

    /// The kind of condition, and for `absence` the silence that counts.
    /// `- pack: NAME` with keys beside it: the pack's monitor with those keys replaced.
    fn expand_pack(&mut self, node: &Node) -> Result<Option<Node>, ()> {
        let Node::Map(entries) = node else {
            return Ok(None);
        };
        let Some((key, value)) = entries.iter().find(|(k, _)| k.name == "pack") else {
            return Ok(None);
        };
        let name = match value {
            Node::Str(name, _) => name.clone(),
            other => {
                self.problem(
                    key.line,
                    Some("pack"),
                    format!("expected a name, found {}", other.kind()),
                );
                return Err(());
            }
        };
        self.name = Some(name.clone());
        let Some(base) = pack_monitor(&name) else {
            self.problem(
                key.line,
                Some("pack"),
                format!(
                    "the pack has no monitor {name:?}; it has {}",
                    pack_names().join(", ")
                ),
            );
            return Err(());
        };
        // The pack's keys are reported at the `pack:` line of the file that uses them.
        let Node::Map(mut merged) = relined(&base, key.line) else {
            return Err(());
        };
        for (k, v) in entries.iter().filter(|(k, _)| k.name != "pack") {
            match merged.iter_mut().find(|(m, _)| m.name == k.name) {
                Some(slot) => *slot = (k.clone(), v.clone()),
                None => merged.push((k.clone(), v.clone())),
            }
        }
        Ok(Some(Node::Map(merged)))
    }

    fn kind(&mut self, f: &mut Fields<'_>) -> Option<(Kind, Option<i64>)> {
        let mut kinds = Vec::new();
        if let Some(offset) = self.duration(f.take("change"), 60_000_000) {
            kinds.push(Kind::Change { offset });
        }
        if let Some(offset) = self.duration(f.take("pct_change"), 60_000_000) {
            kinds.push(Kind::PctChange { offset });
        }
        if let Some(learning) = self.duration(f.take("new_value"), 0) {
            kinds.push(Kind::NewValue { learning });
        }
        let mut silence = None;
        if let Some(field) = f.take("absence") {
            silence = self.duration(Some(field), 60_000_000);
            kinds.push(Kind::Absence {
                lookback: ABSENCE_LOOKBACK,
            });
        }
        if let Some((_, node)) = f.take("anomaly")
            && let Some(spec) = self.anomaly(node)
        {
            kinds.push(Kind::Anomaly(spec));
        }
        if kinds.len() > 1 {
            self.problem(
                f.line,
                None,
                "change, pct_change, new_value, absence and anomaly exclude each other: keep one"
                    .into(),
            );
        }
        kinds.into_iter().next().map(|kind| (kind, silence))
    }

    fn anomaly(&mut self, node: &Node) -> Option<AnomalySpec> {
        let mut f = self.fields(node, "anomaly baseline")?;
        let baseline = self
            .duration(f.take("baseline"), 86_400_000_000)
            .unwrap_or(14 * 86_400_000_000);
        let seasonality = match self.string(f.take("seasonality")) {
            None => Seasonality::HourOfWeek,
            Some((s, l)) => match s.as_str() {
                "hour_of_week" => Seasonality::HourOfWeek,
                "hour_of_day" => Seasonality::HourOfDay,
                "none" => Seasonality::None,
                _ => {
                    self.problem(
                        l,
                        Some("seasonality"),
                        format!("{s:?}: write hour_of_week, hour_of_day or none"),
                    );
                    return None;
                }
            },
        };
        let deviations = match f.take("deviations") {
            None => 4.0,
            Some((_, Node::Number(n, l))) => match n.parse::<f64>() {
                Ok(d) if d > 0.0 && d <= 100.0 => d,
                _ => {
                    self.problem(*l, Some("deviations"), "a number above 0".into());
                    return None;
                }
            },
            Some((k, other)) => {
                self.problem(
                    k.line,
                    Some("deviations"),
                    format!("expected a number, found {}", other.kind()),
                );
                return None;
            }
        };
        let direction = match self.string(f.take("direction")) {
            None => Direction::Above,
            Some((s, l)) => match s.as_str() {
                "above" => Direction::Above,
                "below" => Direction::Below,
                "both" => Direction::Both,
                _ => {
                    self.problem(
                        l,
                        Some("direction"),
                        format!("{s:?}: write above, below or both"),
                    );
                    return None;
                }
            },
        };
        if self.unknown(f, &["baseline", "seasonality", "deviations", "direction"]) {
            return None;
        }
        Some(AnomalySpec {
            baseline,
            seasonality,
            deviations,
            direction,
        })
    }

    fn template(&mut self, field: Option<(&Key, &Node)>, query: Option<&Query>) -> Option<String> {
        let name = field.map(|(k, _)| k.name.clone()).unwrap_or_default();
        let (text, line) = self.string(field)?;
        let by: Vec<String> = match query.map(|q| q.pipes.as_slice()) {
            Some([kubetrail_query::Pipe::Stats { by, .. }]) => {
                by.iter().map(|f| f.display_name()).collect()
            }
            _ => Vec::new(),
        };
        if let Err(message) = crate::template::check(&text, &by) {
            self.problem(line, Some(&name), message);
        }
        Some(text)
    }

    fn calendar(&mut self, field: Option<(&Key, &Node)>) -> Calendar {
        let Some((key, node)) = field else {
            return Calendar::default();
        };
        let mut intervals = Vec::new();
        for item in items(Some(node)) {
            match TimeInterval::from_yaml(item) {
                Ok(interval) => intervals.push(interval),
                Err((line, message)) => self.problem(line, Some(&key.name), message),
            }
        }
        Calendar { intervals }
    }

    fn channel(&mut self, node: &Node) -> Option<ChannelSpec> {
        let mut f = self.fields(node, "channel")?;
        let line = f.line;
        let before = self.problems.len();
        let name = self.name(&mut f, "channel");
        let kind = match self.string(f.take("type")) {
            Some((t, l)) => {
                match t.as_str() {
                    "webhook" => Some(ChannelKind::Webhook),
                    "alertmanager" => Some(ChannelKind::Alertmanager),
                    "slack" => Some(ChannelKind::Slack),
                    "teams" => Some(ChannelKind::Teams),
                    "pagerduty" => Some(ChannelKind::PagerDuty),
                    "file" => Some(ChannelKind::File),
                    _ => {
                        self.problem(
                        l,
                        Some("type"),
                        format!("{t:?}: write webhook, alertmanager, slack, teams, pagerduty or file"),
                    );
                        None
                    }
                }
            }
            None => {
                self.problem(line, Some("type"), "every channel needs a type".into());
                None
            }
        };
        let url = self.string(f.take("url"));
        let path = self.string(f.take("path"));
        let secret = self.secret(&mut f);
        self.unknown(f, CHANNEL_KEYS);
        let kind = kind?;
        let target = match (kind, url, path) {
            (ChannelKind::File, _, Some((path, _))) => path,
            (ChannelKind::File, _, None) => {
                self.problem(line, Some("path"), "a file channel needs `path:`".into());
                String::new()
            }
            (ChannelKind::PagerDuty, None, _) => {
                "https://events.pagerduty.com/v2/enqueue".to_owned()
            }
            (_, Some((url, l)), _) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.problem(
                        l,
                        Some("url"),
                        format!("{url:?}: an http:// or https:// URL"),
                    );
                }
                url
            }
            (_, None, _) => {
                self.problem(
                    line,
                    Some("url"),
                    format!("a {} channel needs `url:`", kind.name()),
                );
                String::new()
            }
        };
        if kind == ChannelKind::PagerDuty && secret.is_none() {
            self.problem(
                line,
                Some("routing_key"),
                "a pagerduty channel needs `routing_key:` (or `routing_key_file:`)".into(),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(ChannelSpec {
            name,
            kind,
            target,
            secret,
            source: Source {
                file: self.file.clone(),
                line,
            },
        })
    }

    /// `routing_key`/`hmac_secret`, inline or from a file (`…_file`) or the environment
    /// (`…_env`): secrets are better kept out of the file.
    fn secret(&mut self, f: &mut Fields<'_>) -> Option<String> {
        for base in ["routing_key", "hmac_secret"] {
            if let Some((value, _)) = self.string(f.take(base)) {
                return Some(value);
            }
            let file_key = format!("{base}_file");
            if let Some((path, l)) = self.string(f.take(&file_key)) {
                return match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text.trim().to_owned()),
                    Err(e) => {
                        self.problem(l, Some(&file_key), format!("cannot read {path}: {e}"));
                        None
                    }
                };
            }
            let env_key = format!("{base}_env");
            if let Some((var, l)) = self.string(f.take(&env_key)) {
                return match std::env::var(&var) {
                    Ok(value) => Some(value.trim().to_owned()),
                    Err(_) => {
                        self.problem(l, Some(&env_key), format!("the variable {var} is not set"));
                        None
                    }
                };
            }
        }
        None
    }
}

/// How far back an absence monitor knows the groups that should be sending: a day, so a
/// cluster that went quiet overnight is still missed in the morning.
pub const ABSENCE_LOOKBACK: i64 = 86_400_000_000;

/// The bundled monitors (`pack/monitors.yaml`), used by name.
pub const PACK: &str = include_str!("../pack/monitors.yaml");

fn pack_nodes() -> Vec<Node> {
    match yaml::parse(PACK) {
        Ok(Node::Seq(items)) => items,
        _ => Vec::new(),
    }
}

fn pack_name(node: &Node) -> Option<&str> {
    let Node::Map(entries) = node else {
        return None;
    };
    entries.iter().find_map(|(k, v)| match v {
        Node::Str(name, _) if k.name == "name" => Some(name.as_str()),
        _ => None,
    })
}

/// The names of the pack's monitors.
pub fn pack_names() -> Vec<String> {
    pack_nodes()
        .iter()
        .filter_map(|n| pack_name(n).map(str::to_owned))
        .collect()
}

fn pack_monitor(name: &str) -> Option<Node> {
    pack_nodes()
        .into_iter()
        .find(|n| pack_name(n) == Some(name))
}

/// `node` with every line set to `line`.
fn relined(node: &Node, line: Line) -> Node {
    match node {
        Node::Map(entries) => Node::Map(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.name.clone(),
                            line,
                        },
                        relined(v, line),
                    )
                })
                .collect(),
        ),
        Node::Seq(items) => Node::Seq(items.iter().map(|i| relined(i, line)).collect()),
        Node::Str(s, _) => Node::Str(s.clone(), line),
        Node::Bool(b, _) => Node::Bool(*b, line),
        Node::Number(n, _) => Node::Number(n.clone(), line),
        Node::Null(_) => Node::Null(line),
    }
}

/// Every key of a monitor.
pub const MONITOR_KEYS: &[&str] = &[
    "name",
    "description",
    "query",
    "window",
    "every",
    "alert",
    "warn",
    "recover",
    "for",
    "keep_firing_for",
    "severity",
    "notify",
    "title",
    "message",
    "enabled",
    "max_groups",
    "renotify",
    "delay",
    "no_data_after",
    "active",
    "mute",
    "change",
    "pct_change",
    "new_value",
    "absence",
    "anomaly",
];

const CHANNEL_KEYS: &[&str] = &[
    "name",
    "type",
    "url",
    "path",
    "routing_key",
    "routing_key_file",
    "routing_key_env",
    "hmac_secret",
    "hmac_secret_file",
    "hmac_secret_env",
];

/// Whether `name` is a valid monitor or channel name: letters, digits, `-`, `_` and `.`, at
/// most 100 (safe as a file name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Keys one edit apart, or differing only in `-`/`_`/case: probably a typo.
fn similar(known: &str, typed: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    if norm(known) == norm(typed) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (known.chars().collect(), typed.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(row[j] + 1),
            );
        }
        previous = row;
    }
    previous[b.len()] <= 1
}

fn suggest_recovery(alert: &Comparison) -> String {
    use crate::condition::Op;
    let t = alert.threshold;
    let back = if t.abs() >= 10.0 {
        (t * 0.8).round()
    } else {
        t * 0.8
    };
    match alert.op {
        Op::Gt | Op::Ge => format!("< {back}"),
        Op::Lt | Op::Le => format!("> {}", if t == 0.0 { 1.0 } else { t * 1.2 }),
        Op::Eq => format!("!= {t}"),
        Op::Ne => format!("== {t}"),
    }
}

/// Greatest common divisor.
pub fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
- name: forbidden-spike
  query: 'code:403 | stats count() by user'
  window: 5m
  every: 1m
  alert: '> 50'
  recover: '< 40'
  for: 2m
  severity: warning
  notify: [slack-sec]
  message: '{{user}} got {{value}} 403s in 5m'
"#;

    #[test]
    fn a_good_monitor_loads() {
        let defs = parse(GOOD, None);
        assert!(defs.problems.is_empty(), "{:?}", defs.problems);
        let m = &defs.monitors[0];
        assert_eq!(m.name, "forbidden-spike");
        assert_eq!(
            (m.window, m.every, m.pending_for),
            (300_000_000, 60_000_000, 120_000_000)
        );
        assert_eq!(m.alert.to_string(), "> 50");
        assert_eq!(m.source.line, 2);
    }

    #[test]
    fn problems_have_lines_keys_and_fixes() {
        let text = r#"
- name: a
  query: 'code:403 | stats count() by user'
  alert: '> 50'
  recover: '< 60'
  windw: 5m
- name: b
  query: 'code:(403'
  alert: '> 1'
- name: c
  query: 'code:403'
- name: d
  query: 'code:403'
  alert: '> 1'
  change: 1d
  new_value: 7d
- name: ok
  query: 'verb:delete'
  alert: '> 0'
"#;
        let defs = parse(text, Some(Path::new("m.yaml")));
        let text: Vec<String> = defs.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter()
                .any(|p| p.starts_with("m.yaml:5: a: recover: overlaps")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|p| p.starts_with("m.yaml:6: a: windw: unknown key (did you mean `window`?)")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|p| p.starts_with("m.yaml:8: b: query:")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|p| p.starts_with("m.yaml:10: c: alert:")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("d: ") && p.contains("exclude each other")),
            "{text:#?}"
        );
        assert_eq!(defs.monitors.len(), 1);
        assert_eq!(defs.monitors[0].name, "ok");
    }

    #[test]
    fn the_pack_is_valid_and_used_by_name() {
        let all: String = pack_names()
            .iter()
            .map(|n| format!("- pack: {n}\n"))
            .collect();
        let defs = parse(&all, None);
        assert!(defs.problems.is_empty(), "{:?}", defs.problems);
        assert_eq!(defs.monitors.len(), 6);
        let defs = parse(
            "- pack: forbidden-spike\n  alert: '> 200'\n  recover: '< 100'\n- pack: nope\n",
            None,
        );
        assert_eq!(defs.monitors[0].alert.to_string(), "> 200");
        assert_eq!(defs.monitors[0].window, 300_000_000);
        assert!(
            defs.problems[0]
                .to_string()
                .contains("the pack has no monitor \"nope\"")
        );
    }

    #[test]
    fn channels_are_checked() {
        let text = r#"
monitors:
  - name: m
    query: 'code:401'
    alert: '> 5'
    notify: [pager, nowhere]
channels:
  - name: pager
    type: pagerduty
    routing_key: abc
  - name: bad
    type: smoke-signal
"#;
        let mut defs = parse(text, None);
        assert_eq!(defs.channels.len(), 1);
        defs.check_channels();
        assert!(defs.monitors.is_empty());
        let text: Vec<String> = defs.problems.iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|p| p.contains("smoke-signal")), "{text:#?}");
        assert!(
            text.iter()
                .any(|p| p.contains("no channel is named \"nowhere\"")),
            "{text:#?}"
        );
    }
}

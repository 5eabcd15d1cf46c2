//! Evaluating rules on events, one at a time, in the order they happened: the same code for the
//! live stream, a hunt over stored history and a file on the command line.
//!
//! A stateless rule reports every matching, non-exempt event. A threshold rule keeps, per group,
//! the matching events of its window (their times, and the values counted for a distinct count)
//! and reports the group once when it reaches the count; the group is quiet for a window after
//! that, so a storm of 403s is one finding per window, not one per event. State is bounded: a
//! rule keeps at most [`MAX_GROUPS`] groups, and forgets the longest idle ones beyond that.
//!
//! A first-seen rule remembers the tuples of field values its matching events carried and
//! reports an event whose tuple is new, once its learning period (counted in event time from
//! the start of the engine's history) is over; it remembers at most [`MAX_TUPLES`] tuples and
//! forgets those seen longest ago beyond that. A sequence rule keeps, per join key, the
//! partial sequences (the earlier steps that happened, within the span) and reports the event
//! that completes one; it holds at most [`MAX_PARTIAL_SEQUENCES`] partial sequences and drops
//! expired, then the oldest, beyond that. Both are evaluated incrementally, event by event:
//! nothing is ever re-read. [`Engine::learn`] feeds history to them without reporting, so a
//! restarted server does not take every known tuple for new (`docs/detections-stateful.md`).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use kubetrail_event::{AuditEvent, Timestamp};
use kubetrail_query::{
    EventView, Evidence, Expr, Field, FilterIndex, Value, field_value, value_of,
};

/// Maps hashed for every matching event: foldhash, not the standard SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use serde::{Deserialize, Serialize};

use crate::rule::{FirstSeen, Rule, RuleSet, Sequence};
use crate::spec::{Mitre, Severity};

/// The most groups a threshold rule tracks at once.
pub const MAX_GROUPS: usize = 100_000;

/// The most tuples a first-seen rule remembers. Beyond it, the tenth seen longest ago is
/// forgotten, and a forgotten tuple seen again is reported as new: at the bound the rule errs
/// towards reporting, never towards silence.
pub const MAX_TUPLES: usize = 100_000;

/// The most partial sequences (earlier steps waiting for the next one) a sequence rule holds.
/// Beyond it, expired ones are dropped, then the tenth that started longest ago: a sequence
/// whose start was dropped is not reported.
pub const MAX_PARTIAL_SEQUENCES: usize = 100_000;

/// What a rule reports about an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id.
    pub rule: String,
    /// The rule's title.
    pub title: String,
    /// How bad.
    pub severity: Severity,
    /// ATT&CK ids.
    pub mitre: Arc<Mitre>,
    /// The request's audit ID (for a threshold, the event that reached the count).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// When the request was received, RFC 3339.
    pub time: String,
    /// The cluster.
    pub cluster: String,
    /// Who.
    pub user: String,
    /// The verb.
    pub verb: String,
    /// `group/resource[/subresource]`.
    pub resource: String,
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The first source IP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// What matched, in a line: `verb=create, pod.privileged=true`.
    pub explanation: String,
    /// For a threshold: the group's fields and values; for a first-seen rule, the new tuple;
    /// for a sequence, the join fields and values of its last step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<(String, String)>,
    /// For a threshold: how many events (or distinct values) the window held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Rules with their state.
pub struct Engine {
    rules: Vec<Arc<Rule>>,
    /// The rules filed by one equality of their condition: an event is evaluated against the
    /// rules its values select (and those without an equality), not the whole pack.
    index: FilterIndex,
    candidates: Vec<usize>,
    /// The group or tuple key of the event being offered, built in place.
    key: String,
    defaults: Arc<Vec<crate::exemption::Exemption>>,
    windows: FastMap<usize, Windows>,
    tuples: FastMap<usize, Tuples>,
    partials: FastMap<usize, Partials>,
    /// When the engine's history starts (µs): the earliest event offered, or what
    /// [`Engine::history_starts_at`] said. First-seen learning periods count from here.
    history_start: Option<i64>,
}

impl Engine {
    /// An engine over the enabled rules of `set`.
    pub fn new(set: &RuleSet) -> Engine {
        Engine::with_rules(set.enabled().cloned().collect(), set.defaults.clone())
    }

    /// An engine over these rules only (the inline tests run a rule alone).
    pub fn with_rules(rules: Vec<Rule>, defaults: Vec<crate::exemption::Exemption>) -> Engine {
        let rules: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
        Engine {
            index: FilterIndex::new(rules.iter().map(|r| r.matcher.filter())),
            candidates: Vec::new(),
            key: String::new(),
            rules,
            defaults: Arc::new(defaults),
            windows: FastMap::default(),
            tuples: FastMap::default(),
            partials: FastMap::default(),
            history_start: None,
        }
    }

    /// How many rules run.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule runs.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates every rule on `event` from `cluster`, received at `time` (µs; the store's
    /// time when the event has none), and appends the findings to `out`. Events should come
    /// in the order they happened (a little disorder is tolerated): windows, learning periods
    /// and sequence spans are measured in event time.
    pub fn evaluate(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        time: i64,
        out: &mut Vec<Finding>,
    ) {
        self.offer(event, cluster, time, Some(out));
    }

    /// Records `event` in the state of first-seen and sequence rules without reporting
    /// anything: how a caller warms the engine from stored history before evaluating live
    /// events. Feed history oldest first, each event once, then [`Engine::evaluate`] the live
    /// stream with the same engine. A first-seen rule remembers the event's tuple (whether or
    /// not its learning period is over); a sequence rule records its steps, and a completed
    /// sequence is consumed silently (it was reported when it happened). Threshold and
    /// stateless rules ignore learned events.
    pub fn learn(&mut self, event: &AuditEvent<'_>, cluster: &str, time: i64) {
        self.offer(event, cluster, time, None);
    }

    /// Declares that the engine's history starts at `time` (µs) when that is earlier than the
    /// first event offered: first-seen learning periods count from there. A caller that
    /// replays only the events the rules look at (see [`Engine::history_filter`]) passes the
    /// start of the range it read, so that a quiet stretch at its beginning still counts as
    /// learned.
    pub fn history_starts_at(&mut self, time: i64) {
        self.history_start = Some(self.history_start.map_or(time, |s| s.min(time)));
    }

    /// How much history (µs) the stateful rules want replayed through [`Engine::learn`]: the
    /// longest learning period of a first-seen rule and the longest span of a sequence; None
    /// when no rule keeps state worth warming. For first-seen rules, more history than the
    /// learning period is better still: every tuple it holds is one fewer false "new".
    pub fn history_span(&self) -> Option<i64> {
        self.rules
            .iter()
            .filter_map(|r| match (&r.first_seen, &r.sequence) {
                (Some(f), _) => Some(f.learning.max(1)),
                (_, Some(s)) => Some(s.within),
                _ => None,
            })
            .max()
    }

    /// A filter every event a first-seen or sequence rule looks at matches, on cheap columns
    /// (see [`FilterIndex::superset`]): what a caller asks the store for when warming the
    /// engine, the store returning a superset that [`Engine::learn`] then judges. None when
    /// some stateful rule may look at any event (read them all).
    pub fn history_filter(&self) -> Option<Expr> {
        let stateful = self
            .rules
            .iter()
            .filter(|r| r.first_seen.is_some() || r.sequence.is_some());
        FilterIndex::new(stateful.map(|r| r.matcher.filter())).superset()
    }

    /// A filter every event some rule looks at matches, on cheap columns: what a hunt asks
    /// the store for before [`Engine::evaluate`] judges each event read. None when some rule
    /// may look at any event.
    pub fn search_filter(&self) -> Option<Expr> {
        self.index.superset()
    }

    fn offer(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        time: i64,
        mut out: Option<&mut Vec<Finding>>,
    ) {
        // An event without a time (0) says nothing about when the history starts.
        if time > 0 {
            self.history_starts_at(time);
        }
        self.index.candidates(event, cluster, &mut self.candidates);
        // One view for every rule: what one rule reads from the bodies, the next reuses.
        let view = EventView::new(event, cluster);
        for &index in &self.candidates {
            let rule = &self.rules[index];
            if !rule.evaluates(event.stage) {
                continue;
            }
            if let Some(sequence) = &rule.sequence {
                let partials = self.partials.entry(index).or_default();
                partials.offer(
                    rule,
                    sequence,
                    &self.defaults,
                    &view,
                    time,
                    out.as_deref_mut(),
                );
                continue;
            }
            if !rule.matcher.matches_in(&view) || rule.exempts(&self.defaults, event, cluster) {
                continue;
            }
            // What matched, read only for a finding: most matches of stateful rules report
            // nothing.
            let evidence = || rule.matcher.explain_in(&view).unwrap_or_default();
            if let Some(first_seen) = &rule.first_seen {
                tuple_key(&mut self.key, &first_seen.fields, event, cluster);
                let since = self.history_start.unwrap_or(time);
                let learning = time < since.saturating_add(first_seen.learning);
                let tuples = self.tuples.entry(index).or_default();
                if tuples.see(&self.key, time)
                    && !learning
                    && let Some(out) = out.as_deref_mut()
                {
                    let tuple = named_values(&first_seen.fields, event, cluster);
                    let mut finding =
                        finding(rule, event, cluster, time, &evidence(), Vec::new(), None);
                    finding.explanation =
                        first_seen_explanation(first_seen, &finding, &tuple, since);
                    finding.group = tuple;
                    out.push(finding);
                }
                continue;
            }
            let Some(out) = out.as_deref_mut() else {
                continue;
            };
            match &rule.threshold {
                None => out.push(finding(
                    rule,
                    event,
                    cluster,
                    time,
                    &evidence(),
                    Vec::new(),
                    None,
                )),
                Some(threshold) => {
                    tuple_key(&mut self.key, &threshold.by, event, cluster);
                    let counted = threshold
                        .distinct
                        .as_ref()
                        .map(|f| field_value(f, event, cluster));
                    let windows = self.windows.entry(index).or_default();
                    if let Some(count) = windows.add(
                        &self.key,
                        counted,
                        time,
                        threshold.window,
                        threshold.count,
                        threshold.distinct.is_some(),
                    ) {
                        out.push(finding(
                            rule,
                            event,
                            cluster,
                            time,
                            &evidence(),
                            named_values(&threshold.by, event, cluster),
                            Some(count),
                        ));
                    }
                }
            }
        }
    }
}

/// The values of `fields` in `event` as one map key, in `key` (cleared first): each value's
/// length, a colon and the value, so no value can forge another tuple's key.
fn tuple_key(key: &mut String, fields: &[Field], event: &AuditEvent<'_>, cluster: &str) {
    key.clear();
    for field in fields {
        let text: Cow<'_, str> = match value_of(field, event, cluster) {
            Value::Text(text) => text,
            Value::List(elements) => Cow::Owned(elements.join(",")),
            Value::Int(n) => Cow::Owned(n.map(|n| n.to_string()).unwrap_or_default()),
            Value::Bool(b) => Cow::Owned(b.to_string()),
        };
        let _ = write!(key, "{}:", text.len());
        key.push_str(&text);
    }
}

/// Each of `fields` with its value in `event`: a finding's group or tuple.
fn named_values(fields: &[Field], event: &AuditEvent<'_>, cluster: &str) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (f.display_name(), field_value(f, event, cluster)))
        .collect()
}

fn first_seen_explanation(
    first_seen: &FirstSeen,
    finding: &Finding,
    tuple: &[(String, String)],
    since: i64,
) -> String {
    let values: Vec<String> = tuple
        .iter()
        .map(|(field, value)| {
            if value.is_empty() {
                format!("{field}=(none)")
            } else {
                format!("{field}={value}")
            }
        })
        .collect();
    let mut text = finding.explanation.clone();
    if !text.is_empty() {
        text.push_str("; ");
    }
    text.push_str(&format!(
        "first time for {} since {} (learning {})",
        values.join(", "),
        Timestamp::from_micros(since),
        format_window(first_seen.learning)
    ));
    text
}

fn finding(
    rule: &Rule,
    event: &AuditEvent<'_>,
    cluster: &str,
    time: i64,
    evidence: &[Evidence],
    group: Vec<(String, String)>,
    count: Option<u64>,
) -> Finding {
    let object = event.object_ref.as_ref();
    let mut explanation: Vec<String> = evidence
        .iter()
        .map(|e| format!("{}={}", e.field, e.value))
        .collect();
    if let Some(count) = count {
        let what = match &rule.threshold.as_ref().and_then(|t| t.distinct.as_ref()) {
            Some(field) => format!("{count} distinct {}", field.display_name()),
            None => format!("{count} events"),
        };
        let window = rule.threshold.as_ref().map_or(0, |t| t.window);
        explanation.push(format!("{what} within {}", format_window(window)));
    }
    Finding {
        rule: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        mitre: rule.mitre.clone(),
        audit_id: event.audit_id.to_string(),
        time: Timestamp::from_micros(time).to_string(),
        cluster: cluster.to_owned(),
        user: event.user.username.to_string(),
        verb: event.verb.to_string(),
        resource: event
            .derived
            .resource_key
            .as_deref()
            .unwrap_or("")
            .to_owned(),
        namespace: object.map_or("", |o| o.namespace.as_ref()).to_owned(),
        name: object.map_or("", |o| o.name.as_ref()).to_owned(),
        source_ip: event
            .source_ips
            .first()
            .map_or("", |ip| ip.as_ref())
            .to_owned(),
        code: event.code(),
        explanation: explanation.join(", "),
        group,
        count,
    }
}

fn format_window(micros: i64) -> String {
    let seconds = micros / 1_000_000;
    match seconds {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The windows of one threshold rule, per group.
#[derive(Default)]
struct Windows {
    /// By [`tuple_key`] of the group's values.
    groups: FastMap<Box<str>, Window>,
}

#[derive(Default)]
struct Window {
    /// Times (µs) of the events in the window, oldest first, with the value counted.
    events: VecDeque<(i64, Option<String>)>,
    /// For a distinct count: how many events of the window hold each value.
    values: HashMap<String, u64>,
    /// Quiet until this time after a report.
    quiet_until: i64,
    /// The newest event's time.
    last: i64,
}

impl Windows {
    /// Adds an event; the count when the group reaches the threshold.
    fn add(
        &mut self,
        group: &str,
        counted: Option<String>,
        time: i64,
        window: i64,
        threshold: u64,
        distinct: bool,
    ) -> Option<u64> {
        if !self.groups.contains_key(group) && self.groups.len() >= MAX_GROUPS {
            self.forget_idle();
        }
        if !self.groups.contains_key(group) {
            self.groups.insert(group.into(), Window::default());
        }
        let state = self.groups.get_mut(group)?;
        state.last = state.last.max(time);
        // Events arrive nearly in order; the window ends at the newest time seen.
        let start = state.last - window;
        while state.events.front().is_some_and(|(t, _)| *t <= start) {
            if let Some((_, Some(value))) = state.events.pop_front()
                && let Some(n) = state.values.get_mut(&value)
            {
                *n -= 1;
                if *n == 0 {
                    state.values.remove(&value);
                }
            }
        }
        if time <= start {
            return None;
        }
        if let Some(value) = &counted {
            *state.values.entry(value.clone()).or_default() += 1;
        }
        state.events.push_back((time, counted));
        let count = if distinct {
            state.values.len() as u64
        } else {
            state.events.len() as u64
        };
        if count >= threshold && time >= state.quiet_until {
            state.quiet_until = time + window;
            state.events.clear();
            state.values.clear();
            return Some(count);
        }
        None
    }

    /// Forgets the tenth of the groups idle the longest.
    fn forget_idle(&mut self) {
        let mut lasts: Vec<i64> = self.groups.values().map(|w| w.last).collect();
        let cut = lasts.len() / 10;
        let (_, threshold, _) = lasts.select_nth_unstable(cut);
        let threshold = *threshold;
        self.groups.retain(|_, w| w.last > threshold);
    }
}

/// The tuples a first-seen rule has seen, with when each was last seen.
#[derive(Default)]
struct Tuples {
    /// By [`tuple_key`] of the tuple's values.
    seen: FastMap<Box<str>, i64>,
}

impl Tuples {
    /// Records a tuple seen at `time`; whether it is new.
    fn see(&mut self, tuple: &str, time: i64) -> bool {
        if let Some(last) = self.seen.get_mut(tuple) {
            *last = (*last).max(time);
            return false;
        }
        if self.seen.len() >= MAX_TUPLES {
            forget_oldest_tenth(&mut self.seen, |last| *last);
        }
        self.seen.insert(tuple.into(), time);
        true
    }
}

/// Removes the tenth of `map`'s entries whose `age` time is the oldest.
fn forget_oldest_tenth<K, V, S>(map: &mut HashMap<K, V, S>, age: impl Fn(&V) -> i64) {
    let mut times: Vec<i64> = map.values().map(&age).collect();
    if times.is_empty() {
        return;
    }
    let cut = times.len() / 10;
    let (_, threshold, _) = times.select_nth_unstable(cut);
    let threshold = *threshold;
    map.retain(|_, v| age(v) > threshold);
}

/// One step of a partial sequence that happened.
#[derive(Clone)]
struct Link {
    audit_id: String,
    time: i64,
    explanation: String,
}

impl Link {
    /// How a finding's explanation tells this step: `NAME at TIME (auditID ID: evidence)`.
    fn describe(&self, step: &str) -> String {
        format!(
            "{step} at {} (auditID {}: {})",
            Timestamp::from_micros(self.time),
            self.audit_id,
            self.explanation
        )
    }
}

/// The earlier steps of a sequence that happened, for one join key.
#[derive(Clone)]
struct Partial {
    /// The first step's time: the sequence must end within the span from it.
    start: i64,
    /// The latest step's time: the next step must not come before it.
    last: i64,
    links: Vec<Link>,
}

/// The partial sequences of one sequence rule: by (number of steps done − 1, join values).
#[derive(Default)]
struct Partials {
    partials: HashMap<(usize, Vec<String>), Partial>,
    /// For a sequence in any order: per join key, the latest event of each step.
    latest: HashMap<Vec<String>, Vec<Option<Link>>>,
    /// The newest event time seen, for expiring partial sequences.
    newest: i64,
}

impl Partials {
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        rule: &Rule,
        sequence: &Sequence,
        defaults: &[crate::exemption::Exemption],
        view: &EventView<'_, '_>,
        time: i64,
        mut out: Option<&mut Vec<Finding>>,
    ) {
        let (event, cluster) = (view.event(), view.cluster());
        // Which steps the event plays, decided before anything is explained or allocated:
        // most events a sequence rule is offered play none.
        let matched = sequence
            .steps
            .iter()
            .enumerate()
            .filter(|(_, step)| step.matcher.matches_in(view))
            .fold(0u32, |mask, (n, _)| mask | 1 << n);
        if matched == 0 || rule.exempts(defaults, event, cluster) {
            return;
        }
        self.newest = self.newest.max(time);
        if !sequence.ordered {
            self.offer_any_order(rule, sequence, view, time, matched, out);
            return;
        }
        let last_step = sequence.steps.len() - 1;
        // From the last step back, so that one event never plays two consecutive steps.
        for n in (0..sequence.steps.len()).rev() {
            if matched & 1 << n == 0 {
                continue;
            }
            let step = &sequence.steps[n];
            let key: Vec<String> = step
                .by
                .iter()
                .map(|f| field_value(f, event, cluster))
                .collect();
            // An absent join value would join unrelated events.
            if key.iter().any(String::is_empty) {
                continue;
            }
            let link = || Link {
                audit_id: event.audit_id.to_string(),
                time,
                explanation: explain(&step.matcher.explain_in(view).unwrap_or_default()),
            };
            if n == 0 {
                self.insert(
                    (0, key),
                    Partial {
                        start: time,
                        last: time,
                        links: vec![link()],
                    },
                    sequence.within,
                );
                continue;
            }
            let previous = (n - 1, key);
            let Some(partial) = self.partials.get(&previous) else {
                continue;
            };
            if time < partial.last || time - partial.start > sequence.within {
                continue;
            }
            if n < last_step {
                let mut advanced = partial.clone();
                advanced.last = time;
                advanced.links.push(link());
                let (_, key) = previous;
                self.insert((n, key), advanced, sequence.within);
                continue;
            }
            // The last step: report once per partial sequence, which is used up.
            let Some(partial) = self.partials.remove(&previous) else {
                continue;
            };
            let Some(out) = out.as_deref_mut() else {
                continue;
            };
            let group: Vec<(String, String)> = step
                .by
                .iter()
                .map(|f| f.display_name())
                .zip(previous.1)
                .collect();
            let evidence = step.matcher.explain_in(view).unwrap_or_default();
            let mut finding = finding(rule, event, cluster, time, &evidence, Vec::new(), None);
            let mut explanation: Vec<String> = partial
                .links
                .iter()
                .zip(&sequence.steps)
                .map(|(link, step)| link.describe(&step.name))
                .collect();
            explanation.push(format!("then {}: {}", step.name, explain(&evidence)));
            let same: Vec<String> = group.iter().map(|(f, v)| format!("{f}={v}")).collect();
            finding.explanation = format!(
                "{}; same {}, within {}",
                explanation.join(", "),
                same.join(", "),
                format_window(sequence.within)
            );
            finding.group = group;
            out.push(finding);
        }
    }

    /// A sequence whose steps may happen in any order: per join key, the latest event of each
    /// step; the event that gives every step an event within the span completes it. Using the
    /// latest event of each step finds a completion whenever one exists. An event plays one
    /// step: the first it matches that the key lacks (within the span), else the first it
    /// matches, so one event never completes a sequence alone.
    fn offer_any_order(
        &mut self,
        rule: &Rule,
        sequence: &Sequence,
        view: &EventView<'_, '_>,
        time: i64,
        matched: u32,
        out: Option<&mut Vec<Finding>>,
    ) {
        let (event, cluster) = (view.event(), view.cluster());
        let horizon = time - sequence.within;
        let held = |links: &[Option<Link>], n: usize| {
            links
                .get(n)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.time >= horizon)
        };
        let mut played = None;
        for (n, step) in sequence.steps.iter().enumerate() {
            if matched & 1 << n == 0 {
                continue;
            }
            let key: Vec<String> = step
                .by
                .iter()
                .map(|f| field_value(f, event, cluster))
                .collect();
            // An absent join value would join unrelated events.
            if key.iter().any(String::is_empty) {
                continue;
            }
            let lacking = !self.latest.get(&key).is_some_and(|links| held(links, n));
            if played.is_none() || lacking {
                played = Some((n, key));
            }
            if lacking {
                break;
            }
        }
        let Some((n, key)) = played else {
            return;
        };
        let step = &sequence.steps[n];
        let link = Link {
            audit_id: event.audit_id.to_string(),
            time,
            explanation: explain(&step.matcher.explain_in(view).unwrap_or_default()),
        };
        if !self.latest.contains_key(&key) && self.latest.len() >= MAX_PARTIAL_SEQUENCES {
            let newest = |links: &Vec<Option<Link>>| {
                links
                    .iter()
                    .flatten()
                    .map(|l| l.time)
                    .max()
                    .unwrap_or(i64::MIN)
            };
            let horizon = self.newest - sequence.within;
            self.latest.retain(|_, links| newest(links) >= horizon);
            if self.latest.len() >= MAX_PARTIAL_SEQUENCES {
                forget_oldest_tenth(&mut self.latest, newest);
            }
        }
        let links = self
            .latest
            .entry(key.clone())
            .or_insert_with(|| vec![None; sequence.steps.len()]);
        links[n] = Some(link);
        if !(0..sequence.steps.len()).all(|m| held(links, m)) {
            return;
        }
        // Complete: used up, reported unless learning.
        let Some(links) = self.latest.remove(&key) else {
            return;
        };
        let Some(out) = out else {
            return;
        };
        let group: Vec<(String, String)> =
            step.by.iter().map(|f| f.display_name()).zip(key).collect();
        let evidence = step.matcher.explain_in(view).unwrap_or_default();
        let mut finding = finding(rule, event, cluster, time, &evidence, Vec::new(), None);
        let mut done: Vec<(&Link, &crate::rule::Step)> = links
            .iter()
            .zip(&sequence.steps)
            .filter_map(|(link, step)| Some((link.as_ref()?, step)))
            .collect();
        done.sort_by_key(|(link, _)| link.time);
        let explanation: Vec<String> = done
            .iter()
            .map(|(link, step)| link.describe(&step.name))
            .collect();
        let same: Vec<String> = group.iter().map(|(f, v)| format!("{f}={v}")).collect();
        finding.explanation = format!(
            "{}, in any order; same {}, within {}",
            explanation.join(", "),
            same.join(", "),
            format_window(sequence.within)
        );
        finding.group = group;
        out.push(finding);
    }

    fn insert(&mut self, key: (usize, Vec<String>), partial: Partial, within: i64) {
        if !self.partials.contains_key(&key) && self.partials.len() >= MAX_PARTIAL_SEQUENCES {
            let horizon = self.newest - within;
            self.partials.retain(|_, p| p.start >= horizon);
            if self.partials.len() >= MAX_PARTIAL_SEQUENCES {
                forget_oldest_tenth(&mut self.partials, |p| p.start);
            }
        }
        self.partials.insert(key, partial);
    }
}

fn explain(evidence: &[Evidence]) -> String {
    evidence
        .iter()
        .map(|e| format!("{}={}", e.field, e.value))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(n: usize) -> String {
        n.to_string()
    }

    #[test]
    fn tuples_forget_the_tenth_seen_longest_ago_at_the_bound() {
        let mut tuples = Tuples::default();
        for n in 0..MAX_TUPLES {
            assert!(tuples.see(&tuple(n), n as i64));
        }
        // Seen again lately, tuple 0 is among the freshest.
        let now = MAX_TUPLES as i64;
        assert!(!tuples.see(&tuple(0), now));
        assert!(tuples.see(&tuple(MAX_TUPLES), now + 1));
        assert!(tuples.seen.len() <= MAX_TUPLES - MAX_TUPLES / 10 + 1);
        assert!(!tuples.see(&tuple(0), now + 2));
        // Forgotten, so new again: the bound errs towards reporting.
        assert!(tuples.see(&tuple(1), now + 3));
    }

    #[test]
    fn partial_sequences_drop_expired_then_oldest_at_the_bound() {
        let mut partials = Partials::default();
        let partial = |start: i64| Partial {
            start,
            last: start,
            links: Vec::new(),
        };
        let within = 1_000;
        for n in 0..MAX_PARTIAL_SEQUENCES {
            partials.newest = n as i64;
            partials.insert((0, vec![n.to_string()]), partial(n as i64), within);
        }
        partials.newest = MAX_PARTIAL_SEQUENCES as i64;
        partials.insert(
            (0, vec!["new".to_owned()]),
            partial(partials.newest),
            within,
        );
        // Only the partial sequences of the last `within` are still alive.
        assert_eq!(partials.partials.len(), 1_001);
        assert!(partials.partials.contains_key(&(0, vec!["new".to_owned()])));
    }
}

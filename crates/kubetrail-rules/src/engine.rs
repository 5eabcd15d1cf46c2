//! Evaluating rules on events, one at a time, in the order they happened: the same code for the
//! live stream, a hunt over stored history and a file on the command line.
//!
//! A stateless rule reports every matching, non-exempt event. A threshold rule keeps, per group,
//! the matching events of its window (their times, and the values counted for a distinct count)
//! and reports the group once when it reaches the count; the group is quiet for a window after
//! that, so a storm of 403s is one finding per window, not one per event. State is bounded: a
//! rule keeps at most [`MAX_GROUPS`] groups, and forgets the longest idle ones beyond that.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kubetrail_event::{AuditEvent, Timestamp};
use kubetrail_query::{Evidence, field_value};
use serde::Serialize;

use crate::rule::{Rule, RuleSet};
use crate::spec::{Mitre, Severity};

/// The most groups a threshold rule tracks at once.
pub const MAX_GROUPS: usize = 100_000;

/// What a rule reports about an event.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The first source IP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    /// The HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// What matched, in a line: `verb=create, pod.privileged=true`.
    pub explanation: String,
    /// For a threshold: the group's fields and values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<(String, String)>,
    /// For a threshold: how many events (or distinct values) the window held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Rules with their state.
pub struct Engine {
    rules: Vec<Arc<Rule>>,
    defaults: Arc<Vec<crate::exemption::Exemption>>,
    windows: HashMap<usize, Windows>,
}

impl Engine {
    /// An engine over the enabled rules of `set`.
    pub fn new(set: &RuleSet) -> Engine {
        Engine::with_rules(set.enabled().cloned().collect(), set.defaults.clone())
    }

    /// An engine over these rules only (the inline tests run a rule alone).
    pub fn with_rules(rules: Vec<Rule>, defaults: Vec<crate::exemption::Exemption>) -> Engine {
        Engine {
            rules: rules.into_iter().map(Arc::new).collect(),
            defaults: Arc::new(defaults),
            windows: HashMap::new(),
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
    /// time when the event has none), and appends the findings to `out`.
    pub fn evaluate(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        time: i64,
        out: &mut Vec<Finding>,
    ) {
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.evaluates(event.stage) {
                continue;
            }
            let Some(evidence) = rule.matcher.explain(event, cluster) else {
                continue;
            };
            if rule.exempts(&self.defaults, event, cluster) {
                continue;
            }
            match &rule.threshold {
                None => out.push(finding(
                    rule,
                    event,
                    cluster,
                    time,
                    &evidence,
                    Vec::new(),
                    None,
                )),
                Some(threshold) => {
                    let group: Vec<(String, String)> = threshold
                        .by
                        .iter()
                        .map(|f| (f.display_name(), field_value(f, event, cluster)))
                        .collect();
                    let counted = threshold
                        .distinct
                        .as_ref()
                        .map(|f| field_value(f, event, cluster));
                    let windows = self.windows.entry(index).or_default();
                    if let Some(count) = windows.add(
                        &group,
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
                            &evidence,
                            group,
                            Some(count),
                        ));
                    }
                }
            }
        }
    }
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
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The windows of one threshold rule, per group.
#[derive(Default)]
struct Windows {
    groups: HashMap<Vec<(String, String)>, Window>,
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
        group: &[(String, String)],
        counted: Option<String>,
        time: i64,
        window: i64,
        threshold: u64,
        distinct: bool,
    ) -> Option<u64> {
        if !self.groups.contains_key(group) && self.groups.len() >= MAX_GROUPS {
            self.forget_idle();
        }
        let state = self.groups.entry(group.to_vec()).or_default();
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

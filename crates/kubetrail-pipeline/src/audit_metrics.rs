//! Metrics about the cluster's API traffic, counted at ingest from every event — the ones
//! exclusion filters then drop included — and exposed on `/metrics` (`docs/monitors.md`).
//!
//! A request is counted once: at `ResponseComplete` or `Panic`, or at `ResponseStarted` when
//! it has no user (failed authentication and requests refused before it have no other stage).
//!
//! Cardinality is bounded by design: verbs, code classes and user kinds are small fixed sets;
//! resources are the request's resource (with its subresource) but at most
//! [`MAX_RESOURCES`] distinct ones per metric are tracked, later ones are counted as
//! `resource="other"`; clusters are the configured ones. User-defined metrics (`metrics:` in
//! the serve config) have the same guard on their `by` values ([`MAX_SERIES`] series each).

use std::collections::HashMap;
use std::sync::Mutex;

use kubetrail_event::{AuditEvent, Stage, UserKind};
use kubetrail_query::{Field, Matcher};

/// The most distinct resources a traffic metric tracks; more are `other`.
pub const MAX_RESOURCES: usize = 500;
/// The most series of one user-defined metric; more are counted in one overflow series.
pub const MAX_SERIES: usize = 1000;
/// Latency bucket bounds, in seconds (Prometheus' `le`).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The verbs kube-apiserver logs; anything else is `other`.
const VERBS: [&str; 10] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "connect",
];

/// A latency histogram: counts per bucket (cumulative when exposed), sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Counts per bucket of [`LATENCY_BUCKETS`], plus +Inf, not cumulative.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, seconds.
    pub sum: f64,
    /// How many.
    pub count: u64,
}

impl LatencyHistogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Labels of the requests counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    /// The cluster.
    pub cluster: String,
    /// The verb.
    pub verb: &'static str,
    /// The resource (`pods`, `pods/exec`), `""` for non-resource requests, `other` past the cap.
    pub resource: String,
    /// `2xx` … `5xx`, or `none`.
    pub code: &'static str,
    /// The user kind.
    pub user_kind: &'static str,
}

/// What a user-defined metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Counts matching requests.
    Counter,
    /// The latency of matching requests.
    Histogram,
}

/// A user-defined metric: a filter, a kind and `by` fields.
pub struct UserMetric {
    /// Exposed as `kubetrail_audit_<name>` (`_total` for counters).
    pub name: String,
    /// Its help text.
    pub help: String,
    /// Which events count.
    pub filter: Matcher,
    /// Counter or histogram.
    pub kind: MetricKind,
    /// Label fields.
    pub by: Vec<(String, Field)>,
}

/// A snapshot of a user-defined metric.
#[derive(Debug, Clone, Default)]
pub struct UserSeries {
    /// Counter values by label values.
    pub counts: HashMap<Vec<String>, u64>,
    /// Histograms by label values.
    pub histograms: HashMap<Vec<String>, LatencyHistogram>,
    /// Events that did not get a series of their own (the cap was reached).
    pub overflow: u64,
}

#[derive(Debug, Default)]
struct Counts {
    requests: HashMap<RequestKey, u64>,
    latency: HashMap<(&'static str, String), LatencyHistogram>,
    resources: HashMap<String, ()>,
    auth_failures: HashMap<(String, u16), u64>,
    anonymous: HashMap<(String, String), u64>,
    user: Vec<UserSeries>,
}

/// The counters, updated by the ingest path and read at scrape time.
pub struct AuditMetrics {
    counts: Mutex<Counts>,
    user: Vec<UserMetric>,
}

impl std::fmt::Debug for AuditMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditMetrics").finish_non_exhaustive()
    }
}

/// A snapshot of everything.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests by cluster, verb, resource, code class, user kind.
    pub requests: Vec<(RequestKey, u64)>,
    /// Latency by verb and resource (long-running requests excluded).
    pub latency: Vec<((&'static str, String), LatencyHistogram)>,
    /// 401 and 403 answers by cluster and code.
    pub auth_failures: Vec<((String, u16), u64)>,
    /// Anonymous requests by cluster and resource.
    pub anonymous: Vec<((String, String), u64)>,
    /// User-defined metrics, in configuration order, with their definition's name and help.
    pub user: Vec<(String, String, MetricKind, Vec<String>, UserSeries)>,
}

impl AuditMetrics {
    /// Counters with the user-defined metrics `user`.
    pub fn new(user: Vec<UserMetric>) -> AuditMetrics {
        let counts = Counts {
            user: vec![UserSeries::default(); user.len()],
            ..Counts::default()
        };
        AuditMetrics {
            counts: Mutex::new(counts),
            user,
        }
    }

    /// Counts one event from `cluster`.
    pub fn record(&self, event: &AuditEvent<'_>, cluster: &str) {
        let counted = match event.stage {
            Stage::ResponseComplete | Stage::Panic => true,
            Stage::ResponseStarted => event.user.username.is_empty(),
            Stage::RequestReceived => false,
        };
        if !counted {
            return;
        }
        let verb = VERBS
            .iter()
            .find(|v| **v == event.verb.as_ref())
            .copied()
            .unwrap_or("other");
        let code = event.response_status.as_ref().and_then(|s| s.code);
        let code_class = match code {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "none",
        };
        let user_kind = event.derived.user_kind;
        let (resource, subresource) = event
            .object_ref
            .as_ref()
            .map_or(("", ""), |o| (o.resource.as_ref(), o.subresource.as_ref()));
        let resource_label = if subresource.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{subresource}")
        };
        let long_running = verb == "watch"
            || matches!(
                subresource,
                "exec" | "attach" | "portforward" | "proxy" | "log"
            )
            || verb == "connect";
        let latency = match event.derived.latency_micros {
            Some(micros) if !long_running && event.stage == Stage::ResponseComplete => {
                Some(micros.max(0) as f64 / 1e6)
            }
            _ => None,
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let resource_label = if counts.resources.contains_key(&resource_label) {
            resource_label
        } else if counts.resources.len() < MAX_RESOURCES {
            counts.resources.insert(resource_label.clone(), ());
            resource_label
        } else {
            "other".to_owned()
        };
        *counts
            .requests
            .entry(RequestKey {
                cluster: cluster.to_owned(),
                verb,
                resource: resource_label.clone(),
                code: code_class,
                user_kind: user_kind.as_str(),
            })
            .or_default() += 1;
        if let Some(seconds) = latency {
            counts
                .latency
                .entry((verb, resource_label.clone()))
                .or_default()
                .observe(seconds);
        }
        if let Some(code @ (401 | 403)) = code {
            *counts
                .auth_failures
                .entry((cluster.to_owned(), code as u16))
                .or_default() += 1;
        }
        if user_kind == UserKind::Anonymous {
            *counts
                .anonymous
                .entry((cluster.to_owned(), resource_label))
                .or_default() += 1;
        }
        for (i, metric) in self.user.iter().enumerate() {
            if !metric.filter.matches(event, cluster) {
                continue;
            }
            let labels: Vec<String> = metric
                .by
                .iter()
                .map(|(_, field)| kubetrail_query::field_value(field, event, cluster))
                .collect();
            let series = &mut counts.user[i];
            let known = match metric.kind {
                MetricKind::Counter => series.counts.contains_key(&labels),
                MetricKind::Histogram => series.histograms.contains_key(&labels),
            };
            let size = series.counts.len() + series.histograms.len();
            if !known && size >= MAX_SERIES {
                series.overflow += 1;
                continue;
            }
            match metric.kind {
                MetricKind::Counter => *series.counts.entry(labels).or_default() += 1,
                MetricKind::Histogram => {
                    if let Some(seconds) = latency {
                        series
                            .histograms
                            .entry(labels)
                            .or_default()
                            .observe(seconds);
                    }
                }
            }
        }
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> Snapshot {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = Snapshot {
            requests: counts
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            latency: counts
                .latency
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth_failures: counts
                .auth_failures
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            anonymous: counts
                .anonymous
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            user: self
                .user
                .iter()
                .zip(&counts.user)
                .map(|(m, s)| {
                    let labels = m.by.iter().map(|(name, _)| name.clone()).collect();
                    (m.name.clone(), m.help.clone(), m.kind, labels, s.clone())
                })
                .collect(),
        };
        snapshot.requests.sort();
        snapshot.latency.sort_by(|a, b| a.0.cmp(&b.0));
        snapshot.auth_failures.sort();
        snapshot.anonymous.sort();
        snapshot
    }
}

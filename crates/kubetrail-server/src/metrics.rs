//! Every metric kubetrail exposes on `/metrics`, in one place (documented in
//! `docs/operations.md`). Names follow `kubetrail_<noun>_<unit>[_total]`.
//!
//! Counters the request path changes are prometheus-client families; figures owned by other
//! threads (the ingest sink, the store, the tailer) are read at scrape time by a collector, so
//! those threads keep plain atomics and never touch the registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kubetrail_pipeline::IngestStats;
use kubetrail_pipeline::audit_metrics::{LATENCY_BUCKETS, LatencyHistogram, MetricKind};
use kubetrail_pipeline::tail::TailStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of received events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceCluster {
    /// `webhook` or `tail`.
    pub source: &'static str,
    /// The cluster name.
    pub cluster: String,
}

/// Labels of rejections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    /// `webhook` or `tail`.
    pub source: &'static str,
    /// Why (`unauthorized`, `too-large`, `invalid-json`, …).
    pub reason: &'static str,
}

/// Labels of webhook requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusCode {
    /// The HTTP status.
    pub code: u16,
}

/// Labels of monitor transitions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MonitorState {
    /// The monitor.
    pub monitor: String,
    /// pending, firing, resolved, ok.
    pub state: &'static str,
}

/// The metrics of a server.
pub struct Metrics {
    registry: Registry,
    /// Events received (decoded) by source and cluster.
    pub events_received: Family<SourceCluster, Counter>,
    /// Events and requests rejected by source and reason.
    pub rejected: Family<SourceReason, Counter>,
    /// Webhook requests by status.
    pub webhook_requests: Family<StatusCode, Counter>,
    /// Webhook request bytes.
    pub webhook_bytes: Counter,
    /// Webhook request latency, from the first byte to the answer.
    pub webhook_duration: Histogram,
    /// Monitor transitions by monitor and state.
    pub monitor_transitions: Family<MonitorState, Counter>,
}

struct Figures {
    ingest: Arc<IngestStats>,
    tail: Vec<Arc<TailStats>>,
    monitors: Option<Arc<crate::monitors::Monitors>>,
    transforms: Option<Arc<kubetrail_pipeline::Transforms>>,
    detections: Option<Arc<kubetrail_alert::detect::Detector>>,
}

/// A histogram read at scrape time.
#[derive(Debug)]
struct ConstHistogram<'h>(&'h LatencyHistogram);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.0.buckets.iter().copied()).collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum,
            self.0.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Label values given as name–value pairs (the `by` fields of a log-based metric).
#[derive(Debug)]
struct Pairs<'p>(&'p [(String, String)]);

impl EncodeLabelSet for Pairs<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        for pair in self.0 {
            prometheus_client::encoding::EncodeLabel::encode(
                &(pair.0.as_str(), pair.1.as_str()),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figures").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric; `ingest` and `tail` are read at scrape time.
    pub fn new(
        ingest: Arc<IngestStats>,
        tail: Vec<Arc<TailStats>>,
        monitors: Option<Arc<crate::monitors::Monitors>>,
        transforms: Option<Arc<kubetrail_pipeline::Transforms>>,
        detections: Option<Arc<kubetrail_alert::detect::Detector>>,
    ) -> Self {
        let mut registry = Registry::default();
        let events_received = Family::<SourceCluster, Counter>::default();
        registry.register(
            "kubetrail_events_received",
            "Audit events received, by source and cluster",
            events_received.clone(),
        );
        let rejected = Family::<SourceReason, Counter>::default();
        registry.register(
            "kubetrail_rejected",
            "Webhook requests and tailed lines rejected, by source and reason",
            rejected.clone(),
        );
        let webhook_requests = Family::<StatusCode, Counter>::default();
        registry.register(
            "kubetrail_webhook_requests",
            "Webhook requests answered, by HTTP status",
            webhook_requests.clone(),
        );
        let webhook_bytes = Counter::default();
        registry.register(
            "kubetrail_webhook_received_bytes",
            "Bytes of webhook request bodies",
            webhook_bytes.clone(),
        );
        let webhook_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "kubetrail_webhook_request_duration_seconds",
            "Webhook request latency until the batch is durable (or refused)",
            webhook_duration.clone(),
        );
        let monitor_transitions = Family::<MonitorState, Counter>::default();
        registry.register(
            "kubetrail_monitor_transitions",
            "Alert state changes of monitors, by monitor and state (pending, firing, resolved, ok)",
            monitor_transitions.clone(),
        );
        registry.register_collector(Box::new(Figures {
            ingest,
            tail,
            monitors,
            transforms,
            detections,
        }));
        Metrics {
            registry,
            events_received,
            rejected,
            webhook_requests,
            webhook_bytes,
            webhook_duration,
            monitor_transitions,
        }
    }

    /// Counts monitor transitions.
    pub fn monitor_transitions(&self, transitions: &[kubetrail_alert::evaluate::Transition]) {
        use kubetrail_alert::state::Change;
        for t in transitions {
            let state = match t.state {
                Change::Pending => "pending",
                Change::Firing => "firing",
                Change::Resolved => "resolved",
                Change::Ok => "ok",
                Change::NoData => "no_data",
                Change::Error => "error",
            };
            self.monitor_transitions
                .get_or_create(&MonitorState {
                    monitor: t.monitor.clone(),
                    state,
                })
                .inc();
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReasonLabel {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MonitorAlertLabel {
    monitor: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleSeverityLabel {
    rule: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelOutcomeLabel {
    channel: String,
    outcome: String,
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ingest = &self.ingest;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut encoder,
            "kubetrail_events_stored",
            "Events acknowledged durable (in the write-ahead log)",
            load(&ingest.accepted),
        )?;
        counter(
            &mut encoder,
            "kubetrail_events_duplicate",
            "Events dropped because their (auditID, stage) was already stored",
            load(&ingest.duplicates),
        )?;
        counter(
            &mut encoder,
            "kubetrail_wal_commits",
            "Group commits (write-ahead log fsyncs)",
            load(&ingest.commits),
        )?;
        counter(
            &mut encoder,
            "kubetrail_ingest_busy_rejections",
            "Batches refused because too many events were queued",
            load(&ingest.busy_rejections),
        )?;
        gauge(
            &mut encoder,
            "kubetrail_ingest_queued_events",
            "Events waiting for the store writer",
            load(&ingest.queued_events) as i64,
        )?;
        gauge(
            &mut encoder,
            "kubetrail_store_lag_events",
            "Events durable in the write-ahead log but not yet in Parquet (not yet queryable)",
            ingest.store_lag() as i64,
        )?;
        gauge(
            &mut encoder,
            "kubetrail_ingest_last_accepted_timestamp_seconds",
            "When new events were last acknowledged durable (Unix time; 0 before the first)",
            ingest.last_accepted_micros.load(Ordering::Relaxed) / 1_000_000,
        )?;
        let quarantined = ingest
            .quarantined
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "kubetrail_quarantined_events",
            "Bad inputs (events, lines) kept in the quarantine, by source and reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for ((source, reason), n) in &quarantined {
            let label = SourceReasonLabel {
                source: source.clone(),
                reason: reason.clone(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        counter(
            &mut encoder,
            "kubetrail_quarantine_dropped_events",
            "Bad inputs counted but not kept: the quarantine was at its size limit",
            load(&ingest.quarantine_dropped),
        )?;
        gauge(
            &mut encoder,
            "kubetrail_quarantine_bytes",
            "Bytes in the quarantine (quarantine.maxSize is the limit)",
            load(&ingest.quarantine_bytes) as i64,
        )?;
        gauge(
            &mut encoder,
            "kubetrail_store_healthy",
            "1 while the store accepts events",
            i64::from(ingest.healthy.load(Ordering::Relaxed)),
        )?;
        if let Some(transforms) = &self.transforms {
            encode_transforms(&mut encoder, transforms)?;
        }
        if let Some(monitors) = &self.monitors {
            let mut alerts = encoder.encode_descriptor(
                "kubetrail_monitor_alerts",
                "Groups of each monitor currently pending or firing",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (monitor, state, n) in monitors.alert_counts() {
                let label = MonitorAlertLabel {
                    monitor,
                    state: state.to_owned(),
                };
                ConstGauge::new(n as i64).encode(alerts.encode_family(&label)?)?;
            }
            let mut deliveries = encoder.encode_descriptor(
                "kubetrail_notifications",
                "Notification deliveries by channel and outcome (delivered, retried, rejected)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (channel, outcome, n) in monitors.delivery_counts() {
                let label = ChannelOutcomeLabel {
                    channel,
                    outcome: outcome.to_owned(),
                };
                ConstCounter::new(n).encode(deliveries.encode_family(&label)?)?;
            }
        }
        if let Some(detector) = &self.detections {
            let stats = detector.stats();
            let mut findings = encoder.encode_descriptor(
                "kubetrail_detection_findings",
                "Findings of the detection rules, by rule and severity",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            let counts: Vec<((String, kubetrail_rules::Severity), u64)> = stats
                .findings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for ((rule, severity), n) in counts {
                let label = RuleSeverityLabel {
                    rule,
                    severity: severity.as_str().to_owned(),
                };
                ConstCounter::new(n).encode(findings.encode_family(&label)?)?;
            }
            counter(
                &mut encoder,
                "kubetrail_detection_events",
                "Events judged by the detection rules",
                load(&stats.events),
            )?;
            counter(
                &mut encoder,
                "kubetrail_detection_findings_dropped",
                "Findings dropped because their writer fell behind",
                load(&stats.dropped),
            )?;
            counter(
                &mut encoder,
                "kubetrail_detection_write_errors",
                "Findings that could not be written to the data directory",
                load(&stats.write_errors),
            )?;
            counter(
                &mut encoder,
                "kubetrail_detection_notifications",
                "Notifications of findings queued for the channels",
                load(&stats.notifications),
            )?;
            gauge(
                &mut encoder,
                "kubetrail_detection_rules",
                "Detection rules running",
                detector.rules().iter().filter(|r| r.enabled).count() as i64,
            )?;
        }
        if !self.tail.is_empty() {
            let sum = |field: fn(&TailStats) -> &std::sync::atomic::AtomicU64| {
                self.tail.iter().map(|t| load(field(t))).sum::<u64>()
            };
            counter(
                &mut encoder,
                "kubetrail_tail_events",
                "Events read by the file sources",
                sum(|t| &t.events),
            )?;
            counter(
                &mut encoder,
                "kubetrail_tail_read_bytes",
                "Bytes of complete lines read by the file sources",
                sum(|t| &t.bytes),
            )?;
            counter(
                &mut encoder,
                "kubetrail_tail_skipped_lines",
                "Lines of tailed files that were not valid audit events",
                sum(|t| &t.skipped),
            )?;
            let files: Vec<_> = self
                .tail
                .iter()
                .flat_map(|t| t.files.lock().map(|f| f.clone()).unwrap_or_default())
                .collect();
            let mut offsets = encoder.encode_descriptor(
                "kubetrail_tail_file_offset_bytes",
                "Bytes of a tailed file read and acknowledged",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for file in &files {
                let label = FileLabel {
                    path: file.path.clone(),
                };
                ConstGauge::new(file.offset as i64).encode(offsets.encode_family(&label)?)?;
            }
            let mut lags = encoder.encode_descriptor(
                "kubetrail_tail_file_lag_bytes",
                "Bytes of a tailed file not yet read (plain files)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for file in files.iter().filter(|f| !f.gzip) {
                let label = FileLabel {
                    path: file.path.clone(),
                };
                let lag = file.size.saturating_sub(file.offset) as i64;
                ConstGauge::new(lag).encode(lags.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    cluster: String,
    verb: String,
    resource: String,
    code: String,
    user_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbResource {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterCode {
    cluster: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterResource {
    cluster: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabel {
    filter: String,
}

/// One metric family of the exclusion filters: name, help, type and the value of a filter.
type ExclusionFamily = (
    &'static str,
    &'static str,
    prometheus_client::metrics::MetricType,
    fn(&kubetrail_pipeline::Exclusion) -> i64,
);

/// The cluster's API traffic, the log-based metrics and the exclusion filters.
fn encode_transforms(
    encoder: &mut DescriptorEncoder,
    transforms: &kubetrail_pipeline::Transforms,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    if let Some(metrics) = &transforms.metrics {
        let snapshot = metrics.snapshot();
        let mut family = encoder.encode_descriptor(
            "kubetrail_apiserver_requests",
            "API requests seen in audit events, by cluster, verb, resource, code class and user kind",
            None,
            MetricType::Counter,
        )?;
        for (key, n) in &snapshot.requests {
            let label = RequestLabels {
                cluster: key.cluster.clone(),
                verb: key.verb.to_owned(),
                resource: key.resource.clone(),
                code: key.code.to_owned(),
                user_kind: key.user_kind.to_owned(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "kubetrail_apiserver_request_duration_seconds",
            "Latency of API requests seen in audit events (long-running requests excluded), by verb and resource",
            None,
            MetricType::Histogram,
        )?;
        for ((verb, resource), histogram) in &snapshot.latency {
            let label = VerbResource {
                verb: (*verb).to_owned(),
                resource: resource.clone(),
            };
            ConstHistogram(histogram).encode(family.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "kubetrail_apiserver_auth_failures",
            "401 Unauthorized and 403 Forbidden answers seen in audit events, by cluster and code",
            None,
            MetricType::Counter,
        )?;
        for ((cluster, code), n) in &snapshot.auth_failures {
            let label = ClusterCode {
                cluster: cluster.clone(),
                code: code.to_string(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "kubetrail_apiserver_anonymous_requests",
            "Requests by system:anonymous seen in audit events, by cluster and resource",
            None,
            MetricType::Counter,
        )?;
        for ((cluster, resource), n) in &snapshot.anonymous {
            let label = ClusterResource {
                cluster: cluster.clone(),
                resource: resource.clone(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        for (name, help, kind, labels, series) in &snapshot.user {
            let metric_name = format!("kubetrail_audit_{name}");
            match kind {
                MetricKind::Counter => {
                    let mut family =
                        encoder.encode_descriptor(&metric_name, help, None, MetricType::Counter)?;
                    for (values, n) in &series.counts {
                        let pairs: Vec<(String, String)> =
                            labels.iter().cloned().zip(values.iter().cloned()).collect();
                        ConstCounter::new(*n).encode(family.encode_family(&Pairs(&pairs))?)?;
                    }
                }
                MetricKind::Histogram => {
                    let histogram_name = format!("{metric_name}_duration_seconds");
                    let mut family = encoder.encode_descriptor(
                        &histogram_name,
                        help,
                        None,
                        MetricType::Histogram,
                    )?;
                    for (values, histogram) in &series.histograms {
                        let pairs: Vec<(String, String)> =
                            labels.iter().cloned().zip(values.iter().cloned()).collect();
                        ConstHistogram(histogram).encode(family.encode_family(&Pairs(&pairs))?)?;
                    }
                }
            }
            counter(
                encoder,
                &format!("kubetrail_audit_{name}_overflow"),
                "Matching events not counted in a series of their own: the metric reached its 1000 series",
                series.overflow,
            )?;
        }
    }
    let exclusion_families: [ExclusionFamily; 3] = [
        (
            "kubetrail_exclusion_matched_events",
            "Events an enabled exclusion filter matched (kept samples included), by filter",
            MetricType::Counter,
            |e| e.matched.load(Ordering::Relaxed) as i64,
        ),
        (
            "kubetrail_exclusion_dropped_events",
            "Events an exclusion filter dropped, by filter",
            MetricType::Counter,
            |e| e.excluded.load(Ordering::Relaxed) as i64,
        ),
        (
            "kubetrail_exclusion_enabled",
            "1 while an exclusion filter applies",
            MetricType::Gauge,
            |e| i64::from(e.enabled.load(Ordering::Relaxed)),
        ),
    ];
    for (name, help, kind, value) in exclusion_families {
        if transforms.exclusions.is_empty() {
            break;
        }
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for e in &transforms.exclusions {
            let label = FilterLabel {
                filter: e.name.clone(),
            };
            let encoder = family.encode_family(&label)?;
            if matches!(kind, MetricType::Counter) {
                ConstCounter::new(value(e) as u64).encode(encoder)?;
            } else {
                ConstGauge::new(value(e)).encode(encoder)?;
            }
        }
    }
    Ok(())
}

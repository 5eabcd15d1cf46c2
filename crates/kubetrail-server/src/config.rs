//! The configuration of `kubetrail serve`: one YAML file (`--config`), mapped to these structs
//! with unknown fields refused, so a typo is an error instead of a silently ignored option.
//! Every option is documented here once; `docs/serve.md` shows a complete example. Flags of
//! `kubetrail serve` override the file for the common cases.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServeConfig {
    /// Address of the one HTTP port (ingest, API, health, metrics). Default `127.0.0.1:7420`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The data directory. Default `./kubetrail-data` (or `KUBETRAIL_DATA`).
    pub data: Option<PathBuf>,
    /// TLS for the port; without it the port speaks plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The webhook source (`POST /audit`).
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// The HTTP API (`/api/v1`).
    #[serde(default)]
    pub api: ApiConfig,
    /// File sources: the API server's log backend files.
    #[serde(default)]
    pub tail: Vec<TailConfig>,
    /// Where the file sources keep their checkpoints. Default `<data>/checkpoints.json`.
    pub checkpoints: Option<PathBuf>,
    /// The store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Redaction of credentials (on by default).
    #[serde(default)]
    pub redaction: RedactionSettings,
    /// An audit policy file applied to incoming events (drop and down-level as it says).
    pub policy: Option<PathBuf>,
    /// Queries whose matching events are dropped (`user:system:apiserver verb:watch`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Limits on incoming events.
    #[serde(default)]
    pub events: EventsConfig,
    /// Where bad input is kept (`<data>/quarantine/events`).
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Limits of the queries of the HTTP API (and later of monitors and detections).
    #[serde(default)]
    pub query: QueryConfig,
    /// Monitors (`docs/monitors.md`). Read again by the monitor loader, which reports every
    /// problem with its line; a bad monitor never stops the server.
    #[serde(default)]
    pub monitors: Vec<serde_yaml_ng::Value>,
    /// Notification channels of the monitors.
    #[serde(default)]
    pub channels: Vec<serde_yaml_ng::Value>,
    /// How monitors run.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    /// Named exclusion filters with sampling, switched on and off at runtime through the API.
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
    /// Log-based metrics on `/metrics`.
    #[serde(default)]
    pub metrics: Vec<MetricConfig>,
    /// Detection rules run on every accepted event (`docs/detections.md`).
    #[serde(default)]
    pub detections: DetectionsConfig,
    /// The file this configuration was read from (set by [`ServeConfig::load`]).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Live detections (`detections:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DetectionsConfig {
    /// Run the rules on every accepted event. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Directories or files of your rules and overrides, loaded after the bundled pack
    /// (`--rules DIR`).
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Leave the bundled pack out.
    #[serde(default)]
    pub no_pack: bool,
    /// Channels (defined under `channels:`) that findings are sent to.
    #[serde(default)]
    pub notify: Vec<String>,
    /// The lowest severity sent to the channels: info, low, medium, high, critical. Default
    /// `medium`.
    #[serde(default = "default_notify_severity")]
    pub notify_min_severity: String,
    /// The fields that make a finding's group: one message per rule and group per
    /// `groupWindow`. Default `[user, cluster]`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Default `1h`.
    #[serde(default = "default_group_window")]
    pub group_window: String,
    /// How long findings are kept (`90d`). Default: as long as events (`store.maxAge`), else
    /// forever.
    pub max_age: Option<String>,
}

fn default_notify_severity() -> String {
    "medium".to_owned()
}

fn default_group_by() -> Vec<String> {
    vec!["user".to_owned(), "cluster".to_owned()]
}

fn default_group_window() -> String {
    "1h".to_owned()
}

impl Default for DetectionsConfig {
    fn default() -> Self {
        DetectionsConfig {
            enabled: true,
            rules: Vec::new(),
            no_pack: false,
            notify: Vec::new(),
            notify_min_severity: default_notify_severity(),
            group_by: default_group_by(),
            group_window: default_group_window(),
            max_age: None,
        }
    }
}

/// A named exclusion filter (`exclusions:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExclusionConfig {
    /// Its name, for the API and the metrics.
    pub name: String,
    /// The events it drops (a query-language search).
    pub query: String,
    /// The share of matching events kept anyway (`10%`; default `0%`).
    #[serde(default = "default_keep")]
    pub keep: String,
    /// Whether it applies from the start (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_keep() -> String {
    "0%".to_owned()
}

/// A log-based metric (`metrics:`), exposed as `kubetrail_audit_<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricConfig {
    /// The metric's name (`secret_reads`).
    pub name: String,
    /// Which events count (a query-language search).
    pub query: String,
    /// `counter` (matching requests) or `histogram` (their latency).
    #[serde(rename = "type", default = "default_metric_kind")]
    pub kind: String,
    /// Label fields (`user`, `ns`); at most 1000 series, more are counted as overflow.
    #[serde(default)]
    pub by: Vec<String>,
    /// Its help text.
    pub help: Option<String>,
}

fn default_metric_kind() -> String {
    "counter".to_owned()
}

/// How monitors run (`monitoring:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MonitoringConfig {
    /// A directory of monitor files (`--monitors DIR`), one monitor or a list per file.
    pub dir: Option<PathBuf>,
    /// How long after a window's end it is evaluated (`30s`): events arriving later than this
    /// are not counted in their window.
    #[serde(default = "default_monitor_delay")]
    pub delay: String,
    /// kubetrail's address as people reach it, for the links in notifications
    /// (`--external-url`).
    pub external_url: Option<String>,
}

fn default_monitor_delay() -> String {
    "30s".to_owned()
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            dir: None,
            delay: default_monitor_delay(),
            external_url: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:7420".to_owned()
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            data: None,
            tls: None,
            webhook: WebhookConfig::default(),
            api: ApiConfig::default(),
            tail: Vec::new(),
            checkpoints: None,
            store: StoreConfig::default(),
            redaction: RedactionSettings::default(),
            policy: None,
            exclude: Vec::new(),
            events: EventsConfig::default(),
            quarantine: QuarantineConfig::default(),
            query: QueryConfig::default(),
            monitors: Vec::new(),
            channels: Vec::new(),
            monitoring: MonitoringConfig::default(),
            exclusions: Vec::new(),
            metrics: Vec::new(),
            detections: DetectionsConfig::default(),
            file: None,
        }
    }
}

/// What one query may ask for and use (see `docs/limits.md`). A query past a limit gets a
/// 400 naming the limit's key and, for the query text, the position.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryConfig {
    /// The longest query text (`4MiB`). Long queries are sent with POST.
    #[serde(default = "default_query_length")]
    pub max_length: String,
    /// The deepest nesting of parentheses and negations (32).
    #[serde(default = "default_query_depth")]
    pub max_depth: usize,
    /// The most search terms (1024); a value list `user:(a OR b OR …)` is one term.
    #[serde(default = "default_query_terms")]
    pub max_terms: usize,
    /// The most values in one value list (200000).
    #[serde(default = "default_query_values")]
    pub max_values: usize,
    /// The longest value or free-text term, in bytes (4096).
    #[serde(default = "default_query_value_length")]
    pub max_value_length: usize,
    /// The most fields after `by` (10).
    #[serde(default = "default_query_group_by")]
    pub max_group_by: usize,
    /// The most buckets of a `timechart` over the query's time range (10000).
    #[serde(default = "default_query_buckets")]
    pub max_buckets: u64,
    /// The most rows of an answer (10000).
    #[serde(default = "default_query_rows")]
    pub max_rows: u64,
    /// The most fields of one `/api/v1/facets` request (20).
    #[serde(default = "default_facet_fields")]
    pub max_facet_fields: usize,
    /// Longest a request's queries may run (`30s`).
    #[serde(default = "default_query_timeout")]
    pub timeout: String,
    /// Most memory one request's queries may hold for aggregations and sorts (`512MiB`).
    #[serde(default = "default_query_memory")]
    pub max_memory: String,
    /// Worker threads of the query engine (0: one per core).
    #[serde(default)]
    pub threads: usize,
    /// The niceness of the query threads (10; 0 to 19): under load, ingest gets the CPU first.
    #[serde(default = "default_query_niceness")]
    pub niceness: i32,
}

fn default_query_length() -> String {
    "4MiB".to_owned()
}
fn default_query_depth() -> usize {
    kubetrail_query::QueryLimits::default().max_depth
}
fn default_query_terms() -> usize {
    kubetrail_query::QueryLimits::default().max_terms
}
fn default_query_values() -> usize {
    kubetrail_query::QueryLimits::default().max_values
}
fn default_query_value_length() -> usize {
    kubetrail_query::QueryLimits::default().max_value_length
}
fn default_query_group_by() -> usize {
    kubetrail_query::QueryLimits::default().max_group_by
}
fn default_query_buckets() -> u64 {
    kubetrail_query::QueryLimits::default().max_buckets
}
fn default_query_rows() -> u64 {
    kubetrail_query::QueryLimits::default().max_rows
}
fn default_facet_fields() -> usize {
    20
}
fn default_query_timeout() -> String {
    "30s".to_owned()
}
fn default_query_memory() -> String {
    "512MiB".to_owned()
}
fn default_query_niceness() -> i32 {
    10
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_length: default_query_length(),
            max_depth: default_query_depth(),
            max_terms: default_query_terms(),
            max_values: default_query_values(),
            max_value_length: default_query_value_length(),
            max_group_by: default_query_group_by(),
            max_buckets: default_query_buckets(),
            max_rows: default_query_rows(),
            max_facet_fields: default_facet_fields(),
            timeout: default_query_timeout(),
            max_memory: default_query_memory(),
            threads: 0,
            niceness: default_query_niceness(),
        }
    }
}

/// Limits on incoming events; an event beyond one is quarantined, not stored (see
/// `docs/limits.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventsConfig {
    /// The largest event (`16MiB` default).
    #[serde(default = "default_max_event")]
    pub max_size: String,
    /// The deepest nesting of JSON objects and arrays in an event (default 10100: the API
    /// server accepts request bodies nested 10,000 levels, which an event holds one level
    /// down).
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

fn default_max_event() -> String {
    "16MiB".to_owned()
}

fn default_max_depth() -> usize {
    kubetrail_event::DEFAULT_MAX_DEPTH
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_size: default_max_event(),
            max_depth: default_max_depth(),
        }
    }
}

/// The quarantine of bad input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuarantineConfig {
    /// Its size limit (`256MiB` default). Past 90 % of it entries are kept without their
    /// input; past it, bad input is only counted (`kubetrail_quarantine_dropped_events_total`).
    #[serde(default = "default_quarantine_size")]
    pub max_size: String,
}

fn default_quarantine_size() -> String {
    "256MiB".to_owned()
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            max_size: default_quarantine_size(),
        }
    }
}

/// TLS settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM server certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate signed by it (mTLS).
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

/// The webhook source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Largest accepted request body (`16MiB` default; the API server's batches stay under
    /// 10 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_size: String,
    /// Request bodies being read, decoded or waiting for the store, all requests together
    /// (`32MiB` default). A request that would exceed it gets 429 before its body is read, so
    /// memory stays bounded however many senders push at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_size: String,
    /// The clusters allowed to send, each with its credentials.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
}

fn default_max_body() -> String {
    "16MiB".to_owned()
}

fn default_max_inflight() -> String {
    "32MiB".to_owned()
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body_size: default_max_body(),
            max_inflight_size: default_max_inflight(),
            clusters: Vec::new(),
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// Bearer tokens accepted by the API. With neither tokens nor tokenFiles, a token is
    /// generated on the first start and kept in `<data>/api-token`.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Files holding one token each (mounted Secrets), read at start.
    #[serde(default)]
    pub token_files: Vec<PathBuf>,
    /// Read-only tokens (the web UI's viewers): they search, query and read reports, but
    /// cannot create or delete monitors, switch exclusion filters or replay quarantine.
    #[serde(default)]
    pub viewer_tokens: Vec<String>,
    /// Files holding one read-only token each.
    #[serde(default)]
    pub viewer_token_files: Vec<PathBuf>,
    /// Queries running at once; more wait their turn (default 2).
    #[serde(default = "default_concurrent_queries")]
    pub max_concurrent_queries: usize,
}

fn default_concurrent_queries() -> usize {
    2
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            token_files: Vec::new(),
            viewer_tokens: Vec::new(),
            viewer_token_files: Vec::new(),
            max_concurrent_queries: default_concurrent_queries(),
        }
    }
}

/// One cluster allowed to send events; they are stamped with its name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// The cluster's name (the `cluster` field of its events).
    pub name: String,
    /// Its token (bearer header over https, or `/audit/<token>`).
    pub token: Option<String>,
    /// A file holding its token (a mounted Secret), read at start.
    pub token_file: Option<PathBuf>,
    /// The common name of its client certificate, when the port requires mTLS.
    #[serde(rename = "clientCertCN")]
    pub client_cert_cn: Option<String>,
}

/// One file source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TailConfig {
    /// Paths or globs; include the rotated names (`/var/log/kubernetes/audit/audit*.log*`) so
    /// lines written just before a rotation are never missed.
    pub paths: Vec<String>,
    /// The cluster its events are stamped with.
    #[serde(default)]
    pub cluster: String,
    /// Where to start in files seen on the very first start: `beginning` (default) or `end`.
    #[serde(default)]
    pub start_at: kubetrail_pipeline::tail::StartAt,
}

/// Store settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    /// Events become queryable at the latest after this long (`5s`).
    #[serde(default = "default_flush")]
    pub flush_interval: String,
    /// Delete days older than this (`30d`); unset keeps everything.
    pub max_age: Option<String>,
    /// Delete the oldest data above this size (`50GiB`); unset has no limit.
    pub max_size: Option<String>,
    /// Webhook requests get 429 while more events than this wait to be written.
    #[serde(default = "default_max_queued")]
    pub max_queued_events: usize,
}

fn default_flush() -> String {
    "5s".to_owned()
}

fn default_max_queued() -> usize {
    100_000
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            flush_interval: default_flush(),
            max_age: None,
            max_size: None,
            max_queued_events: default_max_queued(),
        }
    }
}

/// Redaction settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedactionSettings {
    /// Remove credentials before storing (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra paths to redact (`requestObject.spec.password`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Extra regular expressions to redact in every string.
    #[serde(default)]
    pub patterns: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Default for RedactionSettings {
    fn default() -> Self {
        RedactionSettings {
            enabled: true,
            paths: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (with line and column).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        message: String,
    },
    /// A value is wrong.
    #[error("{field}: {message}")]
    Value {
        /// The option.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The deepest nesting of flow collections a configuration may have.
const MAX_CONFIG_NESTING: usize = 64;

impl ServeConfig {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<ServeConfig, String> {
        if text.trim().is_empty() {
            return Ok(ServeConfig::default());
        }
        // The YAML parser's time grows with the square of flow nesting (20,000 levels of `[`
        // took seconds); no configuration nests more than a few levels.
        if kubetrail_event::json::nests_deeper_than(text.as_bytes(), MAX_CONFIG_NESTING) {
            return Err(format!(
                "the configuration nests `[` and `{{` more than {MAX_CONFIG_NESTING} levels deep"
            ));
        }
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../docs/examples/kubetrail.yaml");
        let config = ServeConfig::parse(text).unwrap();
        assert_eq!(config.webhook.clusters.len(), 2);
        assert_eq!(config.tail.len(), 1);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/kubetrail.yaml");
        let mut defs = kubetrail_alert::spec::load_serve_config(&path);
        defs.check_channels();
        assert!(defs.problems.is_empty(), "{:?}", defs.problems);
        assert_eq!((defs.monitors.len(), defs.channels.len()), (2, 2));
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let text = format!("exclude: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = ServeConfig::parse(&text).unwrap_err();
        assert!(error.contains("more than 64 levels"), "{error}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_place() {
        let error = ServeConfig::parse("listen: 0.0.0.0:7420\nwebhok: {}\n").unwrap_err();
        assert!(error.contains("webhok"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }
}

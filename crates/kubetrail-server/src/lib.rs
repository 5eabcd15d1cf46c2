//! `kubetrail serve`: one HTTP(S) port for the webhook source, health, metrics and status; the
//! file sources and the ingest sink run beside it.
//!
//! ```text
//!  kube-apiserver ── POST /audit[/<token>] ─▶ webhook (auth, limits: the body's bytes) ───┐
//!  audit.log files ─▶ tailer threads (kubetrail-pipeline::tail: whole lines) ───────────────┤
//!                        ingest thread: decode, transforms, group commit to WAL ◀────────────┘
//!                        └─ ack ─▶ 200 to the API server
//! ```
//!
//! The accept loop is written out (tokio + rustls + hyper-util) rather than hidden in a server
//! crate because the webhook needs the client certificate's identity (mTLS) on each request
//! and a graceful shutdown that drains connections before the store is closed.

mod api;
pub mod config;
mod exclusions;
mod findings;
pub mod metrics;
mod monitors;
mod quarantine;
mod ui;
pub mod units;
mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kubetrail_event::DecodeOptions;
use kubetrail_event::{RedactionConfig, Redactor};
use kubetrail_pipeline::tail::{TailOptions, TailStats, Tailer};
use kubetrail_pipeline::{Ingest, IngestOptions, IngestThread, Transforms};
use kubetrail_store::Retention;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use config::{ConfigError, ServeConfig};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The error.
        source: kubetrail_store::StoreError,
    },
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file source could not start.
    #[error(transparent)]
    Tail(#[from] kubetrail_pipeline::tail::TailError),
}

fn value_error(field: &str, message: impl ToString) -> ServerError {
    ServerError::Config(ConfigError::Value {
        field: field.to_owned(),
        message: message.to_string(),
    })
}

/// A credential accepted by the webhook and the cluster it stands for.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub tokens: Vec<(String, String)>,
    pub client_cns: Vec<(String, String)>,
}

/// Everything the request handlers share.
pub(crate) struct App {
    pub credentials: Credentials,
    pub api: api::Api,
    pub ingest: Ingest,
    pub transforms: Arc<Transforms>,
    pub metrics: metrics::Metrics,
    pub max_body_bytes: usize,
    pub inflight: InflightBudget,
    pub shutting_down: AtomicBool,
    pub started: Instant,
    pub status: StatusInfo,
    pub tail_stats: Vec<Arc<TailStats>>,
    pub webhook_counts: Mutex<BTreeMap<String, u64>>,
    pub monitors: Option<Arc<monitors::Monitors>>,
    pub detections: Option<Arc<kubetrail_alert::detect::Detector>>,
}

/// Bytes of webhook requests between the start of their body and their answer, all requests
/// together, counted in KiB permits (a `u32` of KiB covers any sensible budget).
pub(crate) struct InflightBudget {
    permits: tokio::sync::Semaphore,
    total_kib: u32,
}

impl InflightBudget {
    fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        InflightBudget {
            permits: tokio::sync::Semaphore::new(total_kib as usize),
            total_kib,
        }
    }

    /// Reserves room for a body of `bytes`, or None when the budget is used up.
    pub fn try_reserve(&self, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        self.permits.try_acquire_many(kib).ok()
    }
}

/// Static facts for `kubetrail status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusInfo {
    version: &'static str,
    listen: String,
    tls: bool,
    mtls: bool,
    data: String,
    webhook_clusters: Vec<String>,
    tail_patterns: Vec<String>,
}

/// The client certificate's common name on this connection (mTLS), if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientIdentity(pub Option<String>);

/// A configured server, ready to run.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ingest_thread: IngestThread,
    tailers: Vec<std::thread::JoinHandle<()>>,
    stop_tailers: Arc<AtomicBool>,
    local_addr: SocketAddr,
    api_token_file: Option<PathBuf>,
    monitor_thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Resolves the configuration, opens the store (replaying its write-ahead log), starts the
    /// file sources and binds the port. `default_data` is used when the configuration names no
    /// data directory.
    pub async fn start(config: ServeConfig, default_data: PathBuf) -> Result<Server, ServerError> {
        let data = config.data.clone().unwrap_or(default_data);
        let transforms = Arc::new(transforms(&config)?);
        let credentials = credentials(&config)?;
        let listen: SocketAddr = config
            .listen
            .parse()
            .map_err(|e| value_error("listen", format!("{:?}: {e}", config.listen)))?;
        if credentials.tokens.is_empty()
            && credentials.client_cns.is_empty()
            && !listen.ip().is_loopback()
        {
            return Err(value_error(
                "webhook.clusters",
                format!(
                    "listening on {listen} without any webhook token would let anyone on the network write events; configure a cluster token (--webhook-token CLUSTER=TOKEN) or listen on 127.0.0.1"
                ),
            ));
        }
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let max_body_bytes = units::parse_size(&config.webhook.max_body_size)
            .map_err(|e| value_error("webhook.maxBodySize", e))?
            as usize;
        let max_inflight_bytes = units::parse_size(&config.webhook.max_inflight_size)
            .map_err(|e| value_error("webhook.maxInflightSize", e))?
            .max(max_body_bytes as u64);
        let decode = DecodeOptions {
            max_event_bytes: units::parse_size(&config.events.max_size)
                .map_err(|e| value_error("events.maxSize", e))?
                as usize,
            max_depth: config.events.max_depth.max(1),
            keep_skipped_input: true,
            ..DecodeOptions::default()
        };
        // Live monitors are fed from the events the store accepts (kubetrail_alert::stream).
        let monitor_tap = kubetrail_alert::stream::Tap::new();
        // Detections judge the same accepted events (kubetrail_alert::detect).
        let detector = detections(&config, &data)?;
        let mut taps: Vec<Arc<dyn kubetrail_pipeline::EventTap>> = vec![monitor_tap.clone()];
        if let Some(detector) = &detector {
            taps.push(detector.clone());
        }
        let mut ingest_options = IngestOptions::new(data.clone());
        ingest_options.tap = Some(Arc::new(kubetrail_pipeline::Taps(taps)));
        ingest_options.decode = decode.clone();
        ingest_options.quarantine_max_bytes = units::parse_size(&config.quarantine.max_size)
            .map_err(|e| value_error("quarantine.maxSize", e))?;
        ingest_options.flush_interval =
            duration(&config.store.flush_interval, "store.flushInterval")?;
        ingest_options.max_queued_events = config.store.max_queued_events.max(1);
        ingest_options.retention = Retention {
            max_age_micros: config
                .store
                .max_age
                .as_deref()
                .map(|a| units::parse_duration_flag(a).map_err(|e| value_error("store.maxAge", e)))
                .transpose()?,
            max_bytes: config
                .store
                .max_size
                .as_deref()
                .map(|s| units::parse_size(s).map_err(|e| value_error("store.maxSize", e)))
                .transpose()?,
        };
        let ingest_thread = tokio::task::block_in_place(|| IngestThread::start(ingest_options))
            .map_err(|source| ServerError::Store {
                dir: data.clone(),
                source,
            })?;
        let ingest = ingest_thread.handle();
        let stop_tailers = Arc::new(AtomicBool::new(false));
        let checkpoints = config
            .checkpoints
            .clone()
            .unwrap_or_else(|| data.join("checkpoints.json"));
        let mut tailers = Vec::new();
        let mut tail_stats = Vec::new();
        for (i, tail) in config.tail.iter().enumerate() {
            // One checkpoint file per source, so sources never overwrite each other's.
            let path = if i == 0 {
                checkpoints.clone()
            } else {
                checkpoints.with_extension(format!("{i}.json"))
            };
            let mut options = TailOptions::new(tail.paths.clone(), path);
            options.cluster = tail.cluster.clone();
            options.start_at = tail.start_at;
            options.decode = decode.clone();
            let tailer = Tailer::new(
                options,
                transforms.clone(),
                ingest.clone(),
                stop_tailers.clone(),
            )?;
            tail_stats.push(tailer.stats());
            tailers.push(tailer.spawn().map_err(|e| value_error("tail", e))?);
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let status = StatusInfo {
            version: env!("CARGO_PKG_VERSION"),
            listen: local_addr.to_string(),
            tls: tls.is_some(),
            mtls: config
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some()),
            data: data.display().to_string(),
            webhook_clusters: config
                .webhook
                .clusters
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            tail_patterns: config.tail.iter().flat_map(|t| t.paths.clone()).collect(),
        };
        let (api_tokens, api_token_file) = api_tokens(&config, &data)?;
        let monitors = Arc::new(monitors::Monitors::new(
            monitors::Sources {
                config_file: config.file.clone(),
                dir: config.monitoring.dir.clone(),
                api_dir: data.join("monitors").join("api"),
            },
            kubetrail_alert::live::LiveOptions {
                dir: data.join("monitors"),
                delay: units::parse_duration_flag(&config.monitoring.delay)
                    .map_err(|e| value_error("monitoring.delay", e))?,
                external_url: config.monitoring.external_url.clone(),
                tap: Some(monitor_tap),
            },
        ));
        let metrics = metrics::Metrics::new(
            ingest.stats().clone(),
            tail_stats.clone(),
            Some(monitors.clone()),
            Some(transforms.clone()),
            detector.clone(),
        );
        let app = Arc::new(App {
            credentials,
            api: api::Api::new(
                api_tokens,
                data.clone(),
                config.api.max_concurrent_queries,
                query_settings(&config.query)?,
            ),
            ingest,
            transforms,
            metrics,
            max_body_bytes,
            inflight: InflightBudget::new(max_inflight_bytes),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            status,
            tail_stats,
            webhook_counts: Mutex::new(BTreeMap::new()),
            monitors: Some(monitors.clone()),
            detections: detector,
        });
        let monitor_thread = Some(
            monitors
                .spawn(app.clone(), tokio::runtime::Handle::current())
                .map_err(|e| value_error("monitors", e))?,
        );
        #[cfg(unix)]
        if let Ok(mut hangup) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let monitors = monitors.clone();
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reading the monitor definitions again");
                    monitors.request_reload();
                }
            });
        }
        Ok(Server {
            app,
            listener,
            tls,
            ingest_thread,
            tailers,
            stop_tailers,
            local_addr,
            api_token_file,
            monitor_thread,
        })
    }

    /// Where the generated API token is kept, when no token was configured.
    pub fn api_token_file(&self) -> Option<&std::path::Path> {
        self.api_token_file.as_deref()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the port speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets open requests finish (up to
    /// 15 s), stops the file sources, and stores everything before returning.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let router = router(self.app.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let service = with_identity(router, ClientIdentity(None));
                        let connection = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                    Some(acceptor) => {
                        let stream = match acceptor.accept(stream).await {
                            Ok(stream) => stream,
                            Err(e) => {
                                tracing::info!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        };
                        let identity = ClientIdentity(client_common_name(stream.get_ref().1));
                        let service = with_identity(router, identity);
                        let connection = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                }
            });
        }
        tracing::info!("shutting down: no new connections; finishing open requests");
        self.app.shutting_down.store(true, Ordering::Relaxed);
        drop(self.listener);
        if tokio::time::timeout(Duration::from_secs(15), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("open requests did not finish within 15s");
        }
        self.stop_tailers.store(true, Ordering::Relaxed);
        if let Some(monitors) = &self.app.monitors {
            monitors.stop();
        }
        let monitor_thread = self.monitor_thread;
        let tailers = self.tailers;
        let ingest_thread = self.ingest_thread;
        tokio::task::spawn_blocking(move || {
            for tailer in tailers {
                let _ = tailer.join();
            }
            if let Some(thread) = monitor_thread {
                let _ = thread.join();
            }
            ingest_thread.shutdown();
        })
        .await
        .ok();
        tracing::info!("stopped; every accepted event is stored");
    }
}

/// The router as a hyper service, with the connection's client identity on every request.
fn with_identity(
    router: Router,
    identity: ClientIdentity,
) -> impl hyper::service::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>>
             + Send
             + use<>,
> + Clone {
    hyper::service::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(identity.clone());
            tower::ServiceExt::oneshot(router.clone(), request)
        },
    )
}

fn client_common_name(connection: &rustls::ServerConnection) -> Option<String> {
    let certificate = connection.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

/// Starts live detections when they are enabled: the bundled pack and the configured rule
/// files (a bad rule file is logged and left out, as a bad monitor is; the other rules run).
fn detections(
    config: &ServeConfig,
    data: &Path,
) -> Result<Option<Arc<kubetrail_alert::detect::Detector>>, ServerError> {
    let settings = &config.detections;
    if !settings.enabled {
        return Ok(None);
    }
    let files = kubetrail_alert::detect::read_rule_files(&settings.rules)
        .map_err(|e| value_error("detections.rules", e))?;
    let set = kubetrail_rules::RuleSet::load(!settings.no_pack, &files);
    for problem in &set.problems {
        tracing::warn!(%problem, "rule left out");
    }
    let notify_min_severity = kubetrail_rules::Severity::parse(&settings.notify_min_severity)
        .ok_or_else(|| {
            value_error(
                "detections.notifyMinSeverity",
                format!(
                    "{:?} is not a severity (info, low, medium, high, critical)",
                    settings.notify_min_severity
                ),
            )
        })?;
    let group_by = settings
        .group_by
        .iter()
        .map(|name| {
            kubetrail_query::Field::resolve(name, 0)
                .ok()
                .filter(|f| !f.is_search_only())
                .ok_or_else(|| {
                    value_error("detections.groupBy", format!("{name:?} is not a field"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_age = match settings.max_age.as_ref().or(config.store.max_age.as_ref()) {
        Some(age) => {
            Some(units::parse_duration_flag(age).map_err(|e| value_error("detections.maxAge", e))?)
        }
        None => None,
    };
    let options = kubetrail_alert::detect::DetectOptions {
        dir: data.join("findings"),
        outbox_dir: data.join("monitors").join("outbox"),
        notify: settings.notify.clone(),
        notify_min_severity,
        group_by,
        group_window: units::parse_duration_flag(&settings.group_window)
            .map_err(|e| value_error("detections.groupWindow", e))?,
        max_age,
        external_url: config.monitoring.external_url.clone(),
    };
    tracing::info!(
        rules = set.enabled().count(),
        problems = set.problems.len(),
        "detections running"
    );
    let detector = kubetrail_alert::detect::Detector::start(&set, options)
        .map_err(|e| value_error("detections", e))?;
    // The query engine has a runtime of its own, opened and dropped outside the server's.
    tokio::task::block_in_place(|| warm_up_detections(&detector, data));
    Ok(Some(detector))
}

/// Reads the stored history the stateful rules need before events flow (first-seen tuples,
/// sequences in progress). A store that cannot be read is logged: those rules then learn from
/// the live stream alone, and the others run as always.
fn warm_up_detections(detector: &kubetrail_alert::detect::Detector, data: &Path) {
    let store = match kubetrail_store::QueryEngine::open(data) {
        Ok(store) => store,
        Err(kubetrail_store::StoreError::Missing(_)) => return,
        Err(e) => {
            tracing::warn!(error = %e, "stored history could not be read for the stateful rules");
            return;
        }
    };
    let started = std::time::Instant::now();
    let now = kubetrail_alert::now_micros();
    match detector.warm_up(&store, now) {
        Ok(0) => {}
        Ok(events) => tracing::info!(
            events,
            seconds = started.elapsed().as_secs_f64(),
            "stateful rules learned from stored history"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "stored history could not be read for the stateful rules")
        }
    }
}

fn duration(text: &str, field: &str) -> Result<Duration, ServerError> {
    let micros = units::parse_duration_flag(text).map_err(|e| value_error(field, e))?;
    Ok(Duration::from_micros(micros as u64))
}

fn transforms(config: &ServeConfig) -> Result<Transforms, ServerError> {
    let redactor = if config.redaction.enabled {
        Some(
            Redactor::new(&RedactionConfig {
                paths: config.redaction.paths.clone(),
                patterns: config.redaction.patterns.clone(),
            })
            .map_err(|e| value_error("redaction", e))?,
        )
    } else {
        None
    };
    let exclude = config
        .exclude
        .iter()
        .map(|q| {
            kubetrail_query::Matcher::parse(q)
                .map_err(|e| value_error("exclude", format!("\n{}", e.render(q))))
        })
        .collect::<Result<_, _>>()?;
    let mut exclusions = Vec::new();
    for (i, e) in config.exclusions.iter().enumerate() {
        let field = format!("exclusions[{i}]");
        let matcher = kubetrail_query::Matcher::parse(&e.query)
            .map_err(|err| value_error(&field, format!("query:\n{}", err.render(&e.query))))?;
        let keep = e.keep.trim().trim_end_matches('%').trim();
        let keep_per_10k = keep
            .parse::<f64>()
            .ok()
            .filter(|k| (0.0..=100.0).contains(k))
            .map(|k| (k * 100.0).round() as u32)
            .ok_or_else(|| {
                value_error(
                    &field,
                    format!("keep: {:?} is not a percentage from 0% to 100%", e.keep),
                )
            })?;
        if exclusions
            .iter()
            .any(|x: &kubetrail_pipeline::Exclusion| x.name == e.name)
        {
            return Err(value_error(
                &field,
                format!("two exclusions are named {:?}", e.name),
            ));
        }
        exclusions.push(kubetrail_pipeline::Exclusion {
            name: e.name.clone(),
            query: e.query.clone(),
            matcher,
            keep_per_10k,
            enabled: std::sync::atomic::AtomicBool::new(e.enabled),
            matched: std::sync::atomic::AtomicU64::new(0),
            excluded: std::sync::atomic::AtomicU64::new(0),
        });
    }
    let mut user_metrics = Vec::new();
    for (i, m) in config.metrics.iter().enumerate() {
        let field = format!("metrics[{i}]");
        if !m
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || m.name.is_empty()
            || m.name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(value_error(
                &field,
                format!(
                    "name {:?}: letters, digits and _ (a Prometheus metric name)",
                    m.name
                ),
            ));
        }
        let filter = kubetrail_query::Matcher::parse(&m.query)
            .map_err(|err| value_error(&field, format!("query:\n{}", err.render(&m.query))))?;
        let kind = match m.kind.as_str() {
            "counter" => kubetrail_pipeline::audit_metrics::MetricKind::Counter,
            "histogram" => kubetrail_pipeline::audit_metrics::MetricKind::Histogram,
            other => {
                return Err(value_error(
                    &field,
                    format!("type {other:?}: counter or histogram"),
                ));
            }
        };
        let by =
            m.by.iter()
                .map(|name| {
                    kubetrail_query::Field::resolve(name, 0)
                        .map(|f| (name.replace(['.', '-', '/'], "_"), f))
                        .map_err(|e| value_error(&field, format!("by: {}", e.message)))
                })
                .collect::<Result<Vec<_>, _>>()?;
        user_metrics.push(kubetrail_pipeline::audit_metrics::UserMetric {
            name: m.name.clone(),
            help: m
                .help
                .clone()
                .unwrap_or_else(|| format!("Audit events matching {}", m.query)),
            filter,
            kind,
            by,
        });
    }
    let metrics = Some(Arc::new(
        kubetrail_pipeline::audit_metrics::AuditMetrics::new(user_metrics),
    ));
    let policy = match &config.policy {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| value_error("policy", format!("{}: {e}", path.display())))?;
            let loaded = kubetrail_policy::load(&text).map_err(|e| {
                let problems: Vec<String> = e
                    .diagnostics
                    .iter()
                    .map(|d| match d.line {
                        Some(line) => format!("{}:{line}: {}", path.display(), d.message),
                        None => format!("{}: {}", path.display(), d.message),
                    })
                    .collect();
                value_error(
                    "policy",
                    format!("the API server would refuse it:\n{}", problems.join("\n")),
                )
            })?;
            Some(kubetrail_policy::Evaluator::new(&loaded.policy))
        }
    };
    Ok(Transforms {
        exclude,
        exclusions,
        metrics,
        policy,
        redactor,
    })
}

/// The API's tokens with their roles: the configured ones, or a generated one (full access)
/// kept in the data directory when no full-access token is configured.
fn api_tokens(
    config: &ServeConfig,
    data: &std::path::Path,
) -> Result<(Vec<api::ApiToken>, Option<PathBuf>), ServerError> {
    let read = |key: &str, inline: &[String], files: &[PathBuf], role: api::Role| {
        let mut tokens: Vec<api::ApiToken> = inline
            .iter()
            .map(|t| api::ApiToken::new(t.trim(), role))
            .collect();
        for file in files {
            let token = std::fs::read_to_string(file)
                .map_err(|e| value_error(key, format!("{}: {e}", file.display())))?;
            tokens.push(api::ApiToken::new(token.trim(), role));
        }
        if let Some(short) = tokens.iter().find(|t| t.secret.len() < 16) {
            return Err(value_error(
                key,
                format!(
                    "a token of {} characters is too short; use a long random secret (openssl rand -hex 32)",
                    short.secret.len()
                ),
            ));
        }
        Ok(tokens)
    };
    let api = &config.api;
    let mut tokens = read(
        "api.tokens",
        &api.tokens,
        &api.token_files,
        api::Role::Admin,
    )?;
    let viewers = read(
        "api.viewerTokens",
        &api.viewer_tokens,
        &api.viewer_token_files,
        api::Role::Viewer,
    )?;
    if let Some(shared) = viewers
        .iter()
        .find(|v| tokens.iter().any(|t| t.secret == v.secret))
    {
        return Err(value_error(
            "api.viewerTokens",
            format!(
                "a token of {} characters is both a full-access and a read-only token",
                shared.secret.len()
            ),
        ));
    }
    let mut generated = None;
    if tokens.is_empty() {
        let (token, path) = api::generated_token(data).map_err(|e| {
            value_error(
                "api.tokens",
                format!("cannot keep a generated token in {}: {e}", data.display()),
            )
        })?;
        tokens.push(api::ApiToken::new(&token, api::Role::Admin));
        generated = Some(path);
    }
    tokens.extend(viewers);
    Ok((tokens, generated))
}

fn credentials(config: &ServeConfig) -> Result<Credentials, ServerError> {
    let mut tokens = Vec::new();
    let mut client_cns = Vec::new();
    for cluster in &config.webhook.clusters {
        let field = format!("webhook.clusters[{}]", cluster.name);
        let token = match (&cluster.token, &cluster.token_file) {
            (Some(token), None) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| value_error(&field, format!("tokenFile {}: {e}", file.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(value_error(&field, "give token or tokenFile, not both"));
            }
        };
        if let Some(token) = token {
            if token.len() < 16 {
                return Err(value_error(
                    &field,
                    "the token is shorter than 16 characters; use a long random secret (openssl rand -hex 32)",
                ));
            }
            if token.contains('/') || token.contains('?') {
                return Err(value_error(
                    &field,
                    "the token may not contain '/' or '?' (it is also used as a URL path segment)",
                ));
            }
            if tokens.iter().any(|(t, _)| *t == token) {
                return Err(value_error(&field, "the same token is configured twice"));
            }
            tokens.push((token, cluster.name.clone()));
        }
        if let Some(cn) = &cluster.client_cert_cn {
            client_cns.push((cn.clone(), cluster.name.clone()));
        }
        if cluster.client_cert_cn.is_none()
            && cluster.token.is_none()
            && cluster.token_file.is_none()
        {
            return Err(value_error(
                &field,
                "a cluster needs a token, a tokenFile or a clientCertCN",
            ));
        }
    }
    Ok(Credentials { tokens, client_cns })
}

fn load_tls(tls: &config::TlsConfig) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file_error = |field: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        value_error(field, format!("{}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| file_error("tls.certFile", &tls.cert_file, &e))?;
    if certs.is_empty() {
        return Err(file_error(
            "tls.certFile",
            &tls.cert_file,
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| file_error("tls.keyFile", &tls.key_file, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| value_error("tls", e))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_error("tls.clientCAFile", ca, &e))?
            {
                let cert = cert.map_err(|e| file_error("tls.clientCAFile", ca, &e))?;
                roots
                    .add(cert)
                    .map_err(|e| file_error("tls.clientCAFile", ca, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| file_error("tls.clientCAFile", ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server_config = builder
        .with_single_cert(certs, key)
        .map_err(|e| file_error("tls.keyFile", &tls.key_file, &e))?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server_config)))
}

fn router(app: Arc<App>) -> Router {
    let mut api = Router::new();
    for (path, route) in api::routes()
        .into_iter()
        .chain(quarantine::routes())
        .chain(monitors::routes())
        .chain(exclusions::routes())
        .chain(findings::routes())
    {
        api = api.route(path, route);
    }
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            api::require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            app.api.max_body_bytes(),
        ));
    Router::new()
        .nest("/api/v1", api)
        .route("/api/v1/openapi.yaml", get(api::openapi))
        .route("/audit", post(webhook::receive))
        .route("/audit/{token}", post(webhook::receive_with_path_token))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status))
        .route("/ui/{*path}", get(ui::asset))
        .fallback(ui::page)
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let stats = app.ingest.stats();
    if app.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !stats.healthy.load(Ordering::Relaxed) {
        let reason = stats
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store cannot accept events: {reason}\n"),
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// The query limits and budget of the configuration.
fn query_settings(config: &config::QueryConfig) -> Result<api::QuerySettings, ServerError> {
    let size = |text: &str, key: &str| units::parse_size(text).map_err(|e| value_error(key, e));
    if !(0..=19).contains(&config.niceness) {
        return Err(value_error(
            "query.niceness",
            format!("{} is not a niceness from 0 to 19", config.niceness),
        ));
    }
    Ok(api::QuerySettings {
        limits: kubetrail_query::QueryLimits {
            max_length: size(&config.max_length, "query.maxLength")? as usize,
            max_depth: config.max_depth.max(1),
            max_terms: config.max_terms.max(1),
            max_values: config.max_values.max(1),
            max_value_length: config.max_value_length.max(1),
            max_group_by: config.max_group_by.max(1),
            max_buckets: config.max_buckets.max(1),
            max_rows: config.max_rows.max(1),
        },
        max_facet_fields: config.max_facet_fields.max(1),
        budget: kubetrail_store::QueryBudget {
            timeout: Some(duration(&config.timeout, "query.timeout")?),
            max_memory: Some(size(&config.max_memory, "query.maxMemory")? as usize),
        },
        threads: config.threads,
        niceness: config.niceness,
    })
}

/// What the quarantine received since the start: counts by source and reason, its size.
fn quarantine_status(stats: &kubetrail_pipeline::IngestStats) -> serde_json::Value {
    let counts = stats
        .quarantined
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let mut by_reason = serde_json::Map::new();
    for ((_, reason), n) in &counts {
        let total = by_reason
            .get(reason)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        by_reason.insert(reason.clone(), (total + n).into());
    }
    serde_json::json!({
        "quarantined": counts.values().sum::<u64>(),
        "byReason": by_reason,
        "dropped": stats.quarantine_dropped.load(Ordering::Relaxed),
        "bytes": stats.quarantine_bytes.load(Ordering::Relaxed),
    })
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let stats = app.ingest.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let files: Vec<kubetrail_pipeline::tail::FileStatus> = app
        .tail_stats
        .iter()
        .flat_map(|t| t.files.lock().map(|f| f.clone()).unwrap_or_default())
        .collect();
    let body = serde_json::json!({
        "server": app.status,
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "healthy": stats.healthy.load(Ordering::Relaxed) && !app.shutting_down.load(Ordering::Relaxed),
        "lastError": stats.last_error.lock().ok().and_then(|e| e.clone()),
        "ingest": {
            "accepted": load(&stats.accepted),
            "duplicates": load(&stats.duplicates),
            "queuedEvents": load(&stats.queued_events),
            "storeLagEvents": stats.store_lag(),
            "commits": load(&stats.commits),
            "busyRejections": load(&stats.busy_rejections),
            "lastAcceptedAt": match stats.last_accepted_micros.load(Ordering::Relaxed) {
                0 => None,
                micros => Some(kubetrail_report::format_micros(micros)),
            },
        },
        "webhook": app.webhook_counts.lock().map(|c| c.clone()).unwrap_or_default(),
        "quarantine": quarantine_status(stats),
        "tail": {
            "events": app.tail_stats.iter().map(|t| load(&t.events)).sum::<u64>(),
            "skippedLines": app.tail_stats.iter().map(|t| load(&t.skipped)).sum::<u64>(),
            "quarantinedLines": app.tail_stats.iter().map(|t| load(&t.quarantined)).sum::<u64>(),
            "filtered": app.tail_stats.iter().map(|t| load(&t.filtered)).sum::<u64>(),
            "files": files,
        },
    });
    axum::Json(body).into_response()
}

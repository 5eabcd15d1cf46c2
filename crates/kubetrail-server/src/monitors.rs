//! Monitors in the server: where definitions come from (the config file's `monitors:` and
//! `channels:`, `--monitors DIR`, and the API's own in `<data>/monitors/api/`), reloading them
//! when a file changes, on SIGHUP or after an API change, the evaluation thread, the delivery
//! of notifications, the event-time watermark, and the `/api/v1/monitors` routes.
//!
//! The watermark: for each cluster, the newest event time in committed segments (the store
//! tracks it per hand-off, so what it covers is queryable) for monitors that query the store,
//! and the newest event time the store accepted (the tap tracks it) for monitors fed by the
//! live stream, which have every accepted event already and need not wait for the store's
//! flush. Clusters that sent nothing for
//! [`STALE_AFTER`] are left out — an absence monitor's business, not a reason to hold every
//! other monitor — and the watermark of the rest is the oldest of theirs, minus the delay.
//! When every received event is queryable (for the stream: accepted) the pipeline is idle
//! and the wall clock minus the delay is the watermark: a window after the last event is
//! complete once the delay has passed, so a burst that ends is evaluated, and its alert
//! resolves, without waiting for the next event. With no live cluster at all there is no
//! watermark: monitors wait, and after `no_data_after` their groups are in NoData.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use kubetrail_alert::deliver::{Deliverer, DeliveryStats};
use kubetrail_alert::live::{Live, LiveOptions, MonitorStatus};
use kubetrail_alert::spec::{self, Definitions};
use kubetrail_alert::stream::Tap;
use kubetrail_alert::{now_micros, outbox::write_atomically};
use kubetrail_pipeline::Ingest;
use kubetrail_store::QueryEngine;
use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::api::ApiError;

/// A cluster silent for this long no longer holds the watermark back.
pub const STALE_AFTER: i64 = 5 * 60_000_000;

/// Where definitions come from.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The serve configuration file.
    pub config_file: Option<PathBuf>,
    /// `--monitors DIR`.
    pub dir: Option<PathBuf>,
    /// `<data>/monitors/api`.
    pub api_dir: PathBuf,
}

impl Sources {
    fn files(&self) -> Vec<(PathBuf, bool)> {
        let mut files: Vec<(PathBuf, bool)> =
            self.config_file.iter().map(|f| (f.clone(), true)).collect();
        for dir in self.dir.iter().chain([&self.api_dir]) {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                        .collect()
                })
                .unwrap_or_default();
            in_dir.sort();
            files.extend(in_dir.into_iter().map(|p| (p, false)));
        }
        files
    }

    /// What changes when a file is edited, added or removed.
    fn signature(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        self.files()
            .into_iter()
            .map(|(path, _)| {
                let meta = std::fs::metadata(&path).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let len = meta.map_or(0, |m| m.len());
                (path, modified, len)
            })
            .collect()
    }

    /// Every definition; problems name their file and line.
    pub fn load(&self) -> Definitions {
        let mut all = Definitions::default();
        for (path, is_config) in self.files() {
            all.extend(if is_config {
                spec::load_serve_config(&path)
            } else {
                spec::load_file(&path)
            });
        }
        all.check_channels();
        all
    }
}

/// What the API shows of the monitors, refreshed after each round.
#[derive(Debug, Clone, Default)]
struct Published {
    monitors: Vec<MonitorStatus>,
    problems: Vec<String>,
    failed_notifications: usize,
}

/// The monitors of a running server.
pub struct Monitors {
    status: Mutex<Published>,
    sources: Sources,
    reload: AtomicBool,
    stop: AtomicBool,
    stop_delivery: Arc<AtomicBool>,
    delivery: Mutex<Option<Arc<Mutex<DeliveryStats>>>>,
    options: LiveOptions,
}

impl Monitors {
    pub(crate) fn new(sources: Sources, options: LiveOptions) -> Monitors {
        Monitors {
            status: Mutex::new(Published::default()),
            sources,
            reload: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            stop_delivery: Arc::new(AtomicBool::new(false)),
            delivery: Mutex::new(None),
            options,
        }
    }

    /// Asks for the definitions to be read again (SIGHUP, API changes).
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
    }

    /// Stops the evaluation and delivery threads at their next round.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_delivery.store(true, Ordering::Relaxed);
    }

    /// Starts the evaluation thread; notifications are delivered on `runtime`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        app: Arc<App>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let monitors = self.clone();
        std::thread::Builder::new()
            .name("kubetrail-monitors".into())
            .spawn(move || monitors.run(&app, &runtime))
    }

    fn run(&self, app: &App, runtime: &tokio::runtime::Handle) {
        let mut live = match Live::open(self.options.clone()) {
            Ok(live) => live,
            Err(e) => {
                tracing::error!(error = %e, dir = %self.options.dir.display(), "monitors cannot keep their state; they are off");
                return;
            }
        };
        let deliverer = match Deliverer::new(live.outbox(), live.channels()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for notifications; monitors are off");
                return;
            }
        };
        *self.delivery.lock().unwrap_or_else(|e| e.into_inner()) = Some(deliverer.stats.clone());
        let mut deliverer = Some(deliverer);
        let mut delivery = None;
        let mut watermarks = Watermarks::default();
        let mut signature = Vec::new();
        let mut engine: Option<QueryEngine> = None;
        let mut configured = false;
        while !self.stop.load(Ordering::Relaxed) {
            let now = now_micros();
            if engine.is_none() {
                engine = app.api.engine().ok();
                if let Some(engine) = &engine {
                    watermarks.seed(engine);
                }
            }
            if let Some(engine) = &engine {
                let current = self.sources.signature();
                if self.reload.swap(false, Ordering::Relaxed) || current != signature || !configured
                {
                    signature = current;
                    let defs = self.sources.load();
                    for problem in &defs.problems {
                        tracing::warn!(%problem, "monitor definition left out");
                    }
                    tracing::info!(
                        monitors = defs.monitors.len(),
                        channels = defs.channels.len(),
                        problems = defs.problems.len(),
                        "monitors loaded"
                    );
                    live.configure(defs, engine, now);
                    configured = true;
                    // Delivery starts once the channels are known: before, the entries a
                    // previous run left in the outbox would look like they name no channel.
                    if let Some(deliverer) = deliverer.take() {
                        match self.start_delivery(deliverer, runtime) {
                            Ok(thread) => delivery = Some(thread),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot start the notification thread; monitors are off");
                                return;
                            }
                        }
                    }
                    self.publish(&live, now, &watermarks);
                }
                watermarks.update(&app.ingest, live.tap().map(|t| t.as_ref()), now);
                let transitions = live.round(
                    engine,
                    |delay, streamed| watermarks.get(now, delay, streamed),
                    now,
                );
                for t in &transitions {
                    tracing::info!(monitor = %t.monitor, group = ?t.group, state = ?t.state, level = ?t.level, value = ?t.value, "monitor transition");
                }
                if !transitions.is_empty() {
                    app.metrics.monitor_transitions(&transitions);
                }
                self.publish(&live, now_micros(), &watermarks);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some(delivery) = delivery {
            let _ = delivery.join();
        }
    }

    /// Delivery on its own thread: a round that takes long (many monitors, a busy store) never
    /// holds up notifications already in the outbox.
    fn start_delivery(
        &self,
        deliverer: Deliverer,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let runtime = runtime.clone();
        let stop = self.stop_delivery.clone();
        std::thread::Builder::new()
            .name("kubetrail-notify".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    {
                        let _guard = runtime.enter();
                        deliverer.poll(now_micros());
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
    }

    /// Makes the current status visible to the API.
    fn publish(&self, live: &Live, now: i64, watermarks: &Watermarks) {
        let published = Published {
            monitors: live.status(now, |delay, streamed| watermarks.get(now, delay, streamed)),
            problems: live.problems.clone(),
            failed_notifications: live.outbox().lock().map_or(0, |o| o.failed_count()),
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = published;
    }

    /// Firing and pending alerts by monitor, for the metrics.
    pub fn alert_counts(&self) -> Vec<(String, &'static str, u64)> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = Vec::new();
        for m in &status.monitors {
            for state in ["pending", "firing"] {
                let n = m.alerts.iter().filter(|a| a.state == state).count() as u64;
                counts.push((m.name.clone(), state, n));
            }
        }
        counts
    }

    /// Notification deliveries by channel and outcome, for the metrics.
    pub fn delivery_counts(&self) -> Vec<(String, &'static str, u64)> {
        let Some(stats) = self.delivery.lock().ok().and_then(|d| d.clone()) else {
            return Vec::new();
        };
        let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut counts = Vec::new();
        for (outcome, map) in [
            ("delivered", &stats.delivered),
            ("retried", &stats.retried),
            ("rejected", &stats.rejected),
        ] {
            for (channel, n) in map {
                counts.push((channel.clone(), outcome, *n));
            }
        }
        counts
    }
}

/// The newest event time of each cluster, and when it last moved (wall clock): stored (in
/// committed segments: what a query of the store sees) and accepted (what the monitors fed by
/// the live stream have seen).
#[derive(Debug, Default)]
struct Watermarks {
    stored: BTreeMap<String, (i64, i64)>,
    accepted: BTreeMap<String, (i64, i64)>,
    /// Every received event is queryable.
    idle: bool,
    /// No batch waits for the ingest thread, which accepts events.
    drained: bool,
}

impl Watermarks {
    /// What the store held before this start: known clusters, none of them live yet.
    fn seed(&mut self, engine: &QueryEngine) {
        let Ok(batches) = engine.sql(
            "SELECT cluster, CAST(MAX(time) AS TIMESTAMP(6)) AS newest FROM events GROUP BY cluster",
            Vec::new(),
        ) else {
            return;
        };
        for batch in &batches {
            let clusters = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8);
            let newest = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Int64);
            let (Ok(clusters), Ok(newest)) = (clusters, newest) else {
                continue;
            };
            let clusters = arrow::array::AsArray::as_string::<i32>(&clusters);
            let newest =
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&newest);
            for i in 0..batch.num_rows() {
                self.stored
                    .insert(clusters.value(i).to_owned(), (newest.value(i), i64::MIN));
            }
        }
    }

    fn update(&mut self, ingest: &Ingest, tap: Option<&Tap>, now: i64) {
        let stats = ingest.stats();
        // A store that refuses events leaves nothing queued, yet nothing is accepted either.
        self.drained = stats.queued_events.load(Ordering::Relaxed) == 0
            && stats.healthy.load(Ordering::Relaxed);
        self.idle = self.drained && stats.store_lag() == 0;
        if let Some(tap) = tap {
            moved(&mut self.accepted, tap.accepted(), now);
        }
        let Some(writer) = stats.writer.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        let stored = writer
            .newest_stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        moved(&mut self.stored, stored, now);
    }

    /// The event time up to which windows are complete, waiting `delay` for late events, for
    /// a monitor fed by the stream (`streamed`) or querying the store; None while no cluster is
    /// sending.
    fn get(&self, now: i64, delay: i64, streamed: bool) -> Option<i64> {
        let (clusters, caught_up) = if streamed {
            (&self.accepted, self.drained)
        } else {
            (&self.stored, self.idle)
        };
        let oldest_live = clusters
            .values()
            .filter(|(_, moved)| now.saturating_sub(*moved) <= STALE_AFTER)
            .map(|(newest, _)| *newest)
            .min()?;
        Some(
            if caught_up {
                now.max(oldest_live)
            } else {
                oldest_live
            } - delay,
        )
    }
}

/// Records the newest times of `newest`, and when each moved.
fn moved(
    clusters: &mut BTreeMap<String, (i64, i64)>,
    newest: impl IntoIterator<Item = (String, i64)>,
    now: i64,
) {
    for (cluster, newest) in newest {
        let entry = clusters.entry(cluster).or_insert((i64::MIN, i64::MIN));
        if newest > entry.0 {
            *entry = (newest, now);
        }
    }
}

/// The routes, relative to `/api/v1`.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/monitors", get(list).post(create)),
        ("/monitors/transitions", get(transitions)),
        ("/monitors/{name}", get(show).delete(remove)),
    ]
}

fn monitors(app: &App) -> Result<&Arc<Monitors>, ApiError> {
    app.monitors
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "monitors are not running"))
}

/// `GET /monitors`: every monitor with its state and alerts, and the problems of the
/// definitions left out.
async fn list(State(app): State<Arc<App>>) -> Response {
    let result = monitors(&app).map(|m| {
        let status = m.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        json!({
            "monitors": status.monitors,
            "problems": status.problems,
            "failedNotifications": status.failed_notifications,
        })
    });
    crate::api::respond(result)
}

/// `GET /monitors/{name}`.
async fn show(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>) -> Response {
    let result = monitors(&app).and_then(|m| {
        let status = m.status.lock().unwrap_or_else(|e| e.into_inner());
        status
            .monitors
            .iter()
            .find(|s| s.name == name)
            .map(|s| json!(s))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no monitor {name:?}")))
    });
    crate::api::respond(result)
}

/// `POST /monitors`: one monitor (YAML or JSON), checked like a file, kept in
/// `<data>/monitors/api/NAME.yaml`; a monitor of that name from the API is replaced.
async fn create(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let result = (|| {
        let m = monitors(&app)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
        let defs = spec::parse(text, None);
        if !defs.problems.is_empty() || defs.monitors.len() != 1 {
            let problems: Vec<String> = defs.problems.iter().map(ToString::to_string).collect();
            return Err(ApiError::bad_request(if problems.is_empty() {
                "send one monitor (a mapping with name, query, alert, …)".to_owned()
            } else {
                problems.join("; ")
            }));
        }
        let name = defs.monitors[0].name.clone();
        let mut all = m.sources.load();
        if let Some(existing) = all.monitors.iter().find(|x| x.name == name)
            && existing.source.file.as_deref().and_then(Path::parent) != Some(&m.sources.api_dir)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a monitor {name:?} is defined in {}: change it there",
                    existing
                        .source
                        .file
                        .as_deref()
                        .map_or("a file".into(), |f| f.display().to_string())
                ),
            ));
        }
        all.monitors.clear();
        all.monitors.extend(defs.monitors);
        all.problems.clear();
        all.check_channels();
        if let Some(problem) = all.problems.first() {
            return Err(ApiError::bad_request(problem.to_string()));
        }
        std::fs::create_dir_all(&m.sources.api_dir)
            .and_then(|()| {
                write_atomically(
                    &m.sources.api_dir.join(format!("{name}.yaml")),
                    text.as_bytes(),
                )
            })
            .map_err(|e| ApiError::internal(format!("cannot keep the monitor: {e}")))?;
        m.request_reload();
        Ok(json!({"name": name, "created": true}))
    })();
    match result {
        Ok(body) => (StatusCode::CREATED, axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /monitors/{name}`: a monitor created through the API.
async fn remove(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>) -> Response {
    let result = monitors(&app).and_then(|m| {
        let path = m.sources.api_dir.join(format!("{name}.yaml"));
        if !spec::valid_name(&name) || name.starts_with('.') || !path.exists() {
            let defined = m
                .sources
                .load()
                .monitors
                .into_iter()
                .find(|x| x.name == name);
            return Err(match defined {
                Some(x) => ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "monitor {name:?} is defined in {}: remove it there",
                        x.source
                            .file
                            .as_deref()
                            .map_or("a file".into(), |f| f.display().to_string())
                    ),
                ),
                None => ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no monitor {name:?} was created through the API"),
                ),
            });
        }
        std::fs::remove_file(&path)
            .map_err(|e| ApiError::internal(format!("cannot remove {}: {e}", path.display())))?;
        m.request_reload();
        Ok(json!({"name": name, "deleted": true}))
    });
    crate::api::respond(result)
}

#[derive(Debug, Deserialize)]
struct TransitionsQuery {
    monitor: Option<String>,
    limit: Option<usize>,
}

/// `GET /monitors/transitions[?monitor=NAME][&limit=N]`: the latest transitions, oldest first.
async fn transitions(State(app): State<Arc<App>>, Query(q): Query<TransitionsQuery>) -> Response {
    let result = monitors(&app).map(|m| {
        let path = m.options.dir.join("transitions.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let limit = q.limit.unwrap_or(1000).min(10_000);
        let mut items: Vec<serde_json::Value> = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|t| q.monitor.as_deref().is_none_or(|m| t["monitor"] == m))
            .take(limit)
            .collect();
        items.reverse();
        json!({"transitions": items})
    });
    crate::api::respond(result)
}

//! Live detections in `serve`: the rule engine ([`kubetrail_rules::Engine`]) on every event the
//! store accepts, from every source, findings kept in the data directory and sent through the
//! monitors' notification channels.
//!
//! The [`Detector`] is a tap on the ingest path: it evaluates the rules on the ingest thread
//! (they are in-memory matches, no IO) and hands findings to a thread of their own over a
//! bounded queue, so a slow disk or a flood of findings never holds up ingest (findings that
//! do not fit are counted as dropped). That thread appends each finding, with its event as
//! stored, to `<data>/findings/findings-YYYY-MM-DD.jsonl` (the day of the event), fsyncs
//! once a second, and queues notifications in the monitors' durable outbox: one message per
//! rule and group (by default the user and the cluster) per window, never one per event. A
//! notification's id is derived from the rule, the group and the window, so one produced again
//! is recognised by the outbox and not delivered twice.
//!
//! Events replayed from the write-ahead log at start were judged before the restart and are
//! not judged again; after a writer failure the sources send events again, and a finding already
//! recorded for the same rule and auditID is not recorded twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubetrail_event::{AuditEvent, Timestamp};
use kubetrail_query::{Field, Matcher};
use kubetrail_rules::{Engine, Finding, RuleSet, Severity};
use kubetrail_store::QueryEngine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::{ScanError, scan_store};
use crate::notify::{Alert, Notification, Status};
use crate::outbox::Outbox;

/// Findings waiting for the writer thread at most; more are dropped and counted.
const QUEUE: usize = 10_000;
/// (rule, auditID) pairs remembered to record a finding once.
const RECENT: usize = 100_000;
/// Groups remembered for notification windows.
const NOTIFIED: usize = 100_000;

/// How live detections run.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Where findings are kept (`<data>/findings`).
    pub dir: PathBuf,
    /// The monitors' outbox (`<data>/monitors/outbox`).
    pub outbox_dir: PathBuf,
    /// Channels findings are sent to.
    pub notify: Vec<String>,
    /// The lowest severity sent.
    pub notify_min_severity: Severity,
    /// The fields that make a finding's group (one message per rule and group per window).
    pub group_by: Vec<Field>,
    /// The window, µs.
    pub group_window: i64,
    /// How long findings are kept, µs (None: forever).
    pub max_age: Option<i64>,
    /// kubetrail's address, for links.
    pub external_url: Option<String>,
}

/// A finding as kept: the finding and its event as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredFinding {
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
    /// The group the notification used.
    #[serde(default)]
    pub notification_group: String,
    /// The event.
    pub event: Box<RawValue>,
}

/// Counters for `/metrics` and `status`.
#[derive(Debug, Default)]
pub struct DetectStats {
    /// Findings recorded, per (rule, severity).
    pub findings: Mutex<HashMap<(String, Severity), u64>>,
    /// Findings dropped because the writer fell behind.
    pub dropped: AtomicU64,
    /// Findings that could not be written.
    pub write_errors: AtomicU64,
    /// Notifications queued.
    pub notifications: AtomicU64,
    /// Events judged.
    pub events: AtomicU64,
}

struct Pending {
    finding: Finding,
    group: String,
    event: String,
}

/// The live rule engine on the ingest path.
pub struct Detector {
    engine: Mutex<Engine>,
    sender: SyncSender<Pending>,
    group_by: Vec<Field>,
    stats: Arc<DetectStats>,
    rules: Vec<RuleSummary>,
}

/// A loaded rule, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: Severity,
    /// ATT&CK ids.
    pub mitre: kubetrail_rules::Mitre,
    /// Whether it runs.
    pub enabled: bool,
    /// The condition.
    pub condition: String,
    /// Where it comes from.
    pub file: String,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Detector {
    /// Starts the writer thread and returns the tap.
    pub fn start(set: &RuleSet, options: DetectOptions) -> io::Result<Arc<Detector>> {
        fs::create_dir_all(&options.dir)?;
        let outbox = if options.notify.is_empty() {
            None
        } else {
            Some(Outbox::open(&options.outbox_dir)?)
        };
        let (sender, receiver) = sync_channel(QUEUE);
        let stats = Arc::new(DetectStats::default());
        let writer = FindingWriter {
            recent: recent_findings(&options.dir),
            recent_order: VecDeque::new(),
            notified: HashMap::new(),
            notified_order: VecDeque::new(),
            open: None,
            unsynced: false,
            options: options.clone(),
            outbox,
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("detections".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Arc::new(Detector {
            engine: Mutex::new(Engine::new(set)),
            sender,
            group_by: options.group_by,
            stats,
            rules: set
                .rules
                .iter()
                .map(|r| RuleSummary {
                    id: r.id.clone(),
                    title: r.title.clone(),
                    severity: r.severity,
                    mitre: (*r.mitre).clone(),
                    enabled: r.enabled,
                    condition: r.condition.clone(),
                    file: r.origin.file.clone(),
                })
                .collect(),
        }))
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<DetectStats> {
        &self.stats
    }

    /// The rules loaded.
    pub fn rules(&self) -> &[RuleSummary] {
        &self.rules
    }

    /// Gives the stateful rules their past before the first live event: the tuples first-seen
    /// rules already know and the sequences in progress, read from the store (the events of
    /// the longest learning period or span before `now_micros` that such rules look at).
    /// Call it before events flow: a live event judged before its history is learned could be
    /// reported as new. Returns how many stored events were learned.
    pub fn warm_up(&self, store: &QueryEngine, now_micros: i64) -> Result<u64, ScanError> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let Some(span) = engine.history_span() else {
            return Ok(0);
        };
        let from = now_micros - span;
        let filter = engine.history_filter();
        let learned = scan_store(store, filter, Some(from), None, |event, cluster, time| {
            engine.learn(event, cluster, time);
            Ok(())
        })?;
        engine.history_starts_at(from);
        Ok(learned)
    }
}

impl kubetrail_pipeline::EventTap for Detector {
    fn accepted(&self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let mut findings = Vec::new();
        {
            let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            engine.evaluate(event, cluster, time_micros, &mut findings);
        }
        for finding in findings {
            let group = self
                .group_by
                .iter()
                .map(|f| kubetrail_query::field_value(f, event, cluster))
                .collect::<Vec<_>>()
                .join("\u{1f}");
            let pending = Pending {
                finding,
                group,
                event: event.raw.as_str().to_owned(),
            };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.sender.try_send(pending)
            {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn accepted_before(&self, _time_micros: i64) {}

    fn writer_failed(&self) {}
}

struct FindingWriter {
    options: DetectOptions,
    outbox: Option<Outbox>,
    stats: Arc<DetectStats>,
    recent: HashSet<(String, String)>,
    recent_order: VecDeque<(String, String)>,
    notified: HashMap<(String, String), i64>,
    notified_order: VecDeque<(String, String)>,
    /// The open file and its day.
    open: Option<(String, File)>,
    unsynced: bool,
}

impl FindingWriter {
    fn run(mut self, receiver: Receiver<Pending>) {
        let mut last_sync = Instant::now();
        let mut last_prune = None::<Instant>;
        loop {
            match receiver.recv_timeout(Duration::from_secs(1)) {
                Ok(pending) => self.record(pending),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
            }
            if last_sync.elapsed() >= Duration::from_secs(1) {
                self.sync();
                last_sync = Instant::now();
            }
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                self.prune();
                last_prune = Some(Instant::now());
            }
        }
    }

    fn record(&mut self, pending: Pending) {
        let key = (
            pending.finding.rule.clone(),
            pending.finding.audit_id.clone(),
        );
        if !self.recent.insert(key.clone()) {
            return;
        }
        self.recent_order.push_back(key);
        if self.recent_order.len() > RECENT
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        let event = RawValue::from_string(pending.event)
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        let stored = StoredFinding {
            finding: pending.finding,
            notification_group: pending.group,
            event,
        };
        let day = stored
            .finding
            .time
            .get(..10)
            .unwrap_or("unknown")
            .to_owned();
        if let Err(e) = self.append(&day, &stored) {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, dir = %self.options.dir.display(), "a finding could not be written");
        }
        {
            let mut counts = self
                .stats
                .findings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *counts
                .entry((stored.finding.rule.clone(), stored.finding.severity))
                .or_default() += 1;
        }
        self.notify(&stored);
    }

    fn append(&mut self, day: &str, stored: &StoredFinding) -> io::Result<()> {
        if self.open.as_ref().is_none_or(|(d, _)| d != day) {
            self.sync();
            let path = self.options.dir.join(format!("findings-{day}.jsonl"));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.open = Some((day.to_owned(), file));
        }
        let mut line = serde_json::to_vec(stored)?;
        line.push(b'\n');
        if let Some((_, file)) = &mut self.open {
            file.write_all(&line)?;
            self.unsynced = true;
        }
        Ok(())
    }

    fn sync(&mut self) {
        if self.unsynced
            && let Some((_, file)) = &self.open
        {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "findings could not be synced");
            }
            self.unsynced = false;
        }
    }

    /// Deletes day files older than the retention.
    fn prune(&mut self) {
        let Some(max_age) = self.options.max_age else {
            return;
        };
        let oldest = Timestamp::from_micros(crate::now_micros() - max_age).to_string();
        let oldest_day = &oldest[..10];
        for (day, path) in day_files(&self.options.dir) {
            if day.as_str() < oldest_day
                && let Err(e) = fs::remove_file(&path)
            {
                tracing::warn!(file = %path.display(), error = %e, "old findings could not be deleted");
            }
        }
    }

    fn notify(&mut self, stored: &StoredFinding) {
        let finding = &stored.finding;
        if finding.severity < self.options.notify_min_severity {
            return;
        }
        let Some(outbox) = &mut self.outbox else {
            return;
        };
        let time = Timestamp::parse(&finding.time).map_or(0, |t| t.as_micros());
        let window = self.options.group_window.max(1);
        let window_start = time - time.rem_euclid(window);
        let key = (finding.rule.clone(), stored.notification_group.clone());
        if self.notified.get(&key).is_some_and(|w| *w >= window_start) {
            return;
        }
        if self.notified.insert(key.clone(), window_start).is_none() {
            self.notified_order.push_back(key.clone());
            if self.notified_order.len() > NOTIFIED
                && let Some(old) = self.notified_order.pop_front()
            {
                self.notified.remove(&old);
            }
        }
        let group_key = format!("{:016x}", fingerprint(&format!("{}\u{1e}{}", key.0, key.1)));
        let mut group: std::collections::BTreeMap<String, String> = self
            .options
            .group_by
            .iter()
            .map(|f| f.display_name())
            .zip(stored.notification_group.split('\u{1f}').map(str::to_owned))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        group.insert("rule".into(), finding.rule.clone());
        let object = match (finding.namespace.as_str(), finding.name.as_str()) {
            ("", name) => name.to_owned(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let link = self.options.external_url.as_ref().map(|url| {
            format!(
                "{}/explore?q=id:{}&range=all",
                url.trim_end_matches('/'),
                finding.audit_id
            )
        });
        let notification = Notification {
            id: format!(
                "finding-{}-{group_key}-{}",
                finding.rule,
                window_start / 1_000_000
            ),
            monitor: format!("rule:{}", finding.rule),
            description: finding.title.clone(),
            query: format!("id:{}", finding.audit_id),
            at: time,
            alerts: vec![Alert {
                group,
                status: Status::Firing,
                level: None,
                severity: finding.severity.as_str().to_owned(),
                value: "1".to_owned(),
                threshold: None,
                title: format!(
                    "{}: {} {} {} {}",
                    finding.title, finding.user, finding.verb, finding.resource, object
                ),
                message: format!(
                    "{} (rule {}, ATT&CK {}; auditID {})",
                    finding.explanation,
                    finding.rule,
                    finding.mitre.techniques.join(", "),
                    finding.audit_id
                ),
                starts_at: time,
                ends_at: None,
                key: format!("rule:{}/{group_key}", finding.rule),
                samples: serde_json::from_str(stored.event.get())
                    .map(|v| vec![v])
                    .unwrap_or_default(),
                link,
            }],
            external_url: self.options.external_url.clone(),
        };
        match outbox.enqueue(&notification, &self.options.notify, crate::now_micros()) {
            Ok(()) => {
                self.stats.notifications.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(rule = %finding.rule, error = %e, "a finding's notification could not be queued")
            }
        }
    }
}

/// FNV-1a: a stable fingerprint of a group across restarts and builds.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The day files in `dir`: (day, path), oldest first.
fn day_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let day = name
                .strip_prefix("findings-")?
                .strip_suffix(".jsonl")?
                .to_owned();
            Some((day, path))
        })
        .collect();
    files.sort();
    files
}

/// The (rule, auditID) pairs of the newest day file, so a restart does not record them again.
fn recent_findings(dir: &Path) -> HashSet<(String, String)> {
    let Some((_, path)) = day_files(dir).pop() else {
        return HashSet::new();
    };
    let Ok(file) = File::open(path) else {
        return HashSet::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            #[derive(Deserialize)]
            struct Key {
                rule: String,
                #[serde(rename = "auditID")]
                audit_id: String,
            }
            serde_json::from_str::<Key>(&line)
                .ok()
                .map(|k| (k.rule, k.audit_id))
        })
        .collect()
}

/// What [`read_findings`] returns.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    /// Only these rules (empty: all).
    pub rules: Vec<String>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    /// Only findings whose event matches this search.
    pub matcher: Option<Matcher>,
    /// At or after, µs.
    pub from: Option<i64>,
    /// Before, µs.
    pub to: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// Findings kept in `dir` that pass `filter`, newest first.
pub fn read_findings(dir: &Path, filter: &FindingFilter) -> io::Result<Vec<StoredFinding>> {
    let mut found = Vec::new();
    let from_day = filter
        .from
        .map(|f| Timestamp::from_micros(f).to_string()[..10].to_owned());
    let to_day = filter
        .to
        .map(|t| Timestamp::from_micros(t).to_string()[..10].to_owned());
    for (day, path) in day_files(dir).into_iter().rev() {
        if from_day.as_ref().is_some_and(|f| &day < f) {
            break;
        }
        if to_day.as_ref().is_some_and(|t| &day > t) {
            continue;
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut day_found = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Ok(stored) = serde_json::from_str::<StoredFinding>(&line) else {
                continue;
            };
            if passes(&stored, filter) {
                day_found.push(stored);
            }
        }
        day_found.sort_by(|a, b| b.finding.time.cmp(&a.finding.time));
        found.extend(day_found);
        if found.len() >= filter.limit {
            found.truncate(filter.limit);
            break;
        }
    }
    Ok(found)
}

fn passes(stored: &StoredFinding, filter: &FindingFilter) -> bool {
    let finding = &stored.finding;
    if !filter.rules.is_empty() && !filter.rules.contains(&finding.rule) {
        return false;
    }
    if filter.min_severity.is_some_and(|m| finding.severity < m) {
        return false;
    }
    let time = Timestamp::parse(&finding.time).map_or(0, |t| t.as_micros());
    if filter.from.is_some_and(|f| time < f) || filter.to.is_some_and(|t| time >= t) {
        return false;
    }
    match &filter.matcher {
        None => true,
        Some(matcher) => {
            let mut matched = false;
            let mut decoder =
                kubetrail_event::Decoder::new(kubetrail_event::DecodeOptions::default());
            let mut out = |d: kubetrail_event::Decoded<'_>| {
                if let kubetrail_event::Decoded::Event(event, _) = d {
                    matched |= matcher.matches_stored(&event, &finding.cluster, time);
                }
            };
            decoder.feed(stored.event.get().as_bytes(), &mut out);
            decoder.finish(&mut out);
            matched
        }
    }
}

/// Reads rule files: each path a file, or every `.yaml`/`.yml` file below a directory, in name
/// order (directories first as found, then the files of each in order).
pub fn read_rule_files(paths: &[PathBuf]) -> io::Result<Vec<kubetrail_rules::SourceFile>> {
    let mut files = Vec::new();
    for path in paths {
        read_rule_path(path, &mut files)?;
    }
    Ok(files)
}

fn read_rule_path(path: &Path, files: &mut Vec<kubetrail_rules::SourceFile>) -> io::Result<()> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if fs::metadata(path).map_err(with_path)?.is_file() {
        files.push(kubetrail_rules::SourceFile {
            name: path.display().to_string(),
            text: fs::read_to_string(path).map_err(with_path)?,
        });
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(with_path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() || entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            read_rule_path(&entry, files)?;
        }
    }
    Ok(())
}

//! The ingest sink: one thread owns the store's [`EventWriter`]; every source hands it batches
//! and gets an acknowledgement once the batch is durable: a webhook body once it is in the
//! fsynced write-ahead log, the lines of a tailed file (a durable log already, read again after
//! a crash) once their events are in committed Parquet segments.
//!
//! Sources hand over bytes, not events: the writer thread decodes and transforms each batch
//! itself and appends the events while they still borrow from those bytes, as `import` does.
//! Decoding in the source and handing over owned events cost a copy of every string, a free on
//! another thread, and about ten times the batch's JSON in memory while it waited; the tailer
//! was a third slower than `import` and an overloaded webhook held its in-flight bodies
//! several times over.
//!
//! Group commit: the thread takes every batch that is waiting, appends them all and hands the
//! group to the WAL's thread, which writes and fsyncs it once and then acknowledges each webhook
//! batch while this thread decodes the next group. Under load one fsync covers many webhook requests;
//! when idle a batch is committed as soon as it arrives.
//!
//! Backpressure is admission control on queued events: [`Ingest::try_submit`] refuses a batch
//! when more than `max_queued_events` wait (the webhook answers 429 with `Retry-After`), and
//! [`Ingest::queue`] waits for room (the tailer simply reads later). Memory therefore stays
//! bounded whatever clients offer.
//!
//! If the store fails (a full disk), pending batches are answered with an error, the source
//! reports not-ready, and the thread reopens the store every few seconds — reopening replays
//! the WAL — so the service heals by itself once space is back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kubetrail_event::{DecodeOptions, Decoded, Decoder, Skip};
use kubetrail_store::quarantine::{Quarantine, Quarantined};
use kubetrail_store::{
    Appended, CompactionOptions, EventWriter, OnDurable, Retention, StoreError, WriterOptions,
    WriterStats,
};
use tokio::sync::oneshot;

use crate::transform::{Transforms, Verdict};

/// Settings of the ingest sink.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Writer settings.
    pub writer: WriterOptions,
    /// Pending events become Parquet (queryable) at the latest after this long.
    pub flush_interval: Duration,
    /// Batches are refused (or wait) while more events than this are queued.
    pub max_queued_events: usize,
    /// How often small segments are merged.
    pub compaction_interval: Duration,
    /// Retention limits, applied every `retention_interval`.
    pub retention: Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How webhook bodies are decoded (each batch of a file has its own decoder).
    pub decode: DecodeOptions,
    /// The size limit of the event quarantine, in bytes.
    pub quarantine_max_bytes: u64,
    /// Sees every event the store accepts (live monitors).
    pub tap: Option<Arc<dyn EventTap>>,
}

/// A consumer of the live stream: it sees every event the store accepts, once — after the
/// transforms and deduplication, in the writer's order, on the writer thread (so it must be
/// quick) — with the time the store files it under. What it sees is what a query of the store
/// will find once the event is durable, without reading it back: live monitors keep their
/// aggregates from it instead of querying the store every round.
pub trait EventTap: Send + Sync + std::fmt::Debug {
    /// `event`, from `cluster`, was accepted; `time_micros` is its stored time.
    fn accepted(&self, event: &kubetrail_event::AuditEvent<'_>, cluster: &str, time_micros: i64);
    /// Events up to `time_micros` were accepted without the tap seeing them (replayed from the
    /// write-ahead log when the store opened).
    fn accepted_before(&self, time_micros: i64);
    /// The writer failed: events the tap saw since the last commit may not be stored, and
    /// their sources will send them again.
    fn writer_failed(&self);
}

/// Several taps on one ingest path (live monitors and live detections), each told everything,
/// in order.
#[derive(Debug, Default)]
pub struct Taps(pub Vec<Arc<dyn EventTap>>);

impl EventTap for Taps {
    fn accepted(&self, event: &kubetrail_event::AuditEvent<'_>, cluster: &str, time_micros: i64) {
        for tap in &self.0 {
            tap.accepted(event, cluster, time_micros);
        }
    }

    fn accepted_before(&self, time_micros: i64) {
        for tap in &self.0 {
            tap.accepted_before(time_micros);
        }
    }

    fn writer_failed(&self) {
        for tap in &self.0 {
            tap.writer_failed();
        }
    }
}

impl IngestOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        IngestOptions {
            data_dir,
            // Small hand-offs keep the memory of pending rows low and make each Parquet
            // encoding burst short, so it delays acknowledgements less; compaction merges the
            // segments later.
            writer: WriterOptions {
                flush_rows: 25_000,
                ..WriterOptions::default()
            },
            flush_interval: Duration::from_secs(5),
            max_queued_events: 100_000,
            compaction_interval: Duration::from_secs(600),
            retention: Retention::default(),
            retention_interval: Duration::from_secs(3600),
            decode: DecodeOptions {
                keep_skipped_input: true,
                ..DecodeOptions::default()
            },
            quarantine_max_bytes: 256 << 20,
            tap: None,
        }
    }
}

/// Input from one source and cluster, decoded and transformed on the writer thread.
pub struct Batch {
    /// Where the bytes come from, for the quarantine.
    source: BatchSource,
    /// The cluster the events come from.
    cluster: String,
    /// Complete input: whole lines of a log, or one request body.
    bytes: Bytes,
    framing: Framing,
    transforms: Arc<Transforms>,
    /// Time to file events that carry none.
    ingest_micros: i64,
    /// About how many events the bytes hold, for admission control before decoding.
    estimated_events: u64,
}

/// Where a batch comes from: what its bad input is quarantined as.
#[derive(Debug, Clone)]
pub enum BatchSource {
    /// A webhook request. Only bad events inside a well-formed body are quarantined; a body
    /// that is not an EventList at all is refused to its sender.
    Webhook,
    /// Lines of a file, read by a decoder that started at `decoder_start` in it. Every bad line
    /// is quarantined, so the source can move past it.
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Where in the file the decoder started (its offsets count from there).
        decoder_start: u64,
    },
    /// A quarantined input sent through again: what fails again stays where it is.
    Replay,
}

impl BatchSource {
    fn name(&self) -> &'static str {
        match self {
            BatchSource::Webhook => "webhook",
            BatchSource::File { .. } => "tail",
            BatchSource::Replay => "replay",
        }
    }

    fn quarantines(&self, skip: &Skip) -> bool {
        match self {
            BatchSource::Webhook => skip.is_event_level(),
            BatchSource::File { .. } => true,
            BatchSource::Replay => false,
        }
    }
}

/// How a batch's bytes are decoded.
enum Framing {
    /// A whole document (a webhook body), decoded to its end by a fresh decoder.
    Document,
    /// The next complete lines of a stream (a tailed file), decoded by the stream's own
    /// decoder, which keeps what spans chunks: line numbers, container lines split in pieces.
    Lines(Arc<Mutex<Decoder>>),
}

impl Batch {
    /// One webhook body (`source` is [`BatchSource::Webhook`]) or a quarantined input sent
    /// again ([`BatchSource::Replay`]): an `EventList` or a single event.
    pub fn document(
        source: BatchSource,
        cluster: String,
        body: Bytes,
        transforms: Arc<Transforms>,
    ) -> Batch {
        let estimated_events = memchr::memmem::find_iter(&body, b"\"auditID\"")
            .count()
            .max(1) as u64;
        Batch {
            source,
            cluster,
            bytes: body,
            framing: Framing::Document,
            transforms,
            ingest_micros: now_micros(),
            estimated_events,
        }
    }

    /// Complete lines of a file that `decoder` has been reading since `decoder_start`.
    pub fn lines(
        cluster: String,
        lines: Vec<u8>,
        decoder: Arc<Mutex<Decoder>>,
        file: (std::path::PathBuf, u64),
        transforms: Arc<Transforms>,
    ) -> Batch {
        let estimated_events = memchr::memchr_iter(b'\n', &lines).count() as u64;
        let (path, decoder_start) = file;
        Batch {
            source: BatchSource::File {
                path,
                decoder_start,
            },
            cluster,
            bytes: Bytes::from(lines),
            framing: Framing::Lines(decoder),
            transforms,
            ingest_micros: now_micros(),
            estimated_events,
        }
    }

    /// Whether the batch's input is a durable log its source can read again (the lines of a
    /// tailed file): its events skip the WAL and are acknowledged once stored in segments,
    /// which is when the tailer's checkpoint may move past them. A webhook body exists only in
    /// the request, so it goes through the WAL.
    fn is_rereadable(&self) -> bool {
        matches!(self.framing, Framing::Lines(_))
    }

    /// Decodes, transforms and appends the batch's events to the writer; also returns the bad
    /// input to quarantine.
    fn append_to(
        &self,
        writer: &mut EventWriter,
        decode: &DecodeOptions,
        tap: Option<&dyn EventTap>,
    ) -> Result<(BatchOutcome, Vec<Quarantined>), StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut bad = Vec::new();
        let mut failure = None;
        let mut handle = |decoded: Decoded<'_>| match decoded {
            Decoded::Event(mut event, _) => {
                if failure.is_some() {
                    return;
                }
                match self.transforms.apply(&mut event, &self.cluster) {
                    Verdict::Keep { .. } => {
                        let appended = if self.is_rereadable() {
                            writer.append_unlogged(&event, &self.cluster, self.ingest_micros)
                        } else {
                            writer.append(&event, &self.cluster, self.ingest_micros)
                        };
                        match appended {
                            Ok(Appended::Accepted) => {
                                outcome.accepted += 1;
                                if let Some(tap) = tap {
                                    let time =
                                        event.time().map_or(self.ingest_micros, |t| t.as_micros());
                                    tap.accepted(&event, &self.cluster, time);
                                }
                            }
                            Ok(Appended::Duplicate) => outcome.duplicates += 1,
                            Err(e) => failure = Some(e),
                        }
                    }
                    Verdict::Excluded | Verdict::DroppedByPolicy => outcome.filtered += 1,
                }
            }
            Decoded::Skipped(mut skip) => {
                outcome.skipped += 1;
                if self.source.quarantines(&skip) {
                    bad.push(self.quarantined(&mut skip));
                }
                if outcome.skips.len() < MAX_REPORTED_SKIPS {
                    outcome.skips.push(skip);
                }
            }
            Decoded::Ignored { .. } => {}
        };
        match &self.framing {
            Framing::Document => {
                let mut decoder = Decoder::new(decode.clone());
                decoder.feed(&self.bytes, &mut handle);
                decoder.finish(&mut handle);
            }
            Framing::Lines(decoder) => {
                let mut decoder = decoder.lock().unwrap_or_else(PoisonError::into_inner);
                decoder.feed(&self.bytes, &mut handle);
                outcome.pending_line_start = decoder.pending_line_start();
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((outcome, bad)),
        }
    }

    /// The outcome of a batch whose decoding panicked: the whole batch goes to the quarantine.
    fn panicked(&self, panic: &(dyn std::any::Any + Send)) -> (BatchOutcome, Vec<Quarantined>) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        tracing::error!(source = self.source.name(), %message, "decoding a batch panicked; the batch is quarantined whole");
        let location = match &self.source {
            BatchSource::File { path, .. } => path.display().to_string(),
            BatchSource::Webhook | BatchSource::Replay => {
                "POST /audit (webhook request body)".to_owned()
            }
        };
        let bad = Quarantined {
            source: self.source.name(),
            cluster: self.cluster.clone(),
            location,
            line: None,
            offset: None,
            item: None,
            reason: "internal-error".to_owned(),
            message: format!("kubetrail failed on this input (a bug; please report it): {message}"),
            size: self.bytes.len() as u64,
            input: Some(self.bytes.to_vec()),
        };
        let outcome = BatchOutcome {
            skipped: 1,
            ..BatchOutcome::default()
        };
        let quarantined = match self.source {
            BatchSource::Replay => Vec::new(),
            _ => vec![bad],
        };
        (outcome, quarantined)
    }

    /// What the quarantine keeps of a skipped input (taking the input out of the skip).
    fn quarantined(&self, skip: &mut Skip) -> Quarantined {
        let input = skip.input.take();
        let (location, offset) = match &self.source {
            BatchSource::File {
                path,
                decoder_start,
            } => (
                path.display().to_string(),
                skip.offset.map(|o| decoder_start + o),
            ),
            BatchSource::Webhook | BatchSource::Replay => {
                ("POST /audit (webhook request body)".to_owned(), None)
            }
        };
        Quarantined {
            source: self.source.name(),
            cluster: self.cluster.clone(),
            location,
            line: Some(skip.line),
            offset,
            item: skip.item,
            reason: skip.reason.as_str().to_owned(),
            message: skip.message.clone(),
            size: input.as_ref().map_or(0, |i| i.len() as u64),
            input,
        }
    }
}

/// Skipped inputs a batch's outcome describes; the rest are only counted, so a file of junk
/// cannot flood the logs.
const MAX_REPORTED_SKIPS: usize = 16;

/// What the store did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// New events, now durable.
    pub accepted: u64,
    /// Events already stored or pending.
    pub duplicates: u64,
    /// Events dropped by the exclusions or the audit policy.
    pub filtered: u64,
    /// Inputs that should have been events and were broken.
    pub skipped: u64,
    /// Of those, how many were kept in the quarantine (durably, before this outcome).
    pub quarantined: u64,
    /// The first of them (at most 16), with line and reason.
    pub skips: Vec<Skip>,
    /// Lines of a stream: where the container log line still waiting for its last piece began
    /// (see [`Decoder::pending_line_start`]).
    pub pending_line_start: Option<u64>,
}

impl BatchOutcome {
    /// Events the batch held that passed the transforms.
    pub fn kept(&self) -> u64 {
        self.accepted + self.duplicates
    }
}

/// Why a batch was not taken.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// Too many events wait; try again later.
    #[error("the store is busy ({queued} events queued); retry later")]
    Busy {
        /// Events queued at the time.
        queued: u64,
    },
    /// The store cannot write now (a full disk, a damaged directory).
    #[error("the store cannot accept events: {0}")]
    Unavailable(String),
    /// The sink has shut down.
    #[error("kubetrail is shutting down")]
    ShuttingDown,
}

/// The acknowledgement of a batch: resolves once it is durable (or failed).
pub type Ack = oneshot::Receiver<Result<BatchOutcome, IngestError>>;

type Reply = oneshot::Sender<Result<BatchOutcome, IngestError>>;

struct Queued {
    batch: Batch,
    reply: Reply,
}

/// Counters of the sink, for metrics and status.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Events waiting for the writer thread.
    pub queued_events: AtomicU64,
    /// Events acknowledged durable.
    pub accepted: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Batches refused because the queue was full.
    pub busy_rejections: AtomicU64,
    /// Group commits (WAL fsyncs) done.
    pub commits: AtomicU64,
    /// When new events were last acknowledged durable, µs since the epoch (0: never): how an
    /// operator sees that a cluster stopped sending, and how a benchmark times a backlog
    /// without polling the counters many times a second.
    pub last_accepted_micros: AtomicI64,
    /// False while the store cannot write.
    pub healthy: AtomicBool,
    /// The store's own counters (the current writer's).
    pub writer: Mutex<Option<Arc<WriterStats>>>,
    /// The last store failure, if any.
    pub last_error: Mutex<Option<String>>,
    /// Inputs quarantined since the start, by source and reason.
    pub quarantined: Mutex<std::collections::BTreeMap<(String, String), u64>>,
    /// Inputs not quarantined because the quarantine was at its size limit.
    pub quarantine_dropped: AtomicU64,
    /// Bytes in the quarantine.
    pub quarantine_bytes: AtomicU64,
}

impl IngestStats {
    /// Events accepted (durable in the WAL) but not yet in Parquet.
    pub fn store_lag(&self) -> u64 {
        self.writer
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .map_or(0, |w| {
                w.appended
                    .load(Ordering::Relaxed)
                    .saturating_sub(w.stored.load(Ordering::Relaxed))
            })
    }
}

/// The handle sources use; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    sender: Arc<Mutex<Option<Sender<Queued>>>>,
    stats: Arc<IngestStats>,
    max_queued: u64,
}

/// The running sink; [`IngestThread::shutdown`] stores everything and stops it.
pub struct IngestThread {
    handle: Ingest,
    thread: Option<JoinHandle<()>>,
}

impl IngestThread {
    /// Opens the store (replaying its WAL) and starts the writer thread.
    pub fn start(options: IngestOptions) -> Result<IngestThread, StoreError> {
        let writer = EventWriter::open(&options.data_dir, options.writer.clone())?;
        log_recovery(&writer);
        tell_tap_replayed(&options, &writer);
        let quarantine = Quarantine::open(&options.data_dir, options.quarantine_max_bytes)?;
        let stats = Arc::new(IngestStats::default());
        stats.healthy.store(true, Ordering::Relaxed);
        stats
            .quarantine_bytes
            .store(quarantine.used_bytes(), Ordering::Relaxed);
        if let Ok(mut w) = stats.writer.lock() {
            *w = Some(writer.stats());
        }
        let (sender, receiver) = channel();
        let handle = Ingest {
            sender: Arc::new(Mutex::new(Some(sender))),
            stats: stats.clone(),
            max_queued: options.max_queued_events as u64,
        };
        let thread = std::thread::Builder::new()
            .name("kubetrail-ingest".to_owned())
            .spawn(move || WriterLoop::new(writer, quarantine, options, stats).run(&receiver))
            .map_err(|e| StoreError::Stopped(format!("cannot start the ingest thread: {e}")))?;
        Ok(IngestThread {
            handle,
            thread: Some(thread),
        })
    }

    /// The handle for sources.
    pub fn handle(&self) -> Ingest {
        self.handle.clone()
    }

    /// Stops taking batches, stores everything taken (WAL and Parquet) and ends the thread.
    pub fn shutdown(mut self) {
        if let Ok(mut sender) = self.handle.sender.lock() {
            *sender = None;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Ingest {
    /// Counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// True while the queue is full: a batch offered now would be refused.
    pub fn is_full(&self) -> bool {
        self.stats.queued_events.load(Ordering::Relaxed) >= self.max_queued
    }

    /// Queues a batch unless too many events wait; the returned [`Ack`] resolves once the
    /// batch is durable. A refused batch is handed back (boxed: refusals are the rare path,
    /// and the result stays small).
    pub fn try_submit(&self, batch: Batch) -> Result<Ack, (IngestError, Box<Batch>)> {
        let n = batch.estimated_events;
        if !self.stats.healthy.load(Ordering::Relaxed) {
            let reason = self
                .stats
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            return Err((IngestError::Unavailable(reason), Box::new(batch)));
        }
        let queued = self.stats.queued_events.fetch_add(n, Ordering::AcqRel);
        // One batch is always let in when nothing waits, however large it is.
        if queued > 0 && queued + n > self.max_queued {
            self.stats.queued_events.fetch_sub(n, Ordering::AcqRel);
            self.stats.busy_rejections.fetch_add(1, Ordering::Relaxed);
            return Err((IngestError::Busy { queued }, Box::new(batch)));
        }
        let (reply, ack) = oneshot::channel();
        let Ok(guard) = self.sender.lock() else {
            self.stats.queued_events.fetch_sub(n, Ordering::AcqRel);
            return Err((IngestError::ShuttingDown, Box::new(batch)));
        };
        let Some(sender) = guard.as_ref() else {
            self.stats.queued_events.fetch_sub(n, Ordering::AcqRel);
            return Err((IngestError::ShuttingDown, Box::new(batch)));
        };
        match sender.send(Queued { batch, reply }) {
            Ok(()) => Ok(ack),
            Err(returned) => {
                self.stats.queued_events.fetch_sub(n, Ordering::AcqRel);
                Err((IngestError::ShuttingDown, Box::new(returned.0.batch)))
            }
        }
    }

    /// Queues a batch, waiting while the queue is full; the returned [`Ack`] resolves once it
    /// is durable. For sources that can simply slow down (the tailer). Gives up when `stop`
    /// is set or the store fails; the caller then offers the same data again later.
    pub fn queue(&self, mut batch: Batch, stop: &AtomicBool) -> Result<Ack, IngestError> {
        loop {
            match self.try_submit(batch) {
                Ok(ack) => return Ok(ack),
                Err((IngestError::Busy { .. }, returned)) if !stop.load(Ordering::Relaxed) => {
                    batch = *returned;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

fn log_recovery(writer: &EventWriter) {
    let recovery = writer.recovery();
    for (path, reason) in &recovery.quarantined {
        tracing::warn!(segment = %path.display(), %reason, "damaged segment moved to quarantine");
    }
    for damage in &recovery.wal_damage {
        tracing::warn!(
            file = %damage.file.display(),
            offset = damage.offset,
            skipped_bytes = damage.skipped_bytes,
            reason = %damage.reason,
            "write-ahead log damage repaired"
        );
    }
    if recovery.replayed > 0 {
        tracing::info!(
            events = recovery.replayed,
            already_stored = recovery.replayed_duplicates,
            "recovered accepted events from the write-ahead log"
        );
    }
}

struct WriterLoop {
    writer: Option<EventWriter>,
    quarantine: Quarantine,
    options: IngestOptions,
    stats: Arc<IngestStats>,
    last_compaction: Instant,
    last_retention: Option<Instant>,
    last_reopen: Instant,
    /// When the last group of a backlog was taken.
    last_backlog: Option<Instant>,
}

/// Most events one group commit takes, so acknowledgements are not held back too long and the
/// two WAL buffers (one filled here, one written by the WAL's thread) stay small.
const MAX_GROUP_EVENTS: u64 = 10_000;

/// A group this large means batches were waiting: a backlog (a file read from behind, a burst).
const BACKLOG_GROUP_EVENTS: u64 = 1_000;

/// Pending events of files are stored as soon as the sink is idle if a backlog ended this
/// recently.
const BACKLOG_DRAINED_WITHIN: Duration = Duration::from_secs(2);

impl WriterLoop {
    fn new(
        writer: EventWriter,
        quarantine: Quarantine,
        options: IngestOptions,
        stats: Arc<IngestStats>,
    ) -> Self {
        WriterLoop {
            writer: Some(writer),
            quarantine,
            options,
            stats,
            last_compaction: Instant::now(),
            last_retention: None,
            last_reopen: Instant::now(),
            last_backlog: None,
        }
    }

    fn run(mut self, receiver: &Receiver<Queued>) {
        loop {
            let first = match receiver.recv_timeout(Duration::from_millis(200)) {
                Ok(queued) => Some(queued),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = Vec::new();
            let mut events = 0;
            if let Some(queued) = first {
                events += queued.batch.estimated_events;
                group.push(queued);
                while events < MAX_GROUP_EVENTS {
                    match receiver.try_recv() {
                        Ok(queued) => {
                            events += queued.batch.estimated_events;
                            group.push(queued);
                        }
                        Err(_) => break,
                    }
                }
            }
            let idle = group.is_empty();
            if events >= BACKLOG_GROUP_EVENTS {
                self.last_backlog = Some(Instant::now());
            }
            if !idle {
                self.commit_group(group, events);
            }
            self.maintain(idle);
        }
        if let Some(writer) = self.writer.take()
            && let Err(e) = writer.close()
        {
            tracing::error!(error = %e, "storing the last events at shutdown failed; they stay in the write-ahead log");
        }
    }

    fn commit_group(&mut self, group: Vec<Queued>, events: u64) {
        let result = match self.writer.as_mut() {
            None => Err(StoreError::Stopped(
                self.stats
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_default(),
            )),
            Some(writer) => append_group(
                writer,
                &group,
                &self.options.decode,
                self.options.tap.as_deref(),
            ),
        };
        self.stats.queued_events.fetch_sub(events, Ordering::AcqRel);
        match (result, self.writer.as_mut()) {
            (Ok(outcomes), Some(writer)) => {
                // The bodies and lines are not needed any more: only the replies wait, for the
                // WAL's fsync (webhook bodies) or the segment commit (lines of files), while
                // this thread decodes the next group.
                let (mut logged, mut unlogged) = (Vec::new(), Vec::new());
                for (queued, (mut outcome, bad)) in group.into_iter().zip(outcomes) {
                    // Bad input is durable in the quarantine before its batch is answered, so a
                    // source moving past it never loses it.
                    match quarantine(&mut self.quarantine, &self.stats, &bad) {
                        Ok(kept) => outcome.quarantined = kept,
                        Err(e) => {
                            let reason = format!("cannot keep bad input in the quarantine: {e}");
                            tracing::error!(error = %reason, "a batch with bad input was not stored");
                            let _ = queued.reply.send(Err(IngestError::Unavailable(reason)));
                            continue;
                        }
                    }
                    let replies = if queued.batch.is_rereadable() {
                        &mut unlogged
                    } else {
                        &mut logged
                    };
                    replies.push((queued.reply, outcome));
                }
                if !logged.is_empty() {
                    writer.commit_then(acknowledge(self.stats.clone(), logged, true));
                }
                if !unlogged.is_empty() {
                    writer.stored_then(acknowledge(self.stats.clone(), unlogged, false));
                }
            }
            (result, _) => {
                let reason = result.err().map_or_else(String::new, |e| e.to_string());
                self.fail(&reason);
                for queued in group {
                    let _ = queued
                        .reply
                        .send(Err(IngestError::Unavailable(reason.clone())));
                }
            }
        }
    }

    fn fail(&mut self, reason: &str) {
        if self.writer.take().is_some() {
            tracing::error!(error = %reason, "the store stopped accepting events; retrying every 5s");
            if let Some(tap) = &self.options.tap {
                tap.writer_failed();
            }
        }
        self.stats.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last_error.lock() {
            *last = Some(reason.to_owned());
        }
        self.last_reopen = Instant::now();
    }

    /// Flushes, compacts and applies retention when due. `idle`: no batch came for a while.
    fn maintain(&mut self, idle: bool) {
        let Some(writer) = self.writer.as_mut() else {
            if self.last_reopen.elapsed() >= Duration::from_secs(5) {
                self.reopen();
            }
            return;
        };
        if let Some(reason) = writer.failure() {
            self.fail(&reason);
            return;
        }
        let (pending, age) = writer.pending();
        // Events of files are durable, and their tailer's checkpoint moves, only once stored:
        // when a backlog has just been read, its last events are stored without waiting for
        // the interval. A file written slowly still makes a segment per interval, not per poll.
        let caught_up = idle
            && writer.pending_unlogged() > 0
            && self
                .last_backlog
                .is_some_and(|at| at.elapsed() < BACKLOG_DRAINED_WITHIN);
        let result =
            if caught_up || pending > 0 && age.is_some_and(|a| a >= self.options.flush_interval) {
                writer.flush()
            } else {
                Ok(())
            };
        if let Err(e) = result {
            self.fail(&e.to_string());
            return;
        }
        if self.last_compaction.elapsed() >= self.options.compaction_interval {
            self.last_compaction = Instant::now();
            writer.request_compaction(CompactionOptions::default());
        }
        let retention = self.options.retention;
        let due = self
            .last_retention
            .is_none_or(|t| t.elapsed() >= self.options.retention_interval);
        if (retention.max_age_micros.is_some() || retention.max_bytes.is_some()) && due {
            self.last_retention = Some(Instant::now());
            writer.request_prune(retention);
        }
    }

    fn reopen(&mut self) {
        self.last_reopen = Instant::now();
        match EventWriter::open(&self.options.data_dir, self.options.writer.clone()) {
            Ok(writer) => {
                log_recovery(&writer);
                tell_tap_replayed(&self.options, &writer);
                tracing::info!("the store accepts events again");
                if let Ok(mut w) = self.stats.writer.lock() {
                    *w = Some(writer.stats());
                }
                self.writer = Some(writer);
                self.stats.healthy.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
    }
}

/// The events the store replayed from its write-ahead log on opening were accepted without the
/// tap seeing them.
fn tell_tap_replayed(options: &IngestOptions, writer: &EventWriter) {
    if let (Some(tap), Some(newest)) = (&options.tap, writer.newest_accepted()) {
        tap.accepted_before(newest);
    }
}

/// Now, in microseconds since the epoch: the time filed on events that carry none.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The callback answering batches once their events are durable: counts them and replies.
/// `commit` tells a WAL group commit (counted as one) from a segment commit.
fn acknowledge(
    stats: Arc<IngestStats>,
    replies: Vec<(Reply, BatchOutcome)>,
    commit: bool,
) -> OnDurable {
    Box::new(move |durable| match durable {
        Ok(()) => {
            if commit {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            if replies.iter().any(|(_, outcome)| outcome.accepted > 0) {
                stats
                    .last_accepted_micros
                    .store(now_micros(), Ordering::Relaxed);
            }
            for (reply, outcome) in replies {
                stats
                    .accepted
                    .fetch_add(outcome.accepted, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(outcome.duplicates, Ordering::Relaxed);
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(reason) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(IngestError::Unavailable(reason.clone())));
            }
        }
    })
}

fn append_group(
    writer: &mut EventWriter,
    group: &[Queued],
    decode: &DecodeOptions,
    tap: Option<&dyn EventTap>,
) -> Result<Vec<(BatchOutcome, Vec<Quarantined>)>, StoreError> {
    group
        .iter()
        .map(|queued| {
            // A bug that panics on some input must cost that batch, not the ingest thread and
            // every source behind it: the batch is quarantined whole, to be replayed once fixed.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                queued.batch.append_to(writer, decode, tap)
            }))
            .unwrap_or_else(|panic| Ok(queued.batch.panicked(panic.as_ref())))
        })
        .collect()
}

/// Keeps a batch's bad input in the quarantine and counts it; how many entries were kept.
fn quarantine(
    quarantine: &mut Quarantine,
    stats: &IngestStats,
    bad: &[Quarantined],
) -> Result<u64, StoreError> {
    if bad.is_empty() {
        return Ok(0);
    }
    let added = quarantine.add(bad)?;
    stats
        .quarantine_bytes
        .store(quarantine.used_bytes(), Ordering::Relaxed);
    if added.dropped > 0 {
        stats
            .quarantine_dropped
            .fetch_add(added.dropped, Ordering::Relaxed);
        tracing::warn!(
            dropped = added.dropped,
            "the quarantine is at its size limit (quarantine.maxSize): bad input was counted, not kept"
        );
    }
    if let Ok(mut counts) = stats.quarantined.lock() {
        for entry in bad {
            *counts
                .entry((entry.source.to_owned(), entry.reason.clone()))
                .or_default() += 1;
        }
    }
    for entry in bad {
        tracing::warn!(
            source = entry.source,
            location = %entry.location,
            line = entry.line,
            offset = entry.offset,
            reason = %entry.reason,
            message = %entry.message,
            "bad input quarantined (kubetrail quarantine list)"
        );
    }
    Ok(added.kept)
}

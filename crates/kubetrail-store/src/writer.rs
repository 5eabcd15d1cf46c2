//! The writer of a data directory: dedup, the write-ahead log, and the hand-off of events to a
//! background thread that turns them into Parquet segments.
//!
//! ```text
//! append ─▶ dedup (auditID, stage) ─▶ WAL buffer ─▶ commit (write + fdatasync) = accepted
//!                                  └▶ pending rows by day ─▶ flush: WAL rotates, rows handed to
//!                                       the segment thread ─▶ Parquet committed ─▶ WAL files deleted
//! ```
//!
//! Compaction and retention run on a separate maintenance thread, so a long merge never holds
//! up new segments; the segment thread only adds files, the maintenance thread alone removes
//! them. Encoding Parquet off the caller's thread lets an import parse on one
//! core while the other compresses, and keeps a webhook's acknowledgements (which wait only for
//! the WAL fsync) fast while segments are written. At most one hand-off waits in the queue, which
//! bounds memory: a caller that outpaces the encoder blocks in `flush`.
//!
//! After a crash, [`EventWriter::open`] replays the WAL files left behind; events whose segments
//! were committed before the crash are duplicates by key and skipped, so each accepted event is
//! stored exactly once. If a segment cannot be written (a full disk), the writer stops accepting,
//! keeps the WAL files, and the next open replays them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use kubetrail_event::AuditEvent;

use crate::error::StoreError;
use crate::keys::KeySet;
use crate::schema::{BatchSizes, EventBatchBuilder, read_stored_event};
use crate::segment::{
    self, CompactionOptions, CompactionReport, DAY_MICROS, Retention, RetentionReport,
    SegmentOptions, events_dir, now_micros,
};
use crate::wal::{self, OnDurable, Reaper, Wal, WalDamage, WalRecord};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Pending events are handed to the segment thread once this many have been appended.
    pub flush_rows: usize,
    /// The WAL buffer is committed on its own once it holds this many bytes.
    pub auto_commit_bytes: usize,
    /// Segment encoding.
    pub segments: SegmentOptions,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_rows: 100_000,
            auto_commit_bytes: 8 << 20,
            segments: SegmentOptions::default(),
        }
    }
}

/// What happened to an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// New: it will be stored (accepted once committed).
    Accepted,
    /// Its (auditID, stage) is already stored or pending.
    Duplicate,
}

/// What opening the store found and repaired.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Segments found damaged, moved to `quarantine/`, with the reason.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Events replayed from the WAL (accepted before a crash, not yet in Parquet).
    pub replayed: u64,
    /// Events in the WAL that were already in Parquet.
    pub replayed_duplicates: u64,
    /// WAL damage found and repaired.
    pub wal_damage: Vec<WalDamage>,
    /// WAL records that held no readable event.
    pub unreadable_records: u64,
}

/// Counters of a writer, shared with its segment thread (for metrics and status).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Events accepted into the WAL buffer (durable after the next commit).
    pub appended: AtomicU64,
    /// Duplicates skipped.
    pub duplicates: AtomicU64,
    /// Events committed to Parquet segments.
    pub stored: AtomicU64,
    /// Segments written.
    pub segments_written: AtomicU64,
    /// WAL commits (fsyncs).
    pub commits: AtomicU64,
    /// The newest event time (µs) of each cluster in committed segments: events up to it
    /// are queryable. Monitors derive their watermark from it.
    pub newest_stored: Mutex<BTreeMap<String, i64>>,
}

enum Job {
    Store {
        days: Vec<(i64, RecordBatch)>,
        rows: u64,
        wal_through: u64,
        newest: BTreeMap<String, i64>,
    },
    Barrier(SyncSender<()>),
}

/// Work on the segment set that may take long: it runs on its own thread so that it never
/// holds up the hand-off of new events.
enum Maintenance {
    Compact(
        CompactionOptions,
        Option<SyncSender<Result<CompactionReport, StoreError>>>,
    ),
    Prune(
        Retention,
        i64,
        Option<SyncSender<Result<RetentionReport, StoreError>>>,
    ),
}

/// The segment thread's state shared with the writer.
#[derive(Default)]
struct Shared {
    failure: Mutex<Option<String>>,
    stats: Arc<WriterStats>,
    stored_waiters: Mutex<StoredWaiters>,
}

/// Callbacks of [`EventWriter::stored_then`], each waiting for a hand-off to be committed.
#[derive(Default)]
struct StoredWaiters {
    /// Hand-offs the segment thread has finished with (committed or failed), in order.
    finished: u64,
    /// The hand-off each callback waits for.
    waiting: Vec<(u64, OnDurable)>,
}

impl Shared {
    fn failed(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Runs `then` once hand-off number `handoff` (1-based) is finished, now if it is.
    fn when_stored(&self, handoff: u64, then: OnDurable) {
        let mut waiters = self
            .stored_waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if waiters.finished < handoff {
            waiters.waiting.push((handoff, then));
            return;
        }
        drop(waiters);
        then(self.failed().map_or(Ok(()), Err));
    }

    /// One more hand-off is finished: runs the callbacks waiting for it, with the failure, if
    /// any, that stopped the segments.
    fn handoff_finished(&self) {
        let ready: Vec<OnDurable> = {
            let mut waiters = self
                .stored_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiters.finished += 1;
            let finished = waiters.finished;
            let (ready, waiting) = std::mem::take(&mut waiters.waiting)
                .into_iter()
                .partition(|(handoff, _)| *handoff <= finished);
            waiters.waiting = waiting;
            ready.into_iter().map(|(_, then)| then).collect()
        };
        let result = self.failed().map_or(Ok(()), Err);
        for then in ready {
            then(result.clone());
        }
    }

    /// The writer is gone: callbacks still waiting will never see their events stored.
    fn abandon_waiters(&self) {
        let waiting = std::mem::take(
            &mut self
                .stored_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .waiting,
        );
        let reason = self
            .failed()
            .unwrap_or_else(|| "the store was closed before these events were stored".to_owned());
        for (_, then) in waiting {
            then(Err(reason.clone()));
        }
    }
}

/// The writer of one data directory. One process writes a data directory at a time (a lock
/// file enforces it).
pub struct EventWriter {
    dir: PathBuf,
    options: WriterOptions,
    keys: KeySet,
    pending: BTreeMap<i64, EventBatchBuilder>,
    pending_rows: usize,
    /// Of the pending rows, those appended without the WAL.
    pending_unlogged: usize,
    /// The sizes of the largest batch handed off so far, to allocate the next one's buffers.
    batch_sizes: Option<BatchSizes>,
    pending_since: Option<Instant>,
    /// The newest event time of each cluster among the pending rows.
    pending_newest: BTreeMap<String, i64>,
    /// The newest time of every event accepted since the store was opened (replayed ones
    /// included).
    newest_accepted: Option<i64>,
    /// Hand-offs sent to the segment thread so far.
    handoffs: u64,
    wal: Wal,
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    maintenance: Option<SyncSender<Maintenance>>,
    maintenance_thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    recovery: Recovery,
    _lock: File,
}

impl EventWriter {
    /// Opens (creating if needed) the data directory for writing, finishing what a crash
    /// interrupted: temporary files, compactions, and the WAL (replayed exactly once).
    pub fn open(dir: &Path, options: WriterOptions) -> Result<EventWriter, StoreError> {
        fs::create_dir_all(events_dir(dir)).map_err(|e| StoreError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|_| StoreError::Locked(dir.to_path_buf()))?;
        segment::finish_interrupted_compactions(dir)?;
        let mut keys = KeySet::default();
        let mut recovery = Recovery::default();
        let mut stored = 0;
        for path in segment::segments(dir)? {
            match segment::load_keys(&path, &mut keys) {
                Ok(rows) => stored += rows,
                Err(e) => {
                    // A damaged segment must not make the rest unreadable: it is moved aside,
                    // kept for inspection, and reported.
                    segment::quarantine(dir, &path)?;
                    recovery.quarantined.push((path, e.to_string()));
                }
            }
        }
        let leftover = wal::files(dir)?;
        let wal = Wal::create(dir)?;
        let shared = Arc::new(Shared::default());
        shared.stats.stored.store(stored, Ordering::Relaxed);
        let (jobs, receiver) = sync_channel(1);
        let thread = {
            let thread_dir = dir.to_path_buf();
            let shared = shared.clone();
            let segments = options.segments.clone();
            let reaper = Reaper::start(dir)?;
            std::thread::Builder::new()
                .name("kubetrail-segments".to_owned())
                .spawn(move || segment_thread(&thread_dir, &segments, &receiver, &shared, &reaper))
                .map_err(|e| StoreError::io(dir, e))?
        };
        let (maintenance, maintenance_jobs) = sync_channel(1);
        let maintenance_thread = {
            let thread_dir = dir.to_path_buf();
            let segments = options.segments.clone();
            std::thread::Builder::new()
                .name("kubetrail-maintenance".to_owned())
                .spawn(move || maintenance_thread(&thread_dir, &segments, &maintenance_jobs))
                .map_err(|e| StoreError::io(dir, e))?
        };
        let mut writer = EventWriter {
            dir: dir.to_path_buf(),
            options,
            keys,
            pending: BTreeMap::new(),
            pending_rows: 0,
            pending_unlogged: 0,
            batch_sizes: None,
            pending_since: None,
            pending_newest: BTreeMap::new(),
            newest_accepted: None,
            handoffs: 0,
            wal,
            jobs: Some(jobs),
            thread: Some(thread),
            maintenance: Some(maintenance),
            maintenance_thread: Some(maintenance_thread),
            shared,
            recovery,
            _lock: lock,
        };
        writer.replay(&leftover)?;
        Ok(writer)
    }

    /// Replays WAL files a previous process left: their events are pending again, and the
    /// files are deleted with the first flush (or at once when nothing in them was new).
    fn replay(&mut self, files: &[(u64, PathBuf)]) -> Result<(), StoreError> {
        let Some((last, _)) = files.last() else {
            return Ok(());
        };
        for (_, path) in files {
            let mut records: Vec<(String, i64, Vec<u8>)> = Vec::new();
            let damage = wal::replay_file(&self.dir, path, |r| {
                records.push((r.cluster.to_owned(), r.ingest_micros, r.json.to_vec()));
            })?;
            self.recovery.wal_damage.extend(damage);
            for (cluster, ingest_micros, json) in records {
                match read_stored_event(&json, |event| {
                    self.insert_pending(event, &cluster, ingest_micros)
                }) {
                    None => self.recovery.unreadable_records += 1,
                    Some(true) => self.recovery.replayed += 1,
                    Some(false) => self.recovery.replayed_duplicates += 1,
                }
            }
        }
        if self.pending_rows > 0 {
            // The events are already in the closed WAL files: store them and let the segment
            // thread delete those files.
            self.hand_off(*last)
        } else {
            wal::remove_through(&self.dir, *last)
        }
    }

    /// What opening the store found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The newest event time accepted since the store was opened (events replayed from the
    /// write-ahead log included): a live consumer that starts watching accepted events now has
    /// seen none at or before it.
    pub fn newest_accepted(&self) -> Option<i64> {
        self.newest_accepted
    }

    /// Counters, shared: keep the `Arc` to read them while the writer works.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.shared.stats.clone()
    }

    fn check_healthy(&self) -> Result<(), StoreError> {
        match self.failure() {
            Some(reason) => Err(StoreError::Stopped(reason)),
            None => Ok(()),
        }
    }

    /// Why the writer stopped accepting events, if it did (a failed WAL write or segment).
    pub fn failure(&self) -> Option<String> {
        self.wal.failure().or_else(|| self.shared.failed())
    }

    /// Dedups and adds to the pending rows; false for a duplicate.
    fn insert_pending(&mut self, event: &AuditEvent<'_>, cluster: &str, ingest: i64) -> bool {
        if !self
            .keys
            .insert(segment::key(&event.audit_id, event.stage.as_str()))
        {
            return false;
        }
        let time = event.time().map_or(ingest, |t| t.as_micros());
        let flush_rows = self.options.flush_rows;
        self.pending
            .entry(time.div_euclid(DAY_MICROS))
            .or_insert_with(|| match &self.batch_sizes {
                Some(sizes) => EventBatchBuilder::with_capacity(flush_rows, sizes),
                None => EventBatchBuilder::default(),
            })
            .append(event, cluster, time);
        self.newest_accepted = Some(self.newest_accepted.map_or(time, |t| t.max(time)));
        match self.pending_newest.get_mut(cluster) {
            Some(newest) => *newest = (*newest).max(time),
            None => {
                self.pending_newest.insert(cluster.to_owned(), time);
            }
        }
        self.pending_rows += 1;
        self.pending_since.get_or_insert_with(Instant::now);
        true
    }

    /// Adds an event from `cluster`; `ingest_micros` files events that carry no time. The event
    /// is accepted once [`commit`](Self::commit) returns.
    pub fn append(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        ingest_micros: i64,
    ) -> Result<Appended, StoreError> {
        self.append_to(event, cluster, ingest_micros, true)
    }

    /// Adds an event without writing it to the WAL, for a caller whose input is itself a
    /// durable log it can read again (an import of files, a tailed audit log): the event is
    /// stored once the segment holding it is committed ([`stored_then`](Self::stored_then),
    /// [`sync`](Self::sync), [`close`](Self::close)). A crash before that loses nothing that was
    /// reported stored, and reading the input again stores the event once. Skipping the log
    /// spares writing, checksumming and deleting every byte a second time (a tenth of an
    /// import's time).
    pub fn append_unlogged(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        ingest_micros: i64,
    ) -> Result<Appended, StoreError> {
        self.append_to(event, cluster, ingest_micros, false)
    }

    fn append_to(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        ingest_micros: i64,
        logged: bool,
    ) -> Result<Appended, StoreError> {
        self.check_healthy()?;
        if !self.insert_pending(event, cluster, ingest_micros) {
            self.shared.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Appended::Duplicate);
        }
        if logged {
            self.wal.append(&WalRecord {
                cluster,
                ingest_micros,
                json: event.raw.as_str().as_bytes(),
            });
        } else {
            self.pending_unlogged += 1;
        }
        self.shared.stats.appended.fetch_add(1, Ordering::Relaxed);
        if self.pending_rows >= self.options.flush_rows {
            self.flush()?;
        } else if self.wal.uncommitted_bytes() >= self.options.auto_commit_bytes {
            // Bounds the buffer; whoever acknowledges events commits with a callback later.
            self.count_commit();
            self.wal.commit_then(None);
        }
        Ok(Appended::Accepted)
    }

    /// Makes every appended event durable (WAL write + fsync) and waits: the group commit.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.check_healthy()?;
        self.count_commit();
        // On failure the file may end in a torn record; nothing more is written after it
        // (the writer reports the failure from now on). The next open truncates it: those
        // events were never acknowledged.
        self.wal.commit()
    }

    /// The group commit without waiting: `then` runs on the WAL's thread once every event
    /// appended so far is durable, or with the reason it cannot be. Meanwhile the caller can
    /// append the next group.
    pub fn commit_then(&mut self, then: OnDurable) {
        if let Some(reason) = self.failure() {
            then(Err(reason));
            return;
        }
        self.count_commit();
        self.wal.commit_then(Some(then));
    }

    /// `then` runs on the segment thread once every event appended so far is in committed
    /// segments (or with the reason it cannot be): the acknowledgement of events appended with
    /// [`append_unlogged`](Self::append_unlogged). Pending events wait for the next
    /// [`flush`](Self::flush).
    pub fn stored_then(&mut self, then: OnDurable) {
        let handoff = self.handoffs + u64::from(self.pending_rows > 0);
        self.shared.when_stored(handoff, then);
    }

    fn count_commit(&self) {
        if self.wal.uncommitted_bytes() > 0 {
            self.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events pending for Parquet, and for how long the oldest has waited.
    pub fn pending(&self) -> (usize, Option<Duration>) {
        (
            self.pending_rows,
            self.pending_since.map(|since| since.elapsed()),
        )
    }

    /// Pending events appended without the WAL: durable only once flushed.
    pub fn pending_unlogged(&self) -> usize {
        self.pending_unlogged
    }

    /// Commits the WAL and hands the pending events to the segment thread (blocking while a
    /// previous hand-off still waits).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check_healthy()?;
        if self.pending_rows == 0 {
            return Ok(());
        }
        self.count_commit();
        let closed = self.wal.rotate();
        self.hand_off(closed)
    }

    fn hand_off(&mut self, wal_through: u64) -> Result<(), StoreError> {
        let days = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(day, mut builder)| {
                if self
                    .batch_sizes
                    .as_ref()
                    .is_none_or(|s| s.rows() < builder.len())
                {
                    self.batch_sizes = Some(builder.sizes());
                }
                (day, builder.finish())
            })
            .collect();
        let rows = self.pending_rows as u64;
        self.pending_rows = 0;
        self.pending_unlogged = 0;
        self.pending_since = None;
        self.handoffs += 1;
        let newest = std::mem::take(&mut self.pending_newest);
        self.send(Job::Store {
            days,
            rows,
            wal_through,
            newest,
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(StoreError::Stopped(self.shared.failed().unwrap_or_else(
                || "the segment thread has stopped".to_owned(),
            )))
        }
    }

    /// Flushes and waits until every event appended so far is in Parquet.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let (done, wait) = sync_channel(1);
        self.send(Job::Barrier(done))?;
        let _ = wait.recv();
        self.check_healthy()
    }

    /// Merges small segments and waits for the result.
    pub fn compact(&mut self, options: CompactionOptions) -> Result<CompactionReport, StoreError> {
        let (reply, answer) = sync_channel(1);
        self.send_maintenance(Maintenance::Compact(options, Some(reply)))?;
        answer.recv().map_err(|_| maintenance_stopped())?
    }

    /// Applies retention as of `now_micros` and waits for the result.
    pub fn prune(
        &mut self,
        retention: Retention,
        now_micros: i64,
    ) -> Result<RetentionReport, StoreError> {
        let (reply, answer) = sync_channel(1);
        self.send_maintenance(Maintenance::Prune(retention, now_micros, Some(reply)))?;
        answer.recv().map_err(|_| maintenance_stopped())?
    }

    /// Starts a compaction in the background unless one is running.
    pub fn request_compaction(&self, options: CompactionOptions) {
        if let Some(m) = &self.maintenance {
            let _ = m.try_send(Maintenance::Compact(options, None));
        }
    }

    /// Starts retention in the background (as of now) unless maintenance is running.
    pub fn request_prune(&self, retention: Retention) {
        if let Some(m) = &self.maintenance {
            let _ = m.try_send(Maintenance::Prune(retention, now_micros(), None));
        }
    }

    fn send_maintenance(&self, job: Maintenance) -> Result<(), StoreError> {
        self.maintenance
            .as_ref()
            .and_then(|m| m.send(job).ok())
            .ok_or_else(maintenance_stopped)
    }

    /// Stores everything and stops the segment thread.
    pub fn close(mut self) -> Result<(), StoreError> {
        let result = self.sync();
        self.stop_thread();
        result
    }

    fn stop_thread(&mut self) {
        self.jobs = None;
        self.maintenance = None;
        for thread in [self.thread.take(), self.maintenance_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
        self.shared.abandon_waiters();
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Without `close`, appended events stay in the WAL (committed or not) and pending
        // hand-offs finish; the next open replays whatever is not yet in Parquet.
        self.stop_thread();
    }
}

fn segment_thread(
    dir: &Path,
    options: &SegmentOptions,
    jobs: &Receiver<Job>,
    shared: &Shared,
    reaper: &Reaper,
) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Store {
                days,
                rows,
                wal_through,
                newest,
            } => {
                if shared.failed().is_some() {
                    // Order matters: after a failed hand-off, later ones must not delete the
                    // WAL files the failed one still needs.
                    shared.handoff_finished();
                    continue;
                }
                let result = days.iter().try_for_each(|(day, batch)| {
                    segment::write_day(dir, *day, batch, options).map(|_| {
                        shared
                            .stats
                            .segments_written
                            .fetch_add(1, Ordering::Relaxed);
                    })
                });
                match result {
                    Ok(()) => {
                        reaper.remove_through(wal_through);
                        shared.stats.stored.fetch_add(rows, Ordering::Relaxed);
                        let mut stored = shared
                            .stats
                            .newest_stored
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        for (cluster, time) in newest {
                            let entry = stored.entry(cluster).or_insert(time);
                            *entry = (*entry).max(time);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut failure) = shared.failure.lock() {
                            *failure = Some(format!(
                                "cannot write segments: {e}; events in the write-ahead log are kept and stored when the store is opened again, events of files are read again"
                            ));
                        }
                    }
                }
                shared.handoff_finished();
            }
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn maintenance_stopped() -> StoreError {
    StoreError::Stopped("the maintenance thread has stopped".to_owned())
}

fn maintenance_thread(dir: &Path, options: &SegmentOptions, jobs: &Receiver<Maintenance>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Maintenance::Compact(compaction, reply) => {
                let result = segment::compact(dir, &compaction, options);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    tracing::warn!(error = %e, "compaction failed; the segments are unchanged");
                }
            }
            Maintenance::Prune(retention, now, reply) => {
                let result = segment::prune(dir, retention, now);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else {
                    match result {
                        Ok(report) if report.deleted_segments > 0 => tracing::info!(
                            segments = report.deleted_segments,
                            bytes = report.deleted_bytes,
                            "retention deleted old data"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "retention failed"),
                    }
                }
            }
        }
    }
}

//! The file source: tails the API server's log backend (`--audit-log-path`), or a container
//! runtime's log files when the API server logs to stdout, with checkpoints.
//!
//! **Identity.** A file is known by a fingerprint of its first line (at most 256 bytes, of the
//! decompressed content for gzip) — an audit line starts with its unique `auditID` — together
//! with its device and inode. The fingerprint follows the content through every way logs
//! rotate: a rename (`audit.log` → `audit-2026-07-23T14-47-51.123.log`, same inode), a later
//! gzip of the renamed file (new inode, same first line), copytruncate (the copy has the old
//! first line; the truncated original gets a new one), deletion and re-creation (a new first
//! line).
//!
//! **Progress.** Each fingerprint has an offset: the bytes of complete lines whose events the
//! store has acknowledged. Only complete lines are read — a partial last line waits until the
//! API server finishes it. The file is itself a durable log, so its events skip the store's WAL:
//! a chunk is acknowledged once the Parquet segment holding its events is committed. Offsets
//! advance only after the acknowledgement, and the checkpoint file (`checkpoints.json`, written
//! atomically) is saved every second and at shutdown, so a restart resumes where the last
//! acknowledged chunk ended: nothing is lost, and what is read again after a crash is
//! recognised by the store as duplicates. Files that rotated while
//! kubetrail was stopped are found by fingerprint if the glob matches the rotated names
//! (`audit*.log*`), and their remaining lines are read. A container log line split in pieces
//! (CRI `P` records, Docker records without a newline) is joined in the decoder's memory, so
//! while its last piece has not come the checkpoint stays at the line's first piece: a restart
//! reads the pieces again instead of starting in the middle of the line.
//!
//! **Start.** Files seen for the first time are read from the beginning, except on the very
//! first start (no checkpoint file) with `start_at: end`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use kubetrail_event::{DecodeOptions, Decoder};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot::error::TryRecvError;

use crate::ingest::{Ack, Batch, Ingest, IngestError, now_micros};
use crate::transform::Transforms;

/// Where to start in files seen on the very first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read existing content (default).
    #[default]
    Beginning,
    /// Only what is written from now on.
    End,
}

/// Settings of the file source.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Paths or globs (`/var/log/kubernetes/audit/audit*.log*`).
    pub patterns: Vec<String>,
    /// The checkpoint file.
    pub checkpoint_path: PathBuf,
    /// Where to start in files seen on the very first start.
    pub start_at: StartAt,
    /// How often files are checked for new data and rotation.
    pub poll_interval: Duration,
    /// The cluster the events are stamped with.
    pub cluster: String,
    /// Decoder settings.
    pub decode: DecodeOptions,
    /// A rotated-away file whose last line never ended is given up after this long.
    pub rotate_wait: Duration,
}

impl TailOptions {
    /// Defaults for patterns and a checkpoint file.
    pub fn new(patterns: Vec<String>, checkpoint_path: PathBuf) -> Self {
        TailOptions {
            patterns,
            checkpoint_path,
            start_at: StartAt::Beginning,
            poll_interval: Duration::from_millis(250),
            cluster: String::new(),
            decode: DecodeOptions {
                keep_skipped_input: true,
                ..DecodeOptions::default()
            },
            rotate_wait: Duration::from_secs(10),
        }
    }
}

/// What the tailer reports per file, for metrics and `kubetrail status`.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// The path it was last seen at.
    pub path: String,
    /// Bytes read and acknowledged (of the decompressed content for gzip).
    pub offset: u64,
    /// Its size on disk (compressed size for gzip).
    pub size: u64,
    /// Whether it is gzip.
    pub gzip: bool,
}

/// Counters of the file source.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Files being tailed.
    pub files: Mutex<Vec<FileStatus>>,
    /// Events read.
    pub events: std::sync::atomic::AtomicU64,
    /// Bytes read.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Lines that were not events (skipped with a reason).
    pub skipped: std::sync::atomic::AtomicU64,
    /// Of those, the lines kept in the quarantine.
    pub quarantined: std::sync::atomic::AtomicU64,
    /// Events dropped by exclusions or the policy.
    pub filtered: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    fingerprint: String,
    path: String,
    device: u64,
    inode: u64,
    offset: u64,
    /// Seconds since the epoch of the last change.
    updated: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Checkpoint>,
}

/// Most checkpoints kept; the oldest untracked ones are forgotten beyond this.
const MAX_CHECKPOINTS: usize = 1000;
/// Bytes of the first line used as the fingerprint.
const FINGERPRINT_BYTES: usize = 256;
/// Bytes read at a time.
const CHUNK: usize = 4 << 20;
/// Events (lines) of a file queued but not yet acknowledged. Acknowledgements come with segment
/// commits, every 25,000 events in `serve` (`IngestOptions::new`): this lets a few hand-offs be
/// in flight, so reading never waits for one. Memory is bounded by the store's admission control
/// (queued, undecoded events) and its pending rows, not by this.
const MAX_IN_FLIGHT_EVENTS: u64 = 100_000;

/// How long [`Tailer::settle`] waits.
#[derive(Clone, Copy)]
enum Settle {
    /// Takes the acknowledgements that arrived, without waiting.
    Ready,
    /// Waits while this many lines or more are in flight.
    Below(u64),
}

/// A chunk of lines handed to the store, waiting for its acknowledgement.
struct InFlight {
    ack: Ack,
    bytes: u64,
    lines: u64,
}

struct Tracked {
    path: PathBuf,
    device: u64,
    inode: u64,
    fingerprint: String,
    gzip: bool,
    /// Bytes of complete lines acknowledged.
    offset: u64,
    /// Chunks after `offset` handed to the store, oldest first, waiting for acknowledgement.
    in_flight: VecDeque<InFlight>,
    /// A gzip file read to its end.
    finished: bool,
    /// Plain files stay open, so lines written just before a rename or deletion are still
    /// read after it.
    handle: Option<File>,
    seen: Instant,
    /// Shared with the writer thread, which decodes the chunks this file's lines are sent in.
    decoder: Arc<Mutex<Decoder>>,
    /// The offset the decoder started at.
    decoder_start: u64,
    /// Where a container log line split in pieces began, while its last piece is not yet
    /// acknowledged: the decoder holds the first pieces in memory only, so a restart must read
    /// them again.
    pending_line_start: Option<u64>,
}

impl Tracked {
    /// Where a restart resumes: the acknowledged offset, or the start of a split container
    /// line still waiting for its end (its events are read again there and joined; complete
    /// events after it come again and are deduplicated).
    fn resume_offset(&self) -> u64 {
        self.pending_line_start.unwrap_or(self.offset)
    }

    /// Where reading continues: after the chunks in flight.
    fn read_offset(&self) -> u64 {
        self.offset + self.in_flight.iter().map(|c| c.bytes).sum::<u64>()
    }

    fn lines_in_flight(&self) -> u64 {
        self.in_flight.iter().map(|c| c.lines).sum()
    }

    /// Starts over at `offset` with a fresh decoder, forgetting the chunks in flight (their
    /// lines are read again, and their events recognised as duplicates).
    fn restart_at(&mut self, offset: u64, decode: &DecodeOptions) {
        self.offset = offset;
        self.in_flight.clear();
        self.decoder = Arc::new(Mutex::new(Decoder::new(decode.clone())));
        self.decoder_start = offset;
        self.pending_line_start = None;
    }
}

/// The running file source.
pub struct Tailer {
    options: TailOptions,
    transforms: Arc<Transforms>,
    ingest: Ingest,
    stop: Arc<AtomicBool>,
    stats: Arc<TailStats>,
    checkpoints: HashMap<String, Checkpoint>,
    checkpoints_dirty: bool,
    first_start: bool,
    tracked: Vec<Tracked>,
}

/// Why the checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The checkpoint file is unreadable or damaged.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A pattern is not a valid glob.
    #[error("--tail {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
}

impl Tailer {
    /// Loads the checkpoints and checks the patterns.
    pub fn new(
        options: TailOptions,
        transforms: Arc<Transforms>,
        ingest: Ingest,
        stop: Arc<AtomicBool>,
    ) -> Result<Tailer, TailError> {
        for pattern in &options.patterns {
            glob::Pattern::new(pattern).map_err(|e| TailError::Pattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
        }
        let (checkpoints, first_start) = match fs::read(&options.checkpoint_path) {
            Ok(bytes) => {
                let file: CheckpointFile =
                    serde_json::from_slice(&bytes).map_err(|e| TailError::Checkpoint {
                        path: options.checkpoint_path.clone(),
                        message: format!(
                            "damaged checkpoint file ({e}); move it away to start over (files would be read again from the beginning, duplicates are skipped)"
                        ),
                    })?;
                (
                    file.files
                        .into_iter()
                        .map(|c| (c.fingerprint.clone(), c))
                        .collect(),
                    false,
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (HashMap::new(), true),
            Err(e) => {
                return Err(TailError::Checkpoint {
                    path: options.checkpoint_path.clone(),
                    message: e.to_string(),
                });
            }
        };
        Ok(Tailer {
            options,
            transforms,
            ingest,
            stop,
            stats: Arc::new(TailStats::default()),
            checkpoints,
            checkpoints_dirty: first_start,
            first_start,
            tracked: Vec::new(),
        })
    }

    /// Counters, shared.
    pub fn stats(&self) -> Arc<TailStats> {
        self.stats.clone()
    }

    /// Runs the tailer on its own thread until `stop` is set.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kubetrail-tail".to_owned())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut last_save = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            self.poll();
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.save_checkpoints();
                last_save = Instant::now();
            }
            let spent = started.elapsed();
            if spent < self.options.poll_interval {
                std::thread::sleep(self.options.poll_interval - spent);
            }
        }
        self.save_checkpoints();
    }

    /// One round: discover files, read what is new in each, forget what is gone.
    fn poll(&mut self) {
        for path in self.matching_paths() {
            self.discover(&path);
        }
        self.first_start = false;
        let mut index = 0;
        while index < self.tracked.len() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let keep = self.read_tracked(index);
            if keep {
                index += 1;
            } else {
                self.tracked.swap_remove(index);
            }
        }
        self.publish_status();
    }

    fn matching_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for pattern in &self.options.patterns {
            if let Ok(entries) = glob::glob(pattern) {
                paths.extend(entries.flatten().filter(|p| p.is_file()));
            }
        }
        paths.sort();
        paths.dedup();
        paths
    }

    fn discover(&mut self, path: &Path) {
        let Ok(metadata) = fs::metadata(path) else {
            return;
        };
        let (device, inode) = identity(&metadata);
        if let Some(tracked) = self
            .tracked
            .iter_mut()
            .find(|t| t.device == device && t.inode == inode)
        {
            tracked.path = path.to_path_buf();
            tracked.seen = Instant::now();
            return;
        }
        let Ok((fingerprint, gzip)) = fingerprint(path) else {
            return;
        };
        let Some(fingerprint) = fingerprint else {
            // No complete first line yet: wait for it.
            return;
        };
        let offset = if let Some(live) = self.tracked.iter().find(|t| t.fingerprint == fingerprint)
        {
            // A copy of a file being read (copytruncate's copy, a gzip of a rotated file).
            live.resume_offset()
        } else if let Some(checkpoint) = self.checkpoints.get(&fingerprint) {
            checkpoint.offset
        } else if self.first_start && self.options.start_at == StartAt::End {
            if gzip { u64::MAX } else { metadata.len() }
        } else {
            0
        };
        let handle = if gzip {
            None
        } else {
            match File::open(path) {
                Ok(handle) => Some(handle),
                Err(_) => return,
            }
        };
        tracing::debug!(file = %path.display(), offset, "tailing");
        self.tracked.push(Tracked {
            path: path.to_path_buf(),
            device,
            inode,
            fingerprint,
            gzip,
            offset,
            in_flight: VecDeque::new(),
            finished: false,
            handle,
            seen: Instant::now(),
            decoder: Arc::new(Mutex::new(Decoder::new(self.options.decode.clone()))),
            decoder_start: offset,
            pending_line_start: None,
        });
    }

    /// Reads what is new in a tracked file; false when it should be forgotten.
    fn read_tracked(&mut self, index: usize) -> bool {
        let path = self.tracked[index].path.clone();
        let same_file = fs::metadata(&path)
            .is_ok_and(|m| identity(&m) == (self.tracked[index].device, self.tracked[index].inode));
        self.settle(index, Settle::Ready);
        if self.tracked[index].gzip {
            if !self.tracked[index].finished && same_file {
                self.read_gzip(index);
                self.settle(index, Settle::Ready);
            }
            return same_file && !self.stale(index);
        }
        let Some(size) = self.tracked[index]
            .handle
            .as_ref()
            .and_then(|h| h.metadata().ok())
            .map(|m| m.len())
        else {
            return false;
        };
        if size < self.tracked[index].read_offset() {
            // copytruncate (or truncation by hand): the content before is in the copy, if any.
            tracing::info!(file = %path.display(), "file truncated; reading it from the start");
            self.tracked[index].restart_at(0, &self.options.decode);
            match fingerprint(&path) {
                Ok((Some(fp), _)) => self.tracked[index].fingerprint = fp,
                _ => return false,
            }
        }
        if size > self.tracked[index].read_offset() {
            self.read_plain(index);
            self.settle(index, Settle::Ready);
        }
        // A file renamed out of the patterns or deleted is drained through its open handle,
        // then kept a while in case its last line is still being written.
        !self.stale(index)
    }

    fn stale(&self, index: usize) -> bool {
        self.tracked[index].seen.elapsed() > self.options.rotate_wait
    }

    fn read_plain(&mut self, index: usize) {
        let path = self.tracked[index].path.clone();
        let Some(mut file) = self.tracked[index]
            .handle
            .as_ref()
            .and_then(|h| h.try_clone().ok())
        else {
            return;
        };
        let start = self.tracked[index].read_offset();
        if file.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        let mut buffer = vec![0u8; CHUNK];
        let mut filled = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let n = match file.read(&mut buffer[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "read failed");
                    return;
                }
            };
            filled += n;
            let Some(last_newline) = memchr::memrchr(b'\n', &buffer[..filled]) else {
                if n == 0 || filled == buffer.len() {
                    // A partial line waits for its end (or, longer than a chunk, for more room).
                    if filled == buffer.len() {
                        buffer.resize(buffer.len() * 2, 0);
                        continue;
                    }
                    return;
                }
                continue;
            };
            let complete = last_newline + 1;
            if !self.deliver(index, &buffer[..complete], complete as u64) {
                return;
            }
            buffer.copy_within(complete..filled, 0);
            filled -= complete;
            if n == 0 {
                return;
            }
        }
    }

    fn read_gzip(&mut self, index: usize) {
        let path = self.tracked[index].path.clone();
        let Ok(file) = File::open(&path) else {
            return;
        };
        if self.tracked[index].offset == u64::MAX {
            self.tracked[index].finished = true;
            return;
        }
        let skip = self.tracked[index].read_offset();
        let mut reader = MultiGzDecoder::new(BufReader::new(file));
        if io::copy(&mut (&mut reader).take(skip), &mut io::sink()).is_err() {
            return;
        }
        let mut buffer = vec![0u8; CHUNK];
        let mut filled = 0;
        loop {
            let n = match reader.read(&mut buffer[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Still being written by the rotation (gzip in progress): try again later
                // from the last acknowledged line.
                Err(_) => return,
            };
            filled += n;
            if n == 0 {
                if filled > 0 {
                    // A final line without a newline in a finished file is still a line: it is
                    // decoded with one, and counts its own bytes only.
                    let mut last = buffer[..filled].to_vec();
                    if last.last() != Some(&b'\n') {
                        last.push(b'\n');
                    }
                    if !self.deliver(index, &last, filled as u64) {
                        return;
                    }
                }
                self.tracked[index].finished = true;
                return;
            }
            if filled == buffer.len() {
                match memchr::memrchr(b'\n', &buffer[..filled]) {
                    Some(last_newline) => {
                        let complete = last_newline + 1;
                        if !self.deliver(index, &buffer[..complete], complete as u64) {
                            return;
                        }
                        buffer.copy_within(complete..filled, 0);
                        filled -= complete;
                    }
                    None => buffer.resize(buffer.len() * 2, 0),
                }
            }
        }
    }

    /// Queues complete lines for the store, which decodes them with this file's decoder. Up
    /// to [`MAX_IN_FLIGHT_EVENTS`] wait for their acknowledgement at once, so reading the next
    /// chunk overlaps with storing the previous ones; offsets advance only as acknowledgements
    /// arrive, in order, by `file_bytes` each (the lines' bytes in the file). False when a batch
    /// could not be stored (the same lines are read again later).
    fn deliver(&mut self, index: usize, lines: &[u8], file_bytes: u64) -> bool {
        let tracked = &self.tracked[index];
        let batch = Batch::lines(
            self.options.cluster.clone(),
            lines.to_vec(),
            tracked.decoder.clone(),
            (tracked.path.clone(), tracked.decoder_start),
            self.transforms.clone(),
        );
        let line_count = memchr::memchr_iter(b'\n', lines).count() as u64;
        match self.ingest.queue(batch, &self.stop) {
            Ok(ack) => {
                self.tracked[index].in_flight.push_back(InFlight {
                    ack,
                    bytes: file_bytes,
                    lines: line_count,
                });
                self.settle(index, Settle::Below(MAX_IN_FLIGHT_EVENTS))
            }
            Err(e) => {
                self.abandon(index, &e);
                false
            }
        }
    }

    /// Takes acknowledgements in order, advancing the offset of each acknowledged chunk: those
    /// that arrived ([`Settle::Ready`]), or waiting for them until fewer lines are in flight
    /// than a bound ([`Settle::Below`]). False when one failed.
    fn settle(&mut self, index: usize, until: Settle) -> bool {
        loop {
            let tracked = &mut self.tracked[index];
            let wait = match until {
                Settle::Ready => false,
                Settle::Below(bound) => tracked.lines_in_flight() >= bound,
            };
            let (answer, bytes) = if wait {
                let Some(chunk) = tracked.in_flight.pop_front() else {
                    return true;
                };
                (chunk.ack.blocking_recv().ok(), chunk.bytes)
            } else {
                let Some(chunk) = tracked.in_flight.front_mut() else {
                    return true;
                };
                let answer = match chunk.ack.try_recv() {
                    Err(TryRecvError::Empty) => return true,
                    Ok(answer) => Some(answer),
                    Err(TryRecvError::Closed) => None,
                };
                let bytes = chunk.bytes;
                tracked.in_flight.pop_front();
                (answer, bytes)
            };
            let answer = answer.unwrap_or(Err(IngestError::ShuttingDown));
            let outcome = match answer {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.abandon(index, &e);
                    return false;
                }
            };
            // Each skipped line was logged as it was quarantined, with its offset.
            self.stats
                .skipped
                .fetch_add(outcome.skipped, Ordering::Relaxed);
            self.stats
                .quarantined
                .fetch_add(outcome.quarantined, Ordering::Relaxed);
            self.stats
                .filtered
                .fetch_add(outcome.filtered, Ordering::Relaxed);
            let tracked = &mut self.tracked[index];
            tracked.offset += bytes;
            tracked.pending_line_start = outcome
                .pending_line_start
                .map(|start| tracked.decoder_start + start);
            self.stats
                .events
                .fetch_add(outcome.kept(), Ordering::Relaxed);
            self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.sync_checkpoint(index);
        }
    }

    /// A batch was not stored: forget what is in flight and read again from the last
    /// acknowledged offset (chunks stored after it come again and are deduplicated).
    fn abandon(&mut self, index: usize, error: &IngestError) {
        tracing::warn!(file = %self.tracked[index].path.display(), %error, "events not stored; they will be read again");
        // The decoder has consumed these lines; they are fed again to a fresh one from the
        // last acknowledged offset, or the start of a split line it was holding (line numbers
        // in messages restart, nothing is lost).
        let resume = self.tracked[index].resume_offset();
        self.tracked[index].restart_at(resume, &self.options.decode);
    }

    fn sync_checkpoint(&mut self, index: usize) {
        let tracked = &self.tracked[index];
        let entry = self
            .checkpoints
            .entry(tracked.fingerprint.clone())
            .or_insert_with(|| Checkpoint {
                fingerprint: tracked.fingerprint.clone(),
                path: String::new(),
                device: 0,
                inode: 0,
                offset: 0,
                updated: 0,
            });
        entry.path = tracked.path.display().to_string();
        entry.device = tracked.device;
        entry.inode = tracked.inode;
        entry.offset = entry.offset.max(tracked.resume_offset());
        entry.updated = now_micros() as u64 / 1_000_000;
        self.checkpoints_dirty = true;
    }

    fn save_checkpoints(&mut self) {
        if !self.checkpoints_dirty {
            return;
        }
        let mut files: Vec<Checkpoint> = self.checkpoints.values().cloned().collect();
        files.sort_by_key(|c| std::cmp::Reverse(c.updated));
        let live: Vec<&str> = self
            .tracked
            .iter()
            .map(|t| t.fingerprint.as_str())
            .collect();
        let mut kept = Vec::new();
        for checkpoint in files {
            if kept.len() < MAX_CHECKPOINTS || live.contains(&checkpoint.fingerprint.as_str()) {
                kept.push(checkpoint);
            }
        }
        self.checkpoints = kept
            .iter()
            .map(|c| (c.fingerprint.clone(), c.clone()))
            .collect();
        let file = CheckpointFile {
            version: 1,
            files: kept,
        };
        match write_atomically(&self.options.checkpoint_path, &file) {
            Ok(()) => self.checkpoints_dirty = false,
            Err(e) => tracing::error!(
                file = %self.options.checkpoint_path.display(),
                error = %e,
                "cannot save checkpoints; will retry"
            ),
        }
    }

    fn publish_status(&self) {
        let files = self
            .tracked
            .iter()
            .map(|t| FileStatus {
                path: t.path.display().to_string(),
                offset: t.offset,
                size: fs::metadata(&t.path).map_or(0, |m| m.len()),
                gzip: t.gzip,
            })
            .collect();
        if let Ok(mut status) = self.stats.files.lock() {
            *status = files;
        }
    }
}

fn write_atomically(path: &Path, file: &CheckpointFile) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    {
        use std::io::Write;
        let mut out = File::create(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(unix)]
fn identity(metadata: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

#[cfg(not(unix))]
fn identity(_metadata: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The fingerprint of a file's first line (None until it is complete or 256 bytes long) and
/// whether the file is gzip.
fn fingerprint(path: &Path) -> io::Result<(Option<String>, bool)> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    // A gzip still being written may fail to decompress: its head is still usable.
    let _ = reader.take(FINGERPRINT_BYTES as u64).read_to_end(&mut head);
    let line_end = head.iter().position(|&b| b == b'\n');
    let usable = match line_end {
        Some(end) => &head[..end],
        None if head.len() >= FINGERPRINT_BYTES => &head[..],
        None => return Ok((None, gzip)),
    };
    Ok((
        Some(format!("{:08x}-{}", crc32fast::hash(usable), usable.len())),
        gzip,
    ))
}

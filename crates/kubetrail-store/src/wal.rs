//! The write-ahead log: where an event becomes *accepted*.
//!
//! Appended events are framed into an in-memory buffer; a commit hands the buffer to the log's
//! own thread, which checksums the records, writes them and fsyncs the file (`fdatasync`), and
//! only then are the events acknowledged (the webhook answers 2xx, an import from stdin counts
//! them; files, which can be read again, skip the log). Many appends share one commit: that is the group commit
//! that makes durability affordable. The thread lets the caller decode and frame the next group
//! while the disk works on this one; the write and the wait for the disk were a sixth of the
//! writer thread's time, and the checksums another twentieth (that thread decodes every event
//! and is what bounds an import and the tailer; this one mostly waits for the disk).
//!
//! The log is a sequence of files `wal/<sequence>.wal`. When the pending events are handed to the
//! Parquet writer, the current file is closed and a new one started; once their segments are
//! committed, every file up to the closed one is deleted by the [`Reaper`], a slice at a time. Reopening after a crash replays the
//! remaining files: events already in Parquet are recognised as duplicates, so every accepted
//! event ends up stored exactly once.
//!
//! File format: the 8-byte magic [`MAGIC`], then records `[len: u32 LE][crc32(payload): u32 LE]
//! [payload]` with payload `[cluster len: u16 LE][cluster][ingest time µs: i64 LE][event JSON]`.
//! A torn last record (a crash in the middle of a write) is cut off. A record whose checksum does
//! not match is damage: the reader reports it, keeps a copy of the file in `quarantine/`, and
//! resynchronises at the next record whose checksum matches, so the rest of the file survives.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::StoreError;

/// First bytes of every WAL file.
pub(crate) const MAGIC: &[u8; 8] = b"KTWAL\x00\x01\n";
const HEADER: usize = 8;
/// Bytes before each record's payload: its length and checksum (`u32` LE each).
const RECORD_HEADER: usize = 8;
/// No record is larger (the decoder's event limit is 16 MiB); a larger length is damage.
const MAX_RECORD: usize = 64 << 20;

/// One event as logged.
pub(crate) struct WalRecord<'a> {
    pub cluster: &'a str,
    pub ingest_micros: i64,
    pub json: &'a [u8],
}

/// Something wrong found while replaying, reported to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDamage {
    /// The WAL file.
    pub file: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// Bytes that could not be read as records.
    pub skipped_bytes: u64,
    /// What was wrong.
    pub reason: String,
}

/// Runs on the log's thread once the events of a commit are durable, or with the reason they
/// cannot be.
pub type OnDurable = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Work for the log's thread, done in order.
enum Op {
    /// Write and fsync the bytes, then call back.
    Write {
        bytes: Vec<u8>,
        then: Option<OnDurable>,
    },
    /// Continue in a new file with this sequence number.
    Rotate(u64),
    /// Answer once everything before is done: the failure, if any.
    Barrier(SyncSender<Option<String>>),
}

/// The open log: records are framed here, and written and fsynced by the log's own thread
/// (see [`Wal::commit_then`]).
pub(crate) struct Wal {
    sequence: u64,
    buffer: Vec<u8>,
    ops: Option<SyncSender<Op>>,
    /// Buffers the thread is done with, to be filled again.
    spare: Receiver<Vec<u8>>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
    #[cfg(test)]
    first_path: PathBuf,
}

pub(crate) fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

fn file_name(sequence: u64) -> String {
    format!("{sequence:016}.wal")
}

/// The WAL files of a data directory with their sequence numbers, oldest first.
pub(crate) fn files(data_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let dir = wal_dir(data_dir);
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
        let path = entry.map_err(|e| StoreError::io(&dir, e))?.path();
        let sequence = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(sequence) = sequence {
            found.push((sequence, path));
        }
    }
    found.sort();
    Ok(found)
}

/// A spent file, renamed so that no replay reads it while the [`Reaper`] shrinks it.
const SPENT_SUFFIX: &str = ".spent";
/// Bytes a spent file shrinks by at a time.
const REAP_SLICE: u64 = 4 << 20;
/// The pause between two slices.
const REAP_PAUSE: Duration = Duration::from_millis(5);

/// Deletes spent WAL files (their events are in committed segments) on its own thread, a
/// slice at a time. Unlinking a 25 MB file at once frees all its blocks in one ext4 journal
/// transaction, and the WAL's `fdatasync` issued meanwhile waited for it: strace caught an
/// `unlink` of 44 ms and a concurrent `fdatasync` of 43 ms, against 0.7 ms typically, which
/// showed as stalls in webhook acknowledgement latency. A file is first renamed aside (a crash
/// then leaves a file no replay reads, deleted at the next open), then truncated in slices with
/// pauses between them, then unlinked. Deleting late is harmless: a file replayed after a crash
/// holds only duplicates.
pub(crate) struct Reaper {
    through: Option<Sender<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Deletes spent files a crash left, and starts the thread.
    pub(crate) fn start(data_dir: &Path) -> Result<Reaper, StoreError> {
        let dir = wal_dir(data_dir);
        if let Ok(entries) = fs::read_dir(&dir) {
            for path in entries.flatten().map(|e| e.path()) {
                if path.to_string_lossy().ends_with(SPENT_SUFFIX) {
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                }
            }
        }
        let (through, requests) = channel::<u64>();
        let thread_dir = data_dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("kubetrail-wal-reaper".to_owned())
            .spawn(move || {
                while let Ok(mut sequence) = requests.recv() {
                    while let Ok(later) = requests.try_recv() {
                        sequence = sequence.max(later);
                    }
                    if let Err(e) = reap_through(&thread_dir, sequence) {
                        tracing::warn!(error = %e, "cannot delete a spent write-ahead log file; it is replayed (as duplicates) at the next start");
                    }
                }
            })
            .map_err(|e| StoreError::io(&dir, e))?;
        Ok(Reaper {
            through: Some(through),
            thread: Some(thread),
        })
    }

    /// Deletes, soon, every WAL file up to and including `sequence`.
    pub(crate) fn remove_through(&self, sequence: u64) {
        if let Some(through) = &self.through {
            let _ = through.send(sequence);
        }
    }
}

impl Drop for Reaper {
    /// Finishes the deletions asked for.
    fn drop(&mut self) {
        self.through = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn reap_through(data_dir: &Path, sequence: u64) -> Result<(), StoreError> {
    for (s, path) in files(data_dir)? {
        if s > sequence {
            break;
        }
        let mut spent = path.clone().into_os_string();
        spent.push(SPENT_SUFFIX);
        let spent = PathBuf::from(spent);
        fs::rename(&path, &spent).map_err(|e| StoreError::io(&path, e))?;
        let file = OpenOptions::new()
            .write(true)
            .open(&spent)
            .map_err(|e| StoreError::io(&spent, e))?;
        let mut len = file
            .metadata()
            .map_err(|e| StoreError::io(&spent, e))?
            .len();
        while len > REAP_SLICE {
            len -= REAP_SLICE;
            file.set_len(len).map_err(|e| StoreError::io(&spent, e))?;
            std::thread::sleep(REAP_PAUSE);
        }
        drop(file);
        fs::remove_file(&spent).map_err(|e| StoreError::io(&spent, e))?;
    }
    Ok(())
}

/// Deletes every WAL file up to and including `sequence` (their events are in Parquet) at once.
pub(crate) fn remove_through(data_dir: &Path, sequence: u64) -> Result<(), StoreError> {
    for (s, path) in files(data_dir)? {
        if s <= sequence {
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    sync_dir(&wal_dir(data_dir))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

impl Wal {
    /// Starts a new WAL file after every existing one, and the thread that writes it.
    pub(crate) fn create(data_dir: &Path) -> Result<Wal, StoreError> {
        let dir = wal_dir(data_dir);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let sequence = files(data_dir)?.last().map_or(1, |(s, _)| s + 1);
        let (file, path) = new_file(&dir, sequence)?;
        #[cfg(test)]
        let first_path = path.clone();
        // A commit is handed over only when the previous one is written: a writer that
        // outpaces the disk blocks, and two buffers (one filled, one written) are all the log
        // ever holds — they are large, and memory under overload is bounded.
        let (ops, receiver) = sync_channel(0);
        let (give_back, spare) = sync_channel(1);
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let failure = failure.clone();
            let mut log = LogFile { dir, file, path };
            std::thread::Builder::new()
                .name("kubetrail-wal".to_owned())
                .spawn(move || log.run(&receiver, &give_back, &failure))
                .map_err(|e| StoreError::io(data_dir, e))?
        };
        Ok(Wal {
            sequence,
            buffer: Vec::with_capacity(1 << 20),
            ops: Some(ops),
            spare,
            failure,
            thread: Some(thread),
            #[cfg(test)]
            first_path,
        })
    }

    /// Adds a record to the next commit; its checksum is filled in by the log's thread
    /// ([`seal`]).
    pub(crate) fn append(&mut self, record: &WalRecord<'_>) {
        let cluster = &record.cluster.as_bytes()[..record.cluster.len().min(u16::MAX as usize)];
        let len = 2 + cluster.len() + 8 + record.json.len();
        self.buffer.extend_from_slice(&(len as u32).to_le_bytes());
        self.buffer.extend_from_slice(&[0; 4]);
        self.buffer
            .extend_from_slice(&(cluster.len() as u16).to_le_bytes());
        self.buffer.extend_from_slice(cluster);
        self.buffer
            .extend_from_slice(&record.ingest_micros.to_le_bytes());
        self.buffer.extend_from_slice(record.json);
    }

    /// Bytes appended since the last commit.
    pub(crate) fn uncommitted_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Why the log stopped writing, if it did: after a failed write the file may end in a torn
    /// record, so nothing more is written until the store is opened again.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Hands everything appended to the log's thread, which writes and fsyncs it and then calls
    /// `then`: the caller goes on framing the next commit while the disk works. Commits are
    /// written in order, so `then` also means every earlier commit is durable (it is called
    /// even when nothing was appended, for that reason). Blocks while the thread still writes
    /// the previous commit.
    pub(crate) fn commit_then(&mut self, then: Option<OnDurable>) {
        if self.buffer.is_empty() && then.is_none() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(1 << 20));
        let bytes = std::mem::replace(&mut self.buffer, next);
        self.send(Op::Write { bytes, then });
    }

    /// Writes and fsyncs everything appended and waits: afterwards those events survive any
    /// crash.
    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        self.commit_then(None);
        self.wait()
    }

    /// Waits until the thread has done everything handed to it; the failure, if any.
    pub(crate) fn wait(&mut self) -> Result<(), StoreError> {
        let (done, answer) = sync_channel(1);
        self.send(Op::Barrier(done));
        match answer.recv() {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(StoreError::Stopped(reason)),
            Err(_) => Err(StoreError::Stopped(self.failure().unwrap_or_else(|| {
                "the write-ahead log thread has stopped".to_owned()
            }))),
        }
    }

    /// Commits, and continues in a new file; returns the closed file's sequence number
    /// (everything up to it may be deleted once stored in Parquet). A failure shows in
    /// [`failure`](Self::failure) and in the commit's callbacks.
    pub(crate) fn rotate(&mut self) -> u64 {
        self.commit_then(None);
        let closed = self.sequence;
        self.sequence = closed + 1;
        self.send(Op::Rotate(closed + 1));
        closed
    }

    fn send(&mut self, op: Op) {
        let Some(ops) = &self.ops else { return };
        if let Err(returned) = ops.send(op) {
            // The thread is gone (it only ends when the log is dropped): answer as it would.
            let reason = self
                .failure()
                .unwrap_or_else(|| "the write-ahead log thread has stopped".to_owned());
            match returned.0 {
                Op::Write {
                    then: Some(then), ..
                } => then(Err(reason)),
                Op::Barrier(done) => {
                    let _ = done.send(Some(reason));
                }
                _ => {}
            }
        }
    }
}

impl Drop for Wal {
    /// Lets the thread finish what it was handed (its callbacks run), then stops it.
    fn drop(&mut self) {
        self.ops = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The file end of the log, owned by its thread.
struct LogFile {
    dir: PathBuf,
    file: File,
    path: PathBuf,
}

impl LogFile {
    fn run(
        &mut self,
        ops: &Receiver<Op>,
        give_back: &SyncSender<Vec<u8>>,
        failure: &Mutex<Option<String>>,
    ) {
        let failed = || failure.lock().ok().and_then(|f| f.clone());
        let fail = |reason: String| {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(reason);
            }
        };
        while let Ok(op) = ops.recv() {
            match op {
                Op::Write { mut bytes, then } => {
                    let result = match failed() {
                        Some(reason) => Err(reason),
                        None if bytes.is_empty() => Ok(()),
                        None => self
                            .file
                            .write_all(seal(&mut bytes))
                            .and_then(|()| self.file.sync_data())
                            .map_err(|e| {
                                let reason = format!(
                                    "write-ahead log failed: {}",
                                    StoreError::io(&self.path, e)
                                );
                                fail(reason.clone());
                                reason
                            }),
                    };
                    if let Some(then) = then {
                        then(result);
                    }
                    bytes.clear();
                    let _ = give_back.try_send(bytes);
                }
                Op::Rotate(sequence) => {
                    if failed().is_none() {
                        match new_file(&self.dir, sequence) {
                            Ok((file, path)) => {
                                self.file = file;
                                self.path = path;
                            }
                            Err(e) => fail(format!("write-ahead log failed: {e}")),
                        }
                    }
                }
                Op::Barrier(done) => {
                    let _ = done.send(failed());
                }
            }
        }
    }
}

/// Fills in the checksum of every record framed by [`Wal::append`] in `bytes` (whole records
/// only), and returns them ready to be written.
fn seal(bytes: &mut [u8]) -> &[u8] {
    let mut offset = 0;
    while offset + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let end = (offset + RECORD_HEADER + len as usize).min(bytes.len());
        let crc = crc32fast::hash(&bytes[offset + RECORD_HEADER..end]);
        bytes[offset + 4..offset + RECORD_HEADER].copy_from_slice(&crc.to_le_bytes());
        offset = end;
    }
    bytes
}

fn new_file(dir: &Path, sequence: u64) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(file_name(sequence));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Reads every record of one WAL file, repairing what can be repaired (see the module docs).
pub(crate) fn replay_file(
    data_dir: &Path,
    path: &Path,
    mut on_record: impl FnMut(WalRecord<'_>),
) -> Result<Vec<WalDamage>, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let mut damage = Vec::new();
    if bytes.len() < HEADER || &bytes[..HEADER] != MAGIC {
        if bytes.len() >= HEADER || !MAGIC.starts_with(&bytes) {
            damage.push(WalDamage {
                file: path.to_path_buf(),
                offset: 0,
                skipped_bytes: bytes.len() as u64,
                reason: "not a kubetrail WAL file (bad magic)".to_owned(),
            });
            keep_copy(data_dir, path)?;
        }
        return Ok(damage);
    }
    let mut offset = HEADER;
    let mut copied = false;
    while offset < bytes.len() {
        match record_at(&bytes, offset) {
            Ok((record, next)) => {
                on_record(record);
                offset = next;
            }
            Err(Problem::Torn) => {
                // A crash during a write: the record was never committed. Cut it off so the
                // file is clean again.
                damage.push(WalDamage {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    skipped_bytes: (bytes.len() - offset) as u64,
                    reason: "incomplete last record (interrupted write), truncated".to_owned(),
                });
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StoreError::io(path, e))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| StoreError::io(path, e))?;
                break;
            }
            Err(Problem::Damaged(reason)) => {
                if !copied {
                    keep_copy(data_dir, path)?;
                    copied = true;
                }
                let resume = (offset + 1..bytes.len())
                    .find(|&at| record_at(&bytes, at).is_ok())
                    .unwrap_or(bytes.len());
                damage.push(WalDamage {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    skipped_bytes: (resume - offset) as u64,
                    reason,
                });
                offset = resume;
            }
        }
    }
    Ok(damage)
}

enum Problem {
    Torn,
    Damaged(String),
}

fn record_at(bytes: &[u8], offset: usize) -> Result<(WalRecord<'_>, usize), Problem> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER {
        return Err(Problem::Torn);
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..RECORD_HEADER].try_into().expect("4 bytes"));
    if !(10..=MAX_RECORD).contains(&len) {
        return Err(Problem::Damaged(format!("impossible record length {len}")));
    }
    if rest.len() < RECORD_HEADER + len {
        return Err(Problem::Torn);
    }
    let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Err(Problem::Damaged("checksum mismatch".to_owned()));
    }
    let cluster_len = u16::from_le_bytes([payload[0], payload[1]]) as usize;
    if 2 + cluster_len + 8 > len {
        return Err(Problem::Damaged(
            "cluster name overruns the record".to_owned(),
        ));
    }
    let cluster = std::str::from_utf8(&payload[2..2 + cluster_len])
        .map_err(|_| Problem::Damaged("cluster name is not UTF-8".to_owned()))?;
    let ingest_micros = i64::from_le_bytes(
        payload[2 + cluster_len..10 + cluster_len]
            .try_into()
            .expect("8 bytes"),
    );
    Ok((
        WalRecord {
            cluster,
            ingest_micros,
            json: &payload[10 + cluster_len..],
        },
        offset + RECORD_HEADER + len,
    ))
}

/// Keeps a damaged WAL file for inspection; the original is deleted once its readable events
/// are stored.
fn keep_copy(data_dir: &Path, path: &Path) -> Result<(), StoreError> {
    let folder = data_dir.join("quarantine");
    fs::create_dir_all(&folder).map_err(|e| StoreError::io(&folder, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = folder.join(format!("wal-{name}"));
    fs::copy(path, &target).map_err(|e| StoreError::io(&target, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubetrail-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_three(dir: &Path) -> PathBuf {
        let mut wal = Wal::create(dir).unwrap();
        for (i, json) in [&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]
            .iter()
            .enumerate()
        {
            wal.append(&WalRecord {
                cluster: "prod",
                ingest_micros: i as i64,
                json,
            });
        }
        wal.commit().unwrap();
        wal.first_path.clone()
    }

    fn read_all(dir: &Path, path: &Path) -> (Vec<String>, Vec<WalDamage>) {
        let mut seen = Vec::new();
        let damage = replay_file(dir, path, |r| {
            seen.push(format!(
                "{}/{}/{}",
                r.cluster,
                r.ingest_micros,
                String::from_utf8_lossy(r.json)
            ))
        })
        .unwrap();
        (seen, damage)
    }

    #[test]
    fn records_round_trip() {
        let dir = temp_dir("round-trip");
        let path = write_three(&dir);
        let (seen, damage) = read_all(&dir, &path);
        assert_eq!(
            seen,
            ["prod/0/{\"a\":1}", "prod/1/{\"b\":2}", "prod/2/{\"c\":3}"]
        );
        assert!(damage.is_empty());
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = temp_dir("torn");
        let path = write_three(&dir);
        let full = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 3).unwrap();
        let (seen, damage) = read_all(&dir, &path);
        assert_eq!(seen.len(), 2);
        assert_eq!(damage.len(), 1);
        assert!(damage[0].reason.contains("incomplete"), "{damage:?}");
        // The file was repaired: reading again finds no damage.
        let (seen, damage) = read_all(&dir, &path);
        assert_eq!((seen.len(), damage.len()), (2, 0));
    }

    #[test]
    fn flipped_byte_skips_one_record_and_keeps_the_rest() {
        let dir = temp_dir("flip");
        let path = write_three(&dir);
        let mut bytes = fs::read(&path).unwrap();
        let second_record_body = HEADER + (8 + 2 + 4 + 8 + 7) + 8 + 2 + 4 + 8 + 2;
        bytes[second_record_body] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (seen, damage) = read_all(&dir, &path);
        assert_eq!(seen, ["prod/0/{\"a\":1}", "prod/2/{\"c\":3}"]);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].reason, "checksum mismatch");
        assert!(
            dir.join("quarantine")
                .join("wal-0000000000000001.wal")
                .exists()
        );
    }

    #[test]
    fn a_file_that_is_not_a_wal_is_reported() {
        let dir = temp_dir("magic");
        fs::create_dir_all(wal_dir(&dir)).unwrap();
        let path = wal_dir(&dir).join(file_name(1));
        fs::write(&path, b"hello world, not a log").unwrap();
        let (seen, damage) = read_all(&dir, &path);
        assert!(seen.is_empty());
        assert!(damage[0].reason.contains("magic"));
    }

    #[test]
    fn rotation_starts_a_new_file_and_removal_deletes_closed_ones() {
        let dir = temp_dir("rotate");
        let mut wal = Wal::create(&dir).unwrap();
        wal.append(&WalRecord {
            cluster: "",
            ingest_micros: 0,
            json: b"{}",
        });
        let closed = wal.rotate();
        wal.wait().unwrap();
        assert_eq!(closed, 1);
        assert_eq!(files(&dir).unwrap().len(), 2);
        remove_through(&dir, closed).unwrap();
        let left: Vec<u64> = files(&dir).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, [2]);
    }

    #[test]
    fn the_reaper_deletes_spent_files_in_slices_and_what_a_crash_left() {
        let dir = temp_dir("reaper");
        let mut wal = Wal::create(&dir).unwrap();
        let big = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            wal.append(&WalRecord {
                cluster: "",
                ingest_micros: 0,
                json: &big,
            });
        }
        let closed = wal.rotate();
        wal.wait().unwrap();
        assert!(fs::metadata(&files(&dir).unwrap()[0].1).unwrap().len() > REAP_SLICE);
        // A file a crash left half reaped is never replayed, and goes at the next start.
        let leftover = wal_dir(&dir).join(format!("{}{SPENT_SUFFIX}", file_name(99)));
        fs::write(&leftover, b"half").unwrap();
        let reaper = Reaper::start(&dir).unwrap();
        assert!(!leftover.exists());
        reaper.remove_through(closed);
        drop(reaper);
        let left: Vec<u64> = files(&dir).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, [2]);
        assert_eq!(fs::read_dir(wal_dir(&dir)).unwrap().count(), 1);
    }
}

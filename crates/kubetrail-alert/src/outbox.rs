//! The notification outbox: every notification for every channel is a file in
//! `<data>/monitors/outbox/pending/` (written and fsynced before the alert state that caused
//! it is saved) until it is delivered; delivered ids are appended to `sent.log`, so the same
//! notification produced again after a crash is recognised and never sent twice. A
//! notification a channel refuses (a 4xx other than 429) moves to `failed/` with the answer,
//! and is not retried: retrying a bad request forever helps no one.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::notify::Notification;

/// One notification for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `<notification id>.<channel>`.
    pub id: String,
    /// The channel's name.
    pub channel: String,
    /// The notification.
    pub notification: Notification,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When to try next (µs since the epoch).
    pub next_attempt: i64,
    /// Requests already delivered (a PagerDuty notification is one request per alert).
    pub done: usize,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The outbox directory.
pub struct Outbox {
    pending: PathBuf,
    failed: PathBuf,
    sent_log: PathBuf,
    sent: HashSet<String>,
}

/// Delivered ids kept to recognise repeats: far more than a restart can replay.
const SENT_KEPT: usize = 100_000;

impl Outbox {
    /// Opens (creates) the outbox in `dir`.
    pub fn open(dir: &Path) -> io::Result<Outbox> {
        let pending = dir.join("pending");
        let failed = dir.join("failed");
        fs::create_dir_all(&pending)?;
        fs::create_dir_all(&failed)?;
        let sent_log = dir.join("sent.log");
        let mut sent: Vec<String> = match File::open(&sent_log) {
            Ok(file) => io::BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if sent.len() > SENT_KEPT {
            sent.drain(..sent.len() - SENT_KEPT / 2);
            let tmp = sent_log.with_extension("tmp");
            let mut file = File::create(&tmp)?;
            for id in &sent {
                writeln!(file, "{id}")?;
            }
            file.sync_all()?;
            fs::rename(&tmp, &sent_log)?;
        }
        Ok(Outbox {
            pending,
            failed,
            sent_log,
            sent: sent.into_iter().collect(),
        })
    }

    /// Queues `notification` for each channel; a notification already queued or delivered is
    /// left alone. Durable when this returns.
    pub fn enqueue(
        &mut self,
        notification: &Notification,
        channels: &[String],
        now: i64,
    ) -> io::Result<()> {
        for channel in channels {
            let id = format!("{}.{channel}", notification.id);
            let path = self.pending.join(format!("{id}.json"));
            if self.sent.contains(&id) || path.exists() {
                continue;
            }
            let entry = Entry {
                id,
                channel: channel.clone(),
                notification: notification.clone(),
                attempts: 0,
                next_attempt: now,
                done: 0,
                last_error: None,
            };
            write_atomically(&path, &serde_json::to_vec_pretty(&entry)?)?;
        }
        Ok(())
    }

    /// Entries waiting, oldest first (those that cannot be read are moved to `failed/`).
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for item in fs::read_dir(&self.pending)? {
            let path = item?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path).map(|b| serde_json::from_slice::<Entry>(&b)) {
                Ok(Ok(entry)) => entries.push(entry),
                Ok(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable outbox entry moved to failed/");
                    let _ = fs::rename(
                        &path,
                        self.failed.join(path.file_name().unwrap_or_default()),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        entries.sort_by(|a, b| (a.notification.at, &a.id).cmp(&(b.notification.at, &b.id)));
        Ok(entries)
    }

    /// The entry was delivered.
    pub fn delivered(&mut self, entry: &Entry) -> io::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.sent_log)?;
        writeln!(log, "{}", entry.id)?;
        log.sync_data()?;
        self.sent.insert(entry.id.clone());
        remove(&self.pending.join(format!("{}.json", entry.id)))
    }

    /// The entry will be tried again (its attempts, error and next attempt updated).
    pub fn update(&self, entry: &Entry) -> io::Result<()> {
        write_atomically(
            &self.pending.join(format!("{}.json", entry.id)),
            &serde_json::to_vec_pretty(entry)?,
        )
    }

    /// The channel refused the entry: it moves to `failed/` with the reason.
    pub fn failed(&self, entry: &Entry) -> io::Result<()> {
        write_atomically(
            &self.failed.join(format!("{}.json", entry.id)),
            &serde_json::to_vec_pretty(entry)?,
        )?;
        remove(&self.pending.join(format!("{}.json", entry.id)))
    }

    /// How many entries failed for good.
    pub fn failed_count(&self) -> usize {
        fs::read_dir(&self.failed).map_or(0, |d| d.count())
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file, fsynced, renamed, directory fsynced: the
/// file is either the old or the new one whole, even after `kill -9` or a power cut.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

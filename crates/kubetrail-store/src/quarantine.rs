//! The event quarantine: input that reached kubetrail and could not become a stored event (a
//! line that is not JSON, an event nested deeper than the limit, an event with a broken field)
//! is kept aside here with why and where it came from, instead of being dropped or stopping its
//! source. A tailer moves past a bad line, and a webhook batch with a bad event stores the
//! others and answers 2xx, so the API server never retries into a crash loop; the bad input
//! stays here until someone looks at it (`kubetrail quarantine list|show`) or, after a fix or
//! a raised limit, sends it through the pipeline again (`kubetrail quarantine replay`).
//!
//! Layout: `<data>/quarantine/events/<YYYY-MM-DD>.jsonl`, one [`QuarantineEntry`] per line,
//! appended and fsynced by the process that owns the store; `replayed.jsonl` beside them lists
//! the ids of entries replayed since (appended by whoever replays, so no file is ever
//! rewritten and readers never race a writer). The quarantine has a size limit: past it, new
//! entries are counted and logged but not kept, so a flood of junk cannot fill the disk the
//! store needs.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use kubetrail_event::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Where the event quarantine lives in a data directory.
pub fn quarantine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("quarantine").join("events")
}

const REPLAYED: &str = "replayed.jsonl";

/// One quarantined input, as kept on disk and shown by `kubetrail quarantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    /// Unique and ordered by time: `<µs since the epoch>-<sequence>`.
    pub id: String,
    /// When it was quarantined (RFC 3339).
    pub quarantined_at: String,
    /// The source: `webhook`, `tail` or `import`.
    pub source: String,
    /// The cluster it came from (empty when unnamed).
    pub cluster: String,
    /// The file it was read from, or the request it came in.
    pub location: String,
    /// Its line in the file or body (1-based), as the decoder counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Its byte offset in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Its index in the `EventList` it came in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// Why it was refused: a stable name (`too-deep`, `invalid-json`, …).
    pub reason: String,
    /// What is wrong, in words.
    pub message: String,
    /// The input's size in bytes.
    pub size: u64,
    /// The input itself: its text, or its bytes in hex when they are not UTF-8 (see
    /// `encoding`); empty when it was not kept (too large, or the quarantine near its limit).
    pub input: String,
    /// `text` or `hex`.
    pub encoding: String,
}

impl QuarantineEntry {
    /// The input's bytes, when they were kept.
    pub fn input_bytes(&self) -> Option<Vec<u8>> {
        if self.input.is_empty() {
            return None;
        }
        match self.encoding.as_str() {
            "hex" => (0..self.input.len())
                .step_by(2)
                .map(|i| {
                    self.input
                        .get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect(),
            _ => Some(self.input.as_bytes().to_vec()),
        }
    }
}

/// What is known of a bad input when it is quarantined.
#[derive(Debug, Clone, Default)]
pub struct Quarantined {
    /// `webhook`, `tail`, `import`.
    pub source: &'static str,
    /// Its cluster.
    pub cluster: String,
    /// Its file or request.
    pub location: String,
    /// Its line.
    pub line: Option<u64>,
    /// Its byte offset in the file.
    pub offset: Option<u64>,
    /// Its index in an `EventList`.
    pub item: Option<usize>,
    /// The stable name of the reason.
    pub reason: String,
    /// What is wrong.
    pub message: String,
    /// Its size in bytes.
    pub size: u64,
    /// The input, when it was kept.
    pub input: Option<Vec<u8>>,
}

/// The writer's side of the quarantine (one process writes it: the one holding the store).
#[derive(Debug)]
pub struct Quarantine {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in the quarantine's files.
    used: u64,
    sequence: u64,
}

/// What [`Quarantine::add`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// Entries written.
    pub kept: u64,
    /// Entries not written: the quarantine is at its size limit.
    pub dropped: u64,
}

impl Quarantine {
    /// Opens the quarantine of a data directory, creating it, with a size limit in bytes.
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<Quarantine, StoreError> {
        let dir = quarantine_dir(data_dir);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let used = entry_files(&dir)?
            .iter()
            .chain(std::iter::once(&dir.join(REPLAYED)))
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        Ok(Quarantine {
            dir,
            max_bytes,
            used,
            sequence: 0,
        })
    }

    /// Bytes the quarantine's files hold.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Appends entries and fsyncs them before returning, so a source may move past the input
    /// once this succeeded. Near the size limit an entry is kept without its input; at the
    /// limit it is only counted.
    pub fn add(&mut self, entries: &[Quarantined]) -> Result<Added, StoreError> {
        let mut added = Added::default();
        if entries.is_empty() {
            return Ok(added);
        }
        let now = crate::segment::now_micros();
        let day = Timestamp::from_micros(now).to_datetime().format("%Y-%m-%d");
        let path = self.dir.join(format!("{day}.jsonl"));
        let mut text = Vec::new();
        for entry in entries {
            self.sequence += 1;
            let input = entry.input.as_deref().unwrap_or_default();
            let (input, encoding) = match std::str::from_utf8(input) {
                Ok(text) => (text.to_owned(), "text"),
                Err(_) => (input.iter().map(|b| format!("{b:02x}")).collect(), "hex"),
            };
            let keep_input =
                self.used + (text.len() + input.len()) as u64 <= self.max_bytes / 10 * 9;
            let input = if keep_input { input } else { String::new() };
            let record = QuarantineEntry {
                id: format!("{now}-{}", self.sequence),
                quarantined_at: Timestamp::from_micros(now).to_string(),
                source: entry.source.to_owned(),
                cluster: entry.cluster.clone(),
                location: entry.location.clone(),
                line: entry.line,
                offset: entry.offset,
                item: entry.item,
                reason: entry.reason.clone(),
                message: entry.message.clone(),
                size: entry.size,
                input,
                encoding: encoding.to_owned(),
            };
            let line = serde_json::to_vec(&record)
                .map_err(|e| StoreError::Query(format!("quarantine entry: {e}")))?;
            if self.used + (text.len() + line.len() + 1) as u64 > self.max_bytes {
                added.dropped += 1;
                continue;
            }
            text.extend_from_slice(&line);
            text.push(b'\n');
            added.kept += 1;
        }
        if !text.is_empty() {
            append_synced(&path, &text)?;
            self.used += text.len() as u64;
        }
        Ok(added)
    }
}

/// Appends `text` to a file and fsyncs it (and its folder, for a new file).
fn append_synced(path: &Path, text: &[u8]) -> Result<(), StoreError> {
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    file.write_all(text).map_err(|e| StoreError::io(path, e))?;
    file.sync_data().map_err(|e| StoreError::io(path, e))?;
    if new && let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))?;
    }
    Ok(())
}

/// The day files of the quarantine, oldest first.
fn entry_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in listing {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".jsonl") && name != REPLAYED {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The entries still in quarantine (not replayed), oldest first. Reads while a server appends:
/// a last line being written is not an entry yet.
pub fn quarantined(data_dir: &Path) -> Result<Vec<QuarantineEntry>, StoreError> {
    let dir = quarantine_dir(data_dir);
    let replayed = replayed_ids(&dir)?;
    let mut entries = Vec::new();
    for path in entry_files(&dir)? {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| StoreError::io(&path, e))?;
            if let Ok(entry) = serde_json::from_str::<QuarantineEntry>(&line)
                && !replayed.contains(&entry.id)
            {
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

/// One entry still in quarantine.
pub fn quarantined_entry(data_dir: &Path, id: &str) -> Result<Option<QuarantineEntry>, StoreError> {
    Ok(quarantined(data_dir)?.into_iter().find(|e| e.id == id))
}

/// Records entries as replayed: they leave the quarantine's listing.
pub fn mark_replayed(data_dir: &Path, ids: &[String]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let dir = quarantine_dir(data_dir);
    fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
    let mut text = String::new();
    for id in ids {
        text.push_str(&serde_json::Value::from(id.as_str()).to_string());
        text.push('\n');
    }
    append_synced(&dir.join(REPLAYED), text.as_bytes())
}

fn replayed_ids(dir: &Path) -> Result<HashSet<String>, StoreError> {
    let path = dir.join(REPLAYED);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<String>(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kubetrail-quarantine-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn bad(input: &[u8]) -> Quarantined {
        Quarantined {
            source: "tail",
            cluster: "prod".into(),
            location: "/var/log/audit.log".into(),
            line: Some(51),
            offset: Some(4096),
            item: None,
            reason: "too-deep".into(),
            message: "the event nests 100001 levels".into(),
            size: input.len() as u64,
            input: Some(input.to_vec()),
        }
    }

    #[test]
    fn entries_are_kept_listed_and_replayed() {
        let dir = temp_dir("replay");
        let mut quarantine = Quarantine::open(&dir, 1 << 20).unwrap();
        let added = quarantine
            .add(&[bad(b"{\"deep\":[[[]]]}"), bad(b"\xff\xfe not utf-8")])
            .unwrap();
        assert_eq!(
            added,
            Added {
                kept: 2,
                dropped: 0
            }
        );
        let entries = quarantined(&dir).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].input, "{\"deep\":[[[]]]}");
        assert_eq!(entries[0].offset, Some(4096));
        assert_eq!(entries[1].encoding, "hex");
        assert_eq!(
            entries[1].input_bytes().unwrap(),
            b"\xff\xfe not utf-8".to_vec()
        );
        mark_replayed(&dir, std::slice::from_ref(&entries[0].id)).unwrap();
        let left = quarantined(&dir).unwrap();
        assert_eq!(left, [entries[1].clone()]);
        assert_eq!(
            quarantined_entry(&dir, &entries[1].id).unwrap(),
            Some(entries[1].clone())
        );
        // A reopened quarantine counts what is there.
        let reopened = Quarantine::open(&dir, 1 << 20).unwrap();
        assert!(reopened.used_bytes() >= quarantine.used_bytes());
    }

    #[test]
    fn the_size_limit_drops_inputs_then_entries() {
        let dir = temp_dir("limit");
        let mut quarantine = Quarantine::open(&dir, 4096).unwrap();
        let big = vec![b'x'; 3000];
        let added = quarantine.add(&[bad(&big), bad(&big), bad(b"{}")]).unwrap();
        let entries = quarantined(&dir).unwrap();
        assert_eq!(entries[0].input.len(), 3000);
        assert!(entries[1].input.is_empty(), "near the limit: no input");
        assert_eq!(added.kept + added.dropped, 3);
        let mut flood = 0;
        while quarantine.add(&[bad(b"{}")]).unwrap().dropped == 0 {
            flood += 1;
            assert!(flood < 100);
        }
        assert!(quarantine.used_bytes() <= 4096);
    }
}

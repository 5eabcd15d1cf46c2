//! Writing events into the data directory as Parquet segments, one day partition per folder
//! (`events/date=2026-03-02/part-….parquet`, Hive style, so DuckDB and Spark read the
//! partitions too).
//!
//! A segment becomes visible atomically: it is written under a temporary name, fsynced, renamed
//! into place and the folder fsynced; a crash leaves either the whole segment or nothing. Every
//! (auditID, stage) is stored once: the keys of stored events are loaded when the store opens
//! and checked for every new event, so re-imports and webhook retries add nothing.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::{SortOptions, sort_to_indices, take_record_batch};
use kubetrail_event::AuditEvent;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::StoreError;
use crate::schema::{EventBatchBuilder, schema};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Buffered events are written as segments once this many are pending.
    pub flush_rows: usize,
    /// zstd level of Parquet pages.
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_rows: 250_000,
            zstd_level: 3,
            row_group_rows: 128 * 1024,
        }
    }
}

/// What happened to an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// New: it will be stored.
    Accepted,
    /// Its (auditID, stage) is already stored or pending.
    Duplicate,
}

/// The writer of one data directory. One process writes a data directory at a time (a lock
/// file enforces it).
pub struct EventWriter {
    dir: PathBuf,
    options: WriterOptions,
    keys: HashSet<u64>,
    pending: BTreeMap<i64, EventBatchBuilder>,
    pending_rows: usize,
    quarantined: Vec<(PathBuf, String)>,
    _lock: File,
}

/// The folder of the events table.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

const DAY_MICROS: i64 = 86_400_000_000;

fn day_folder(day: i64) -> String {
    let date = kubetrail_event::Timestamp::from_micros(day * DAY_MICROS).to_datetime();
    format!("date={}", date.format("%Y-%m-%d"))
}

/// Every committed segment of the table.
pub fn segments(data_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    let events = events_dir(data_dir);
    if !events.exists() {
        return Ok(files);
    }
    for partition in fs::read_dir(&events).map_err(|e| StoreError::io(&events, e))? {
        let partition = partition.map_err(|e| StoreError::io(&events, e))?.path();
        if !partition.is_dir() {
            continue;
        }
        for file in fs::read_dir(&partition).map_err(|e| StoreError::io(&partition, e))? {
            let path = file.map_err(|e| StoreError::io(&partition, e))?.path();
            if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn key(audit_id: &str, stage: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    audit_id.hash(&mut hasher);
    stage.hash(&mut hasher);
    hasher.finish()
}

impl EventWriter {
    /// Opens (creating if needed) the data directory for writing.
    pub fn open(dir: &Path, options: WriterOptions) -> Result<EventWriter, StoreError> {
        fs::create_dir_all(events_dir(dir)).map_err(|e| StoreError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|_| StoreError::Locked(dir.to_path_buf()))?;
        let mut keys = HashSet::new();
        let mut quarantined = Vec::new();
        for segment in segments(dir)? {
            if let Err(e) = load_keys(&segment, &mut keys) {
                // A damaged segment must not make the rest unreadable: it is moved aside,
                // kept for inspection, and reported.
                quarantine(dir, &segment)?;
                quarantined.push((segment, e.to_string()));
            }
        }
        Ok(EventWriter {
            dir: dir.to_path_buf(),
            options,
            keys,
            pending: BTreeMap::new(),
            pending_rows: 0,
            quarantined,
            _lock: lock,
        })
    }

    /// Segments found damaged when the store opened, moved to `quarantine/`, with the reason.
    pub fn quarantined(&self) -> &[(PathBuf, String)] {
        &self.quarantined
    }

    /// Adds an event from `cluster`; `ingest_micros` files events that carry no time.
    pub fn append(
        &mut self,
        event: &AuditEvent<'_>,
        cluster: &str,
        ingest_micros: i64,
    ) -> Result<Appended, StoreError> {
        if !self.keys.insert(key(&event.audit_id, event.stage.as_str())) {
            return Ok(Appended::Duplicate);
        }
        let time = event.time().map_or(ingest_micros, |t| t.as_micros());
        self.pending
            .entry(time.div_euclid(DAY_MICROS))
            .or_default()
            .append(event, cluster, time);
        self.pending_rows += 1;
        if self.pending_rows >= self.options.flush_rows {
            self.flush()?;
        }
        Ok(Appended::Accepted)
    }

    /// Writes every pending event as segments.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        for (day, mut builder) in pending {
            let batch = builder.finish();
            self.write_segment(day, &sort_by_time(&batch)?)?;
        }
        self.pending_rows = 0;
        Ok(())
    }

    fn write_segment(&self, day: i64, batch: &RecordBatch) -> Result<(), StoreError> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let folder = events_dir(&self.dir).join(day_folder(day));
        fs::create_dir_all(&folder).map_err(|e| StoreError::io(&folder, e))?;
        let name = format!(
            "part-{}-{}-{}.parquet",
            chrono_now_micros(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let final_path = folder.join(&name);
        let tmp_path = folder.join(format!(".{name}.tmp"));
        let result = (|| {
            let file = File::create(&tmp_path).map_err(|e| StoreError::io(&tmp_path, e))?;
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(self.options.zstd_level).unwrap_or_default(),
                ))
                .set_max_row_group_row_count(Some(self.options.row_group_rows.max(1)))
                .build();
            let mut writer = ArrowWriter::try_new(file, schema(), Some(properties))
                .map_err(|e| StoreError::parquet(&tmp_path, e))?;
            writer
                .write(batch)
                .map_err(|e| StoreError::parquet(&tmp_path, e))?;
            let file = writer
                .into_inner()
                .map_err(|e| StoreError::parquet(&tmp_path, e))?;
            file.sync_all().map_err(|e| StoreError::io(&tmp_path, e))?;
            fs::rename(&tmp_path, &final_path).map_err(|e| StoreError::io(&final_path, e))?;
            File::open(&folder)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(&folder, e))
        })();
        if result.is_err() {
            // Nothing half-written may become visible; the temporary name is never read.
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }
}

/// Moves a damaged segment out of the table into `quarantine/`.
fn quarantine(data_dir: &Path, segment: &Path) -> Result<(), StoreError> {
    let folder = data_dir.join("quarantine");
    fs::create_dir_all(&folder).map_err(|e| StoreError::io(&folder, e))?;
    let partition = segment
        .parent()
        .and_then(Path::file_name)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = folder.join(format!("{partition}-{name}"));
    fs::rename(segment, &target).map_err(|e| StoreError::io(segment, e))
}

fn chrono_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn sort_by_time(batch: &RecordBatch) -> Result<RecordBatch, StoreError> {
    let indices = sort_to_indices(batch.column(0), Some(SortOptions::default()), None)
        .map_err(StoreError::Arrow)?;
    take_record_batch(batch, &indices).map_err(StoreError::Arrow)
}

/// Adds the (auditID, stage) keys of a segment.
fn load_keys(path: &Path, keys: &mut HashSet<u64>) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StoreError::parquet(path, e))?;
    let schema = builder.parquet_schema();
    let columns: Vec<usize> = ["audit_id", "stage"]
        .iter()
        .filter_map(|name| schema.columns().iter().position(|c| c.name() == *name))
        .collect();
    let mask = ProjectionMask::leaves(schema, columns);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| StoreError::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(StoreError::Arrow)?;
        let ids = batch
            .column_by_name("audit_id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
        let stages = batch
            .column_by_name("stage")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
        let (Some(ids), Some(stages)) = (ids, stages) else {
            return Err(StoreError::Corrupt(
                path.to_path_buf(),
                "no audit_id/stage columns".to_owned(),
            ));
        };
        for i in 0..ids.len() {
            keys.insert(key(ids.value(i), stages.value(i)));
        }
    }
    Ok(())
}

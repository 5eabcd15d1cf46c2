//! The Parquet segments of the `events` table on disk: one day partition per folder
//! (`events/date=2026-03-02/part-….parquet`, Hive style, so DuckDB and Spark read the partitions
//! too), and everything that changes that set of files: committing a segment, quarantining a
//! damaged one, compaction and retention.
//!
//! A segment becomes visible atomically: it is written under a temporary name, fsynced, renamed
//! into place and the folder fsynced; a crash leaves either the whole segment or nothing.
//!
//! Compaction merges the small segments of a partition into one. The merged segment lists the
//! files it replaces in its Parquet key-value metadata ([`REPLACES_KEY`]); it is committed first
//! and the sources deleted afterwards, and [`finish_interrupted_compactions`] (run when a writer
//! opens) deletes sources that a crash left behind, so no event is ever counted twice for longer
//! than that window.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{sort_to_indices, take_record_batch};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::StoreError;
use crate::keys::KeySet;
use crate::schema::schema;

/// Parquet metadata key of a compacted segment: the JSON list of the file names it replaces.
pub const REPLACES_KEY: &str = "kubetrail.replaces";

pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

/// The folder of the events table.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

pub(crate) fn day_folder(day: i64) -> String {
    let date = kubetrail_event::Timestamp::from_micros(day * DAY_MICROS).to_datetime();
    format!("date={}", date.format("%Y-%m-%d"))
}

/// Every committed segment of the table, in partition (day) order, then in write order.
pub fn segments(data_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = partition_files(data_dir)?;
    files.retain(|path| is_segment(path));
    Ok(files)
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

/// Every file in the day partitions (segments and temporary files), sorted.
fn partition_files(data_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
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
            files.push(file.map_err(|e| StoreError::io(&partition, e))?.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The dedup key of an event.
pub(crate) fn key(audit_id: &str, stage: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    audit_id.hash(&mut hasher);
    stage.hash(&mut hasher);
    hasher.finish()
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn new_segment_name(suffix: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    format!(
        "part-{}-{}-{}{suffix}.parquet",
        now_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// How segments are encoded.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// zstd level of Parquet pages. Level 1 is the default because on clustered segments it is
    /// both the fastest and the smallest of levels 1 to 4 (measured on generated traffic: the
    /// `event` column 7 % smaller than level 3 and compressed in two thirds of the time); levels 6
    /// and up save a few percent more at two and a half times the time.
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
        }
    }
}

/// Columns whose every value is different (or empty, for request bodies): a dictionary can
/// never pay off, and building one until the writer gives up (hashing and comparing each value,
/// a kilobyte for `event`) was a tenth of the segment thread's time.
const UNIQUE_COLUMNS: [&str; 3] = ["event", "audit_id", "request_object"];

/// Columns without statistics (dotted Parquet paths): their minimum and maximum per page and row
/// group can hardly ever prune a read, and the writer compares every value with them — for text
/// a `memcmp` per value and bound, which with these columns was a fifth of the segment thread's
/// time. They are random identifiers (auditIDs, UIDs), long texts that share their first tens
/// of bytes (the original event, request bodies, request URIs, authorization reasons), values
/// every row group holds nearly all of (source IPs, groups, clients, API versions, status
/// reasons), and `effective_user`, which follows `user` (whose statistics are kept).
const UNPRUNABLE_COLUMNS: [&str; 19] = [
    "event",
    "request_object",
    "audit_id",
    "request_uri",
    "path",
    "user_agent",
    "annotations",
    "authz_reason",
    "status_message",
    "user_uid",
    "object_uid",
    "effective_user",
    "client",
    "api_version",
    "resource_key",
    "status_reason",
    "source_api_version",
    "user_groups.list.item",
    "source_ips.list.item",
];

/// A column's path from its dotted name (`source_ips.list.item` is a list's values).
fn column_path(dotted: &str) -> ColumnPath {
    ColumnPath::new(dotted.split('.').map(str::to_owned).collect())
}

/// Rows of a segment rise in time (within the clusters of a row group, see [`CLUSTER_COLUMNS`]):
/// stored as steps from one value to the next (delta encoding, which every Parquet reader
/// supports), these take a fraction of their plain size.
const SORTED_COLUMNS: [&str; 2] = ["time", "stage_time"];

/// Inside a row group, rows are ordered by these columns and then by time. Row groups still
/// follow each other in time, so their time statistics prune time ranges as before; within one,
/// requests of the same kind sit side by side, and their original JSON texts, nearly identical,
/// compress a third smaller (zstd finds the previous event of the kind in its window).
const CLUSTER_COLUMNS: [&str; 4] = ["resource", "namespace", "verb", "user"];

/// The values of [`CLUSTER_COLUMNS`] of one row.
type Kind<'a> = [&'a str; CLUSTER_COLUMNS.len()];

fn properties(options: &SegmentOptions, replaces: Option<String>) -> WriterProperties {
    let builder = UNIQUE_COLUMNS
        .iter()
        .fold(WriterProperties::builder(), |builder, column| {
            builder.set_column_dictionary_enabled(column_path(column), false)
        });
    let builder = UNPRUNABLE_COLUMNS.iter().fold(builder, |builder, column| {
        builder.set_column_statistics_enabled(column_path(column), EnabledStatistics::None)
    });
    SORTED_COLUMNS
        .iter()
        .fold(builder, |builder, column| {
            builder
                .set_column_dictionary_enabled(column_path(column), false)
                .set_column_encoding(column_path(column), Encoding::DELTA_BINARY_PACKED)
        })
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(options.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_key_value_metadata(replaces.map(|r| vec![KeyValue::new(REPLACES_KEY.to_owned(), r)]))
        .build()
}

/// Writes a segment under a temporary name with `write`, then makes it visible atomically.
fn commit_segment(
    folder: &Path,
    name: &str,
    properties: WriterProperties,
    write: impl FnOnce(&mut ArrowWriter<File>, &Path) -> Result<(), StoreError>,
) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(folder).map_err(|e| StoreError::io(folder, e))?;
    let final_path = folder.join(name);
    let tmp_path = folder.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&tmp_path).map_err(|e| StoreError::io(&tmp_path, e))?;
        let mut writer = ArrowWriter::try_new(file, schema(), Some(properties))
            .map_err(|e| StoreError::parquet(&tmp_path, e))?;
        write(&mut writer, &tmp_path)?;
        let file = writer
            .into_inner()
            .map_err(|e| StoreError::parquet(&tmp_path, e))?;
        file.sync_all().map_err(|e| StoreError::io(&tmp_path, e))?;
        fs::rename(&tmp_path, &final_path).map_err(|e| StoreError::io(&final_path, e))?;
        crate::wal::sync_dir(folder)
    })();
    if result.is_err() {
        // Nothing half-written may become visible; the temporary name is never read.
        let _ = fs::remove_file(&tmp_path);
    }
    result.map(|()| final_path)
}

/// The order of a segment's rows: cut in row groups by time, each row group clustered by
/// [`CLUSTER_COLUMNS`] and time. The row group's distinct kinds (a few hundred) are ranked by
/// their text, and rows are sorted by that rank only, stably, so time order holds within a kind:
/// comparing the four texts of every row pair was a sixth of an import's time.
fn segment_order(batch: &RecordBatch, row_group_rows: usize) -> Result<UInt32Array, ArrowError> {
    let by_time = sort_to_indices(batch.column(0), None, None)?;
    let columns = CLUSTER_COLUMNS
        .iter()
        .map(|name| {
            batch
                .column_by_name(name)
                .and_then(|column| column.as_string_opt::<i32>())
                .ok_or_else(|| {
                    ArrowError::SchemaError(format!("segment batch has no text column {name}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kind = |row: usize| -> Kind<'_> { std::array::from_fn(|i| columns[i].value(row)) };
    let mut order = Vec::with_capacity(batch.num_rows());
    for group in by_time.values().chunks(row_group_rows.max(1)) {
        let mut kinds: HashMap<Kind<'_>, u32> = HashMap::new();
        let kind_of_row: Vec<u32> = group
            .iter()
            .map(|&row| {
                let next = kinds.len() as u32;
                *kinds.entry(kind(row as usize)).or_insert(next)
            })
            .collect();
        let mut by_text: Vec<(Kind<'_>, u32)> = kinds.into_iter().collect();
        by_text.sort_unstable();
        let mut rank = vec![0; by_text.len()];
        for (position, (_, id)) in by_text.iter().enumerate() {
            rank[*id as usize] = position as u32;
        }
        let mut ranked: Vec<(u32, u32)> = group
            .iter()
            .zip(&kind_of_row)
            .map(|(&row, &id)| (rank[id as usize], row))
            .collect();
        ranked.sort_by_key(|&(rank, _)| rank);
        order.extend(ranked.into_iter().map(|(_, row)| row));
    }
    Ok(UInt32Array::from(order))
}

/// Commits one day's events as a new segment (rows ordered by [`segment_order`]).
pub(crate) fn write_day(
    data_dir: &Path,
    day: i64,
    batch: &RecordBatch,
    options: &SegmentOptions,
) -> Result<PathBuf, StoreError> {
    let indices = segment_order(batch, options.row_group_rows)?;
    let sorted = take_record_batch(batch, &indices)?;
    let folder = events_dir(data_dir).join(day_folder(day));
    commit_segment(
        &folder,
        &new_segment_name(""),
        properties(options, None),
        |writer, path| {
            writer
                .write(&sorted)
                .map_err(|e| StoreError::parquet(path, e))
        },
    )
}

/// Moves a damaged segment out of the table into `quarantine/`.
pub(crate) fn quarantine(data_dir: &Path, segment: &Path) -> Result<(), StoreError> {
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

/// The files a compacted segment replaces, from its metadata.
fn replaced_by(path: &Path) -> Result<Vec<String>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StoreError::parquet(path, e))?;
    let value = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == REPLACES_KEY))
        .and_then(|k| k.value.clone());
    Ok(value
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .unwrap_or_default())
}

/// Deletes temporary files of interrupted writes and the sources of interrupted compactions.
pub(crate) fn finish_interrupted_compactions(data_dir: &Path) -> Result<(), StoreError> {
    let files = partition_files(data_dir)?;
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name.ends_with(".tmp") {
            fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
        }
    }
    for segment in files.iter().filter(|path| is_segment(path)) {
        if !is_compacted(segment) {
            continue;
        }
        // A damaged compacted segment is dealt with when keys are loaded; its sources stay.
        let Ok(sources) = replaced_by(segment) else {
            continue;
        };
        let folder = segment.parent().unwrap_or(Path::new("."));
        for source in sources {
            let path = folder.join(&source);
            if path.exists() {
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

fn is_compacted(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("-c.parquet"))
}

/// Adds the (auditID, stage) keys of a segment; returns its row count.
pub(crate) fn load_keys(path: &Path, keys: &mut KeySet) -> Result<u64, StoreError> {
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
    let mut rows = 0;
    for batch in reader {
        let batch = batch?;
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
        rows += ids.len() as u64;
    }
    Ok(rows)
}

/// When segments are merged.
#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// Segments smaller than this (bytes) are merged.
    pub small_segment_bytes: u64,
    /// A merged segment stops growing at about this many bytes of input segments.
    pub target_bytes: u64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            small_segment_bytes: 32 << 20,
            target_bytes: 256 << 20,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments merged away.
    pub merged_segments: usize,
    /// Segments written.
    pub written_segments: usize,
    /// Rows rewritten.
    pub rows: u64,
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Merges the small segments of every partition (see the module docs for crash safety).
pub(crate) fn compact(
    data_dir: &Path,
    options: &CompactionOptions,
    segment_options: &SegmentOptions,
) -> Result<CompactionReport, StoreError> {
    let mut by_partition: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for segment in segments(data_dir)? {
        if size(&segment) < options.small_segment_bytes
            && let Some(folder) = segment.parent()
        {
            by_partition
                .entry(folder.to_path_buf())
                .or_default()
                .push(segment);
        }
    }
    let mut report = CompactionReport::default();
    for (folder, small) in by_partition {
        let mut group: Vec<PathBuf> = Vec::new();
        let mut group_bytes = 0;
        for segment in small {
            group_bytes += size(&segment);
            group.push(segment);
            if group_bytes >= options.target_bytes {
                merge(
                    &folder,
                    &std::mem::take(&mut group),
                    segment_options,
                    &mut report,
                )?;
                group_bytes = 0;
            }
        }
        if group.len() > 1 {
            merge(&folder, &group, segment_options, &mut report)?;
        }
    }
    Ok(report)
}

fn merge(
    folder: &Path,
    sources: &[PathBuf],
    options: &SegmentOptions,
    report: &mut CompactionReport,
) -> Result<(), StoreError> {
    if sources.len() < 2 {
        return Ok(());
    }
    let names: Vec<String> = sources
        .iter()
        .filter_map(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let replaces = serde_json::to_string(&names).expect("strings serialize");
    let mut rows = 0;
    commit_segment(
        folder,
        &new_segment_name("-c"),
        properties(options, Some(replaces)),
        |writer, tmp| {
            for source in sources {
                let file = File::open(source).map_err(|e| StoreError::io(source, e))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.with_batch_size(8192).build())
                    .map_err(|e| StoreError::parquet(source, e))?;
                for batch in reader {
                    let batch = crate::schema::upgrade(batch?)?;
                    rows += batch.num_rows() as u64;
                    writer
                        .write(&batch)
                        .map_err(|e| StoreError::parquet(tmp, e))?;
                }
            }
            Ok(())
        },
    )?;
    for source in sources {
        fs::remove_file(source).map_err(|e| StoreError::io(source, e))?;
    }
    crate::wal::sync_dir(folder)?;
    report.merged_segments += sources.len();
    report.written_segments += 1;
    report.rows += rows;
    Ok(())
}

/// How long and how much to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete days that ended more than this many microseconds ago.
    pub max_age_micros: Option<i64>,
    /// Delete the oldest data until the table takes at most this many bytes.
    pub max_bytes: Option<u64>,
}

/// What retention deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Bytes freed.
    pub deleted_bytes: u64,
    /// Day partitions removed entirely.
    pub deleted_partitions: Vec<String>,
}

/// Applies retention: whole days past the age limit, then the oldest segments (oldest day
/// first, oldest written first) until the size limit holds.
pub(crate) fn prune(
    data_dir: &Path,
    retention: Retention,
    now_micros: i64,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    let all = segments(data_dir)?;
    let mut remaining: Vec<(PathBuf, u64)> = Vec::new();
    for segment in all {
        let bytes = size(&segment);
        let expired = retention.max_age_micros.is_some_and(|age| {
            partition_end_micros(&segment).is_some_and(|end| end <= now_micros - age)
        });
        if expired {
            delete_segment(&segment, bytes, &mut report)?;
        } else {
            remaining.push((segment, bytes));
        }
    }
    if let Some(max_bytes) = retention.max_bytes {
        let mut total: u64 = remaining.iter().map(|(_, b)| b).sum();
        for (segment, bytes) in &remaining {
            if total <= max_bytes {
                break;
            }
            delete_segment(segment, *bytes, &mut report)?;
            total -= bytes;
        }
    }
    let events = events_dir(data_dir);
    if events.exists() {
        for partition in fs::read_dir(&events).map_err(|e| StoreError::io(&events, e))? {
            let partition = partition.map_err(|e| StoreError::io(&events, e))?.path();
            let empty = fs::read_dir(&partition).is_ok_and(|mut d| d.next().is_none());
            if partition.is_dir() && empty {
                fs::remove_dir(&partition).map_err(|e| StoreError::io(&partition, e))?;
                if let Some(name) = partition.file_name() {
                    report
                        .deleted_partitions
                        .push(name.to_string_lossy().into_owned());
                }
            }
        }
        crate::wal::sync_dir(&events)?;
    }
    report.deleted_partitions.sort();
    Ok(report)
}

fn delete_segment(
    segment: &Path,
    bytes: u64,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    fs::remove_file(segment).map_err(|e| StoreError::io(segment, e))?;
    report.deleted_segments += 1;
    report.deleted_bytes += bytes;
    Ok(())
}

/// The end of the day a segment's partition covers.
fn partition_end_micros(segment: &Path) -> Option<i64> {
    let name = segment.parent()?.file_name()?.to_str()?;
    let date = name.strip_prefix("date=")?;
    let start = kubetrail_event::Timestamp::parse(&format!("{date}T00:00:00Z"))?;
    Some(start.as_micros() + DAY_MICROS)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};

    use parquet::arrow::ArrowSchemaConverter;
    use parquet::file::properties::EnabledStatistics;

    use super::{
        SORTED_COLUMNS, SegmentOptions, UNIQUE_COLUMNS, UNPRUNABLE_COLUMNS, column_path,
        properties, segment_order,
    };
    use crate::schema::schema;

    #[test]
    fn column_settings_name_real_columns_and_keep_statistics_elsewhere() {
        let parquet_schema = ArrowSchemaConverter::new().convert(&schema()).unwrap();
        let leaves: Vec<String> = parquet_schema
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        for column in UNPRUNABLE_COLUMNS
            .iter()
            .chain(&UNIQUE_COLUMNS)
            .chain(&SORTED_COLUMNS)
        {
            assert!(leaves.contains(&column.to_string()), "no column {column}");
        }
        let props = properties(&SegmentOptions::default(), None);
        let statistics = |column: &str| props.statistics_enabled(&column_path(column));
        assert_eq!(statistics("source_ips.list.item"), EnabledStatistics::None);
        assert_eq!(statistics("effective_user"), EnabledStatistics::None);
        for kept in [
            "time",
            "user",
            "resource",
            "namespace",
            "name",
            "verb",
            "code",
        ] {
            assert_eq!(statistics(kept), EnabledStatistics::Page, "{kept}");
        }
    }

    #[test]
    fn row_groups_follow_time_and_cluster_by_kind_inside() {
        // (time, resource, namespace, verb, user), written out of time order.
        type Row = (i64, &'static str, &'static str, &'static str, &'static str);
        let rows: [Row; 6] = [
            (5, "pods", "a", "get", "u"),
            (1, "pods", "b", "get", "u"),
            (2, "configmaps", "a", "list", "u"),
            (4, "configmaps", "a", "list", "u"),
            (3, "pods", "a", "get", "u"),
            (6, "configmaps", "a", "list", "u"),
        ];
        let text = |pick: fn(&Row) -> &'static str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(pick)))
        };
        let batch = RecordBatch::try_from_iter([
            (
                "time",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )) as ArrayRef,
            ),
            ("resource", text(|r| r.1)),
            ("namespace", text(|r| r.2)),
            ("verb", text(|r| r.3)),
            ("user", text(|r| r.4)),
        ])
        .unwrap();
        let order = segment_order(&batch, 3).unwrap();
        let times: Vec<i64> = order.values().iter().map(|&i| rows[i as usize].0).collect();
        // Row group one holds times 1-3, row group two 4-6; inside each, configmaps before
        // pods, namespace a before b, and time last.
        assert_eq!(times, [2, 3, 1, 4, 6, 5]);
    }
}

//! Reading stored history for the detection rules: the events of a range that match a search,
//! oldest first, decoded one by one. `kubetrail rules run --data` hunts with it, and `serve`
//! warms the stateful rules (first-seen tuples, sequences in progress) with it at start.
//!
//! The search is run in pages ordered by (time, auditID, stage) with a keyset cursor
//! (`compile_scan`), so memory stays bounded whatever the range, and only the matching
//! events' original JSON is read.

use std::io;

use arrow::array::{Array, StringArray, StringViewArray, TimestampMicrosecondArray};
use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder};
use kubetrail_query::{
    CompileOptions, DataFusionDialect, Expr, Query, QueryLimits, SearchCursor, compile_scan,
};
use kubetrail_store::{QueryEngine, StoreError};

/// Events per page read from the store.
const PAGE: u64 = 20_000;

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's answer lacked the columns a scan reads.
    #[error("the store answered unexpected columns")]
    Columns,
    /// The caller's handler failed (writing findings).
    #[error(transparent)]
    Output(#[from] io::Error),
}

/// Reads the stored events matching `filter` (every event when None) in `[from, to)` (µs),
/// oldest first, and hands each to `each` with its cluster and time. Returns how many were
/// read.
pub fn scan_store(
    store: &QueryEngine,
    filter: Option<Expr>,
    from_micros: Option<i64>,
    to_micros: Option<i64>,
    mut each: impl FnMut(&AuditEvent<'_>, &str, i64) -> io::Result<()>,
) -> Result<u64, ScanError> {
    let query = Query {
        filter,
        pipes: Vec::new(),
    };
    let options = CompileOptions {
        from_micros,
        to_micros,
        cluster: None,
        default_limit: PAGE,
        limits: QueryLimits::default(),
        now_micros: None,
    };
    let mut cursor: Option<SearchCursor> = None;
    let mut events = 0;
    loop {
        let compiled = compile_scan(&query, &DataFusionDialect, &options, cursor.as_ref(), PAGE);
        let batches = store.query(&compiled)?;
        let mut rows = 0;
        for batch in &batches {
            let column = |i: usize| batch.column(i).as_any();
            let (Some(times), Some(ids), Some(stages), Some(clusters), Some(originals)) = (
                column(0).downcast_ref::<TimestampMicrosecondArray>(),
                column(1).downcast_ref::<StringArray>(),
                column(2).downcast_ref::<StringArray>(),
                column(3).downcast_ref::<StringArray>(),
                column(4).downcast_ref::<StringViewArray>(),
            ) else {
                return Err(ScanError::Columns);
            };
            for row in 0..batch.num_rows() {
                rows += 1;
                let time = times.value(row);
                let cluster = clusters.value(row);
                let mut failed = None;
                let mut decoder = Decoder::new(DecodeOptions::default());
                let mut out = |decoded: Decoded<'_>| {
                    if let Decoded::Event(event, _) = decoded
                        && failed.is_none()
                        && let Err(e) = each(&event, cluster, time)
                    {
                        failed = Some(e);
                    }
                };
                decoder.feed(originals.value(row).as_bytes(), &mut out);
                decoder.finish(&mut out);
                if let Some(e) = failed {
                    return Err(e.into());
                }
                cursor = Some(SearchCursor {
                    time_micros: time,
                    audit_id: ids.value(row).to_owned(),
                    stage: stages.value(row).to_owned(),
                });
            }
        }
        events += rows;
        if rows < PAGE {
            return Ok(events);
        }
    }
}

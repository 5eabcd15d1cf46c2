//! Reading stored history for the detection rules: the events of a range that match a search,
//! oldest first, decoded one by one. `kubetrail rules run --data` hunts with it, and `serve`
//! warms the stateful rules (first-seen tuples, sequences in progress) with it at start.
//!
//! The search is a superset on cheap columns (`Engine::search_filter`), not the rules'
//! conditions: the store only narrows, the engine judges each event read, as it judges live
//! ones. A search of every rule's condition in SQL cost more to plan and run than the judging
//! it saved.
//!
//! One search over the whole range, paged with a keyset cursor, would re-run the search over
//! everything after the cursor for every page: quadratic in the range. The range is instead
//! cut into slices of time of about a page each (sized from the matching events' count, then
//! adapted to what each slice held), so each page reads its slice's row groups only; a slice
//! that still holds more than a page (a burst) is paged within itself with the cursor
//! (`compile_scan`). Memory stays bounded whatever the range. A thread reads the next page
//! while the caller judges the current one.

use std::io;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{
    Array, Int64Array, RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray,
};
use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder};
use kubetrail_query::{
    CompileOptions, DataFusionDialect, Expr, Query, QueryLimits, SearchCursor, compile_extent,
    compile_scan,
};
use kubetrail_store::{QueryEngine, StoreError};

/// Events per page read from the store, and the size slices of time aim at.
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
    each: impl FnMut(&AuditEvent<'_>, &str, i64) -> io::Result<()>,
) -> Result<u64, ScanError> {
    scan_store_in_pages(store, filter, from_micros, to_micros, PAGE, each)
}

/// [`scan_store`] with pages of `page` events instead of the default (tests cross slices and
/// pages with a few events).
pub fn scan_store_in_pages(
    store: &QueryEngine,
    filter: Option<Expr>,
    from_micros: Option<i64>,
    to_micros: Option<i64>,
    page: u64,
    mut each: impl FnMut(&AuditEvent<'_>, &str, i64) -> io::Result<()>,
) -> Result<u64, ScanError> {
    let page = page.max(1);
    let query = Query {
        filter,
        pipes: Vec::new(),
    };
    let Some(extent) = extent(store, &query, from_micros, to_micros)? else {
        return Ok(0);
    };
    std::thread::scope(|scope| {
        // One page judged, one waiting, one being read.
        let (pages, received) = sync_channel(1);
        let reader = std::thread::Builder::new()
            .name("kubetrail-history".to_owned())
            .spawn_scoped(scope, || read_pages(store, &query, extent, page, pages))
            .map_err(ScanError::Output)?;
        let events = judge_pages(received, &mut each);
        // A judge that stopped early dropped the receiver: the reader's next send fails and it
        // returns.
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        events
    })
}

/// The oldest and newest matching times and how many events match, or None when none does.
#[derive(Debug, Clone, Copy)]
struct Extent {
    first: i64,
    last: i64,
    events: u64,
}

fn extent(
    store: &QueryEngine,
    query: &Query,
    from_micros: Option<i64>,
    to_micros: Option<i64>,
) -> Result<Option<Extent>, ScanError> {
    let compiled = compile_extent(query, &DataFusionDialect, &options(from_micros, to_micros));
    let batches = store.query(&compiled)?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let (Some(first), Some(last), Some(events)) = (
        batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>(),
        batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>(),
        batch.column(2).as_any().downcast_ref::<Int64Array>(),
    ) else {
        return Err(ScanError::Columns);
    };
    if first.is_null(0) || last.is_null(0) || events.value(0) == 0 {
        return Ok(None);
    }
    Ok(Some(Extent {
        first: first.value(0),
        last: last.value(0),
        events: u64::try_from(events.value(0)).unwrap_or(0),
    }))
}

fn options(from_micros: Option<i64>, to_micros: Option<i64>) -> CompileOptions {
    CompileOptions {
        from_micros,
        to_micros,
        cluster: None,
        default_limit: PAGE,
        limits: QueryLimits::default(),
        now_micros: None,
    }
}

/// Reads the pages of `extent` oldest first into `pages`, until the range is read, the store
/// fails (the error is sent) or the receiver is gone.
fn read_pages(
    store: &QueryEngine,
    query: &Query,
    extent: Extent,
    page: u64,
    pages: SyncSender<Result<Vec<RecordBatch>, ScanError>>,
) {
    let end = extent.last.saturating_add(1);
    let mut start = extent.first;
    // As if the matching events were spread evenly: a page's worth of time per slice.
    let span = i128::from(end) - i128::from(start);
    let mut width = (span * i128::from(page) / i128::from(extent.events.max(1))).max(1);
    while start < end {
        let slice_end =
            i64::try_from((i128::from(start) + width).min(i128::from(end))).unwrap_or(end);
        let slice = options(Some(start), Some(slice_end));
        let mut cursor: Option<SearchCursor> = None;
        let mut read_in_slice = 0u64;
        let mut pages_in_slice = 0i128;
        loop {
            let compiled = compile_scan(query, &DataFusionDialect, &slice, cursor.as_ref(), page);
            let read = store
                .query(&compiled)
                .map_err(ScanError::from)
                .and_then(|batches| {
                    let last = last_row(&batches)?;
                    Ok((batches, last))
                });
            let (batches, last) = match read {
                Ok(read) => read,
                Err(e) => {
                    let _ = pages.send(Err(e));
                    return;
                }
            };
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            read_in_slice += rows;
            pages_in_slice += 1;
            if pages.send(Ok(batches)).is_err() {
                return;
            }
            match last {
                Some(last) if rows == page => cursor = Some(last),
                _ => break,
            }
        }
        // A burst took several pages: narrower slices from here; a quiet slice: wider ones.
        if pages_in_slice > 1 {
            width = (width / pages_in_slice).max(1);
        } else if read_in_slice < page / 4 {
            width = width.saturating_mul(2);
        }
        start = slice_end;
    }
}

/// The cursor after the last row of a page.
fn last_row(batches: &[RecordBatch]) -> Result<Option<SearchCursor>, ScanError> {
    let Some(batch) = batches.iter().rev().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let row = batch.num_rows() - 1;
    let column = |i: usize| batch.column(i).as_any();
    let (Some(times), Some(ids), Some(stages)) = (
        column(0).downcast_ref::<TimestampMicrosecondArray>(),
        column(1).downcast_ref::<StringArray>(),
        column(2).downcast_ref::<StringArray>(),
    ) else {
        return Err(ScanError::Columns);
    };
    Ok(Some(SearchCursor {
        time_micros: times.value(row),
        audit_id: ids.value(row).to_owned(),
        stage: stages.value(row).to_owned(),
    }))
}

/// Decodes the events of each page received and hands them to `each`, oldest first.
fn judge_pages(
    pages: Receiver<Result<Vec<RecordBatch>, ScanError>>,
    each: &mut impl FnMut(&AuditEvent<'_>, &str, i64) -> io::Result<()>,
) -> Result<u64, ScanError> {
    let mut events = 0;
    for page in pages {
        for batch in &page? {
            let column = |i: usize| batch.column(i).as_any();
            let (Some(times), Some(clusters), Some(originals)) = (
                column(0).downcast_ref::<TimestampMicrosecondArray>(),
                column(3).downcast_ref::<StringArray>(),
                column(4).downcast_ref::<StringViewArray>(),
            ) else {
                return Err(ScanError::Columns);
            };
            for row in 0..batch.num_rows() {
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
                events += 1;
            }
        }
    }
    Ok(events)
}

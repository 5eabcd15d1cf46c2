//! kubetrail's embedded event store: zero setup, in a data directory.
//!
//! Events are accepted into a write-ahead log (`wal/`, fsynced, group commit), then become
//! Parquet segments (zstd) partitioned by day under `events/`, queried through Apache
//! DataFusion; small segments are compacted and old ones pruned by retention. This is the only crate with the heavy dependencies (arrow, parquet,
//! datafusion, tokio), so the rest of the workspace builds and tests quickly.

mod engine;
mod error;
mod keys;
pub mod output;
mod quantiles;
pub mod quarantine;
mod schema;
mod segment;
mod udf;
mod wal;
mod writer;

pub use engine::{QueryBudget, QueryEngine, QuerySession};
pub use error::StoreError;
pub use quantiles::Histogram as LatencyHistogram;
pub use schema::{EventBatchBuilder, schema, table_schema, view_schema};
pub use segment::{
    CompactionOptions, CompactionReport, REPLACES_KEY, Retention, RetentionReport, SegmentOptions,
    events_dir, segments,
};
pub use wal::{OnDurable, WalDamage};
pub use writer::{Appended, EventWriter, Recovery, WriterOptions, WriterStats};

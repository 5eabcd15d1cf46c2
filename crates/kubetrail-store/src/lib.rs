//! kubetrail's embedded event store: zero setup, in a data directory.
//!
//! Events become Parquet segments (zstd) partitioned by day under `events/`, queried through
//! Apache DataFusion. This is the only crate with the heavy dependencies (arrow, parquet,
//! datafusion, tokio), so the rest of the workspace builds and tests quickly.

mod engine;
mod error;
pub mod output;
mod schema;
mod udf;
mod writer;

pub use engine::QueryEngine;
pub use error::StoreError;
pub use schema::{EventBatchBuilder, schema};
pub use writer::{Appended, EventWriter, WriterOptions, events_dir, segments};

//! kubetrail's pipeline: sources → transforms → the store.
//!
//! - [`transform`]: exclusion filters, the audit policy filter and redaction, applied the same
//!   way by every source and by `import`.
//! - [`ingest`]: the sink; one thread owns the store writer, group-commits batches from every
//!   source into the write-ahead log and acknowledges them, with admission control.
//! - [`tail`]: the file source for the API server's log backend (rotation, copytruncate, gzip,
//!   container-runtime logs) with checkpoints.
//!
//! The webhook source lives in `kubetrail-server`, which owns the HTTP port; it hands request
//! bodies to [`ingest::Ingest`] as the tailer hands it lines, and the writer thread decodes both.

pub mod audit_metrics;
pub mod ingest;
pub mod tail;
pub mod transform;

pub use ingest::{
    Batch, BatchOutcome, BatchSource, EventTap, Ingest, IngestError, IngestOptions, IngestStats,
    IngestThread, Taps,
};
pub use transform::{Exclusion, Transforms, Verdict};

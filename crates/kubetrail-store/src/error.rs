//! Store errors, each naming the file or directory involved.

use std::path::{Path, PathBuf};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed (including a full disk).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process writes this data directory.
    #[error("data directory {0} is in use by another kubetrail process (its LOCK file is held)")]
    Locked(PathBuf),
    /// A Parquet file could not be written or read.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// Building or reading Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A file of the store is damaged.
    #[error("{0}: damaged: {1}")]
    Corrupt(PathBuf, String),
    /// The query engine failed.
    #[error("{0}")]
    Query(String),
    /// A query went past one of its limits (memory, time); `limit` is the configuration key.
    #[error("{message} ({limit})")]
    QueryLimit {
        /// The limit's configuration key (`query.maxMemory`, `query.timeout`).
        limit: &'static str,
        /// What happened, in words.
        message: String,
    },
    /// The query was cancelled: whoever asked for it went away.
    #[error("the query was cancelled")]
    Cancelled,
    /// The writer stopped accepting events after a failure it cannot undo by itself.
    #[error("the store stopped accepting events: {0}")]
    Stopped(String),
    /// There is no data directory.
    #[error("no kubetrail data in {0}: import events first (kubetrail import --data {0} FILES)")]
    Missing(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        StoreError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
}

//! Queries over the stored events with Apache DataFusion: the Parquet segments are one table,
//! `events`, with the day partition as an extra `date` column, and the `kt_*` functions of the
//! query language registered; its `event` column (the original JSON) is read as `Utf8View` (see
//! [`table_schema`]). `events_view` is the same table with every text column read as `Utf8View`
//! (see [`view_schema`]), for scans over many rows.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use kubetrail_query::{CompiledSql, Param};

use crate::error::StoreError;
use crate::schema::{table_schema, view_schema};
use crate::segment::events_dir;
use crate::udf;

/// A read-only view of a data directory for queries. Queries run on the engine's own
/// runtime, so a long scan cannot starve the server's request handling of worker threads;
/// the methods block and are called from plain threads (`spawn_blocking` in the server).
pub struct QueryEngine {
    ctx: SessionContext,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for QueryEngine {
    /// The server drops its engine inside its own async runtime, where a blocking runtime
    /// shutdown would panic; queries are read-only, so nothing needs waiting for.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl QueryEngine {
    /// Opens the events table of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<QueryEngine, StoreError> {
        let events = events_dir(data_dir);
        if !events.is_dir() {
            return Err(StoreError::Missing(data_dir.to_path_buf()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io(data_dir, e))?;
        // DataFusion's own settings can be tuned from the environment
        // (`DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`, …) without a rebuild.
        let config = SessionConfig::from_env()
            .map_err(|e| StoreError::Query(format!("DATAFUSION_* settings: {e}")))?
            .with_information_schema(true);
        // The directory changes under a long-lived engine (flushes, compaction, retention):
        // every query lists it afresh instead of trusting DataFusion's file-list cache.
        let runtime_env = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(|e| StoreError::Query(e.to_string()))?;
        let ctx = SessionContext::new_with_config_rt(config, runtime_env);
        register_functions(&ctx);
        let location = format!("{}/", events.display());
        for (table, read_schema) in [("events", table_schema()), ("events_view", view_schema())] {
            let options = ParquetReadOptions::default()
                .table_partition_cols(vec![("date".to_owned(), DataType::Utf8)])
                .schema(&read_schema);
            runtime
                .block_on(ctx.register_parquet(table, &location, options))
                .map_err(|e| StoreError::Query(e.to_string()))?;
        }
        Ok(QueryEngine {
            ctx,
            runtime: Some(runtime),
        })
    }

    /// Runs SQL with positional parameters (`$1`, …).
    pub fn sql(&self, sql: &str, params: Vec<ScalarValue>) -> Result<Vec<RecordBatch>, StoreError> {
        self.block_on(run_sql(&self.ctx, sql, params))
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(future)
    }

    /// A session over the same `events` table with a catalog of its own, where intermediate
    /// results can be kept as in-memory tables ([`QuerySession::keep`]) for the next
    /// statements. An investigation scans the store once for the rows it is about instead of
    /// once per table it shows; concurrent sessions never see each other's tables.
    pub fn session(&self) -> Result<QuerySession<'_>, StoreError> {
        let ctx =
            SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        register_functions(&ctx);
        for table in ["events", "events_view"] {
            let provider = self
                .block_on(self.ctx.table_provider(table))
                .map_err(|e| StoreError::Query(e.to_string()))?;
            ctx.register_table(table, provider)
                .map_err(|e| StoreError::Query(e.to_string()))?;
        }
        Ok(QuerySession { engine: self, ctx })
    }

    /// Runs a compiled query.
    pub fn query(&self, compiled: &CompiledSql) -> Result<Vec<RecordBatch>, StoreError> {
        self.sql(&compiled.sql, scalars(&compiled.params))
    }
}

/// The `kt_*` functions, in every context that runs kubetrail's SQL.
fn register_functions(ctx: &SessionContext) {
    for function in udf::functions() {
        ctx.register_udf(function);
    }
    for aggregate in crate::quantiles::latency_aggregates() {
        ctx.register_udaf(aggregate);
    }
}

/// A session of [`QueryEngine::session`].
pub struct QuerySession<'e> {
    engine: &'e QueryEngine,
    ctx: SessionContext,
}

impl QuerySession<'_> {
    /// Runs a compiled query in this session (its kept tables included).
    pub fn query(&self, compiled: &CompiledSql) -> Result<Vec<RecordBatch>, StoreError> {
        self.engine
            .block_on(run_sql(&self.ctx, &compiled.sql, scalars(&compiled.params)))
    }

    /// Turns Parquet filter pushdown on or off for the following statements of this session.
    /// With it on, a scan decodes the filter's columns first and the other columns only for
    /// the rows that pass: a large saving when a filter keeps few rows of wide columns (the
    /// slowest requests, cluster-wide lists), a cost when it keeps most of them, hence a
    /// choice per statement rather than per engine. Returns the previous setting.
    pub fn set_filter_pushdown(&self, enabled: bool) -> bool {
        let state = self.ctx.state_ref();
        let mut state = state.write();
        let parquet = &mut state.config_mut().options_mut().execution.parquet;
        std::mem::replace(&mut parquet.pushdown_filters, enabled)
    }

    /// Runs a compiled query and keeps its result as the in-memory table `name` for the
    /// following statements; the number of rows kept.
    pub fn keep(&self, name: &str, compiled: &CompiledSql) -> Result<usize, StoreError> {
        let frame = self.engine.block_on(async {
            let frame = frame(&self.ctx, &compiled.sql, scalars(&compiled.params)).await?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame
                .collect()
                .await
                .map_err(|e| StoreError::Query(e.to_string()))?;
            Ok::<_, StoreError>((schema, batches))
        });
        let (schema, batches) = frame?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let table = MemTable::try_new(schema, vec![batches])
            .map_err(|e| StoreError::Query(e.to_string()))?;
        self.ctx
            .register_table(name, Arc::new(table))
            .map_err(|e| StoreError::Query(e.to_string()))?;
        Ok(rows)
    }
}

/// The planned statement with its parameters bound.
async fn frame(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<DataFrame, StoreError> {
    let frame = ctx
        .sql(sql)
        .await
        .map_err(|e| StoreError::Query(e.to_string()))?;
    if params.is_empty() {
        Ok(frame)
    } else {
        frame
            .with_param_values(params)
            .map_err(|e| StoreError::Query(e.to_string()))
    }
}

async fn run_sql(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<Vec<RecordBatch>, StoreError> {
    frame(ctx, sql, params)
        .await?
        .collect()
        .await
        .map_err(|e| StoreError::Query(e.to_string()))
}

fn scalars(params: &[Param]) -> Vec<ScalarValue> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(t) => ScalarValue::Utf8(Some(t.clone())),
            Param::Int(n) => ScalarValue::Int64(Some(*n)),
            Param::TimestampMicros(t) => {
                ScalarValue::TimestampMicrosecond(Some(*t), Some("UTC".into()))
            }
            Param::Bool(b) => ScalarValue::Boolean(Some(*b)),
        })
        .collect()
}

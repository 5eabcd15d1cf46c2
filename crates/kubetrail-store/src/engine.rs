//! Queries over the stored events with Apache DataFusion: the Parquet segments are one table,
//! `events`, with the day partition as an extra `date` column, and the `kt_*` functions of the
//! query language registered; its `event` column (the original JSON) is read as `Utf8View` (see
//! [`table_schema`]). `events_view` is the same table with every text column read as `Utf8View`
//! (see [`view_schema`]), for scans over many rows.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryPool, TrackConsumersPool, UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use kubetrail_query::{CompiledSql, Param};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::schema::{table_schema, view_schema};
use crate::segment::events_dir;
use crate::udf;

/// What each query may use, so no single query can take the memory or the time a server
/// needs for ingest and for everyone else's queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryBudget {
    /// Longest a query (a whole request's statements together, see
    /// [`QueryEngine::controlled`]) may run; None: no limit.
    pub timeout: Option<Duration>,
    /// Most memory the operators of one query may hold (aggregations, sorts, joins); None: no
    /// limit. Queries never spill to disk: the disk belongs to the store.
    pub max_memory: Option<usize>,
}

/// A read-only view of a data directory for queries. Queries run on the engine's own
/// runtime, so a long scan cannot starve the server's request handling of worker threads;
/// the methods block and are called from plain threads (`spawn_blocking` in the server).
/// Cloning is cheap; a clone made by [`controlled`](Self::controlled) carries a deadline and a
/// cancellation of its own.
#[derive(Clone)]
pub struct QueryEngine {
    shared: Arc<Shared>,
    /// When the queries of this handle must have finished.
    deadline: Option<Instant>,
    /// Closed when whoever asked for the queries went away: they stop.
    cancelled: Option<watch::Receiver<()>>,
}

struct Shared {
    ctx: SessionContext,
    budget: QueryBudget,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    /// The server drops its engine inside its own async runtime, where a blocking runtime
    /// shutdown would panic; queries are read-only, so nothing needs waiting for.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The SQL parser's recursion limit. The query compiler keeps its SQL shallow (balanced
/// `AND`/`OR` trees, a bounded query depth); DataFusion is built with its recursion
/// protection, so planning a deep expression grows its stack instead of overflowing it.
const SQL_RECURSION_LIMIT: usize = 512;

impl QueryEngine {
    /// Opens the events table of `data_dir`, with no budget.
    pub fn open(data_dir: &Path) -> Result<QueryEngine, StoreError> {
        QueryEngine::open_with(data_dir, QueryBudget::default(), 0, None)
    }

    /// Opens the events table of `data_dir`; each query gets `budget`. `threads` is the number
    /// of worker threads of the engine's runtime (0: one per core), and each of them runs
    /// `on_thread_start` first (the server lowers their scheduling priority there).
    pub fn open_with(
        data_dir: &Path,
        budget: QueryBudget,
        threads: usize,
        on_thread_start: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> Result<QueryEngine, StoreError> {
        let events = events_dir(data_dir);
        if !events.is_dir() {
            return Err(StoreError::Missing(data_dir.to_path_buf()));
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("kubetrail-query");
        if threads > 0 {
            builder.worker_threads(threads);
        }
        if let Some(start) = on_thread_start {
            builder.on_thread_start(move || start());
        }
        let runtime = builder.build().map_err(|e| StoreError::io(data_dir, e))?;
        // DataFusion's own settings can be tuned from the environment
        // (`DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`, …) without a rebuild.
        let config = SessionConfig::from_env()
            .map_err(|e| StoreError::Query(format!("DATAFUSION_* settings: {e}")))?
            .with_information_schema(true)
            .set_usize("datafusion.sql_parser.recursion_limit", SQL_RECURSION_LIMIT);
        // The directory changes under a long-lived engine (flushes, compaction, retention):
        // every query lists it afresh instead of trusting DataFusion's file-list cache.
        let runtime_env = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
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
            shared: Arc::new(Shared {
                ctx,
                budget,
                runtime: Some(runtime),
            }),
            deadline: None,
            cancelled: None,
        })
    }

    /// A handle whose queries, together, must finish within the budget's timeout from now, and
    /// stop as soon as `cancelled` closes (its sender is dropped: the client went away).
    pub fn controlled(&self, cancelled: watch::Receiver<()>) -> QueryEngine {
        QueryEngine {
            shared: self.shared.clone(),
            deadline: self.shared.budget.timeout.map(|t| Instant::now() + t),
            cancelled: Some(cancelled),
        }
    }

    /// Runs SQL with positional parameters (`$1`, …).
    pub fn sql(&self, sql: &str, params: Vec<ScalarValue>) -> Result<Vec<RecordBatch>, StoreError> {
        let ctx = self.context()?;
        self.block_on(run_sql(&ctx, sql, params))
    }

    /// Runs `future` on the engine's runtime until it is done, the deadline passes or the
    /// queries are cancelled; dropping the future stops the query's tasks.
    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let runtime = self
            .shared
            .runtime
            .as_ref()
            .expect("the runtime lives until drop");
        let timeout = self.shared.budget.timeout;
        let deadline = self
            .deadline
            .or_else(|| timeout.map(|t| Instant::now() + t));
        let mut cancelled = self.cancelled.clone();
        runtime.block_on(async move {
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let gone = async {
                match &mut cancelled {
                    // Nothing is ever sent: `changed` returns once the sender is dropped.
                    Some(receiver) => while receiver.changed().await.is_ok() {},
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = future => result,
                () = expired => Err(StoreError::QueryLimit {
                    limit: "query.timeout",
                    message: format!(
                        "the query ran longer than the limit of {:.0?}: narrow the time range or the search",
                        timeout.unwrap_or_default()
                    ),
                }),
                () = gone => Err(StoreError::Cancelled),
            }
        })
    }

    /// A context for one query or session: the shared tables and functions, and a memory pool
    /// of its own sized by the budget (the caches are shared).
    fn context(&self) -> Result<SessionContext, StoreError> {
        let shared = self.shared.ctx.runtime_env();
        let memory_pool: Arc<dyn MemoryPool> = match self.shared.budget.max_memory {
            Some(bytes) => Arc::new(TrackConsumersPool::new(
                GreedyMemoryPool::new(bytes),
                NonZeroUsize::new(3).expect("3 is not zero"),
            )),
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        let runtime_env = Arc::new(RuntimeEnv {
            memory_pool,
            disk_manager: shared.disk_manager.clone(),
            cache_manager: shared.cache_manager.clone(),
            object_store_registry: shared.object_store_registry.clone(),
        });
        let ctx = SessionContext::new_with_config_rt(self.shared.ctx.copied_config(), runtime_env);
        register_functions(&ctx);
        for table in ["events", "events_view"] {
            let provider = self.shared.ctx.table_provider(table);
            let provider = self
                .shared
                .runtime
                .as_ref()
                .expect("the runtime lives until drop")
                .block_on(provider)
                .map_err(|e| StoreError::Query(e.to_string()))?;
            ctx.register_table(table, provider)
                .map_err(|e| StoreError::Query(e.to_string()))?;
        }
        Ok(ctx)
    }

    /// A session over the same `events` table with a catalog of its own, where intermediate
    /// results can be kept as in-memory tables ([`QuerySession::keep`]) for the next
    /// statements. An investigation scans the store once for the rows it is about instead of
    /// once per table it shows; concurrent sessions never see each other's tables. Its
    /// statements share one memory budget.
    pub fn session(&self) -> Result<QuerySession<'_>, StoreError> {
        Ok(QuerySession {
            engine: self,
            ctx: self.context()?,
        })
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
            let batches = frame.collect().await.map_err(engine_error)?;
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
    let frame = ctx.sql(sql).await.map_err(engine_error)?;
    if params.is_empty() {
        Ok(frame)
    } else {
        frame.with_param_values(params).map_err(engine_error)
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
        .map_err(engine_error)
}

/// A DataFusion error as a store error: running out of the query's memory budget is a limit
/// the user can act on, not an internal failure.
fn engine_error(error: DataFusionError) -> StoreError {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(message) => StoreError::QueryLimit {
            limit: "query.maxMemory",
            message: format!(
                "the query needs more memory than its budget: narrow the time range, the search or the groups ({})",
                message.lines().next().unwrap_or_default()
            ),
        },
        _ => StoreError::Query(error.to_string()),
    }
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

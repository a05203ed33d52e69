//! The SQL engine: a DataFusion session over the lake's Delta tables, read-only, with a time
//! limit and the report functions (`local_time`, `local_day`, `category_level`) registered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::{SchemaProvider, TableProvider};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::session_state::SessionState;
use deltalake::datafusion::sql::parser::{DFParser, Statement as DfStatement};
use deltalake::datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use shoplake_lake::{Lake, TableName};

use crate::error::{Error, Result};
use crate::udf;

/// The default time limit of a query.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Memory the query operators (hash tables, sorts) may hold before they spill to disk.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// What engines draw on: one memory pool for the query operators (they spill to disk past
/// it) and, optionally, a bound on the bytes spilled. Engines opened with the same resources
/// share them, so concurrent queries together stay within one budget.
#[derive(Clone)]
pub struct EngineResources {
    runtime: Arc<deltalake::datafusion::execution::runtime_env::RuntimeEnv>,
}

impl std::fmt::Debug for EngineResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineResources").finish_non_exhaustive()
    }
}

impl EngineResources {
    /// A pool of `memory_limit` bytes, and at most `spill_limit` bytes of spill files (the
    /// system's temporary directory; `None`: DataFusion's default bound).
    pub fn new(memory_limit: usize, spill_limit: Option<u64>) -> Result<EngineResources> {
        // Operators share a memory budget and spill to disk past it, so month-scale
        // group-bys stay within the import's memory bound.
        let mut builder =
            RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)));
        if let Some(bytes) = spill_limit {
            builder = builder.with_max_temp_directory_size(bytes);
        }
        Ok(EngineResources {
            runtime: builder.build_arc()?,
        })
    }
}

/// A query's answer: its schema (also when there are no rows) and its batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The columns.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// SQL over the lake. Every table of the lake is registered under its name (`events`,
/// `quarantine`, `imports`); a table not created yet reads as empty.
pub struct Engine {
    ctx: SessionContext,
    /// The same tables, functions and memory pool, with filters pushed into the Parquet
    /// reader, for the scans reports fold in Rust ([`Engine::fold_merged`]).
    scan_ctx: SessionContext,
    timeout: Duration,
    events_version: Option<i64>,
    bot_flags_version: Option<i64>,
    schema: Arc<LakeSchema>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Engine {
    /// A session over the lake's tables. Each table is opened at its latest version when a
    /// statement first names it (a report opens the two or three it reads, not all of them);
    /// the `events` version is read at once.
    pub async fn open(lake: &Lake) -> Result<Engine> {
        Engine::open_with_memory(lake, MEMORY_LIMIT).await
    }

    /// [`Engine::open`] with another memory budget for the query operators (bytes).
    pub async fn open_with_memory(lake: &Lake, memory_limit: usize) -> Result<Engine> {
        let resources = EngineResources::new(memory_limit, None)?;
        Engine::open_shared(lake, &resources).await
    }

    /// [`Engine::open`] drawing on resources shared with other engines (a server's one memory
    /// pool and spill budget for every request).
    pub async fn open_shared(lake: &Lake, resources: &EngineResources) -> Result<Engine> {
        let events_version = lake.latest_version(TableName::Events).await?;
        let bot_flags_version = lake.latest_version(TableName::BotFlags).await?;
        let pinned = [
            (TableName::Events, events_version),
            (TableName::BotFlags, bot_flags_version),
        ]
        .into_iter()
        .filter_map(|(t, v)| Some((t, v?)))
        .collect();
        Engine::open_pinned(lake, resources, pinned).await
    }

    /// A session like this one (the same lake and resources, a fresh time limit) that reads
    /// each table of `pinned` at the version given and every other table at its latest
    /// (`events` and `bot_flags` absent from `pinned` read as not created yet).
    pub async fn at_versions(&self, pinned: HashMap<TableName, i64>) -> Result<Engine> {
        let resources = EngineResources {
            runtime: self.ctx.runtime_env(),
        };
        Engine::open_pinned(&self.schema.lake, &resources, pinned).await
    }

    async fn open_pinned(
        lake: &Lake,
        resources: &EngineResources,
        pinned: HashMap<TableName, i64>,
    ) -> Result<Engine> {
        let events_version = pinned.get(&TableName::Events).copied();
        let bot_flags_version = pinned.get(&TableName::BotFlags).copied();
        let runtime = resources.runtime.clone();
        let config = SessionConfig::new()
            .with_information_schema(true)
            // Two partitions, one per core of the 2-core machine shoplake is sized for: the
            // folded scans sum each on its own task, then merge.
            .with_target_partitions(2);
        // Filters run inside the Parquet reader for the folded scans: columns of rows a filter
        // refuses are never decoded (the abandoned-items scan keeps one row in twenty and
        // reads the brand and category texts of those only). Plans with operators that hold
        // memory keep DataFusion's default.
        let mut scan_config = config.clone();
        scan_config.options_mut().execution.parquet.pushdown_filters = true;
        scan_config.options_mut().execution.parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime.clone());
        let scan_ctx = SessionContext::new_with_config_rt(scan_config, runtime);
        // `events` and `bot_flags` are read at the versions found when the session opened,
        // whenever a statement first names them: what a session reports and stamps is what
        // it read.
        let schema = Arc::new(LakeSchema {
            lake: lake.clone(),
            state: ctx.state(),
            opened: tokio::sync::Mutex::new(HashMap::new()),
            pinned,
        });
        for c in [&ctx, &scan_ctx] {
            let catalog = c
                .catalog("datafusion")
                .ok_or_else(|| Error::Argument("the session lacks its default catalog".into()))?;
            catalog.register_schema("public", schema.clone())?;
            // Batches a statement joins with the lake's tables (a refresh's new rows).
            catalog.register_schema(
                "scratch",
                Arc::new(deltalake::datafusion::catalog::MemorySchemaProvider::new()),
            )?;
            for f in udf::functions() {
                c.register_udf(f);
            }
        }
        Ok(Engine {
            ctx,
            scan_ctx,
            timeout: DEFAULT_TIMEOUT,
            events_version,
            bot_flags_version,
            schema,
        })
    }

    /// Uses another time limit per query.
    pub fn with_timeout(mut self, timeout: Duration) -> Engine {
        self.timeout = timeout;
        self
    }

    /// The time limit of this session's statements.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The lake this session reads.
    pub fn lake(&self) -> &Lake {
        &self.schema.lake
    }

    /// The version of `events` this session reads (`None`: no table yet).
    pub fn events_version(&self) -> Option<i64> {
        self.events_version
    }

    /// The version of a table this session reads, opening it if no statement has yet (`None`:
    /// no table yet).
    pub async fn table_version(&self, table: TableName) -> Result<Option<i64>> {
        self.ctx.table_provider(table.as_str()).await?;
        Ok(self
            .schema
            .opened
            .lock()
            .await
            .get(&table)
            .and_then(|(_, v)| *v))
    }

    /// Registers batches as `scratch.{name}` for later statements of this session (replacing
    /// any of that name).
    pub(crate) fn scratch(
        &self,
        name: &str,
        schema: arrow::datatypes::SchemaRef,
        batches: Vec<arrow::array::RecordBatch>,
    ) -> Result<()> {
        let table = Arc::new(MemTable::try_new(schema, vec![batches])?);
        for c in [&self.ctx, &self.scan_ctx] {
            let name = format!("scratch.{name}");
            c.deregister_table(name.as_str())?;
            c.register_table(name.as_str(), table.clone())?;
        }
        Ok(())
    }

    /// The version of `bot_flags` this session reads (`None`: no table yet).
    pub fn bot_flags_version(&self) -> Option<i64> {
        self.bot_flags_version
    }

    /// Whether `bot_flags` holds any row (its row count comes from the Delta log's file
    /// statistics).
    pub async fn has_bot_flags(&self) -> Result<bool> {
        if self.bot_flags_version.is_none() {
            return Ok(false);
        }
        let n = self
            .scalar_i64("SELECT COUNT(*) AS n FROM bot_flags", "n")
            .await?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// The first row's integer `column` of a query's answer (`None` for no row or a null).
    pub(crate) async fn scalar_i64(&self, sql: &str, column: &str) -> Result<Option<i64>> {
        let out = self.run(sql).await?;
        Ok(out
            .batches
            .first()
            .and_then(|b| crate::columns::Columns::new(b).i64(column).ok())
            .and_then(|v| v.first().copied().flatten()))
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only statement (a query, `EXPLAIN`, `SHOW TABLES`, `DESCRIBE`). DDL,
    /// DML, `COPY` and `SET` are refused with a message saying so.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        check_read_only(sql)?;
        self.run(sql).await
    }

    /// Runs one read-only statement like [`Engine::query`], keeping at most `limit` rows: the
    /// plan is limited to one row more than that and its result streamed, so a short answer
    /// over a huge result never holds the result. Returns the rows and whether more were
    /// left out. The time limit covers planning and execution.
    pub async fn query_limited(&self, sql: &str, limit: usize) -> Result<(QueryOutput, bool)> {
        check_read_only(sql)?;
        let work = async {
            let df = self.ctx.sql_with_options(sql, read_only()).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let df = df.limit(0, Some(limit.saturating_add(1)))?;
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            let mut kept = 0;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let take = batch.num_rows().min(limit - kept);
                if take < batch.num_rows() {
                    truncated = true;
                }
                if take > 0 {
                    batches.push(batch.slice(0, take));
                    kept += take;
                }
                if truncated {
                    break;
                }
            }
            Ok::<_, Error>((QueryOutput { schema, batches }, truncated))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(out) => out,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Runs a statement the crate wrote itself (still read-only) within the time limit,
    /// folding each output partition's batches into its own state on its own task, so the
    /// caller's per-batch work runs beside the scan on every core. Returns the states.
    pub(crate) async fn fold_partitions<S: Send + 'static>(
        &self,
        sql: &str,
        init: impl Fn() -> S,
        each: impl Fn(&mut S, RecordBatch) -> Result<()> + Send + Sync + Copy + 'static,
    ) -> Result<Vec<S>> {
        let work = async {
            let df = self.scan_ctx.sql_with_options(sql, read_only()).await?;
            let mut tasks = tokio::task::JoinSet::new();
            for mut part in df.execute_stream_partitioned().await? {
                let mut state = init();
                tasks.spawn(async move {
                    while let Some(b) = part.next().await {
                        each(&mut state, b?)?;
                    }
                    Ok::<S, Error>(state)
                });
            }
            let mut states = Vec::new();
            while let Some(done) = tasks.join_next().await {
                states
                    .push(done.map_err(|e| Error::Argument(format!("a query task failed: {e}")))??);
            }
            Ok::<_, Error>(states)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(out) => out,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// [`Engine::fold_partitions`], then the partitions' states merged into one (`init()`
    /// with each merged in).
    pub(crate) async fn fold_merged<S: Send + 'static>(
        &self,
        sql: &str,
        init: impl Fn() -> S,
        each: impl Fn(&mut S, RecordBatch) -> Result<()> + Send + Sync + Copy + 'static,
        merge: impl Fn(&mut S, S),
    ) -> Result<S> {
        let parts = self.fold_partitions(sql, &init, each).await?;
        let mut all = init();
        for part in parts {
            merge(&mut all, part);
        }
        Ok(all)
    }

    /// Runs `fast`; when it runs out of memory (a plan whose operators cannot spill), runs
    /// `spilling` instead, an equivalent plan that can.
    pub(crate) async fn run_or_spill(&self, fast: &str, spilling: &str) -> Result<QueryOutput> {
        match self.run(fast).await {
            Err(Error::ResourcesExhausted(e)) => {
                tracing::debug!(error = %e, "out of memory: running the spilling plan");
                self.run(spilling).await
            }
            other => other,
        }
    }

    /// Runs a statement the crate wrote itself (still read-only), within the time limit.
    pub(crate) async fn run(&self, sql: &str) -> Result<QueryOutput> {
        let work = async {
            let df = self.ctx.sql_with_options(sql, read_only()).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok::<_, Error>(QueryOutput { schema, batches })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(out) => out,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }
}

/// DataFusion's own guard: no DDL, DML or `SET`, whoever wrote the SQL.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses anything but one read-only statement, naming what was refused.
pub fn check_read_only(sql: &str) -> Result<()> {
    let statements = DFParser::parse_sql(sql)?;
    match statements.len() {
        0 => return Err(Error::Argument("no SQL statement given".into())),
        1 => {}
        n => {
            return Err(Error::ReadOnly(format!(
                "one statement at a time, please ({n} given)"
            )));
        }
    }
    let keyword = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let refuse = |what: &str| {
        Err(Error::ReadOnly(format!(
            "shoplake SQL is read-only: {what} is refused. Tables change only through \
             `shoplake import`, stream delivery and `shoplake compact`/`vacuum`."
        )))
    };
    fn allowed(s: &Statement) -> bool {
        match s {
            Statement::Query(_)
            | Statement::ExplainTable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowFunctions { .. } => true,
            Statement::Explain { statement, .. } => allowed(statement),
            _ => false,
        }
    }
    match &statements[0] {
        DfStatement::Statement(s) if allowed(s) => Ok(()),
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) if allowed(s) => Ok(()),
            DfStatement::CopyTo(_) => refuse("COPY … TO (inside EXPLAIN)"),
            _ => refuse(&format!("{keyword} (inside EXPLAIN)")),
        },
        DfStatement::CopyTo(_) => refuse("COPY … TO"),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        _ => refuse(&keyword),
    }
}

/// A table a session opened, and its version (`None`: not created yet).
type Opened = (Arc<dyn TableProvider>, Option<i64>);

/// The lake's tables as a DataFusion schema, each opened on first use (a table not created
/// yet reads as empty, with its schema).
struct LakeSchema {
    lake: Lake,
    /// Shares the session's runtime, where each table registers its object store.
    state: SessionState,
    /// Each table opened, with its version.
    opened: tokio::sync::Mutex<HashMap<TableName, Opened>>,
    /// Tables read at a fixed version (`events` and `bot_flags` absent: read as empty).
    pinned: HashMap<TableName, i64>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        TableName::ALL
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = TableName::parse(name) else {
            return Ok(None);
        };
        let mut opened = self.opened.lock().await;
        if let Some((p, _)) = opened.get(&table) {
            return Ok(Some(p.clone()));
        }
        let loaded = match self.pinned.get(&table) {
            Some(v) => self.lake.table_at(table, *v).await,
            // Not there when the session opened: not there for the session.
            None if matches!(table, TableName::Events | TableName::BotFlags) => Ok(None),
            None => self.lake.table(table).await,
        }
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let (provider, version): (Arc<dyn TableProvider>, _) = match loaded {
            Some(t) => {
                t.update_datafusion_session(&self.state)?;
                let version = t.version().and_then(|v| i64::try_from(v).ok());
                (t.table_provider().await?, version)
            }
            None => (
                Arc::new(MemTable::try_new(table.schema(), vec![vec![]])?),
                None,
            ),
        };
        opened.insert(table, (provider.clone(), version));
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        TableName::parse(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn out_of_memory_runs_the_spilling_plan() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(shoplake_lake::LakeOptions {
            root: dir.path().display().to_string(),
            ..shoplake_lake::LakeOptions::default()
        })
        .unwrap();
        let engine = Engine::open_with_memory(&lake, 256 << 10).await.unwrap();
        let fast = "SELECT COUNT(DISTINCT value) AS n FROM generate_series(1, 2000000)";
        let err = engine.run(fast).await.unwrap_err().to_string();
        assert!(err.contains("Resources exhausted"), "{err}");
        let out = engine
            .run_or_spill(fast, "SELECT CAST(2000000 AS BIGINT) AS n")
            .await
            .unwrap();
        assert_eq!(out.rows(), 1);
        // Other errors are not retried.
        assert!(
            engine
                .run_or_spill("SELECT nope", "SELECT 1")
                .await
                .is_err()
        );
    }

    #[test]
    fn only_queries_pass() {
        for ok in [
            "SELECT 1",
            "select count(*) from events",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "DESCRIBE events",
        ] {
            assert!(check_read_only(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("DROP TABLE events", "DROP is refused"),
            (
                "INSERT INTO events SELECT * FROM events",
                "INSERT is refused",
            ),
            ("COPY events TO '/tmp/x.parquet'", "COPY … TO is refused"),
            ("CREATE TABLE x AS SELECT 1", "CREATE is refused"),
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/tmp/x'",
                "CREATE EXTERNAL TABLE",
            ),
            ("DELETE FROM events", "DELETE is refused"),
            ("SET datafusion.execution.batch_size = 1", "SET is refused"),
            (
                "EXPLAIN ANALYZE INSERT INTO events SELECT * FROM events",
                "inside EXPLAIN",
            ),
            ("SELECT 1; DROP TABLE events", "one statement at a time"),
        ] {
            let e = check_read_only(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

//! The lake root and its tables.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::protocol::SaveMode;
use url::Url;

use crate::error::{Error, Result};
use crate::schema;

/// The lake's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableName {
    /// Clean events.
    Events,
    /// Refused rows.
    Quarantine,
    /// Import history.
    Imports,
    /// Daily figures per report zone (visitors, sessions, cart sessions), kept by the query
    /// engine.
    MartDaily,
    /// Brand figures per report zone, local day and level-1 category.
    MartBrands,
    /// Category figures per report zone, local day and hour.
    MartCategories,
    /// Distinct visitors per report zone, category level, bucket, category and local day,
    /// split by the previous day each visitor was seen in the same bucket and category.
    MartCategoryVisitors,
    /// Per report zone, local day, user and product: the day's first cart, the previous day
    /// with a cart and the next purchase, for the abandoned-items report.
    MartItems,
    /// Per report zone and user, what the marts need of their human events (keyed by user).
    MartUserState,
    /// Per report zone and session, what `mart_daily` needs of it (keyed by session).
    MartSessionState,
    /// Bot verdicts of real-time detection: one row per flagged user, UTC day and incident;
    /// "humans only" reports leave out the flagged user-days.
    BotFlags,
}

impl TableName {
    /// Every table.
    pub const ALL: [TableName; 11] = [
        TableName::Events,
        TableName::Quarantine,
        TableName::Imports,
        TableName::MartDaily,
        TableName::MartBrands,
        TableName::MartCategories,
        TableName::MartCategoryVisitors,
        TableName::MartItems,
        TableName::MartUserState,
        TableName::MartSessionState,
        TableName::BotFlags,
    ];

    /// The table's name (and directory under the root).
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Events => "events",
            TableName::Quarantine => "quarantine",
            TableName::Imports => "imports",
            TableName::MartDaily => "mart_daily",
            TableName::MartBrands => "mart_brands",
            TableName::MartCategories => "mart_categories",
            TableName::MartCategoryVisitors => "mart_category_visitors",
            TableName::MartItems => "mart_items",
            TableName::MartUserState => "mart_user_state",
            TableName::MartSessionState => "mart_session_state",
            TableName::BotFlags => "bot_flags",
        }
    }

    /// Looks a table up by name.
    pub fn parse(s: &str) -> Option<TableName> {
        TableName::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Its Arrow schema.
    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            TableName::Events => schema::events(),
            TableName::Quarantine => schema::quarantine(),
            TableName::Imports => schema::imports(),
            TableName::MartDaily => schema::mart_daily(),
            TableName::MartBrands => schema::mart_brands(),
            TableName::MartCategories => schema::mart_categories(),
            TableName::MartCategoryVisitors => schema::mart_category_visitors(),
            TableName::MartItems => schema::mart_items(),
            TableName::MartUserState => schema::mart_user_state(),
            TableName::MartSessionState => schema::mart_session_state(),
            TableName::BotFlags => schema::bot_flags(),
        }
    }

    /// Its partition columns.
    pub fn partition_columns(self) -> Vec<String> {
        match self {
            TableName::Events => vec![schema::EVENT_DATE.to_owned()],
            // A report reads one level: only that level's files.
            TableName::MartCategories | TableName::MartCategoryVisitors => {
                vec!["level".to_owned()]
            }
            // The largest mart: a report reads one zone's files and never decodes the zone.
            TableName::MartItems => vec!["zone".to_owned()],
            TableName::MartUserState | TableName::MartSessionState => {
                crate::keyed::PARTITIONS.map(str::to_owned).to_vec()
            }
            _ => Vec::new(),
        }
    }

    fn comment(self) -> &'static str {
        match self {
            TableName::Events => "shoplake: clean clickstream events, partitioned by UTC date",
            TableName::Quarantine => "shoplake: refused rows with their reasons",
            TableName::Imports => "shoplake: one row per import, with its data-quality profile",
            TableName::MartDaily => "shoplake mart: daily visitors and cart sessions per zone",
            TableName::MartBrands => "shoplake mart: brand figures per zone, day and category",
            TableName::MartCategories => "shoplake mart: category figures per zone, day and hour",
            TableName::MartCategoryVisitors => {
                "shoplake mart: distinct category visitors per zone, bucket and day"
            }
            TableName::MartItems => "shoplake mart: first carts per zone, day, user and product",
            TableName::MartUserState => "shoplake mart state: per zone and user, keyed runs",
            TableName::MartSessionState => "shoplake mart state: per zone and session, keyed runs",
            TableName::BotFlags => "shoplake: users flagged as bots, per UTC day and incident",
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lease [`Lake::try_lease`] took. While it is held a task renews it (every third of its
/// time to live), so it lasts as long as its holder and lapses soon after the holder dies (a
/// `kill -9` blocks the next holder for one time to live, not for the longest run's length);
/// [`Lease::release`] gives it back, and dropping it stops the renewals.
#[derive(Debug)]
pub struct Lease {
    lake: Lake,
    path: object_store::path::Path,
    renewals: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Gives the lease back.
    pub async fn release(self) -> Result<()> {
        use object_store::ObjectStoreExt as _;
        self.renewals.abort();
        let (store, _) = self.lake.own_files()?;
        match store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Store {
                context: format!("deleting {}", self.path),
                source,
            }),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewals.abort();
    }
}

/// The time (µs since the epoch) a lease taken or renewed now for `ttl` runs out.
fn lease_until(ttl: std::time::Duration) -> i64 {
    chrono::Utc::now()
        .timestamp_micros()
        .saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX))
}

/// Renews a held lease until aborted. A renewal that fails is logged and tried again at the
/// next tick (the lease stays valid until its last expiry meanwhile).
async fn renew_lease(
    store: Box<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
    ttl: std::time::Duration,
) {
    use object_store::ObjectStoreExt as _;
    let every = (ttl / 3).max(std::time::Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let until = lease_until(ttl).to_string().into_bytes();
        if let Err(e) = store.put(&path, until.into()).await {
            tracing::warn!(%path, error = %e, "renewing a lease");
        }
    }
}

/// Where the lake is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct LakeOptions {
    /// A local directory (`./data/lake`) or a URL (`s3://bucket/prefix`, `file:///…`).
    pub root: String,
    /// Object-store options passed to delta-rs (for S3: `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, …). Values not given
    /// here are read from the environment by the S3 client.
    pub storage_options: HashMap<String, String>,
}

/// An opened lake root. Clones share the snapshots [`Lake::table`] keeps.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    snapshots: Arc<Snapshots>,
}

/// The newest snapshot of each table a lake handle (and its clones) loaded: the next load
/// starts from it and reads only the commits since, so a server answers each request without
/// replaying a table's log from its checkpoint and listing every file again.
#[derive(Default)]
struct Snapshots(Mutex<HashMap<TableName, DeltaTable>>);

impl fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.lock();
        f.debug_map()
            .entries(kept.iter().map(|(t, d)| (t.as_str(), d.version())))
            .finish()
    }
}

impl Snapshots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, DeltaTable>> {
        // The map holds whole snapshots only: one a panicking holder left is still sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, table: TableName) -> Option<DeltaTable> {
        self.lock().get(&table).cloned()
    }

    /// Keeps `loaded` unless a newer snapshot of the table is kept already.
    fn keep(&self, table: TableName, loaded: &DeltaTable) {
        let mut kept = self.lock();
        if kept
            .get(&table)
            .is_none_or(|k| k.version() < loaded.version())
        {
            kept.insert(table, loaded.clone());
        }
    }

    fn forget(&self, table: TableName) {
        self.lock().remove(&table);
    }
}

impl Lake {
    /// Opens a lake root, creating the directory for a local one. S3 roots use conditional
    /// puts (`If-None-Match`) so that concurrent writers are safe without a lock service.
    pub fn open(options: LakeOptions) -> Result<Lake> {
        let LakeOptions {
            root,
            mut storage_options,
        } = options;
        let bad = |reason: String| Error::Location {
            location: root.clone(),
            reason,
        };
        let url = if root.contains("://") {
            let mut url = Url::parse(&root).map_err(|e| bad(e.to_string()))?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            url
        } else {
            let path = Path::new(&root);
            std::fs::create_dir_all(path).map_err(|e| bad(format!("cannot create it: {e}")))?;
            let path = path.canonicalize().map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&path).map_err(|()| bad("not an absolute path".into()))?
        };
        match url.scheme() {
            "file" => {}
            "s3" | "s3a" => {
                // Safe concurrent commits on S3-compatible stores without DynamoDB.
                storage_options
                    .entry("conditional_put".into())
                    .or_insert_with(|| "etag".into());
                crate::s3::register();
            }
            "memory" => {}
            other => {
                return Err(bad(format!(
                    "the scheme {other}:// is not supported; use a local path or s3://"
                )));
            }
        }
        Ok(Lake {
            root: url,
            storage_options,
            snapshots: Arc::default(),
        })
    }

    /// The root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The storage options in effect.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// Whether the lake is on the local file system.
    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// The object store of the root, and the root's path in it.
    fn own_files(&self) -> Result<(Box<dyn object_store::ObjectStore>, object_store::path::Path)> {
        // object_store's option names are lower case (`aws_endpoint_url`).
        let options = self
            .storage_options
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
        object_store::parse_url_opts(&self.root, options).map_err(|source| Error::Store {
            context: format!("opening the object store of {}", self.root),
            source,
        })
    }

    fn own_path(base: &object_store::path::Path, name: &str) -> object_store::path::Path {
        base.clone().join("_shoplake").join(name)
    }

    /// Writes one of shoplake's own files beside the tables (`ROOT/_shoplake/NAME`, such as
    /// the detector's checkpoint), whole: a reader sees the old contents or the new.
    pub async fn put_own_file(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        use object_store::ObjectStoreExt as _;
        let (store, base) = self.own_files()?;
        let path = Self::own_path(&base, name);
        store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|source| Error::Store {
                context: format!("writing {path}"),
                source,
            })
    }

    /// Takes a named lease beside the tables (`ROOT/_shoplake/NAME.lease`) for `ttl`, renewed
    /// while held, so that processes sharing the lake (several hosts on S3 too) do one thing
    /// at a time: the lease is created only if absent (a conditional put), and one past its
    /// expiry (its holder died or stopped renewing) is taken over. `None` while another holds
    /// it.
    pub async fn try_lease(&self, name: &str, ttl: std::time::Duration) -> Result<Option<Lease>> {
        use object_store::{ObjectStoreExt as _, PutMode, PutOptions};
        let (store, base) = self.own_files()?;
        let path = Self::own_path(&base, &format!("{name}.lease"));
        let now = chrono::Utc::now().timestamp_micros();
        let until = lease_until(ttl);
        for _ in 0..2 {
            let put = store
                .put_opts(
                    &path,
                    until.to_string().into_bytes().into(),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => {
                    let renewals = tokio::spawn(renew_lease(store, path.clone(), ttl));
                    return Ok(Some(Lease {
                        lake: self.clone(),
                        path,
                        renewals,
                    }));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let held_until =
                        match store.get(&path).await {
                            Ok(got) => got.bytes().await.ok().and_then(|b| {
                                String::from_utf8_lossy(&b).trim().parse::<i64>().ok()
                            }),
                            Err(object_store::Error::NotFound { .. }) => continue,
                            Err(source) => {
                                return Err(Error::Store {
                                    context: format!("reading {path}"),
                                    source,
                                });
                            }
                        };
                    if held_until.is_some_and(|t| t > now) {
                        return Ok(None);
                    }
                    tracing::warn!(%path, "taking over a lease past its expiry");
                    let _ = store.delete(&path).await;
                }
                Err(source) => {
                    return Err(Error::Store {
                        context: format!("writing {path}"),
                        source,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Reads one of shoplake's own files beside the tables (`None` when there is none).
    pub async fn get_own_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        use object_store::ObjectStoreExt as _;
        let (store, base) = self.own_files()?;
        let path = Self::own_path(&base, name);
        match store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|source| Error::Store {
                    context: format!("reading {path}"),
                    source,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Store {
                context: format!("reading {path}"),
                source,
            }),
        }
    }

    /// The URL of a table.
    pub fn table_url(&self, table: TableName) -> Result<Url> {
        self.root
            .join(&format!("{}/", table.as_str()))
            .map_err(|e| Error::Internal(e.to_string()))
    }

    fn builder(&self, table: TableName) -> Result<deltalake::DeltaTableBuilder> {
        let url = self.table_url(table)?;
        Ok(deltalake::DeltaTableBuilder::from_url(url)
            .map_err(Error::delta(format!("opening {table}")))?
            .with_storage_options(self.storage_options.clone()))
    }

    /// A table's latest version, `None` when it does not exist yet. It brings the kept
    /// snapshot up to date (a first call loads it), as reading the table next would.
    pub async fn latest_version(&self, table: TableName) -> Result<Option<i64>> {
        Ok(self
            .table(table)
            .await?
            .and_then(|t| t.version())
            .and_then(|v| i64::try_from(v).ok()))
    }

    /// When commit `version` of a table was written (its log entry's modification time, the
    /// time Delta's time travel goes by), `None` when the table has no such commit.
    pub async fn commit_time(
        &self,
        table: TableName,
        version: i64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        use object_store::ObjectStoreExt as _;
        let (store, base) = self.own_files()?;
        let path = base
            .clone()
            .join(table.as_str())
            .join("_delta_log")
            .join(format!("{version:020}.json"));
        match store.head(&path).await {
            Ok(meta) => Ok(Some(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Store {
                context: format!("reading {path}"),
                source,
            }),
        }
    }

    /// Opens a table at a given version, `None` when it does not exist. The kept snapshot
    /// serves when it is at that version or before it (the commits up to the version are
    /// read on top); an older version is loaded afresh.
    pub async fn table_at(&self, table: TableName, version: i64) -> Result<Option<DeltaTable>> {
        let v = u64::try_from(version)
            .map_err(|_| Error::Argument(format!("{table} has no version {version}")))?;
        if let Some(mut t) = self.snapshots.get(table) {
            match t.version() {
                Some(kept) if kept == v => return Ok(Some(t)),
                Some(kept) if kept < v => match t.update_incremental(Some(v)).await {
                    Ok(()) => {
                        self.snapshots.keep(table, &t);
                        return Ok(Some(t));
                    }
                    // Loaded afresh below, which says what is wrong if anything is.
                    Err(e) => tracing::debug!(%table, version, error = %e, "reloading a table"),
                },
                _ => {}
            }
        }
        let Some(mut t) = self.unloaded(table).await? else {
            return Ok(None);
        };
        t.load_version(v).await.map_err(Error::delta(format!(
            "loading {table} at version {version}"
        )))?;
        self.snapshots.keep(table, &t);
        Ok(Some(t))
    }

    /// A table handle, not loaded yet; `None` when the table does not exist.
    pub(crate) async fn unloaded(&self, table: TableName) -> Result<Option<DeltaTable>> {
        let t = self
            .builder(table)?
            .build()
            .map_err(Error::delta(format!("opening {table}")))?;
        let exists = t
            .verify_deltatable_existence()
            .await
            .map_err(Error::delta(format!("looking for {table}")))?;
        Ok(exists.then_some(t))
    }

    /// Opens a table at its latest version, `None` when it does not exist yet: the kept
    /// snapshot and the commits since, or (the first time, or when that fails, as when the
    /// log it would read on from is gone) a load from the latest checkpoint.
    pub async fn table(&self, table: TableName) -> Result<Option<DeltaTable>> {
        if let Some(mut t) = self.snapshots.get(table) {
            match t.update_incremental(None).await {
                Ok(()) => {
                    self.snapshots.keep(table, &t);
                    return Ok(Some(t));
                }
                Err(e) => {
                    tracing::debug!(%table, error = %e, "reloading a table");
                    self.snapshots.forget(table);
                }
            }
        }
        let Some(mut t) = self.unloaded(table).await? else {
            return Ok(None);
        };
        t.load()
            .await
            .map_err(Error::delta(format!("loading {table}")))?;
        self.snapshots.keep(table, &t);
        Ok(Some(t))
    }

    /// Reads the given columns of every row of a table (for small tables, tests and tools; the
    /// query engine reads large ones).
    pub async fn read_table(
        &self,
        table: TableName,
        columns: &[&'static str],
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        match self.table(table).await? {
            Some(t) => crate::read::read_all(&t, columns).await,
            None => Ok(Vec::new()),
        }
    }

    /// [`Lake::read_table`] at a given version.
    pub async fn read_table_at(
        &self,
        table: TableName,
        version: i64,
        columns: &[&'static str],
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        match self.table_at(table, version).await? {
            Some(t) => crate::read::read_all(&t, columns).await,
            None => Ok(Vec::new()),
        }
    }

    /// Opens a table, creating it (empty, with its schema and partitioning) when missing.
    pub async fn ensure(&self, table: TableName) -> Result<DeltaTable> {
        if let Some(t) = self.table(table).await? {
            return Ok(t);
        }
        let empty = self
            .builder(table)?
            .build()
            .map_err(Error::delta(format!("opening {table}")))?;
        let schema: StructType = table
            .schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Internal(format!("schema of {table}: {e}")))?;
        let created = empty
            .create()
            .with_table_name(table.as_str())
            .with_comment(table.comment())
            .with_columns(schema.fields().cloned())
            .with_partition_columns(table.partition_columns())
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(t) => Ok(t),
            // Another writer may have created it first: use theirs.
            Err(e) => self.table(table).await?.ok_or(Error::Delta {
                context: format!("creating {table}"),
                source: e,
            }),
        }
    }
}

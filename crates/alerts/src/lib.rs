//! The alert store (DynamoDB in the reference design): incidents as the detector reports their
//! changes, who acknowledged or resolved them and when, and the allow- and deny-lists. One
//! trait, [`AlertStore`]; one implementation over SQL ([`SqlStore`]) for SQLite (a file, the
//! default) and PostgreSQL (a URL); the [`conformance`] suite runs against both.

mod config;
pub mod conformance;
mod outbox;

pub use config::{AlertsConfig, AlertsSettings};
pub use outbox::{Claimed, Outgoing, Settled};

use std::str::FromStr;

use serde::Serialize;
use shoplake_detect::{Change, KeyType, Severity, rfc3339, rfc3339_opt};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("alert store: {0}")]
    Database(#[from] sqlx::Error),
    /// A bad argument (URL, list name).
    #[error("{0}")]
    Argument(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An incident as stored: the detector's fields (the documented `--format json` objects) and
/// who acknowledged or resolved it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredIncident {
    /// The incident's id.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// `user_id`, `client_ip`, `user_session` or `global`.
    pub key_type: String,
    /// The key.
    pub key: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// When it opened.
    #[serde(serialize_with = "rfc3339")]
    pub opened_at: i64,
    /// Its last firing.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
    /// When it was resolved.
    #[serde(serialize_with = "rfc3339_opt")]
    pub resolved_at: Option<i64>,
    /// Windows that fired.
    pub windows: i64,
    /// The highest value measured.
    pub peak: f64,
    /// The key's events from the opening window on.
    pub events: i64,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    #[serde(serialize_with = "rfc3339_opt")]
    pub acknowledged_at: Option<i64>,
    /// Who resolved it by hand (`None`: resolved by the detector, or open).
    pub resolved_by: Option<String>,
}

/// The allow-list or the deny-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    /// Never flagged.
    Allow,
    /// Always flagged.
    Deny,
}

impl List {
    /// The list's name.
    pub fn as_str(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Deny => "deny",
        }
    }
}

/// An entry of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Which list.
    pub list: List,
    /// `user_id` or `client_ip`.
    pub key_type: String,
    /// The user id or address.
    pub key: String,
    /// Who added it.
    pub added_by: String,
    /// When (µs).
    pub added_at: i64,
}

/// A place in the incidents by opening time: the last one of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Its opening time (µs).
    pub opened_at: i64,
    /// Its id.
    pub id: String,
}

impl Cursor {
    /// The cursor after an incident.
    pub fn after(i: &StoredIncident) -> Cursor {
        Cursor {
            opened_at: i.opened_at,
            id: i.id.clone(),
        }
    }

    /// As text for a URL: `<µs>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.opened_at, self.id)
    }

    /// Reads [`Cursor::encode`]'s text.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        let valid =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        Some(Cursor {
            opened_at: at.parse().ok()?,
            id: id.to_owned(),
        })
        .filter(|_| valid)
    }
}

/// Which page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Start after this incident (`None`: from the first).
    pub after: Option<Cursor>,
    /// At most this many.
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl Page {
    /// Everything, oldest first.
    pub fn all() -> Page {
        Page {
            after: None,
            limit: usize::MAX,
            newest_first: false,
        }
    }
}

/// Where incidents are kept.
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync {
    /// Records the detector's changes, in order (an incident is inserted, or updated in
    /// place; an acknowledgement or a resolution by hand is kept).
    async fn apply(&self, changes: &[Change]) -> Result<()> {
        self.record(changes, &[], 0).await
    }
    /// Records changes as [`AlertStore::apply`] does and, in the same transaction, puts
    /// their notices in the outbox, due at `now` (µs), each once: a notice the outbox already
    /// holds (the same incident, kind, severity and channel) is kept as it is.
    async fn record(&self, changes: &[Change], notices: &[Outgoing], now: i64) -> Result<()>;
    /// Claims up to `limit` of `channel`'s notices due at `now` (µs) for `owner` until
    /// `until`: a notice is claimed by one owner at a time, and claimable again when its claim
    /// expires unsettled. Each claim counts as an attempt.
    async fn claim_notices(
        &self,
        channel: &str,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>>;
    /// Settles a notice `owner` claimed: sent, due again, or given up; false when the claim
    /// was no longer `owner`'s (it expired and another owner took the notice).
    async fn settle_notice(
        &self,
        notice: &Outgoing,
        owner: &str,
        now: i64,
        outcome: &Settled,
    ) -> Result<bool>;
    /// How many of `channel`'s notices are neither sent nor given up.
    async fn pending_notices(&self, channel: &str) -> Result<u64>;
    /// One incident.
    async fn get(&self, id: &str) -> Result<Option<StoredIncident>>;
    /// A key's incidents, newest first, at most `limit`.
    async fn by_key(
        &self,
        key_type: KeyType,
        key: &str,
        limit: usize,
    ) -> Result<Vec<StoredIncident>>;
    /// A page of the incidents opened in `[from, to)` (µs): at most `page.limit`, after
    /// `page.after`, oldest or newest first.
    async fn between(&self, from: i64, to: i64, page: &Page) -> Result<Vec<StoredIncident>>;
    /// Incidents not resolved, at `min` severity or above, most severe then oldest first, at
    /// most `limit`.
    async fn open(&self, min: Severity, limit: usize) -> Result<Vec<StoredIncident>>;
    /// Deletes the incidents resolved before `before` (µs), and the notices settled before
    /// it; returns how many incidents.
    async fn prune_resolved(&self, before: i64) -> Result<u64>;
    /// Marks an incident acknowledged by `who` at `at`; false when there is none.
    async fn acknowledge(&self, id: &str, who: &str, at: i64) -> Result<bool>;
    /// Resolves an incident by hand; false when there is none.
    async fn resolve(&self, id: &str, who: &str, at: i64) -> Result<bool>;
    /// Puts a user id or address on a list (`on`) or takes it off.
    async fn set_listed(
        &self,
        list: List,
        key_type: KeyType,
        key: &str,
        on: bool,
        who: &str,
        at: i64,
    ) -> Result<()>;
    /// Every list entry.
    async fn listed(&self) -> Result<Vec<Listed>>;
}

/// The store over SQL: SQLite or PostgreSQL, the same statements.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS incidents (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, key_type TEXT NOT NULL, key TEXT NOT NULL,
        severity TEXT NOT NULL, severity_rank BIGINT NOT NULL, status TEXT NOT NULL,
        opened_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, resolved_at BIGINT,
        windows BIGINT NOT NULL, peak DOUBLE PRECISION NOT NULL, events BIGINT NOT NULL,
        acknowledged_by TEXT, acknowledged_at BIGINT, resolved_by TEXT)",
    "CREATE INDEX IF NOT EXISTS incidents_key ON incidents (key_type, key)",
    "CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at)",
    "CREATE TABLE IF NOT EXISTS listed (
        list TEXT NOT NULL, key_type TEXT NOT NULL, key TEXT NOT NULL,
        added_by TEXT NOT NULL, added_at BIGINT NOT NULL, PRIMARY KEY (list, key_type, key))",
];

const COLUMNS: &str = "id, rule, key_type, key, severity, status, opened_at, updated_at, \
    resolved_at, windows, peak, events, acknowledged_by, acknowledged_at, resolved_by";

fn rank(s: Severity) -> i64 {
    match s {
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
    }
}

fn incident(row: &AnyRow) -> Result<StoredIncident> {
    Ok(StoredIncident {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        key_type: row.try_get("key_type")?,
        key: row.try_get("key")?,
        severity: row.try_get("severity")?,
        status: row.try_get("status")?,
        opened_at: row.try_get("opened_at")?,
        updated_at: row.try_get("updated_at")?,
        resolved_at: row.try_get("resolved_at")?,
        windows: row.try_get("windows")?,
        peak: row.try_get("peak")?,
        events: row.try_get("events")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        resolved_by: row.try_get("resolved_by")?,
    })
}

impl SqlStore {
    /// Opens (creating the tables when missing) `sqlite://PATH` (the file is created) or
    /// `postgres://…`.
    pub async fn open(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            if !path.contains('?') {
                format!("sqlite://{path}?mode=rwc")
            } else {
                url.to_owned()
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            return Err(Error::Argument(format!(
                "alert store URL {url:?}: expected sqlite://PATH or postgres://…"
            )));
        };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 4 })
            .connect(&url)
            .await?;
        if sqlite {
            // A crash loses no committed change; readers never block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&pool)
                .await?;
        }
        for statement in SCHEMA.iter().chain(&outbox::SCHEMA) {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(SqlStore { pool })
    }

    async fn select(&self, tail: &str, binds: Vec<Bind>) -> Result<Vec<StoredIncident>> {
        let sql = format!("SELECT {COLUMNS} FROM incidents {tail}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(incident)
            .collect()
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

#[async_trait::async_trait]
impl AlertStore for SqlStore {
    async fn record(&self, changes: &[Change], notices: &[Outgoing], now: i64) -> Result<()> {
        if changes.is_empty() && notices.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for c in changes {
            let i = c.incident();
            sqlx::query(
                "INSERT INTO incidents (id, rule, key_type, key, severity, severity_rank, status,
                    opened_at, updated_at, resolved_at, windows, peak, events)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (id) DO UPDATE SET
                    severity = excluded.severity, severity_rank = excluded.severity_rank,
                    status = CASE WHEN incidents.status = 'resolved' THEN 'resolved'
                                  WHEN incidents.status = 'acknowledged'
                                       AND excluded.status = 'open' THEN 'acknowledged'
                                  ELSE excluded.status END,
                    updated_at = excluded.updated_at,
                    resolved_at = COALESCE(incidents.resolved_at, excluded.resolved_at),
                    windows = excluded.windows, peak = excluded.peak, events = excluded.events",
            )
            .bind(&i.id)
            .bind(&i.rule)
            .bind(i.key_type.as_str())
            .bind(&i.key)
            .bind(i.severity.as_str())
            .bind(rank(i.severity))
            .bind(i.status.as_str())
            .bind(i.opened_at)
            .bind(i.updated_at)
            .bind(i.resolved_at)
            .bind(i64::try_from(i.windows).unwrap_or(i64::MAX))
            .bind(i.peak)
            .bind(i64::try_from(i.events).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        outbox::enqueue(&mut tx, notices, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_notices(
        &self,
        channel: &str,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        SqlStore::claim(self, channel, owner, now, until, limit).await
    }

    async fn settle_notice(
        &self,
        notice: &Outgoing,
        owner: &str,
        now: i64,
        outcome: &Settled,
    ) -> Result<bool> {
        SqlStore::settle(self, notice, owner, now, outcome).await
    }

    async fn pending_notices(&self, channel: &str) -> Result<u64> {
        SqlStore::pending(self, channel).await
    }

    async fn get(&self, id: &str) -> Result<Option<StoredIncident>> {
        Ok(self
            .select("WHERE id = $1", vec![Bind::Text(id.to_owned())])
            .await?
            .into_iter()
            .next())
    }

    async fn by_key(
        &self,
        key_type: KeyType,
        key: &str,
        limit: usize,
    ) -> Result<Vec<StoredIncident>> {
        self.select(
            "WHERE key_type = $1 AND key = $2 ORDER BY opened_at DESC, id LIMIT $3",
            vec![
                Bind::Text(key_type.as_str().to_owned()),
                Bind::Text(key.to_owned()),
                Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await
    }

    async fn between(&self, from: i64, to: i64, page: &Page) -> Result<Vec<StoredIncident>> {
        let limit = Bind::Int(i64::try_from(page.limit).unwrap_or(i64::MAX));
        let (after, order) = if page.newest_first {
            (
                "(opened_at < $3 OR (opened_at = $3 AND id < $4))",
                "opened_at DESC, id DESC",
            )
        } else {
            (
                "(opened_at > $3 OR (opened_at = $3 AND id > $4))",
                "opened_at, id",
            )
        };
        match &page.after {
            None => {
                self.select(
                    &format!("WHERE opened_at >= $1 AND opened_at < $2 ORDER BY {order} LIMIT $3"),
                    vec![Bind::Int(from), Bind::Int(to), limit],
                )
                .await
            }
            Some(c) => {
                self.select(
                    &format!(
                        "WHERE opened_at >= $1 AND opened_at < $2 AND {after} ORDER BY {order} LIMIT $5"
                    ),
                    vec![
                        Bind::Int(from),
                        Bind::Int(to),
                        Bind::Int(c.opened_at),
                        Bind::Text(c.id.clone()),
                        limit,
                    ],
                )
                .await
            }
        }
    }

    async fn prune_resolved(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM incidents WHERE status = 'resolved' AND resolved_at IS NOT NULL \
             AND resolved_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        self.prune_notices(before).await?;
        Ok(done.rows_affected())
    }

    async fn open(&self, min: Severity, limit: usize) -> Result<Vec<StoredIncident>> {
        self.select(
            "WHERE status <> 'resolved' AND severity_rank >= $1
             ORDER BY severity_rank DESC, opened_at, id LIMIT $2",
            vec![
                Bind::Int(rank(min)),
                Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await
    }

    async fn acknowledge(&self, id: &str, who: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE incidents SET acknowledged_by = $1, acknowledged_at = $2,
                status = CASE WHEN status = 'open' THEN 'acknowledged' ELSE status END
             WHERE id = $3",
        )
        .bind(who)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn resolve(&self, id: &str, who: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE incidents SET status = 'resolved', resolved_by = $1,
                resolved_at = COALESCE(resolved_at, $2)
             WHERE id = $3",
        )
        .bind(who)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_listed(
        &self,
        list: List,
        key_type: KeyType,
        key: &str,
        on: bool,
        who: &str,
        at: i64,
    ) -> Result<()> {
        if !matches!(key_type, KeyType::UserId | KeyType::ClientIp) {
            return Err(Error::Argument(
                "lists hold user ids and client addresses".to_owned(),
            ));
        }
        if on {
            sqlx::query(
                "INSERT INTO listed (list, key_type, key, added_by, added_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (list, key_type, key) DO NOTHING",
            )
            .bind(list.as_str())
            .bind(key_type.as_str())
            .bind(key)
            .bind(who)
            .bind(at)
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("DELETE FROM listed WHERE list = $1 AND key_type = $2 AND key = $3")
                .bind(list.as_str())
                .bind(key_type.as_str())
                .bind(key)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn listed(&self) -> Result<Vec<Listed>> {
        let rows = sqlx::query(
            "SELECT list, key_type, key, added_by, added_at FROM listed
             ORDER BY list, key_type, key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let list: String = r.try_get("list")?;
                Ok(Listed {
                    list: if list == "deny" {
                        List::Deny
                    } else {
                        List::Allow
                    },
                    key_type: r.try_get("key_type")?,
                    key: r.try_get("key")?,
                    added_by: r.try_get("added_by")?,
                    added_at: r.try_get("added_at")?,
                })
            })
            .collect()
    }
}

impl FromStr for List {
    type Err = String;

    fn from_str(s: &str) -> Result<List, String> {
        match s {
            "allow" => Ok(List::Allow),
            "deny" => Ok(List::Deny),
            _ => Err(format!("unknown list {s:?}: allow or deny")),
        }
    }
}

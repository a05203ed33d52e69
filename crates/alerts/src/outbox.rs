//! The notification outbox: each notice (one channel's message about one opening or
//! escalation) is written in the same transaction as the change it tells of, once — a notice
//! already there (the same incident, kind, severity and channel) is kept as it is, so a change
//! detected twice (a restart replaying from a checkpoint, two processes briefly owning one
//! partition) is notified once. A sender claims due notices for a lease with one conditional
//! update per notice, so two senders never both hold one; it settles the notice as sent, due
//! again later (a retry) or given up. A sender that dies leaves its claims to expire, and any
//! other sender (or itself, restarted) sends them then: a notice is lost only when its change
//! could not be stored, and sent twice only when a sender dies between the channel's
//! acceptance and the settling.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Result, SqlStore};

/// One channel's message about one opening or escalation, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The incident's id.
    pub incident_id: String,
    /// `incident.opened` or `incident.escalated`.
    pub kind: String,
    /// The severity it opened or escalated to.
    pub severity: String,
    /// The channel's name.
    pub channel: String,
    /// The e-mail subject (other channels: empty).
    pub subject: String,
    /// What is sent: the request body, or the e-mail's text.
    pub body: String,
}

/// A notice claimed by a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The notice.
    pub notice: Outgoing,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The channel took it.
    Sent,
    /// Try again from `due_at` (µs).
    Retry {
        /// When.
        due_at: i64,
        /// Why the attempt failed.
        error: String,
    },
    /// Given up.
    Failed {
        /// Why.
        error: String,
    },
}

/// The outbox's table.
pub(crate) const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS outbox (
        incident_id TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
        channel TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
        created_at BIGINT NOT NULL, due_at BIGINT NOT NULL, attempts BIGINT NOT NULL,
        claimed_by TEXT, claimed_until BIGINT, sent_at BIGINT, failed_at BIGINT, error TEXT,
        PRIMARY KEY (incident_id, kind, severity, channel))",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (channel, due_at)",
];

/// The conditions of a notice a sender may claim at `$now`.
const CLAIMABLE: &str = "sent_at IS NULL AND failed_at IS NULL \
    AND (claimed_until IS NULL OR claimed_until <= $now)";

/// Writes notices, each once, within a transaction.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    notices: &[Outgoing],
    now: i64,
) -> Result<()> {
    for n in notices {
        sqlx::query(
            "INSERT INTO outbox (incident_id, kind, severity, channel, subject, body,
                created_at, due_at, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)
             ON CONFLICT (incident_id, kind, severity, channel) DO NOTHING",
        )
        .bind(&n.incident_id)
        .bind(&n.kind)
        .bind(&n.severity)
        .bind(&n.channel)
        .bind(&n.subject)
        .bind(&n.body)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn outgoing(row: &AnyRow, channel: &str) -> Result<Claimed> {
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Claimed {
        notice: Outgoing {
            incident_id: row.try_get("incident_id")?,
            kind: row.try_get("kind")?,
            severity: row.try_get("severity")?,
            channel: channel.to_owned(),
            subject: row.try_get("subject")?,
            body: row.try_get("body")?,
        },
        attempts: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
    })
}

impl SqlStore {
    /// Claims up to `limit` of `channel`'s notices due at `now` (µs) for `owner` until
    /// `until`, oldest due first; each claim counts as an attempt.
    pub(crate) async fn claim(
        &self,
        channel: &str,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>> {
        let candidates = sqlx::query(&format!(
            "SELECT incident_id, kind, severity, subject, body, attempts FROM outbox
             WHERE channel = $1 AND due_at <= $2 AND {}
             ORDER BY due_at, created_at LIMIT $3",
            CLAIMABLE.replace("$now", "$2")
        ))
        .bind(channel)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::new();
        for row in &candidates {
            let c = outgoing(row, channel)?;
            // The claim holds only when nobody took the notice since the look.
            let done = sqlx::query(&format!(
                "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1
                 WHERE incident_id = $3 AND kind = $4 AND severity = $5 AND channel = $6
                    AND {}",
                CLAIMABLE.replace("$now", "$7")
            ))
            .bind(owner)
            .bind(until)
            .bind(&c.notice.incident_id)
            .bind(&c.notice.kind)
            .bind(&c.notice.severity)
            .bind(channel)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(c);
            }
        }
        Ok(claimed)
    }

    /// Settles a notice `owner` claimed; false when the claim was no longer `owner`'s.
    pub(crate) async fn settle(
        &self,
        notice: &Outgoing,
        owner: &str,
        now: i64,
        outcome: &Settled,
    ) -> Result<bool> {
        let (set, error, at) = match outcome {
            Settled::Sent => ("sent_at = $1", None, now),
            Settled::Retry { due_at, error } => ("due_at = $1", Some(error.as_str()), *due_at),
            Settled::Failed { error } => ("failed_at = $1", Some(error.as_str()), now),
        };
        let done = sqlx::query(&format!(
            "UPDATE outbox SET {set}, error = $2, claimed_by = NULL, claimed_until = NULL
             WHERE incident_id = $3 AND kind = $4 AND severity = $5 AND channel = $6
                AND claimed_by = $7 AND sent_at IS NULL AND failed_at IS NULL"
        ))
        .bind(at)
        .bind(error)
        .bind(&notice.incident_id)
        .bind(&notice.kind)
        .bind(&notice.severity)
        .bind(&notice.channel)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notices of `channel` neither sent nor given up.
    pub(crate) async fn pending(&self, channel: &str) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox
             WHERE channel = $1 AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes the notices settled before `before` (µs).
    pub(crate) async fn prune_notices(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE COALESCE(sent_at, failed_at) IS NOT NULL
                AND COALESCE(sent_at, failed_at) < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

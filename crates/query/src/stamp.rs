//! The marts' stamp: which `events` and `bot_flags` versions, in which layout, the marts of
//! a zone reflect, and so whether a report may read them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono_tz::Tz;

use crate::columns::Columns;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::udf::parse_zone;
use shoplake_lake::TableName;

/// The layout of the marts, stamped beside the `events` version: a release that changes what
/// any mart holds raises it, so marts written by an older release are never read (and are
/// rebuilt by the next refresh). 3: humans only (flagged user-days left out), stamped with the
/// `bot_flags` version too. 4: refreshed incrementally: the additive marts hold signed
/// changes, `mart_items` rows carry a weight, the users' and sessions' state is kept, and
/// `mart_daily` stamps every other mart's version.
pub const FORMAT: i64 = 4;

/// The marts and state tables `mart_daily` stamps the versions of.
pub const STAMPED: [TableName; 6] = [
    TableName::MartBrands,
    TableName::MartCategories,
    TableName::MartCategoryVisitors,
    TableName::MartItems,
    TableName::MartUserState,
    TableName::MartSessionState,
];

/// The stamp of `mart_daily`'s `marts_versions`: each stamped table's version.
pub fn versions_json(versions: &BTreeMap<String, i64>) -> String {
    serde_json::to_string(versions).unwrap_or_default()
}

/// Reads a `marts_versions` stamp (`None`: not one).
pub fn parse_versions(s: &str) -> Option<BTreeMap<String, i64>> {
    serde_json::from_str(s).ok()
}

/// The zones the marts hold: UTC, plus every zone already in `mart_daily`, plus `extra`.
pub async fn zones(engine: &Engine, extra: &[Tz]) -> Result<Vec<Tz>> {
    let mut names: BTreeSet<String> = BTreeSet::from(["UTC".to_owned()]);
    let out = engine.run("SELECT DISTINCT zone FROM mart_daily").await?;
    for b in &out.batches {
        for z in Columns::new(b).str("zone")?.into_iter().flatten() {
            names.insert(z);
        }
    }
    for z in extra {
        names.insert(z.name().to_owned());
    }
    names
        .iter()
        .map(|n| parse_zone(n).map_err(Error::Argument))
        .collect()
}

/// What the marts of a zone reflect, as `mart_daily` stamps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The `events` version.
    pub events_version: i64,
    /// The `bot_flags` version (-1: there was no such table).
    pub flags_version: i64,
    /// Each stamped mart's and state table's version.
    pub marts: BTreeMap<String, i64>,
}

/// The stamp of a zone's marts in this release's layout, `None` when the zone has none (or
/// its rows disagree: one refresh writes them all at once).
pub async fn stamp(engine: &Engine, tz: Tz) -> Result<Option<Stamp>> {
    let daily = engine.context().table_provider("mart_daily").await?;
    if daily.schema().field_with_name("marts_versions").is_err() {
        return Ok(None);
    }
    let out = engine
        .run(&format!(
            "SELECT MIN(events_version) AS lo, MAX(events_version) AS hi,
                    MIN(marts_format) AS f_lo, MAX(marts_format) AS f_hi,
                    MIN(flags_version) AS b_lo, MAX(flags_version) AS b_hi,
                    MIN(marts_versions) AS m_lo, MAX(marts_versions) AS m_hi
             FROM mart_daily WHERE zone = '{}'",
            tz.name()
        ))
        .await?;
    let Some(b) = out.batches.first() else {
        return Ok(None);
    };
    let c = Columns::new(b);
    let same = |lo: &str, hi: &str| -> Result<Option<i64>> {
        let (lo, hi) = (c.i64(lo)?.first().copied().flatten(), c.i64(hi)?);
        Ok(lo.filter(|v| hi.first().copied().flatten() == Some(*v)))
    };
    let (Some(events_version), Some(FORMAT), Some(flags_version)) = (
        same("lo", "hi")?,
        same("f_lo", "f_hi")?,
        same("b_lo", "b_hi")?,
    ) else {
        return Ok(None);
    };
    let texts = (c.str("m_lo")?, c.str("m_hi")?);
    let (Some(Some(lo)), Some(Some(hi))) = (texts.0.first(), texts.1.first()) else {
        return Ok(None);
    };
    if lo != hi {
        return Ok(None);
    }
    Ok(parse_versions(lo).map(|marts| Stamp {
        events_version,
        flags_version,
        marts,
    }))
}

/// Whether the marts of a zone reflect the `events` and `bot_flags` versions the engine sees,
/// in this release's layout, and every stamped mart is at the version the stamp names (a
/// refresh cut short, or one still writing, leaves them apart).
pub async fn fresh(engine: &Engine, tz: Tz) -> Result<bool> {
    let Some(version) = engine.events_version() else {
        return Ok(false);
    };
    let Some(stamp) = stamp(engine, tz).await? else {
        return Ok(false);
    };
    if stamp.events_version != version
        || stamp.flags_version != engine.bot_flags_version().unwrap_or(-1)
    {
        return Ok(false);
    }
    for t in STAMPED {
        if engine.table_version(t).await? != stamp.marts.get(t.as_str()).copied() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The marts of a zone a little behind `events`: the snapshot they reflect, and how far
/// behind it is.
pub struct Behind {
    /// A session that reads `events`, `bot_flags`, `mart_daily` and every stamped mart at
    /// the versions the stamp names: a report from it is exact for that `events` version.
    pub engine: Engine,
    /// The `events` version it reports.
    pub events_version: i64,
    /// When the oldest commit it lacks (of `events` or `bot_flags`) was written (`None`:
    /// the log no longer says).
    pub lacks_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// When the marts of a zone are consistent but behind the `events` or `bot_flags` the
/// engine sees (a refresh is due or running), a session over the snapshot they reflect;
/// `None` when the zone has no consistent marts, or they are not behind.
pub async fn behind(engine: &Engine, tz: Tz) -> Result<Option<Behind>> {
    let Some(latest_version) = engine.events_version() else {
        return Ok(None);
    };
    let Some(stamp) = stamp(engine, tz).await? else {
        return Ok(None);
    };
    // Live detection writes verdicts between deliveries: behind in either counts.
    let flags_version = engine.bot_flags_version().unwrap_or(-1);
    if stamp.events_version >= latest_version && stamp.flags_version >= flags_version {
        return Ok(None);
    }
    let Some(daily) = engine.table_version(TableName::MartDaily).await? else {
        return Ok(None);
    };
    let mut pinned: HashMap<TableName, i64> = HashMap::from([
        (TableName::Events, stamp.events_version),
        (TableName::MartDaily, daily),
    ]);
    if stamp.flags_version >= 0 {
        pinned.insert(TableName::BotFlags, stamp.flags_version);
    }
    for t in STAMPED {
        match stamp.marts.get(t.as_str()) {
            Some(v) => pinned.insert(t, *v),
            None => return Ok(None),
        };
    }
    let snapshot = engine.at_versions(pinned).await?;
    // The oldest commit the snapshot lacks, of either table.
    let (mut lacks_since, mut known) = (None::<chrono::DateTime<chrono::Utc>>, true);
    for (table, had, now) in [
        (TableName::Events, stamp.events_version, latest_version),
        (TableName::BotFlags, stamp.flags_version, flags_version),
    ] {
        if had < now {
            match engine.lake().commit_time(table, had + 1).await? {
                Some(t) => lacks_since = Some(lacks_since.map_or(t, |l| l.min(t))),
                // The log no longer says: too old to tell.
                None => known = false,
            }
        }
    }
    let lacks_since = lacks_since.filter(|_| known);
    Ok(Some(Behind {
        engine: snapshot,
        events_version: stamp.events_version,
        lacks_since,
    }))
}

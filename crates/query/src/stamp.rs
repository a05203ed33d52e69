//! The marts' stamp: which `events` and `bot_flags` versions, in which layout, the marts of
//! a zone reflect, and so whether a report may read them.

use std::collections::{BTreeMap, BTreeSet};

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

/// Whether the marts of a zone reflect the `events` and `bot_flags` versions the engine sees,
/// in this release's layout, and every stamped mart is at the version the stamp names (a
/// refresh cut short, or one still writing, leaves them apart).
pub async fn fresh(engine: &Engine, tz: Tz) -> Result<bool> {
    let Some(version) = engine.events_version() else {
        return Ok(false);
    };
    let daily = engine.context().table_provider("mart_daily").await?;
    if daily.schema().field_with_name("marts_versions").is_err() {
        return Ok(false);
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
        return Ok(false);
    };
    let c = Columns::new(b);
    let first = |name: &str| -> Result<Option<i64>> { Ok(c.i64(name)?.first().copied().flatten()) };
    let flags = Some(engine.bot_flags_version().unwrap_or(-1));
    let stamped = first("lo")? == Some(version)
        && first("hi")? == Some(version)
        && first("f_lo")? == Some(FORMAT)
        && first("f_hi")? == Some(FORMAT)
        && first("b_lo")? == flags
        && first("b_hi")? == flags;
    let texts = (c.str("m_lo")?, c.str("m_hi")?);
    let (Some(Some(lo)), Some(Some(hi))) = (texts.0.first(), texts.1.first()) else {
        return Ok(false);
    };
    if !stamped || lo != hi {
        return Ok(false);
    }
    let Some(want) = parse_versions(lo) else {
        return Ok(false);
    };
    for t in STAMPED {
        if engine.table_version(t).await? != want.get(t.as_str()).copied() {
            return Ok(false);
        }
    }
    Ok(true)
}

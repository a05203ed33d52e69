//! The marts' stamp: which `events` and `bot_flags` versions, in which layout, the marts of
//! a zone reflect, and so whether a report may read them.

use std::collections::BTreeSet;

use chrono_tz::Tz;

use crate::columns::Columns;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::udf::parse_zone;

/// The layout of the marts, stamped beside the `events` version: a release that changes what
/// any mart holds raises it, so marts written by an older release are never read (and are
/// rebuilt by the next refresh). 3: humans only (flagged user-days left out), stamped with the
/// `bot_flags` version too.
pub const FORMAT: i64 = 3;

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
/// in this release's layout.
pub async fn fresh(engine: &Engine, tz: Tz) -> Result<bool> {
    let Some(version) = engine.events_version() else {
        return Ok(false);
    };
    let daily = engine.context().table_provider("mart_daily").await?;
    if daily.schema().field_with_name("flags_version").is_err() {
        return Ok(false);
    }
    let out = engine
        .run(&format!(
            "SELECT MIN(events_version) AS lo, MAX(events_version) AS hi,
                    MIN(marts_format) AS f_lo, MAX(marts_format) AS f_hi,
                    MIN(flags_version) AS b_lo, MAX(flags_version) AS b_hi
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
    Ok(first("lo")? == Some(version)
        && first("hi")? == Some(version)
        && first("f_lo")? == Some(FORMAT)
        && first("f_hi")? == Some(FORMAT)
        && first("b_lo")? == flags
        && first("b_hi")? == flags)
}

//! `bot_flags`: the bot verdicts of real-time detection, as the batch side reads them. A row
//! says a user was judged a bot on a UTC day by an incident of a rule; "humans only" reports
//! leave out every event of a flagged user-day. Allow-listing a user removes its rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, Int64Type};
use deltalake::protocol::SaveMode;

use crate::error::{Error, Result};
use crate::lake::{Lake, TableName};

/// One bot verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BotFlag {
    /// The user judged a bot.
    pub user_id: i64,
    /// The UTC day, as days since 1970-01-01.
    pub day: i32,
    /// The rule that fired.
    pub rule: String,
    /// The incident.
    pub incident_id: String,
    /// When the verdict was written, µs.
    pub flagged_at: i64,
}

impl BotFlag {
    /// The UTC day of a time in µs, as days since 1970-01-01.
    pub fn day_of(micros: i64) -> i32 {
        micros.div_euclid(86_400_000_000) as i32
    }
}

impl Lake {
    /// Appends bot verdicts to `bot_flags` (created when missing) in one commit, leaving out
    /// those already there (the same incident and day): writing a verdict twice, after a
    /// restart or a second `detect --flag` over the same days, changes nothing. Returns how
    /// many rows were added.
    pub async fn add_bot_flags(&self, flags: &[BotFlag]) -> Result<usize> {
        if flags.is_empty() {
            return Ok(0);
        }
        let table = self.ensure(TableName::BotFlags).await?;
        let mut have = std::collections::HashSet::new();
        for b in crate::read::read_all(&table, &["incident_id", "day"]).await? {
            let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            let days = b.column(1).as_primitive::<Date32Type>();
            for i in 0..b.num_rows() {
                have.insert((ids.value(i).to_owned(), days.value(i)));
            }
        }
        let mut fresh: Vec<&BotFlag> = Vec::new();
        for f in flags {
            if have.insert((f.incident_id.clone(), f.day)) {
                fresh.push(f);
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                fresh.iter().map(|f| f.user_id),
            )),
            Arc::new(Date32Array::from_iter_values(fresh.iter().map(|f| f.day))),
            Arc::new(StringArray::from_iter_values(
                fresh.iter().map(|f| f.rule.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                fresh.iter().map(|f| f.incident_id.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(fresh.iter().map(|f| f.flagged_at))
                    .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(TableName::BotFlags.schema(), columns)?;
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await
            .map_err(Error::delta("writing bot_flags"))?;
        Ok(fresh.len())
    }

    /// Removes every flag of these users (they were allow-listed); returns how many rows went.
    pub async fn remove_bot_flags(&self, users: &[i64]) -> Result<usize> {
        if users.is_empty() {
            return Ok(0);
        }
        let Some(table) = self.table(TableName::BotFlags).await? else {
            return Ok(0);
        };
        let wanted: std::collections::HashSet<i64> = users.iter().copied().collect();
        let mut found = std::collections::BTreeSet::new();
        let mut rows = 0;
        for b in crate::read::read_all(&table, &["user_id"]).await? {
            let ids = b.column(0).as_primitive::<Int64Type>();
            for i in 0..ids.len() {
                if ids.is_valid(i) && wanted.contains(&ids.value(i)) {
                    rows += 1;
                    found.insert(ids.value(i));
                }
            }
        }
        if rows == 0 {
            return Ok(0);
        }
        let list: Vec<String> = found.iter().map(i64::to_string).collect();
        table
            .delete()
            .with_predicate(format!("user_id IN ({})", list.join(", ")))
            .await
            .map_err(Error::delta("removing bot flags"))?;
        Ok(rows)
    }

    /// Every flag, for tools and tests (the query engine reads the table in reports).
    pub async fn bot_flags(&self) -> Result<Vec<BotFlag>> {
        let batches = self
            .read_table(
                TableName::BotFlags,
                &["user_id", "day", "rule", "incident_id", "flagged_at"],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let users = b.column(0).as_primitive::<Int64Type>();
            let days = b.column(1).as_primitive::<Date32Type>();
            let rules = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Utf8)?;
            let ids = arrow::compute::cast(b.column(3), &arrow::datatypes::DataType::Utf8)?;
            let at = b
                .column(4)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                out.push(BotFlag {
                    user_id: users.value(i),
                    day: days.value(i),
                    rule: rules.as_string::<i32>().value(i).to_owned(),
                    incident_id: ids.as_string::<i32>().value(i).to_owned(),
                    flagged_at: at.value(i),
                });
            }
        }
        Ok(out)
    }
}

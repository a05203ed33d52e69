//! The lake's events read back as events, one UTC day at a time in event-time order: the
//! input of detection over history (`shoplake detect` without `--input`).

use arrow::array::{Array, Date32Array, RecordBatch};
use shoplake_events::Event;
use shoplake_events::time::{self, MICROS_PER_DAY};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// The first and last `event_date` in the lake (days since the epoch), `None` when empty.
pub async fn event_days(engine: &Engine) -> Result<Option<(i64, i64)>> {
    let out = engine
        .query("SELECT MIN(event_date) AS lo, MAX(event_date) AS hi FROM events")
        .await?;
    let Some(b) = out.batches.first() else {
        return Ok(None);
    };
    let col = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<Date32Array>()
            .filter(|a| !a.is_empty() && !a.is_null(0))
            .map(|a| i64::from(a.value(0)))
    };
    Ok(col(0).zip(col(1)))
}

/// One UTC day's events (days since the epoch) in event-time order.
pub async fn day_events(engine: &Engine, day: i64) -> Result<Vec<Event>> {
    let date = time::format_timestamp(day * MICROS_PER_DAY);
    let out = engine
        .query(&format!(
            "SELECT event_time, event_type, product_id, category_id, category_code, brand, \
             price, user_id, user_session, client_ip, user_agent, ingest_time, event_id FROM events \
             WHERE event_date = DATE '{}' ORDER BY event_time",
            &date[..10]
        ))
        .await?;
    let mut events = Vec::with_capacity(out.rows());
    let schema = shoplake_events::arrow::event_schema();
    for b in &out.batches {
        // The engine reads strings as views: cast back to the event schema's types.
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let c = b
                    .column_by_name(f.name())
                    .ok_or_else(|| corrupt(format!("events has no column {}", f.name())))?;
                Ok(arrow::compute::cast(c, f.data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let decoded = shoplake_events::arrow::from_record_batch(&batch)
            .map_err(|e| corrupt(format!("events of {}: {e}", &date[..10])))?;
        events.extend(decoded);
    }
    Ok(events)
}

fn corrupt(what: String) -> Error {
    shoplake_lake::Error::Corrupt(what).into()
}

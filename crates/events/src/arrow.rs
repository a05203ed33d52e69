//! The event's Arrow schema, and conversion of events to and from `RecordBatch`es.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::event::{Event, EventId, EventRef, EventType, Price};

/// Precision of the `price` column: `Decimal(12, 2)`.
pub const PRICE_PRECISION: u8 = 12;
/// Scale of the `price` column.
pub const PRICE_SCALE: i8 = 2;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_time", timestamp(), false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("product_id", DataType::Int64, false),
        Field::new("category_id", DataType::Int64, false),
        Field::new("category_code", DataType::Utf8, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new(
            "price",
            DataType::Decimal128(PRICE_PRECISION, PRICE_SCALE),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("user_session", DataType::Utf8, true),
        Field::new("client_ip", DataType::Utf8, true),
        Field::new("user_agent", DataType::Utf8, true),
        Field::new("ingest_time", timestamp(), true),
        Field::new("event_id", DataType::Utf8, false),
    ]))
});

/// The Arrow schema of events: the nine REES46 columns, the network fields, the ingest time
/// and the `event_id` (32 hex digits).
pub fn event_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Converts events to a `RecordBatch` with [`event_schema`].
pub fn to_record_batch(events: &[Event]) -> Result<RecordBatch> {
    let ids: Vec<EventId> = events.iter().map(Event::event_id).collect();
    to_record_batch_with_ids(events, &ids)
}

/// Like [`to_record_batch`], with the events' ids already computed (`ids[i]` is
/// `events[i].event_id()`).
pub fn to_record_batch_with_ids(events: &[Event], ids: &[EventId]) -> Result<RecordBatch> {
    if ids.len() != events.len() {
        return Err(Error::Arrow(format!(
            "{} ids for {} events",
            ids.len(),
            events.len()
        )));
    }
    let mut columns = EventColumns::with_capacity(events.len());
    for (e, id) in events.iter().zip(ids) {
        columns.push_event(e, *id);
    }
    columns.finish()
}

/// Events gathered column by column with their ids, for a `RecordBatch` of [`event_schema`]:
/// a decoded row goes in (as an [`EventRef`] borrowing the decoder's buffer) without an
/// [`Event`] being allocated.
pub struct EventColumns {
    time: Vec<i64>,
    kind: Vec<EventType>,
    product: Vec<i64>,
    category: Vec<i64>,
    code: StringBuilder,
    brand: StringBuilder,
    price: Vec<i64>,
    user: Vec<i64>,
    session: StringBuilder,
    ip: StringBuilder,
    agent: StringBuilder,
    ingest: TimestampMicrosecondBuilder,
    ids: Vec<EventId>,
    text: String,
}

impl std::fmt::Debug for EventColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventColumns")
            .field("rows", &self.len())
            .finish()
    }
}

impl EventColumns {
    /// Empty columns with room for `n` rows.
    pub fn with_capacity(n: usize) -> EventColumns {
        EventColumns {
            time: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            product: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            code: StringBuilder::with_capacity(n, n * 24),
            brand: StringBuilder::with_capacity(n, n * 8),
            price: Vec::with_capacity(n),
            user: Vec::with_capacity(n),
            session: StringBuilder::with_capacity(n, n * 36),
            ip: StringBuilder::new(),
            agent: StringBuilder::new(),
            ingest: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            ids: Vec::with_capacity(n),
            text: String::new(),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// The rows' event times (µs), in order.
    pub fn times(&self) -> &[i64] {
        &self.time
    }

    /// The rows' ids, in order.
    pub fn ids(&self) -> &[EventId] {
        &self.ids
    }

    /// Adds a row; `id` is `e.event_id()`.
    pub fn push(&mut self, e: &EventRef<'_>, id: EventId) {
        self.push_with_ingest(e, None, id);
    }

    /// Adds an event (with its ingest time); `id` is `e.event_id()`.
    pub fn push_event(&mut self, e: &Event, id: EventId) {
        self.push_with_ingest(&e.as_event_ref(), e.ingest_time, id);
    }

    fn push_with_ingest(&mut self, e: &EventRef<'_>, ingest: Option<i64>, id: EventId) {
        self.time.push(e.event_time);
        self.kind.push(e.event_type);
        self.product.push(e.product_id);
        self.category.push(e.category_id);
        self.code.append_option(e.category_code);
        self.brand.append_option(e.brand.as_deref());
        self.price.push(e.price.cents());
        self.user.push(e.user_id);
        self.session.append_option(e.user_session);
        match e.client_ip {
            Some(a) => {
                use std::fmt::Write as _;
                self.text.clear();
                let _ = write!(self.text, "{a}");
                self.ip.append_value(&self.text);
            }
            None => self.ip.append_null(),
        }
        self.agent.append_option(e.user_agent);
        self.ingest.append_option(ingest);
        self.ids.push(id);
    }

    /// The rows as a `RecordBatch` of [`event_schema`].
    pub fn finish(mut self) -> Result<RecordBatch> {
        let n = self.len();
        let mut kind = StringBuilder::with_capacity(n, n * 5);
        for k in &self.kind {
            kind.append_value(k.as_str());
        }
        let price = Decimal128Array::from_iter_values(self.price.iter().map(|&c| i128::from(c)))
            .with_precision_and_scale(PRICE_PRECISION, PRICE_SCALE)?;
        let mut id = StringBuilder::with_capacity(n, n * 32);
        for event_id in &self.ids {
            let hex = event_id.to_hex();
            // Hex digits are ASCII, so always UTF-8.
            id.append_value(std::str::from_utf8(&hex).unwrap_or_default());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(self.time).with_timezone("UTC")),
            Arc::new(kind.finish()),
            Arc::new(Int64Array::from(self.product)),
            Arc::new(Int64Array::from(self.category)),
            Arc::new(self.code.finish()),
            Arc::new(self.brand.finish()),
            Arc::new(price),
            Arc::new(Int64Array::from(self.user)),
            Arc::new(self.session.finish()),
            Arc::new(self.ip.finish()),
            Arc::new(self.agent.finish()),
            Arc::new(self.ingest.finish()),
            Arc::new(id.finish()),
        ];
        Ok(RecordBatch::try_new(event_schema(), columns)?)
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a T>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => c
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or_else(|| Error::Arrow(format!("column {name} has type {}", c.data_type()))),
    }
}

/// A column of `batch` by name, as the array type `T`; an error when it is missing or of
/// another type.
pub fn required_column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    column(batch, name)?.ok_or_else(|| Error::Arrow(format!("column {name} is missing")))
}

fn string(a: Option<&StringArray>, i: usize) -> Option<String> {
    a.filter(|a| a.is_valid(i)).map(|a| a.value(i).to_owned())
}

/// Converts a `RecordBatch` back to events. Columns are found by name; extra columns (such as
/// a partition column) are ignored, and the network fields may be absent.
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Event>> {
    let time = required_column::<TimestampMicrosecondArray>(batch, "event_time")?;
    let kind = required_column::<StringArray>(batch, "event_type")?;
    let product = required_column::<Int64Array>(batch, "product_id")?;
    let category = required_column::<Int64Array>(batch, "category_id")?;
    let code = column::<StringArray>(batch, "category_code")?;
    let brand = column::<StringArray>(batch, "brand")?;
    let price = required_column::<Decimal128Array>(batch, "price")?;
    if price.scale() != PRICE_SCALE {
        return Err(Error::Arrow(format!(
            "price has scale {}, expected 2",
            price.scale()
        )));
    }
    let user = required_column::<Int64Array>(batch, "user_id")?;
    let session = column::<StringArray>(batch, "user_session")?;
    let ip = column::<StringArray>(batch, "client_ip")?;
    let agent = column::<StringArray>(batch, "user_agent")?;
    let ingest = column::<TimestampMicrosecondArray>(batch, "ingest_time")?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let event_type = EventType::parse(kind.value(i)).ok_or_else(|| {
            Error::Arrow(format!("row {i}: unknown event_type {:?}", kind.value(i)))
        })?;
        let cents = i64::try_from(price.value(i))
            .map_err(|_| Error::Arrow(format!("row {i}: price out of range")))?;
        let client_ip = match string(ip, i) {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| Error::Arrow(format!("row {i}: client_ip {s:?} is not an IP")))?,
            ),
        };
        out.push(Event {
            event_time: time.value(i),
            event_type,
            product_id: product.value(i),
            category_id: category.value(i),
            category_code: string(code, i),
            brand: string(brand, i),
            price: Price(cents),
            user_id: user.value(i),
            user_session: string(session, i),
            client_ip,
            user_agent: string(agent, i),
            ingest_time: ingest.filter(|a| a.is_valid(i)).map(|a| a.value(i)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_arrow() {
        let e = Event {
            event_time: 1_569_888_004_000_000,
            event_type: EventType::Purchase,
            product_id: 1,
            category_id: i64::MAX,
            category_code: Some("electronics.smartphone".into()),
            brand: None,
            price: Price(257_407),
            user_id: 3,
            user_session: None,
            client_ip: Some("2001:db8::1".parse().unwrap()),
            user_agent: Some("curl/8".into()),
            ingest_time: Some(5),
        };
        let batch = to_record_batch(&[e.clone(), e.clone()]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let id = batch
            .column_by_name("event_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(id.value(0), e.event_id().to_string());
        assert_eq!(from_record_batch(&batch).unwrap(), vec![e.clone(), e]);
    }
}

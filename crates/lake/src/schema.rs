//! The lake tables' Arrow schemas.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The partition column of `events`: the UTC date of `event_time`.
pub const EVENT_DATE: &str = "event_date";

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let base = shoplake_events::arrow::event_schema();
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(EVENT_DATE, DataType::Date32, false));
    Arc::new(Schema::new(fields))
});

static QUARANTINE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("import_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("quarantined_at", timestamp(), false),
    ]))
});

static IMPORTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("import_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, true),
        Field::new("started_at", timestamp(), false),
        Field::new("finished_at", timestamp(), false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("rows_accepted", DataType::Int64, false),
        Field::new("rows_rejected", DataType::Int64, false),
        Field::new("duplicates", DataType::Int64, false),
        Field::new("seconds", DataType::Float64, false),
        Field::new("profile", DataType::Utf8, false),
    ]))
});

fn counts(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field::new(*n, DataType::Int64, true))
        .collect()
}

static MART_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
    ];
    fields.extend(counts(&[
        "events_version",
        "visitors",
        "sessions",
        "events",
        "new_visitors",
        "session_starts",
        "cart_sessions",
        "abandoned_sessions",
        "newest_event",
    ]));
    Arc::new(Schema::new(fields))
});

static MART_FUNNEL: LazyLock<SchemaRef> = LazyLock::new(|| {
    let keep = [
        "event_time",
        "event_type",
        "product_id",
        "category_code",
        "brand",
        "price",
        "user_id",
        EVENT_DATE,
    ];
    let events = EVENTS.clone();
    Arc::new(Schema::new(
        keep.iter()
            .filter_map(|n| events.field_with_name(n).ok())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
});

/// `mart_funnel`: the `cart` and `purchase` events (about 4 % of all), with the columns the
/// abandoned-items report reads, named and typed as in `events`.
pub fn mart_funnel() -> SchemaRef {
    MART_FUNNEL.clone()
}

static MART_BRANDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
    ];
    fields.extend(counts(&[
        "events",
        "views",
        "carts",
        "purchases",
        "revenue_cents",
        "view_price_cents",
    ]));
    Arc::new(Schema::new(fields))
});

static MART_CATEGORIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("hour", DataType::Int64, true),
        Field::new("level", DataType::Int64, true),
        Field::new("category", DataType::Utf8, true),
    ];
    fields.extend(counts(&["views", "carts", "purchases", "revenue_cents"]));
    fields.push(Field::new("users", DataType::Binary, true));
    Arc::new(Schema::new(fields))
});

/// `mart_categories`: per report zone, local day, local hour, category level (1, 2, 3, or 0 for
/// the full code) and category at that level, the
/// categories report's sums and the set of users (a serialized Roaring bitmap), so distinct
/// visitors over any range and bucket are exact.
pub fn mart_categories() -> SchemaRef {
    MART_CATEGORIES.clone()
}

/// `mart_daily`: per report zone and local day, the visitors report's figures and the cart
/// sessions of the abandonment report, with the `events` version they reflect.
pub fn mart_daily() -> SchemaRef {
    MART_DAILY.clone()
}

/// `mart_brands`: per report zone, local day, brand and level-1 category, the brands report's
/// sums.
pub fn mart_brands() -> SchemaRef {
    MART_BRANDS.clone()
}

/// `events`: the event schema plus `event_date`.
pub fn events() -> SchemaRef {
    EVENTS.clone()
}

/// `quarantine`: refused rows with where they came from and why.
pub fn quarantine() -> SchemaRef {
    QUARANTINE.clone()
}

/// `imports`: one row per import, with its profile as JSON.
pub fn imports() -> SchemaRef {
    IMPORTS.clone()
}

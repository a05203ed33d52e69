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
        "marts_format",
        "visitors",
        "sessions",
        "events",
        "new_visitors",
        "session_starts",
        "cart_sessions",
        "abandoned_sessions",
        "newest_event",
        "flags_version",
    ]));
    fields.push(Field::new("marts_versions", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

static MART_ITEMS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("user_id", DataType::Int64, true),
        Field::new("product_id", DataType::Int64, true),
        Field::new("carted", DataType::Int64, true),
        Field::new("price_cents", DataType::Int64, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("category_code", DataType::Utf8, true),
        Field::new("prev_day", DataType::Date32, true),
        Field::new("next_purchase", DataType::Int64, true),
        Field::new("weight", DataType::Int64, true),
    ]))
});

/// `mart_items`: per report zone, local day, user and product with a `cart` that day: the
/// day's first cart (`carted` in micros since the epoch, its price in cents, brand and
/// category code), the previous local day with a cart of the same pair (`prev_day`), and the
/// first purchase of the pair at or after `carted` (`next_purchase`). The first cart of a
/// pair in a range of days is the row whose `prev_day` lies before the range, and it is
/// recovered within W exactly when `next_purchase <= carted + W`. Refreshes add rows with
/// `weight` 1 and take old ones away with `weight` -1: the live rows are the groups of equal
/// rows whose `SUM(weight) > 0`.
pub fn mart_items() -> SchemaRef {
    MART_ITEMS.clone()
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
    fields.extend(counts(&[
        "views",
        "carts",
        "purchases",
        "revenue_cents",
        "events",
    ]));
    Arc::new(Schema::new(fields))
});

static MART_CATEGORY_VISITORS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("level", DataType::Int64, true),
        Field::new("by", DataType::Utf8, true),
        Field::new("bucket", DataType::Int64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("prev_day", DataType::Date32, true),
        Field::new("visitors", DataType::Int64, true),
    ]))
});

/// `mart_category_visitors`: per report zone, category level, bucketing (`by`: `hour` of day
/// 0–23 or `weekday` 0 = Monday … 6), bucket, category at that level and local day: how many
/// distinct users were seen in that bucket and category that day whose previous such day was
/// `prev_day` (null: never before). The distinct visitors of a bucket and category over days
/// `[from, to]` are then a sum: the rows with `from <= day <= to` and `prev_day` null or
/// before `from`.
pub fn mart_category_visitors() -> SchemaRef {
    MART_CATEGORY_VISITORS.clone()
}

/// `mart_categories`: per report zone, local day, local hour, category level (1, 2, 3, or 0 for
/// the full code) and category at that level, the categories report's sums and its events.
/// Refreshes append signed changes: a cell's figures are the sums of its rows, and a cell
/// whose `events` sum to zero has none.
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

static BOT_FLAGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("incident_id", DataType::Utf8, false),
        Field::new("flagged_at", timestamp(), false),
    ]))
});

/// `bot_flags`: a user flagged as a bot on a UTC day by an incident of a rule, and when.
pub fn bot_flags() -> SchemaRef {
    BOT_FLAGS.clone()
}

/// `imports`: one row per import, with its profile as JSON.
pub fn imports() -> SchemaRef {
    IMPORTS.clone()
}

static MART_USER_STATE: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("run", DataType::Int64, true),
        Field::new("user_id", DataType::Int64, true),
        Field::new("gone", DataType::Boolean, true),
    ];
    fields.extend(counts(&["kind", "utc_day", "day", "hour"]));
    fields.push(Field::new("code", DataType::Utf8, true));
    fields.extend(counts(&["events", "at", "product_id", "cents"]));
    fields.push(Field::new("brand", DataType::Utf8, true));
    fields.push(Field::new("category_code", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

/// `mart_user_state`: what the marts need of each user's human events in a report zone, kept
/// so that a refresh recomputes only the users new rows or verdicts touch. A keyed table
/// (`shoplake_lake::keyed`) by `user_id`, one row per `kind`: 0 a (UTC day, local day) with
/// its `events` and first event time (`at`); 1 a (UTC day, local day, local hour, full
/// category `code`) with its `events`; 2 a cart (`at`, `product_id`, `cents`, `brand`,
/// `category_code`); 3 a purchase (`at`, `product_id`).
pub fn mart_user_state() -> SchemaRef {
    MART_USER_STATE.clone()
}

static MART_SESSION_STATE: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("zone", DataType::Utf8, true),
        Field::new("run", DataType::Int64, true),
        Field::new("user_session", DataType::Utf8, true),
        Field::new("gone", DataType::Boolean, true),
    ];
    fields.extend(counts(&[
        "user_id",
        "utc_day",
        "day",
        "events",
        "first",
        "carts",
        "purchases",
    ]));
    Arc::new(Schema::new(fields))
});

/// `mart_session_state`: per report zone and session, one row per (user, UTC day, local day)
/// of its human events: how many, the first one's time, and how many carts and purchases. A
/// keyed table by `user_session`.
pub fn mart_session_state() -> SchemaRef {
    MART_SESSION_STATE.clone()
}

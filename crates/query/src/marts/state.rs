//! The users' and sessions' state kept in the lake (`mart_user_state`, `mart_session_state`):
//! rows to [`UserState`] and [`SessionState`] and back, read by key through
//! `shoplake_lake::keyed`, and written whole by a full rebuild from one sorted scan, in runs
//! of bounded size.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use deltalake::DeltaTable;
use shoplake_lake::keyed::{self, Keys, Replacing};
use shoplake_lake::{Lake, TableName};

use super::contrib::{Cell, DayCart, Purchase, SessionPart, SessionState, UserDay, UserState};
use crate::columns::Columns;
use crate::error::{Error, Result};
use crate::folds::{Cart, CartRow};

/// The kinds of `mart_user_state` rows.
const DAY: i64 = 0;
const CELL: i64 = 1;
const CART: i64 = 2;
const PURCHASE: i64 = 3;

/// The columns of `mart_user_state` a read asks for (all but the partitions).
const USER_COLUMNS: [&str; 13] = [
    "user_id",
    "gone",
    "kind",
    "utc_day",
    "day",
    "hour",
    "code",
    "events",
    "at",
    "product_id",
    "cents",
    "brand",
    "category_code",
];

const SESSION_COLUMNS: [&str; 9] = [
    "user_session",
    "gone",
    "user_id",
    "utc_day",
    "day",
    "events",
    "first",
    "carts",
    "purchases",
];

/// Writes one run of a zone (the first of a full rebuild replaces the zone).
pub(crate) async fn write(
    t: DeltaTable,
    table: TableName,
    key: &str,
    zone: &str,
    run: i64,
    rows: &RecordBatch,
    replace_zone: bool,
) -> Result<DeltaTable> {
    let batch = with_partitions(table, zone, run, rows)?;
    let replacing = if replace_zone {
        Replacing::Zone(zone)
    } else {
        Replacing::Nothing
    };
    Ok(keyed::write_run(t, key, batch, replacing).await?)
}

/// Rows of a state table's own columns, with `zone` and `run` set and cast to its schema.
fn with_partitions(
    table: TableName,
    zone: &str,
    run: i64,
    rows: &RecordBatch,
) -> Result<RecordBatch> {
    Ok(keyed::in_run(&table.schema(), zone, run, rows)?)
}

/// The state of some users in a zone, as the newest runs hold it (users without state are
/// left out).
pub(crate) async fn load_users(
    lake: &Lake,
    zone: &str,
    users: &[i64],
) -> Result<HashMap<i64, UserState>> {
    let mut out: HashMap<i64, UserState> = HashMap::new();
    let Some(t) = lake.table(TableName::MartUserState).await? else {
        return Ok(out);
    };
    let keys = Keys::ints(users.to_vec());
    let rows = keyed::read_keys(&t, zone, "user_id", &keys, &USER_COLUMNS).await?;
    for b in &rows.batches {
        let c = Columns::new(b);
        let (user, kind, utc_day, day, hour) = (
            c.i64("user_id")?,
            c.i64("kind")?,
            c.i64("utc_day")?,
            c.i64("day")?,
            c.i64("hour")?,
        );
        let (code, events, at, product, cents) = (
            c.str("code")?,
            c.i64("events")?,
            c.i64("at")?,
            c.i64("product_id")?,
            c.i64("cents")?,
        );
        let (brand, category_code) = (c.str("brand")?, c.str("category_code")?);
        for i in 0..b.num_rows() {
            let Some(u) = user[i] else { continue };
            let state = out.entry(u).or_default();
            let utc_day = utc_day[i].unwrap_or_default() as i32;
            let day = day[i].unwrap_or_default() as i32;
            match kind[i] {
                Some(DAY) => state.days.push(UserDay {
                    utc_day,
                    day,
                    events: events[i].unwrap_or_default(),
                    first: at[i].unwrap_or_default(),
                }),
                Some(CELL) => state.cells.push(Cell {
                    utc_day,
                    day,
                    hour: hour[i].unwrap_or_default().clamp(0, 23) as u8,
                    code: code[i].clone().unwrap_or_default(),
                    events: events[i].unwrap_or_default(),
                }),
                Some(CART) => {
                    let row = CartRow {
                        at: at[i].unwrap_or_default(),
                        cents: cents[i].unwrap_or_default(),
                        brand: brand[i].as_deref(),
                        category_code: category_code[i].as_deref(),
                    };
                    state.keep_cart(product[i].unwrap_or_default(), utc_day, day, row);
                }
                Some(PURCHASE) => state.purchases.push(Purchase {
                    product: product[i].unwrap_or_default(),
                    utc_day,
                    at: at[i].unwrap_or_default(),
                }),
                other => {
                    return Err(Error::Argument(format!(
                        "mart_user_state holds a row of unknown kind {other:?}"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// The state of some sessions in a zone.
pub(crate) async fn load_sessions(
    lake: &Lake,
    zone: &str,
    sessions: &[String],
) -> Result<HashMap<String, SessionState>> {
    let mut out: HashMap<String, SessionState> = HashMap::new();
    let Some(t) = lake.table(TableName::MartSessionState).await? else {
        return Ok(out);
    };
    let keys = Keys::texts(sessions.to_vec());
    let rows = keyed::read_keys(&t, zone, "user_session", &keys, &SESSION_COLUMNS).await?;
    for b in &rows.batches {
        let c = Columns::new(b);
        let session = c.str("user_session")?;
        let (user, utc_day, day, events) = (
            c.i64("user_id")?,
            c.i64("utc_day")?,
            c.i64("day")?,
            c.i64("events")?,
        );
        let (first, carts, purchases) = (c.i64("first")?, c.i64("carts")?, c.i64("purchases")?);
        for i in 0..b.num_rows() {
            let Some(s) = session[i].clone() else {
                continue;
            };
            out.entry(s).or_default().parts.push(SessionPart {
                user: user[i].unwrap_or_default(),
                utc_day: utc_day[i].unwrap_or_default() as i32,
                day: day[i].unwrap_or_default() as i32,
                events: events[i].unwrap_or_default(),
                first: first[i].unwrap_or_default(),
                carts: carts[i].unwrap_or_default(),
                purchases: purchases[i].unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Column builders of `mart_user_state` rows.
#[derive(Default)]
struct UserRows {
    user: Vec<i64>,
    gone: Vec<Option<bool>>,
    kind: Vec<Option<i64>>,
    utc_day: Vec<Option<i64>>,
    day: Vec<Option<i64>>,
    hour: Vec<Option<i64>>,
    code: Vec<Option<String>>,
    events: Vec<Option<i64>>,
    at: Vec<Option<i64>>,
    product: Vec<Option<i64>>,
    cents: Vec<Option<i64>>,
    brand: Vec<Option<String>>,
    category_code: Vec<Option<String>>,
}

impl UserRows {
    #[expect(clippy::too_many_arguments, reason = "one row's columns")]
    fn push(
        &mut self,
        user: i64,
        kind: i64,
        utc_day: i32,
        day: i32,
        hour: Option<u8>,
        code: Option<&str>,
        events: Option<i64>,
        at: Option<i64>,
        product: Option<i64>,
        cart: Option<&Cart>,
    ) {
        self.user.push(user);
        self.gone.push(None);
        self.kind.push(Some(kind));
        self.utc_day.push(Some(i64::from(utc_day)));
        self.day.push(Some(i64::from(day)));
        self.hour.push(hour.map(i64::from));
        self.code.push(code.map(str::to_owned));
        self.events.push(events);
        self.at.push(at);
        self.product.push(product);
        self.cents.push(cart.map(|c| c.cents));
        self.brand.push(cart.and_then(|c| c.brand.clone()));
        self.category_code
            .push(cart.and_then(|c| c.category_code.clone()));
    }

    fn gone(&mut self, user: i64) {
        self.user.push(user);
        self.gone.push(Some(true));
        for v in [
            &mut self.kind,
            &mut self.utc_day,
            &mut self.day,
            &mut self.hour,
            &mut self.events,
            &mut self.at,
            &mut self.product,
            &mut self.cents,
        ] {
            v.push(None);
        }
        for v in [&mut self.code, &mut self.brand, &mut self.category_code] {
            v.push(None);
        }
    }

    /// A user's whole state, or a row marking them gone.
    fn add_state(&mut self, u: i64, s: &UserState) {
        let live = s.days.iter().any(|d| d.events > 0);
        if !live {
            self.gone(u);
            return;
        }
        for d in &s.days {
            self.push(
                u,
                DAY,
                d.utc_day,
                d.day,
                None,
                None,
                Some(d.events),
                Some(d.first),
                None,
                None,
            );
        }
        for c in &s.cells {
            self.push(
                u,
                CELL,
                c.utc_day,
                c.day,
                Some(c.hour),
                Some(&c.code),
                Some(c.events),
                None,
                None,
                None,
            );
        }
        for DayCart {
            product,
            utc_day,
            day,
            cart,
        } in &s.carts
        {
            self.push(
                u,
                CART,
                *utc_day,
                *day,
                None,
                None,
                None,
                Some(cart.at),
                Some(*product),
                Some(cart),
            );
        }
        for p in &s.purchases {
            self.push(
                u,
                PURCHASE,
                p.utc_day,
                0,
                None,
                None,
                None,
                Some(p.at),
                Some(p.product),
                None,
            );
        }
    }

    fn batch(self) -> Result<RecordBatch> {
        let int = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let text = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("user_id", Arc::new(Int64Array::from(self.user))),
            ("gone", Arc::new(BooleanArray::from(self.gone))),
            ("kind", int(self.kind)),
            ("utc_day", int(self.utc_day)),
            ("day", int(self.day)),
            ("hour", int(self.hour)),
            ("code", text(self.code)),
            ("events", int(self.events)),
            ("at", int(self.at)),
            ("product_id", int(self.product)),
            ("cents", int(self.cents)),
            ("brand", text(self.brand)),
            ("category_code", text(self.category_code)),
        ];
        Ok(RecordBatch::try_from_iter(columns)?)
    }
}

/// Appends a run holding the complete state of these users (a user with none is marked
/// gone).
pub(crate) async fn write_users(
    lake: &Lake,
    zone: &str,
    run: i64,
    users: &HashMap<i64, UserState>,
) -> Result<()> {
    let mut rows = UserRows::default();
    for (&u, s) in users {
        rows.add_state(u, s);
    }
    let batch = with_partitions(TableName::MartUserState, zone, run, &rows.batch()?)?;
    let t = lake.ensure(TableName::MartUserState).await?;
    keyed::write_run(t, "user_id", batch, Replacing::Nothing).await?;
    Ok(())
}

/// The columns of a session part in `mart_session_state` after its key and `gone`.
pub(crate) const SESSION_PART_COLUMNS: [&str; 7] = [
    "user_id",
    "utc_day",
    "day",
    "events",
    "first",
    "carts",
    "purchases",
];

/// Appends a run holding the complete state of these sessions.
pub(crate) async fn write_sessions(
    lake: &Lake,
    zone: &str,
    run: i64,
    sessions: &HashMap<String, SessionState>,
) -> Result<()> {
    let mut key = Vec::new();
    let mut gone = Vec::new();
    let mut cols: [Vec<Option<i64>>; 7] = Default::default();
    for (s, state) in sessions {
        let live: Vec<&SessionPart> = state.parts.iter().filter(|p| p.events > 0).collect();
        if live.is_empty() {
            key.push(s.clone());
            gone.push(Some(true));
            cols.iter_mut().for_each(|c| c.push(None));
            continue;
        }
        for p in live {
            key.push(s.clone());
            gone.push(None);
            let values = [
                p.user,
                i64::from(p.utc_day),
                i64::from(p.day),
                p.events,
                p.first,
                p.carts,
                p.purchases,
            ];
            for (c, v) in cols.iter_mut().zip(values) {
                c.push(Some(v));
            }
        }
    }
    let names = SESSION_PART_COLUMNS;
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("user_session", Arc::new(StringArray::from(key))),
        ("gone", Arc::new(BooleanArray::from(gone))),
    ];
    for (name, c) in names.into_iter().zip(cols) {
        columns.push((name, Arc::new(Int64Array::from(c))));
    }
    let rows = RecordBatch::try_from_iter(columns)?;
    let batch = with_partitions(TableName::MartSessionState, zone, run, &rows)?;
    let t = lake.ensure(TableName::MartSessionState).await?;
    keyed::write_run(t, "user_session", batch, Replacing::Nothing).await?;
    Ok(())
}

/// Keeps a state table's zone at a bounded number of runs: past `MAX_RUNS`, every run but the
/// oldest is merged into one. Returns whether the merged runs came to more than half the
/// oldest's rows (the zone is then better rebuilt whole).
pub(crate) async fn tidy_runs(
    lake: &Lake,
    table: TableName,
    key: &str,
    zone: &str,
) -> Result<bool> {
    const MAX_RUNS: usize = 16;
    let Some(t) = lake.table(table).await? else {
        return Ok(false);
    };
    let runs = keyed::runs(&t, zone)?;
    if runs.len() <= MAX_RUNS {
        return Ok(false);
    }
    let mut ids = runs.keys().copied();
    let oldest = ids.next().unwrap_or_default();
    let newer: Vec<i64> = ids.collect();
    let newer_rows: u64 = newer.iter().map(|r| runs[r]).sum();
    if newer_rows > runs[&oldest] / 2 {
        return Ok(true);
    }
    keyed::merge_runs(t, &table.schema(), zone, key, &newer, false).await?;
    Ok(false)
}

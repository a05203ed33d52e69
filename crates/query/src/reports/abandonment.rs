//! Abandoned carts, two views over a range (DESIGN.md section 4.2):
//!
//! - sessions: a session belongs to the local day of its first event; a cart session has a
//!   `cart` event; it is abandoned without a `purchase`. All of a session's events count, also
//!   those after the range.
//! - items: each distinct (user, product) whose first `cart` in the range is at `t`: recovered
//!   if the user buys the product within `[t, t + W]`; otherwise pending if `t + W` is after the
//!   newest event in the lake; otherwise abandoned. Values are the price at that first cart.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use shoplake_events::time::format_rfc3339;

use super::{Columns, FrontCache, ReportScope, count, day_string, mix, money, ratio, uuid_bits};
use crate::engine::Engine;
use crate::error::Result;
use crate::folds::{Cart, CartOrPurchase, each_cart_or_purchase, keep_first};
use crate::range::ReportRange;
use crate::udf::{LocalDays, category_at};

/// Options of the abandonment report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbandonmentOptions {
    /// How long after the first cart a purchase still recovers the item (default 24 h).
    pub window: Duration,
    /// Entries in each top list (default 10).
    pub top: usize,
    /// Rows of the retargeting list (`None`: all).
    pub retarget_limit: Option<usize>,
}

impl Default for AbandonmentOptions {
    fn default() -> Self {
        AbandonmentOptions {
            window: Duration::from_secs(24 * 3600),
            top: 10,
            retarget_limit: None,
        }
    }
}

/// Cart sessions of a local day. JSON: `day, cart_sessions, abandoned_sessions,
/// abandonment_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDay {
    /// The local day of the sessions' first events.
    pub day: String,
    /// Sessions with at least one `cart`.
    pub cart_sessions: u64,
    /// Cart sessions without a `purchase`.
    pub abandoned_sessions: u64,
    /// `abandoned_sessions / cart_sessions` (`null` without cart sessions).
    pub abandonment_rate: Option<f64>,
}

impl crate::output::Tabular for SessionDay {
    const COLUMNS: &'static [&'static str] = &[
        "day",
        "cart_sessions",
        "abandoned_sessions",
        "abandonment_rate",
    ];
}

impl SessionDay {
    fn new(day: String, cart_sessions: u64, abandoned_sessions: u64) -> SessionDay {
        SessionDay {
            day,
            cart_sessions,
            abandoned_sessions,
            abandonment_rate: ratio(abandoned_sessions as f64, cart_sessions as f64),
        }
    }
}

/// Items by status. JSON: `status (abandoned|recovered|pending), items, value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemStatus {
    /// `abandoned`, `recovered` or `pending`.
    pub status: String,
    /// Distinct (user, product) pairs.
    pub items: u64,
    /// Sum of the prices at the first cart.
    pub value: f64,
}

impl crate::output::Tabular for ItemStatus {
    const COLUMNS: &'static [&'static str] = &["status", "items", "value"];
}

/// A top abandoned product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopProduct {
    /// The product.
    pub product_id: i64,
    /// Its brand at the first cart.
    pub brand: Option<String>,
    /// Its category code at the first cart (`(unknown)` when empty).
    pub category: String,
    /// Abandoned items.
    pub items: u64,
    /// Abandoned value.
    pub value: f64,
}

impl crate::output::Tabular for TopProduct {
    const COLUMNS: &'static [&'static str] = &["product_id", "brand", "category", "items", "value"];
}

/// A top abandoned brand or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopName {
    /// The brand, or the category code.
    pub name: String,
    /// Abandoned items.
    pub items: u64,
    /// Abandoned value.
    pub value: f64,
}

impl crate::output::Tabular for TopName {
    const COLUMNS: &'static [&'static str] = &["name", "items", "value"];
}

/// An abandoned item to retarget. JSON: `user_id, product_id, carted_at, price`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retarget {
    /// The user.
    pub user_id: i64,
    /// The product left in the cart.
    pub product_id: i64,
    /// The first cart in the range (RFC 3339, UTC).
    pub carted_at: String,
    /// The price then.
    pub price: f64,
}

impl crate::output::Tabular for Retarget {
    const COLUMNS: &'static [&'static str] = &["user_id", "product_id", "carted_at", "price"];
}

/// The abandonment report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abandonment {
    /// The recovery window in hours.
    pub window_hours: f64,
    /// The newest event in the lake (RFC 3339), which decides what is still pending.
    pub newest_event: Option<String>,
    /// Cart sessions per local day.
    pub sessions: Vec<SessionDay>,
    /// Items by status, always the three statuses in the order abandoned, recovered, pending.
    pub items: Vec<ItemStatus>,
    /// Products with the most abandoned items (then value, then id).
    pub top_products: Vec<TopProduct>,
    /// Brands with the most abandoned items (then value, then name).
    pub top_brands: Vec<TopName>,
    /// Category codes with the most abandoned items (then value, then name).
    pub top_categories: Vec<TopName>,
    /// Abandoned items, oldest first (then user, product).
    pub retarget: Vec<Retarget>,
    /// Abandoned items in all (the retargeting list may be cut to a limit).
    pub retarget_total: u64,
}

/// The abandonment report.
pub async fn abandonment(
    engine: &Engine,
    scope: &ReportScope,
    options: &AbandonmentOptions,
) -> Result<Abandonment> {
    let range = &scope.range;
    let events = super::events_relation(engine, scope).await?;
    let marts = super::use_marts(engine, scope).await?;
    let sessions = async {
        if marts {
            sessions_from_marts(engine, range).await
        } else {
            sessions_from_events(engine, scope, events).await
        }
    };
    let (items_sql, newest_sql) = item_queries(range, marts, events);
    // The newest event decides what is pending: first; then the sessions beside the items.
    let newest = engine.scalar_i64(&newest_sql, "newest").await?;
    let window = i64::try_from(options.window.as_micros()).unwrap_or(i64::MAX);
    let limit = options.retarget_limit;
    if marts {
        let reweighed = Arc::new(reweighed_pairs(engine, range).await?);
        // Each partition of the item scan is summed on its own task (both cores), then merged.
        let (sessions, live) = futures::try_join!(
            sessions,
            engine.fold_merged(
                &items_sql,
                move || LiveItems::new(Summary::new(window, newest, limit), reweighed.clone()),
                |s, b| s.add(&b),
                LiveItems::merge,
            )
        )?;
        return live.finish().finish(sessions, options);
    }
    let (sessions, pairs) = futures::try_join!(
        sessions,
        engine.fold_merged(&items_sql, Pairs::default, |s, b| s.add(&b), Pairs::merge)
    )?;
    let mut summary = Summary::new(window, newest, limit);
    summary.add(&pairs.items()?)?;
    summary.finish(sessions, options)
}

/// The sessions view from `mart_daily`: the cart sessions of each day with a session start.
async fn sessions_from_marts(engine: &Engine, range: &ReportRange) -> Result<Vec<SessionDay>> {
    let sql = format!(
        "SELECT CAST(day AS VARCHAR) AS day, cart_sessions, abandoned_sessions
         FROM mart_daily WHERE zone = {tz} AND session_starts > 0 AND {days} ORDER BY day",
        tz = range.zone_sql(),
        days = range.day_sql()
    );
    let mut sessions = Vec::new();
    for b in &engine.run(&sql).await?.batches {
        let c = Columns::new(b);
        let (day, carts, abandoned) = (
            c.str("day")?,
            c.i64("cart_sessions")?,
            c.i64("abandoned_sessions")?,
        );
        for i in 0..b.num_rows() {
            sessions.push(SessionDay::new(
                day[i].clone().unwrap_or_default(),
                count(carts[i]),
                count(abandoned[i]),
            ));
        }
    }
    Ok(sessions)
}

/// The item scan and the newest event's query. Each item once, with its first cart in the
/// range and the pair's first purchase at or after it; the status follows from the window
/// and the newest event.
fn item_queries(range: &ReportRange, marts: bool, events: &str) -> (String, String) {
    let tz = range.zone_sql();
    if marts {
        return (
            format!(
                // Every row with its weight: `LiveItems` sums those of the pairs a refresh
                // reweighed (a SQL group-by over every row cost 0.35 s on a month).
                "SELECT day, user_id, product_id, carted, price_cents, brand, category_code,
                        prev_day, next_purchase, weight
                 FROM mart_items WHERE zone = {tz} AND {days} AND {first}",
                days = range.day_sql(),
                // The first cart of a pair in the range.
                first = range.first_in_range_sql()
            ),
            format!("SELECT MAX(newest_event) AS newest FROM mart_daily WHERE zone = {tz}"),
        );
    }
    let (start, _) = range.utc_bounds();
    let purchases_from = start.map_or("TRUE".to_owned(), |s| {
        format!("CAST(event_time AS BIGINT) >= {s}")
    });
    // Carts in the range and purchases from its start, in one scan; each (user, product) gets
    // its first cart and its purchases in `Pairs`.
    (
        format!(
            "SELECT user_id, product_id, event_type, CAST(event_time AS BIGINT) AS t,
                    CAST(price * 100 AS BIGINT) AS price_cents, brand, category_code
             FROM {events}
             WHERE (event_type = 'cart' AND {range})
                OR (event_type = 'purchase' AND {purchases_from})",
            range = range.sql(),
        ),
        format!("SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM {events}"),
    )
}

/// The (user, product) pairs with a `mart_items` row of a weight other than 1: a refresh
/// takes a row away with weight -1 and adds its new one with 1 (and a collapse sums them),
/// so only these pairs' rows need summing; every other row is live once.
async fn reweighed_pairs(
    engine: &Engine,
    range: &ReportRange,
) -> Result<foldhash::HashSet<(i64, i64)>> {
    let sql = format!(
        "SELECT DISTINCT user_id, product_id FROM mart_items
         WHERE zone = {tz} AND weight <> 1",
        tz = range.zone_sql()
    );
    let mut pairs = foldhash::HashSet::default();
    for b in &engine.run(&sql).await?.batches {
        let c = Columns::new(b);
        let (user, product) = (c.int64_array("user_id")?, c.int64_array("product_id")?);
        for i in 0..b.num_rows() {
            pairs.insert((user.value(i), product.value(i)));
        }
    }
    Ok(pairs)
}

/// A `mart_items` row of a reweighed pair, by everything a row holds (as the rows a refresh
/// takes away and adds match).
type WeighedRow = (
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// The live `mart_items` rows into a [`Summary`]: rows of pairs never reweighed straight
/// away, the others summed by row first (live when their weights sum above zero).
struct LiveItems {
    summary: Summary,
    reweighed: Arc<foldhash::HashSet<(i64, i64)>>,
    weights: BTreeMap<WeighedRow, i64>,
}

impl LiveItems {
    fn new(summary: Summary, reweighed: Arc<foldhash::HashSet<(i64, i64)>>) -> LiveItems {
        LiveItems {
            summary,
            reweighed,
            weights: BTreeMap::new(),
        }
    }

    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let c = Columns::new(b);
        let rows = ItemRows::of(&c)?;
        let weight = c.int64_array("weight")?;
        if self.reweighed.is_empty() {
            for i in 0..b.num_rows() {
                self.summary.add_row(&rows, i);
            }
            return Ok(());
        }
        let (day, prev) = (c.int64_array("day")?, c.int64_array("prev_day")?);
        for i in 0..b.num_rows() {
            let pair = (rows.user.value(i), rows.product.value(i));
            if !self.reweighed.contains(&pair) {
                self.summary.add_row(&rows, i);
                continue;
            }
            let text =
                |a: &arrow::array::StringViewArray| a.is_valid(i).then(|| a.value(i).to_owned());
            let key: WeighedRow = (
                day.value(i),
                pair.0,
                pair.1,
                rows.carted.value(i),
                rows.price.is_valid(i).then(|| rows.price.value(i)),
                text(&rows.brand),
                text(&rows.category),
                prev.is_valid(i).then(|| prev.value(i)),
                rows.next.is_valid(i).then(|| rows.next.value(i)),
            );
            *self.weights.entry(key).or_default() += weight.value(i);
        }
        Ok(())
    }

    fn merge(&mut self, other: LiveItems) {
        self.summary.merge(other.summary);
        for (row, w) in other.weights {
            *self.weights.entry(row).or_default() += w;
        }
    }

    /// The summary with the reweighed pairs' live rows added.
    fn finish(mut self) -> Summary {
        let live: Vec<&WeighedRow> = self
            .weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(row, _)| row)
            .collect();
        let rows = ItemRows {
            user: live.iter().map(|r| r.1).collect(),
            product: live.iter().map(|r| r.2).collect(),
            carted: live.iter().map(|r| r.3).collect(),
            price: live.iter().map(|r| r.4).collect(),
            next: live.iter().map(|r| r.8).collect(),
            brand: live.iter().map(|r| r.5.as_deref()).collect(),
            category: live.iter().map(|r| r.6.as_deref()).collect(),
        };
        for i in 0..live.len() {
            self.summary.add_row(&rows, i);
        }
        self.summary
    }
}

/// The sessions view from `events` in one scan: each scan partition keeps every session's
/// first event time and whether it has a cart and a purchase (sessions as in the visitors
/// report: UUIDs as their 128 bits, other text as itself); the partitions are united, then
/// each session starting in the range counts on its local day. (A SQL group-by on the session
/// text hashed and compared 42 M strings twice, once per aggregation phase.)
async fn sessions_from_events(
    engine: &Engine,
    scope: &ReportScope,
    events: &str,
) -> Result<Vec<SessionDay>> {
    let sql = format!(
        "SELECT user_session, event_type, CAST(event_time AS BIGINT) AS t
         FROM {events} WHERE user_session IS NOT NULL"
    );
    let all = engine
        .fold_merged(&sql, Sessions::new, |s, b| s.add(&b), Sessions::merge)
        .await?;
    Ok(all.days(&scope.range))
}

/// An item: (user, product), its first cart, its first purchase from that cart on.
struct Item {
    user: i64,
    product: i64,
    cart: Cart,
    next_purchase: Option<i64>,
}

/// Per (user, product): the first cart in the range and every purchase from the range's start
/// on, as one scan of `events` reads them (one SQL group-by for the carts, computed twice,
/// once to join with the purchases and once to list the items, cost twice as much).
#[derive(Default)]
struct Pairs {
    pairs: foldhash::HashMap<(i64, i64), Pair>,
}

/// A (user, product)'s first cart and its purchase times.
#[derive(Default)]
struct Pair {
    cart: Option<Cart>,
    purchases: Vec<i64>,
}

impl Pairs {
    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        each_cart_or_purchase(b, |_, key, row| {
            let pair = self.pairs.entry(key).or_default();
            match row {
                CartOrPurchase::Purchase(t) => pair.purchases.push(t),
                CartOrPurchase::Cart(cart) => keep_first(&mut pair.cart, cart),
            }
        })
    }

    fn merge(&mut self, other: Pairs) {
        for (key, theirs) in other.pairs {
            let pair = self.pairs.entry(key).or_default();
            pair.purchases.extend(theirs.purchases);
            if let Some(cart) = &theirs.cart {
                keep_first(&mut pair.cart, cart.row());
            }
        }
    }

    /// The items as the marts list them (`user_id, product_id, carted, price_cents, brand,
    /// category_code, next_purchase`), sorted by product.
    fn items(self) -> Result<RecordBatch> {
        use arrow::array::{Int64Array, StringViewArray};
        let mut rows: Vec<Item> = self
            .pairs
            .into_iter()
            .filter_map(|((user, product), pair)| {
                let cart = pair.cart?;
                let next_purchase = pair.purchases.into_iter().filter(|&p| p >= cart.at).min();
                Some(Item {
                    user,
                    product,
                    cart,
                    next_purchase,
                })
            })
            .collect();
        rows.sort_unstable_by_key(|r| (r.product, r.user, r.cart.at));
        let int = |f: &dyn Fn(&Item) -> Option<i64>| {
            std::sync::Arc::new(rows.iter().map(f).collect::<Int64Array>())
                as arrow::array::ArrayRef
        };
        let columns = vec![
            int(&|r| Some(r.user)),
            int(&|r| Some(r.product)),
            int(&|r| Some(r.cart.at)),
            int(&|r| Some(r.cart.cents)),
            std::sync::Arc::new(
                rows.iter()
                    .map(|r| r.cart.brand.as_deref())
                    .collect::<StringViewArray>(),
            ) as arrow::array::ArrayRef,
            std::sync::Arc::new(
                rows.iter()
                    .map(|r| r.cart.category_code.as_deref())
                    .collect::<StringViewArray>(),
            ),
            int(&|r| r.next_purchase),
        ];
        let schema = arrow::datatypes::Schema::new(
            [
                ("user_id", arrow::datatypes::DataType::Int64),
                ("product_id", arrow::datatypes::DataType::Int64),
                ("carted", arrow::datatypes::DataType::Int64),
                ("price_cents", arrow::datatypes::DataType::Int64),
                ("brand", arrow::datatypes::DataType::Utf8View),
                ("category_code", arrow::datatypes::DataType::Utf8View),
                ("next_purchase", arrow::datatypes::DataType::Int64),
            ]
            .map(|(name, t)| arrow::datatypes::Field::new(name, t, true))
            .to_vec(),
        );
        Ok(RecordBatch::try_new(std::sync::Arc::new(schema), columns)?)
    }
}

/// A session's first event time and what it holds ([`HAS_CART`], [`HAS_PURCHASE`]).
type SessionAcc = (i64, u8);
const HAS_CART: u8 = 1;
const HAS_PURCHASE: u8 = 2;

fn absorb(acc: &mut SessionAcc, first: i64, flags: u8) {
    acc.0 = acc.0.min(first);
    acc.1 |= flags;
}

/// Every session seen. Hash-aggregating 9 M sessions in one table costs a cache miss per
/// new session (the table is hundreds of megabytes), so sessions go through a small cache
/// (folding a session's nearby rows) into radix partitions by hash (appends, in order), and
/// each partition is aggregated on its own at the end, in a table that fits the cache.
struct Sessions {
    recent: FrontCache<u128, SessionAcc>,
    parts: Vec<Vec<(u128, SessionAcc)>>,
    other: foldhash::HashMap<String, SessionAcc>,
}

/// Radix partitions of [`Sessions`] (by the top bits of the hash).
const PARTS: usize = 256;

impl Sessions {
    fn new() -> Sessions {
        Sessions {
            recent: FrontCache::new(),
            parts: (0..PARTS).map(|_| Vec::new()).collect(),
            other: Default::default(),
        }
    }

    /// Moves the recent sessions into the partitions.
    fn flush(&mut self) {
        let parts = &mut self.parts;
        self.recent
            .drain(|k, acc| parts[(mix(k) >> 56) as usize].push((k, acc)));
    }

    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let c = Columns::new(b);
        let session = c.string_view_array("user_session")?;
        let kind = c.string_view_array("event_type")?;
        let time = c.int64_array("t")?;
        for i in 0..b.num_rows() {
            let t = time.value(i);
            let flags = match kind.value(i) {
                "cart" => HAS_CART,
                "purchase" => HAS_PURCHASE,
                _ => 0,
            };
            let s = session.value(i);
            match uuid_bits(s.as_bytes()) {
                Some(bits) => {
                    let parts = &mut self.parts;
                    let hash = mix(bits);
                    self.recent.fold(
                        hash,
                        bits,
                        (t, flags),
                        |acc, (t, f)| absorb(acc, t, f),
                        |k, acc| parts[(mix(k) >> 56) as usize].push((k, acc)),
                    );
                }
                None => match self.other.get_mut(s) {
                    Some(acc) => absorb(acc, t, flags),
                    None => {
                        self.other.insert(s.to_owned(), (t, flags));
                    }
                },
            }
        }
        Ok(())
    }

    fn merge(&mut self, mut other: Sessions) {
        other.flush();
        self.flush();
        for (mine, theirs) in self.parts.iter_mut().zip(other.parts) {
            mine.extend(theirs);
        }
        for (k, (t, f)) in other.other {
            absorb(self.other.entry(k).or_insert((t, 0)), t, f);
        }
    }

    /// Per local day of the range with a session starting: cart and abandoned sessions.
    fn days(mut self, range: &crate::range::ReportRange) -> Vec<SessionDay> {
        self.flush();
        let (start, end) = range.utc_bounds();
        let (start, end) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
        let mut local = LocalDays::new(range.tz);
        let mut days: std::collections::BTreeMap<i32, (u64, u64)> = Default::default();
        let mut count = |(first, flags): SessionAcc| {
            if first < start || first >= end {
                return;
            }
            let d = days.entry(local.day(first)).or_default();
            if flags & HAS_CART != 0 {
                d.0 += 1;
                if flags & HAS_PURCHASE == 0 {
                    d.1 += 1;
                }
            }
        };
        let mut sessions: foldhash::HashMap<u128, SessionAcc> = Default::default();
        for part in std::mem::take(&mut self.parts) {
            sessions.clear();
            for (k, (t, f)) in part {
                absorb(sessions.entry(k).or_insert((t, 0)), t, f);
            }
            sessions.values().for_each(|&acc| count(acc));
        }
        self.other.into_values().for_each(&mut count);
        days.into_iter()
            .map(|(day, (carts, abandoned))| SessionDay::new(day_string(day), carts, abandoned))
            .collect()
    }
}

/// Status indexes.
const ABANDONED: usize = 0;
const RECOVERED: usize = 1;
const PENDING: usize = 2;
const STATUSES: [&str; 3] = ["abandoned", "recovered", "pending"];

/// A product's abandoned items, with the brand and category (ids in [`Names`]) of its
/// earliest one.
struct ProductAcc {
    items: u64,
    cents: i64,
    first: (i64, i64),
    brand: Option<u32>,
    category: u32,
}

impl ProductAcc {
    /// Adds another part of the product's items.
    fn absorb(&mut self, o: ProductAcc) {
        self.items += o.items;
        self.cents += o.cents;
        if o.first < self.first {
            (self.first, self.brand, self.category) = (o.first, o.brand, o.category);
        }
    }
}

/// Abandoned items and value per name (brand or category), each name stored once.
#[derive(Default)]
struct Names {
    ids: foldhash::HashMap<String, u32>,
    sums: Vec<(String, u64, i64)>,
    /// The id looked up last: rows come sorted by product, so the next name is mostly the
    /// same.
    last: Option<u32>,
}

impl Names {
    /// A name's id, added with zero sums when new.
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.last
            && self.sums[id as usize].0 == name
        {
            return id;
        }
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => {
                let id = self.sums.len() as u32;
                self.ids.insert(name.to_owned(), id);
                self.sums.push((name.to_owned(), 0, 0));
                id
            }
        };
        self.last = Some(id);
        id
    }

    /// Adds `items` items worth `cents` to a name's sums; returns the name's id.
    fn add(&mut self, name: &str, items: u64, cents: i64) -> u32 {
        let id = self.id(name);
        let s = &mut self.sums[id as usize];
        s.1 += items;
        s.2 += cents;
        id
    }

    /// Adds another set's sums; returns the new id of each of its ids.
    fn merge(&mut self, other: Names) -> Vec<u32> {
        other
            .sums
            .into_iter()
            .map(|(name, items, cents)| self.add(&name, items, cents))
            .collect()
    }

    /// The top names by items, then value, then name.
    fn top(&self, n: usize) -> Vec<TopName> {
        let mut v: Vec<&(String, u64, i64)> = self.sums.iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        v.into_iter()
            .take(n)
            .map(|(name, items, cents)| TopName {
                name: name.clone(),
                items: *items,
                value: money(*cents),
            })
            .collect()
    }
}

/// The items half, summed in one pass over the item rows (hundreds of thousands a month):
/// no string is allocated per row, and only the listed part of the retargeting list is kept
/// ordered.
/// The columns of item rows a [`Summary`] reads.
struct ItemRows {
    user: arrow::array::Int64Array,
    product: arrow::array::Int64Array,
    carted: arrow::array::Int64Array,
    price: arrow::array::Int64Array,
    next: arrow::array::Int64Array,
    brand: arrow::array::StringViewArray,
    category: arrow::array::StringViewArray,
}

impl ItemRows {
    fn of(c: &Columns) -> Result<ItemRows> {
        Ok(ItemRows {
            user: c.int64_array("user_id")?,
            product: c.int64_array("product_id")?,
            carted: c.int64_array("carted")?,
            price: c.int64_array("price_cents")?,
            next: c.int64_array("next_purchase")?,
            brand: c.string_view_array("brand")?,
            category: c.string_view_array("category_code")?,
        })
    }
}

struct Summary {
    window: i64,
    newest: Option<i64>,
    limit: Option<usize>,
    items: [u64; 3],
    cents: [i64; 3],
    /// Per product, one entry per run of its rows (rows come sorted by product, so mostly one
    /// per product); coalesced at the end.
    products: Vec<(i64, ProductAcc)>,
    /// The product of the rows being read, summed here until the product changes.
    run: Option<(i64, ProductAcc)>,
    brands: Names,
    categories: Names,
    /// Abandoned items: all of them, or with a limit the oldest ones in a max-heap.
    abandoned: BinaryHeap<Abandoned>,
    abandoned_total: u64,
}

/// An abandoned item of the retargeting list, ordered oldest first (then user, product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Abandoned {
    carted: i64,
    user: i64,
    product: i64,
    cents: i64,
}

impl Summary {
    fn new(window: i64, newest: Option<i64>, limit: Option<usize>) -> Summary {
        Summary {
            window,
            newest,
            limit,
            items: [0; 3],
            cents: [0; 3],
            products: Vec::new(),
            run: None,
            brands: Names::default(),
            categories: Names::default(),
            abandoned: BinaryHeap::new(),
            abandoned_total: 0,
        }
    }

    /// Keeps an abandoned item for the retargeting list (within the limit, the oldest).
    fn keep(&mut self, item: Abandoned) {
        match self.limit {
            Some(n) if self.abandoned.len() >= n => {
                if self.abandoned.peek().is_some_and(|top| item < *top) {
                    self.abandoned.pop();
                    self.abandoned.push(item);
                }
            }
            _ => self.abandoned.push(item),
        }
    }

    /// Moves the current product run to the list.
    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            self.products.push(run);
        }
    }

    /// Adds the sums of another part of the items.
    fn merge(&mut self, mut other: Summary) {
        other.flush();
        self.flush();
        for k in 0..3 {
            self.items[k] += other.items[k];
            self.cents[k] += other.cents[k];
        }
        let brands = self.brands.merge(other.brands);
        let categories = self.categories.merge(other.categories);
        self.products
            .extend(other.products.into_iter().map(|(p, mut o)| {
                o.brand = o.brand.map(|b| brands[b as usize]);
                o.category = categories[o.category as usize];
                (p, o)
            }));
        self.abandoned_total += other.abandoned_total;
        for item in other.abandoned {
            self.keep(item);
        }
    }

    /// Adds a batch of item rows (`user_id, product_id, carted, price_cents, brand,
    /// category_code, next_purchase`).
    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let rows = ItemRows::of(&Columns::new(b))?;
        for i in 0..b.num_rows() {
            self.add_row(&rows, i);
        }
        Ok(())
    }

    /// Adds row `i` of some item rows.
    fn add_row(&mut self, rows: &ItemRows, i: usize) {
        let t = rows.carted.value(i);
        let cents = if rows.price.is_valid(i) {
            rows.price.value(i)
        } else {
            0
        };
        let deadline = t.saturating_add(self.window);
        let status = if rows.next.is_valid(i) && rows.next.value(i) <= deadline {
            RECOVERED
        } else if self.newest.is_none_or(|n| deadline > n) {
            PENDING
        } else {
            ABANDONED
        };
        self.items[status] += 1;
        self.cents[status] += cents;
        if status != ABANDONED {
            return;
        }
        let (u, p) = (rows.user.value(i), rows.product.value(i));
        self.abandoned_total += 1;
        self.keep(Abandoned {
            carted: t,
            user: u,
            product: p,
            cents,
        });
        let brand = rows
            .brand
            .is_valid(i)
            .then(|| self.brands.add(rows.brand.value(i), 1, cents));
        let code = rows.category.is_valid(i).then(|| rows.category.value(i));
        let category = self.categories.add(category_at(code, 0), 1, cents);
        let item = ProductAcc {
            items: 1,
            cents,
            first: (t, u),
            brand,
            category,
        };
        match &mut self.run {
            Some((q, acc)) if *q == p => acc.absorb(item),
            _ => {
                if let Some(run) = self.run.replace((p, item)) {
                    self.products.push(run);
                }
            }
        }
    }

    fn finish(
        mut self,
        sessions: Vec<SessionDay>,
        options: &AbandonmentOptions,
    ) -> Result<Abandonment> {
        let items = STATUSES
            .iter()
            .enumerate()
            .map(|(k, s)| ItemStatus {
                status: (*s).to_owned(),
                items: self.items[k],
                value: money(self.cents[k]),
            })
            .collect();
        self.flush();
        let mut runs = std::mem::take(&mut self.products);
        runs.sort_unstable_by_key(|(p, _)| *p);
        let mut products: Vec<(i64, ProductAcc)> = Vec::with_capacity(runs.len());
        for (p, acc) in runs {
            match products.last_mut() {
                Some((q, last)) if *q == p => last.absorb(acc),
                _ => products.push((p, acc)),
            }
        }
        let order = |a: &(i64, ProductAcc), b: &(i64, ProductAcc)| {
            b.1.items
                .cmp(&a.1.items)
                .then(b.1.cents.cmp(&a.1.cents))
                .then(a.0.cmp(&b.0))
        };
        if options.top < products.len() {
            if options.top > 0 {
                products.select_nth_unstable_by(options.top - 1, order);
            }
            products.truncate(options.top);
        }
        products.sort_unstable_by(order);
        let mut top_products = Vec::with_capacity(products.len());
        for (id, a) in products {
            top_products.push(TopProduct {
                product_id: id,
                brand: a.brand.map(|b| self.brands.sums[b as usize].0.clone()),
                category: self.categories.sums[a.category as usize].0.clone(),
                items: a.items,
                value: money(a.cents),
            });
        }
        let retarget_total = self.abandoned_total;
        let abandoned = self.abandoned.into_sorted_vec();
        let retarget = abandoned
            .iter()
            .map(|a| Retarget {
                user_id: a.user,
                product_id: a.product,
                carted_at: format_rfc3339(a.carted),
                price: money(a.cents),
            })
            .collect();
        Ok(Abandonment {
            window_hours: options.window.as_secs_f64() / 3600.0,
            newest_event: self.newest.map(format_rfc3339),
            sessions,
            items,
            top_products,
            top_brands: self.brands.top(options.top),
            top_categories: self.categories.top(options.top),
            retarget,
            retarget_total,
        })
    }
}

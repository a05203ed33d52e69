//! Brands that need more marketing (DESIGN.md section 4.4). For each brand with at least
//! `min_views` views in the range: views, carts, purchases, revenue, conversion (purchases /
//! views), cart rate (carts / views), its primary category (the level-1 category with most of
//! its views; ties to the first name) and its view share there (its views in that category /
//! all branded views in it). Against the medians of the reported brands with the same primary
//! category (of conversion, view share and views), a brand is under-exposed, under-converting,
//! a star or weak; the first two get an opportunity in currency, and rows are ranked by it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Columns, ReportScope, count, money};
use crate::engine::Engine;
use crate::error::Result;
use crate::udf::category_at;

/// Options of the brands report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrandsOptions {
    /// Brands with fewer views are not reported (default 100).
    pub min_views: u64,
}

impl Default for BrandsOptions {
    fn default() -> Self {
        BrandsOptions { min_views: 100 }
    }
}

/// A brand's class against its category's medians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrandClass {
    /// Converts at least as well as the median, seen less: needs awareness marketing.
    UnderExposed,
    /// Seen at least as much as the median, converts less: needs conversion marketing.
    UnderConverting,
    /// Both at or above the medians.
    Star,
    /// Both below the medians.
    Weak,
}

impl fmt::Display for BrandClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrandClass::UnderExposed => "under-exposed",
            BrandClass::UnderConverting => "under-converting",
            BrandClass::Star => "star",
            BrandClass::Weak => "weak",
        })
    }
}

/// One brand. JSON: `brand, category, views, carts, purchases, revenue, conversion,
/// cart_rate, view_share, class, opportunity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrandRow {
    /// The brand.
    pub brand: String,
    /// Its primary (level-1) category.
    pub category: String,
    /// Views.
    pub views: u64,
    /// Carts.
    pub carts: u64,
    /// Purchases.
    pub purchases: u64,
    /// Sum of purchase prices.
    pub revenue: f64,
    /// Purchases / views.
    pub conversion: f64,
    /// Carts / views.
    pub cart_rate: f64,
    /// Views in the primary category / all branded views there.
    pub view_share: f64,
    /// The class.
    pub class: BrandClass,
    /// Estimated gain in currency for the two classes that have one; `null` otherwise.
    pub opportunity: Option<f64>,
}

impl crate::output::Tabular for BrandRow {
    const COLUMNS: &'static [&'static str] = &[
        "brand",
        "category",
        "views",
        "carts",
        "purchases",
        "revenue",
        "conversion",
        "cart_rate",
        "view_share",
        "class",
        "opportunity",
    ];
}

#[derive(Default, Clone)]
struct Tally {
    events: u64,
    views: u64,
    carts: u64,
    purchases: u64,
    revenue_cents: i64,
    view_price_cents: i64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.events += o.events;
        self.views += o.views;
        self.carts += o.carts;
        self.purchases += o.purchases;
        self.revenue_cents += o.revenue_cents;
        self.view_price_cents += o.view_price_cents;
    }
}

/// The brands report, ranked by opportunity (then brand name); brands without one follow.
pub async fn brands(
    engine: &Engine,
    scope: &ReportScope,
    options: &BrandsOptions,
) -> Result<Vec<BrandRow>> {
    let events = super::events_relation(engine, scope).await?;
    if !super::use_marts(engine, scope).await? {
        let sql = format!(
            // Rows without a brand are skipped while folding: as a filter in the Parquet
            // reader, `brand IS NOT NULL` cost more than it saved (most rows have a brand).
            "SELECT brand, category_code, event_type, price FROM {events} WHERE {range}",
            range = scope.range.sql(),
        );
        let all = engine
            .fold_merged(
                &sql,
                BrandCells::default,
                |s, b| s.add(&b),
                BrandCells::merge,
            )
            .await?;
        return Ok(classify(all.cells(), options));
    }
    let sql = format!(
        "SELECT brand, category, SUM(events) AS events, SUM(views) AS views,
                SUM(carts) AS carts, SUM(purchases) AS purchases,
                SUM(revenue_cents) AS revenue_cents, SUM(view_price_cents) AS view_price_cents
         FROM mart_brands WHERE zone = {tz} AND {days} GROUP BY brand, category
         HAVING SUM(events) <> 0",
        tz = scope.range.zone_sql(),
        days = scope.range.day_sql()
    );
    let mut cells: Vec<(String, String, Tally)> = Vec::new();
    for b in &engine.run(&sql).await?.batches {
        let c = Columns::new(b);
        let (brand, category, events, views, carts, purchases, revenue, view_price) = (
            c.str("brand")?,
            c.str("category")?,
            c.i64("events")?,
            c.i64("views")?,
            c.i64("carts")?,
            c.i64("purchases")?,
            c.i64("revenue_cents")?,
            c.i64("view_price_cents")?,
        );
        for i in 0..b.num_rows() {
            cells.push((
                brand[i].clone().unwrap_or_default(),
                category[i].clone().unwrap_or_default(),
                Tally {
                    events: count(events[i]),
                    views: count(views[i]),
                    carts: count(carts[i]),
                    purchases: count(purchases[i]),
                    revenue_cents: revenue[i].unwrap_or_default(),
                    view_price_cents: view_price[i].unwrap_or_default(),
                },
            ));
        }
    }
    Ok(classify(cells, options))
}

/// Tallies per (brand, category code) from a scan of `events`. Brands and codes are few (a
/// few thousand) and repeat on every row, so each text is looked up once per distinct value of
/// a batch: equal string views within one array are equal texts (a short text is inside its
/// view; a long one is the same bytes of the same buffer, as the Parquet reader's dictionary
/// pages give them), so a small table of the batch's views answers most rows without hashing
/// the text. (A SQL group-by on the two texts compared and hashed them on every row.)
#[derive(Default)]
struct BrandCells {
    texts: Texts,
    /// Per (brand id, code id or [`NO_CODE`]).
    cells: foldhash::HashMap<(u32, u32), Tally>,
    brand_views: ViewTable,
    code_views: ViewTable,
    /// The number of the batch being read.
    batch: u64,
}

/// The code id of a missing category code.
const NO_CODE: u32 = u32::MAX;

/// Brands and codes, each stored once, by id.
#[derive(Default)]
struct Texts {
    ids: foldhash::HashMap<String, u32>,
    list: Vec<String>,
}

impl Texts {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.list.len() as u32;
        self.ids.insert(text.to_owned(), id);
        self.list.push(text.to_owned());
        id
    }
}

/// Recent string views with the id of their text, and the batch they were seen in. A short
/// text's view holds the text itself and stands for it in any batch; a long one's only in its
/// own batch.
struct ViewTable {
    slots: Vec<Option<(u128, u32, u64)>>,
}

/// Slots of a [`ViewTable`].
const VIEW_SLOTS: usize = 1 << 12;

impl Default for ViewTable {
    fn default() -> Self {
        ViewTable {
            slots: vec![None; VIEW_SLOTS],
        }
    }
}

impl ViewTable {
    /// The id of row `i`'s text, read from `array` in batch `batch`.
    fn id(
        &mut self,
        texts: &mut Texts,
        batch: u64,
        array: &arrow::array::StringViewArray,
        i: usize,
    ) -> u32 {
        let view = array.views()[i];
        // The low 32 bits of a view are the text's length; up to 12 bytes it is inline.
        let inline = (view as u32) <= 12;
        let slot = &mut self.slots[(super::mix(view) >> 52) as usize & (VIEW_SLOTS - 1)];
        match *slot {
            Some((v, id, b)) if v == view && (inline || b == batch) => id,
            _ => {
                let id = texts.intern(array.value(i));
                *slot = Some((view, id, batch));
                id
            }
        }
    }
}

impl BrandCells {
    fn add(&mut self, b: &arrow::array::RecordBatch) -> Result<()> {
        use arrow::array::Array;
        let c = Columns::new(b);
        let brand = c.string_view_array("brand")?;
        let code = c.string_view_array("category_code")?;
        let kind = c.string_view_array("event_type")?;
        let cents = c.cents("price")?;
        self.batch += 1;
        let batch = self.batch;
        for i in 0..b.num_rows() {
            if brand.is_null(i) {
                continue;
            }
            let texts = &mut self.texts;
            let brand_id = self.brand_views.id(texts, batch, &brand, i);
            let code_id = if code.is_valid(i) {
                self.code_views.id(texts, batch, &code, i)
            } else {
                NO_CODE
            };
            let price = if cents.is_valid(i) { cents.value(i) } else { 0 };
            let t = self.cells.entry((brand_id, code_id)).or_default();
            t.events += 1;
            match kind.value(i) {
                "view" => {
                    t.views += 1;
                    t.view_price_cents += price;
                }
                "cart" => t.carts += 1,
                "purchase" => {
                    t.purchases += 1;
                    t.revenue_cents += price;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: BrandCells) {
        let ids: Vec<u32> = other
            .texts
            .list
            .iter()
            .map(|n| self.texts.intern(n))
            .collect();
        for ((b, c), t) in other.cells {
            let c = if c == NO_CODE {
                NO_CODE
            } else {
                ids[c as usize]
            };
            self.cells.entry((ids[b as usize], c)).or_default().add(&t);
        }
    }

    /// Per (brand, level-1 category).
    fn cells(self) -> Vec<(String, String, Tally)> {
        let mut sums: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
        let list = &self.texts.list;
        for ((b, c), t) in &self.cells {
            let code = (*c != NO_CODE).then(|| list[*c as usize].as_str());
            sums.entry((&list[*b as usize], category_at(code, 1)))
                .or_default()
                .add(t);
        }
        sums.into_iter()
            .map(|((b, c), t)| (b.to_owned(), c.to_owned(), t))
            .collect()
    }
}

/// The median (the mean of the two middle values for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A reported brand's measures in its primary category, before its class.
struct Partial {
    brand: String,
    category: String,
    total: Tally,
    conversion: f64,
    cart_rate: f64,
    view_share: f64,
    average_price: Option<f64>,
}

/// The medians of one category's reported brands: conversion, view share, views.
#[derive(Debug, Default, Clone, Copy)]
struct Medians {
    conversion: f64,
    view_share: f64,
    views: f64,
}

fn classify(cells: Vec<(String, String, Tally)>, options: &BrandsOptions) -> Vec<BrandRow> {
    let partials = partials(cells, options);
    let medians = medians(&partials);
    let mut rows: Vec<BrandRow> = partials
        .into_iter()
        .map(|p| {
            let m = medians.get(&p.category).copied().unwrap_or_default();
            classified(p, m)
        })
        .collect();
    rows.sort_by(|a, b| match (a.opportunity, b.opportunity) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.brand.cmp(&b.brand)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.brand.cmp(&b.brand),
    });
    rows
}

/// Per brand with enough views: its totals, its primary category and its measures there.
fn partials(cells: Vec<(String, String, Tally)>, options: &BrandsOptions) -> Vec<Partial> {
    // Per brand: totals and per-category tallies; per category: all branded views.
    let mut brands: BTreeMap<String, (Tally, BTreeMap<String, Tally>)> = BTreeMap::new();
    let mut category_views: HashMap<String, u64> = HashMap::new();
    for (brand, category, t) in cells {
        *category_views.entry(category.clone()).or_default() += t.views;
        let entry = brands.entry(brand).or_default();
        entry.0.add(&t);
        entry.1.entry(category).or_default().add(&t);
    }
    let per = |n: u64, of: f64| if of > 0.0 { n as f64 / of } else { 0.0 };
    let mut partials = Vec::new();
    for (brand, (total, by_category)) in brands {
        if total.views < options.min_views {
            continue;
        }
        let Some((category, in_primary)) = primary(&total, &by_category) else {
            continue;
        };
        let views = total.views as f64;
        let branded = category_views.get(category).copied().unwrap_or(0) as f64;
        let average_price = if total.purchases > 0 {
            Some(money(total.revenue_cents) / total.purchases as f64)
        } else if total.views > 0 {
            Some(money(total.view_price_cents) / views)
        } else {
            None
        };
        partials.push(Partial {
            category: category.clone(),
            brand,
            conversion: per(total.purchases, views),
            cart_rate: per(total.carts, views),
            view_share: per(in_primary.views, branded),
            average_price,
            total,
        });
    }
    partials
}

/// A brand's primary category: most views, then (for brands without views) most events; ties
/// to the first name (the map iterates names in order and only a strictly larger count
/// replaces).
fn primary<'a>(
    total: &Tally,
    by_category: &'a BTreeMap<String, Tally>,
) -> Option<(&'a String, &'a Tally)> {
    let mut primary: Option<(&String, &Tally)> = None;
    for (name, t) in by_category {
        let better = match primary {
            None => true,
            Some((_, p)) if total.views > 0 => t.views > p.views,
            Some((_, p)) => t.events > p.events,
        };
        if better {
            primary = Some((name, t));
        }
    }
    primary
}

/// The medians per primary category over the reported brands.
fn medians(partials: &[Partial]) -> HashMap<String, Medians> {
    /// Conversions, view shares and views of one category's reported brands.
    type Peers = (Vec<f64>, Vec<f64>, Vec<f64>);
    let mut groups: HashMap<&str, Peers> = HashMap::new();
    for p in partials {
        let g = groups.entry(p.category.as_str()).or_default();
        g.0.push(p.conversion);
        g.1.push(p.view_share);
        g.2.push(p.total.views as f64);
    }
    groups
        .into_iter()
        .map(|(k, (mut c, mut s, mut v))| {
            let m = Medians {
                conversion: median(&mut c),
                view_share: median(&mut s),
                views: median(&mut v),
            };
            (k.to_owned(), m)
        })
        .collect()
}

/// A brand's class against its category's medians, and the revenue opportunity of the two
/// classes that have one.
fn classified(p: Partial, m: Medians) -> BrandRow {
    let converts = p.conversion >= m.conversion;
    let exposed = p.view_share >= m.view_share;
    let views = p.total.views as f64;
    let (class, opportunity) = match (converts, exposed) {
        (true, false) => (
            BrandClass::UnderExposed,
            p.average_price
                .map(|a| (m.views - views) * p.conversion * a),
        ),
        (false, true) => (
            BrandClass::UnderConverting,
            p.average_price
                .map(|a| views * (m.conversion - p.conversion) * a),
        ),
        (true, true) => (BrandClass::Star, None),
        (false, false) => (BrandClass::Weak, None),
    };
    BrandRow {
        brand: p.brand,
        category: p.category,
        views: p.total.views,
        carts: p.total.carts,
        purchases: p.total.purchases,
        revenue: money(p.total.revenue_cents),
        conversion: p.conversion,
        cart_rate: p.cart_rate,
        view_share: p.view_share,
        class,
        opportunity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}

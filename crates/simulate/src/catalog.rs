//! The shop's catalogue: categories (with the dotted taxonomy), brands and products, with
//! Zipf-like popularity and per-category price levels. Built once from the seed; the number of
//! distinct items a run touches grows with its size, as in the real data.

use crate::rng::{Cdf, hash, unit};

/// Level-1 categories with their typical price (USD) and share of catalogue weight.
const LEVEL1: [(&str, f64); 13] = [
    ("electronics", 324.0),
    ("appliances", 202.5),
    ("computers", 513.0),
    ("apparel", 60.8),
    ("furniture", 229.5),
    ("construction", 121.5),
    ("kids", 74.2),
    ("auto", 94.5),
    ("sport", 162.0),
    ("accessories", 47.2),
    ("country_yard", 216.0),
    ("medicine", 60.8),
    ("stationery", 16.2),
];

/// Real-looking REES46 category codes, roughly by popularity.
const CODES: [&str; 84] = [
    "electronics.smartphone",
    "electronics.clocks",
    "computers.notebook",
    "electronics.video.tv",
    "electronics.audio.headphone",
    "appliances.kitchen.washer",
    "appliances.environment.vacuum",
    "appliances.kitchen.refrigerators",
    "apparel.shoes",
    "electronics.tablet",
    "computers.desktop",
    "auto.accessories.player",
    "appliances.iron",
    "furniture.living_room.sofa",
    "appliances.environment.water_heater",
    "appliances.kitchen.kettle",
    "computers.peripherals.printer",
    "kids.carriage",
    "construction.tools.drill",
    "appliances.kitchen.blender",
    "electronics.audio.subwoofer",
    "furniture.bedroom.bed",
    "apparel.shoes.keds",
    "appliances.personal.hair_cutter",
    "computers.components.videocards",
    "appliances.kitchen.microwave",
    "appliances.kitchen.hood",
    "electronics.camera.video",
    "appliances.environment.air_heater",
    "computers.peripherals.monitor",
    "auto.accessories.videoregister",
    "kids.toys",
    "construction.tools.saw",
    "sport.bicycle",
    "apparel.trousers",
    "furniture.kitchen.table",
    "appliances.kitchen.oven",
    "electronics.telephone",
    "computers.components.hdd",
    "appliances.kitchen.coffee_machine",
    "apparel.jacket",
    "accessories.bag",
    "electronics.audio.acoustic",
    "computers.peripherals.mouse",
    "furniture.living_room.cabinet",
    "appliances.sewing_machine",
    "construction.components.faucet",
    "country_yard.lawn_mower",
    "apparel.tshirt",
    "kids.dolls",
    "computers.components.cpu",
    "auto.accessories.alarm",
    "computers.peripherals.keyboard",
    "appliances.kitchen.mixer",
    "sport.tennis",
    "medicine.tools.tonometer",
    "construction.tools.welding",
    "apparel.dress",
    "appliances.personal.massager",
    "computers.components.memory",
    "furniture.bathroom.bath",
    "accessories.wallet",
    "country_yard.cultivator",
    "kids.skates",
    "sport.snowboard",
    "apparel.shoes.sandals",
    "stationery.cartrige",
    "appliances.kitchen.dishwasher",
    "electronics.audio.music_tools.piano",
    "construction.tools.generator",
    "computers.components.motherboard",
    "appliances.environment.air_conditioner",
    "furniture.living_room.chair",
    "auto.accessories.compressor",
    "kids.bottles",
    "sport.trainer",
    "apparel.costume",
    "accessories.umbrella",
    "construction.tools.pump",
    "appliances.environment.fan",
    "medicine.tools.thermometer",
    "country_yard.furniture",
    "stationery.paper",
    "electronics.camera.photo",
];

/// Real brand names first; the rest are made up from syllables.
const BRANDS: [&str; 40] = [
    "samsung", "apple", "xiaomi", "huawei", "lucente", "lg", "bosch", "sony", "oppo", "lenovo",
    "acer", "artel", "hp", "respect", "asus", "indesit", "redmond", "philips", "elenberg",
    "cordiant", "vitek", "haier", "canon", "polaris", "tefal", "beko", "casio", "pioneer", "jbl",
    "nokia", "oasis", "karcher", "makita", "atlant", "gorenje", "midea", "hyundai", "dauscher",
    "janome", "sv",
];

const SYLLABLES: [&str; 24] = [
    "ka", "ro", "mi", "te", "lu", "zan", "vo", "ri", "sen", "ta", "no", "el", "bri", "ox", "da",
    "fu", "gor", "il", "ne", "pa", "qui", "sto", "vel", "yu",
];

/// A category id with its code (or none) and price level.
#[derive(Debug, Clone)]
pub struct Category {
    /// The category id as written in files.
    pub id: i64,
    /// The dotted code, `None` for the uncoded ones.
    pub code: Option<String>,
    /// Index into the level-1 list.
    pub level1: usize,
    /// Median price of its products, in dollars.
    pub price_level: f64,
    /// Its products, most popular first.
    pub products: std::ops::Range<usize>,
    /// Popularity of its products.
    pub product_cdf: Cdf,
}

/// A product.
#[derive(Debug, Clone)]
pub struct Product {
    /// The product id as written in files.
    pub id: i64,
    /// Index of its category.
    pub category: usize,
    /// Index of its brand, `None` for unbranded.
    pub brand: Option<usize>,
    /// Its price in cents.
    pub price_cents: i64,
}

/// Sizes of the real catalogue (October 2019).
pub const CATEGORIES: usize = 624;
/// Brands in the real data.
pub const BRAND_COUNT: usize = 3_446;
/// Products in the catalogue; a month of data touches about 166 k of them.
pub const PRODUCTS: usize = 190_000;

/// The catalogue.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Categories, most popular first.
    pub categories: Vec<Category>,
    /// Popularity of categories.
    pub category_cdf: Cdf,
    /// Every product.
    pub products: Vec<Product>,
    /// Brand names.
    pub brands: Vec<String>,
}

/// Share of events whose category has no code (DESIGN: 31.8 %).
#[allow(clippy::approx_constant)] // the real data's rate, not 1/π
pub const CATEGORY_CODE_NULL: f64 = 0.318;
/// Share of events whose product has no brand (DESIGN: 14.4 %).
pub const BRAND_NULL: f64 = 0.144;
/// The hard price cap in the real data.
pub const PRICE_CAP_CENTS: i64 = 257_407;
/// The lowest purchase price in the real data.
pub const PRICE_FLOOR_CENTS: i64 = 77;

/// Decides, for items weighted by popularity, which ones get a property so that the share of
/// weight having it tracks `target` closely (error diffusion: no luck of the draw on the
/// few items that carry most of the traffic).
fn diffuse(weights: &[f64], target: f64) -> Vec<bool> {
    let mut acc = 0.0;
    weights
        .iter()
        .map(|&w| {
            acc += target * w;
            if acc >= w / 2.0 {
                acc -= w;
                true
            } else {
                false
            }
        })
        .collect()
}

fn brand_name(seed: u64, i: usize) -> String {
    if let Some(b) = BRANDS.get(i) {
        return (*b).to_owned();
    }
    let h = hash(seed, 11, i as u64);
    let n = 2 + (h % 2) as usize;
    let mut name: String = (0..n)
        .map(|k| SYLLABLES[((h >> (8 + 5 * k)) % SYLLABLES.len() as u64) as usize])
        .collect();
    // Made-up names can collide; the index keeps them distinct.
    name.push_str(&format!("{}", i % 97));
    name
}

/// Products per category: popular categories have more products.
fn products_per_category(weights: &[f64]) -> Vec<usize> {
    let per_category: Vec<usize> = weights
        .iter()
        .map(|w| ((w.powf(0.75)) * PRODUCTS as f64 * 1.6).max(3.0) as usize)
        .collect();
    let total: usize = per_category.iter().sum();
    per_category
        .iter()
        .map(|&n| (n * PRODUCTS / total).max(3))
        .collect()
}

/// Brands live mostly in one level-1 category: each brand's home, and the popularity of the
/// brands at home in each level-1 category and overall.
struct BrandHomes {
    by_level1: Vec<Vec<usize>>,
    cdfs: Vec<Cdf>,
    global: Cdf,
}

impl BrandHomes {
    fn new(seed: u64) -> BrandHomes {
        let mut by_level1: Vec<Vec<usize>> = vec![Vec::new(); LEVEL1.len()];
        for b in 0..BRAND_COUNT {
            let home = (hash(seed, 12, b as u64) % LEVEL1.len() as u64) as usize;
            by_level1[home].push(b);
        }
        let cdfs = by_level1
            .iter()
            .map(|l| Cdf::zipf(l.len().max(1), 1.1))
            .collect();
        BrandHomes {
            by_level1,
            cdfs,
            global: Cdf::zipf(BRAND_COUNT, 1.0),
        }
    }

    /// Product `idx`'s brand: 85 % one at home in its level-1 category, else any.
    fn pick(&self, seed: u64, idx: usize, level1: usize) -> usize {
        let u = unit(hash(seed, 5, idx as u64));
        let list = &self.by_level1[level1];
        if unit(hash(seed, 4, idx as u64)) < 0.85 && !list.is_empty() {
            list[self.cdfs[level1].pick(u)]
        } else {
            self.global.pick(u)
        }
    }
}

impl Catalog {
    /// Builds the catalogue for a seed.
    pub fn new(seed: u64) -> Catalog {
        let category_cdf = Cdf::zipf(CATEGORIES, 1.05);
        let weights: Vec<f64> = (0..CATEGORIES).map(|i| category_cdf.weight(i)).collect();
        let uncoded = diffuse(&weights, CATEGORY_CODE_NULL);
        let code_cdf = Cdf::zipf(CODES.len(), 0.9);

        let per_category = products_per_category(&weights);
        let brands: Vec<String> = (0..BRAND_COUNT).map(|i| brand_name(seed, i)).collect();
        let homes = BrandHomes::new(seed);

        let mut categories = Vec::with_capacity(CATEGORIES);
        let mut products = Vec::with_capacity(PRODUCTS);
        let mut product_weights = Vec::with_capacity(PRODUCTS);
        for (i, &count) in per_category.iter().enumerate() {
            let h = hash(seed, 1, i as u64);
            let (code, level1) = if uncoded[i] {
                (None, (h % LEVEL1.len() as u64) as usize)
            } else {
                let code = CODES[code_cdf.pick(unit(h))];
                let first = code.split('.').next().unwrap_or(code);
                let level1 = LEVEL1.iter().position(|(n, _)| *n == first).unwrap_or(0);
                (Some(code.to_owned()), level1)
            };
            // Per-category variation around the level-1 price.
            let jitter = (unit(hash(seed, 2, i as u64)) - 0.5) * 1.4;
            let price_level = LEVEL1[level1].1 * jitter.exp();
            let id =
                2_053_013_552_000_000_000 + (i as i64) * 1_000_003_171 + (h % 1_000_000) as i64;
            let start = products.len();
            let product_cdf = Cdf::zipf(count, 1.0);
            for p in 0..count {
                let idx = products.len();
                let ph = hash(seed, 3, idx as u64);
                let price = price_level * (0.8 * normal(ph)).exp();
                let price_cents =
                    ((price * 100.0).round() as i64).clamp(PRICE_FLOOR_CENTS, PRICE_CAP_CENTS);
                products.push(Product {
                    id: 1_000_000 + (idx as i64) * 313 + (ph % 313) as i64,
                    category: i,
                    brand: Some(homes.pick(seed, idx, level1)),
                    price_cents,
                });
                product_weights.push(weights[i] * product_cdf.weight(p));
            }
            categories.push(Category {
                id,
                code,
                level1,
                price_level,
                products: start..products.len(),
                product_cdf,
            });
        }
        for (p, unbranded) in products
            .iter_mut()
            .zip(diffuse(&product_weights, BRAND_NULL))
        {
            if unbranded {
                p.brand = None;
            }
        }
        Catalog {
            categories,
            category_cdf,
            products,
            brands,
        }
    }

    /// A product of a category, by popularity.
    pub fn product_in(&self, category: usize, u: f64) -> usize {
        let c = &self.categories[category];
        c.products.start + c.product_cdf.pick(u)
    }

    /// A category by popularity.
    pub fn category(&self, u: f64) -> usize {
        self.category_cdf.pick(u)
    }
}

/// A standard normal from a hash (Box–Muller).
fn normal(h: u64) -> f64 {
    let u1 = unit(mix_lo(h)).max(1e-12);
    let u2 = unit(h);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn mix_lo(h: u64) -> u64 {
    crate::rng::mix(h ^ 0x5555_5555_5555_5555)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_deterministic_and_sized() {
        let a = Catalog::new(7);
        let b = Catalog::new(7);
        assert_eq!(a.products.len(), b.products.len());
        assert_eq!(a.categories.len(), CATEGORIES);
        assert!(
            a.products.len() >= PRODUCTS * 9 / 10,
            "{}",
            a.products.len()
        );
        assert_eq!(a.products[1234].id, b.products[1234].id);
        let ids: std::collections::HashSet<i64> = a.products.iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), a.products.len());
        assert!(
            a.products
                .iter()
                .all(|p| (PRICE_FLOOR_CENTS..=PRICE_CAP_CENTS).contains(&p.price_cents))
        );
    }
}

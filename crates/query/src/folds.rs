//! Folds over scans of carts and purchases that the abandonment report and the items mart
//! share: each row read as a cart or a purchase, and the first cart of an item kept.

use arrow::array::{Array, RecordBatch};

use crate::columns::Columns;
use crate::error::Result;

/// A text cell, `None` when null.
fn text(a: &arrow::array::StringViewArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// A (user, product)'s first cart (in the range, or of a day): time, price, brand, category
/// code.
pub(crate) type Cart = (i64, i64, Option<String>, Option<String>);

/// One row of a scan of carts and purchases (columns `user_id, product_id, event_type, t,
/// price_cents, brand, category_code`).
pub(crate) enum CartOrPurchase<'a> {
    /// A cart: time, price in cents (0 without a price), brand, category code.
    Cart(i64, i64, Option<&'a str>, Option<&'a str>),
    /// A purchase at this time.
    Purchase(i64),
}

/// Calls `f` with each row of a scan of carts and purchases: its index, (user, product) and
/// what it is.
pub(crate) fn each_cart_or_purchase(
    b: &RecordBatch,
    mut f: impl FnMut(usize, (i64, i64), CartOrPurchase<'_>),
) -> Result<()> {
    let c = Columns::new(b);
    let user = c.int64_array("user_id")?;
    let product = c.int64_array("product_id")?;
    let kind = c.string_view_array("event_type")?;
    let time = c.int64_array("t")?;
    let price = c.int64_array("price_cents")?;
    let brand = c.string_view_array("brand")?;
    let category = c.string_view_array("category_code")?;
    for i in 0..b.num_rows() {
        let t = time.value(i);
        let row = if kind.value(i) == "purchase" {
            CartOrPurchase::Purchase(t)
        } else {
            let cents = if price.is_valid(i) { price.value(i) } else { 0 };
            CartOrPurchase::Cart(t, cents, text(&brand, i), text(&category, i))
        };
        f(i, (user.value(i), product.value(i)), row);
    }
    Ok(())
}

/// Keeps the first cart by time, then price (then the names, so ties are decided alike
/// whatever the scan order).
pub(crate) fn keep_first(
    slot: &mut Option<Cart>,
    t: i64,
    cents: i64,
    b: Option<&str>,
    k: Option<&str>,
) {
    let earlier = slot
        .as_ref()
        .is_none_or(|(t0, c0, b0, k0)| (t, cents, b, k) < (*t0, *c0, b0.as_deref(), k0.as_deref()));
    if earlier {
        *slot = Some((t, cents, b.map(str::to_owned), k.map(str::to_owned)));
    }
}

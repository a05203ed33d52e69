//! Folds over scans of carts and purchases that the abandonment report and the items mart
//! share: each row read as a cart or a purchase, and the first cart of an item kept.

use arrow::array::{Array, RecordBatch};

use crate::columns::Columns;
use crate::error::Result;

/// A text cell, `None` when null.
pub(crate) fn text(a: &arrow::array::StringViewArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// A cart row as a scan reads it (names borrowed from the batch). Ordered by time, then
/// price, then the names, so that "the first cart" is decided alike whatever the scan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CartRow<'a> {
    /// Event time, microseconds since the epoch.
    pub at: i64,
    /// Price in cents (0 without a price).
    pub cents: i64,
    pub brand: Option<&'a str>,
    pub category_code: Option<&'a str>,
}

impl CartRow<'_> {
    pub(crate) fn to_cart(self) -> Cart {
        Cart {
            at: self.at,
            cents: self.cents,
            brand: self.brand.map(str::to_owned),
            category_code: self.category_code.map(str::to_owned),
        }
    }
}

/// A (user, product)'s first cart (in the range, or of a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cart {
    /// Event time, microseconds since the epoch.
    pub at: i64,
    /// Price in cents (0 without a price).
    pub cents: i64,
    pub brand: Option<String>,
    pub category_code: Option<String>,
}

impl Cart {
    /// The cart as a row, to compare with others.
    pub(crate) fn row(&self) -> CartRow<'_> {
        CartRow {
            at: self.at,
            cents: self.cents,
            brand: self.brand.as_deref(),
            category_code: self.category_code.as_deref(),
        }
    }
}

/// One row of a scan of carts and purchases (columns `user_id, product_id, event_type, t,
/// price_cents, brand, category_code`).
pub(crate) enum CartOrPurchase<'a> {
    Cart(CartRow<'a>),
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
        let at = time.value(i);
        let row = if kind.value(i) == "purchase" {
            CartOrPurchase::Purchase(at)
        } else {
            CartOrPurchase::Cart(CartRow {
                at,
                cents: if price.is_valid(i) { price.value(i) } else { 0 },
                brand: text(&brand, i),
                category_code: text(&category, i),
            })
        };
        f(i, (user.value(i), product.value(i)), row);
    }
    Ok(())
}

/// Keeps the first cart ([`CartRow`]'s order) in `slot`.
pub(crate) fn keep_first(slot: &mut Option<Cart>, cart: CartRow<'_>) {
    if slot.as_ref().is_none_or(|old| cart < old.row()) {
        *slot = Some(cart.to_cart());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, cents: i64, brand: Option<&str>) -> CartRow<'_> {
        CartRow {
            at,
            cents,
            brand,
            category_code: None,
        }
    }

    #[test]
    fn the_first_cart_is_the_earliest_then_the_cheapest_then_by_name_in_any_order() {
        let rows = [
            row(5, 100, Some("b")),
            row(3, 200, None),
            row(3, 150, Some("z")),
            row(3, 150, Some("a")),
            row(9, 1, None),
        ];
        let mut forward = None;
        rows.iter().for_each(|r| keep_first(&mut forward, *r));
        let mut backward = None;
        rows.iter()
            .rev()
            .for_each(|r| keep_first(&mut backward, *r));
        let want = Cart {
            at: 3,
            cents: 150,
            brand: Some("a".into()),
            category_code: None,
        };
        assert_eq!(forward.as_ref(), Some(&want));
        assert_eq!(backward, forward);
    }
}

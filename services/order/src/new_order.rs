//! A new order as the domain takes it: parsed once, from what a customer sent, into a value
//! that cannot be invalid — a customer, 1 to [`MAX_LINES`] lines with each SKU once, whole
//! quantities and prices within their limits, a supported currency, and a total that fits —
//! from which the order's `created` event is made. The limits live here; the HTTP layer
//! documents them (OpenAPI) from the same constants.

use events::{Currency, CustomerId, LineItem, OrderCreated, OrderId, Sku};
use uuid::Uuid;

/// Currencies orders may be placed in.
pub const CURRENCIES: &[&str] = &[
    "EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
];
/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 1_000;
/// Highest unit price, in minor units.
pub const MAX_UNIT_PRICE_CENTS: u64 = 100_000_000;

/// A line as a customer sent it.
#[derive(Debug, Clone, Copy)]
pub struct RequestedLine<'a> {
    /// The SKU, as sent.
    pub sku: &'a str,
    /// Units.
    pub quantity: u32,
    /// Price of one unit, in minor units.
    pub unit_price_cents: u64,
}

/// One thing wrong with a requested order: the field, as the API names it (`items[2].sku`),
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaw {
    /// The field.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl Flaw {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A new order, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Its `created` event, but for the order id and the `Idempotency-Key`, which
    /// [`NewOrder::created`] gives it.
    created: OrderCreated,
}

impl NewOrder {
    /// Parses what a customer sent; every flaw at once if anything is wrong.
    pub fn parse<'a>(
        customer: Option<&str>,
        lines: &[RequestedLine<'a>],
        currency: &str,
    ) -> Result<Self, Vec<Flaw>> {
        let mut flaws = Vec::new();
        let customer = parse_customer(customer).map_err(|f| flaws.push(f)).ok();
        let currency = match Currency::new(currency.to_owned()) {
            Ok(c) if CURRENCIES.contains(&c.as_str()) => Some(c),
            _ => {
                let reason = format!("must be one of {}", CURRENCIES.join(", "));
                flaws.push(Flaw::new("currency", reason));
                None
            }
        };
        if lines.is_empty() || lines.len() > MAX_LINES {
            flaws.push(Flaw::new(
                "items",
                format!("must have 1 to {MAX_LINES} lines"),
            ));
        }
        let mut parsed: Vec<LineItem> = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match parse_line(line) {
                Ok(item) if parsed.iter().any(|l| l.sku == item.sku) => flaws.push(Flaw::new(
                    format!("items[{i}].sku"),
                    "each SKU may appear on one line only",
                )),
                Ok(item) => parsed.push(item),
                Err(line_flaws) => flaws.extend(
                    line_flaws
                        .into_iter()
                        .map(|(field, reason)| Flaw::new(format!("items[{i}].{field}"), reason)),
                ),
            }
        }
        // Within the limits the total always fits; the check keeps that true if they change.
        if events::total_cents(&parsed).is_none() {
            flaws.push(Flaw::new("items", "the order total is too large"));
        }
        let created = match (customer, currency) {
            (Some(customer), Some(currency)) => OrderCreated::builder()
                .order_id(OrderId(Uuid::nil()))
                .customer_id(customer)
                .items(parsed)
                .currency(currency)
                .build(),
            _ => None,
        };
        match created {
            Some(created) if flaws.is_empty() => Ok(Self { created }),
            _ => Err(flaws),
        }
    }

    /// Who orders.
    pub fn customer(&self) -> &CustomerId {
        &self.created.customer_id
    }

    /// The order's `created` event payload, under `order_id`.
    pub fn created(self, order_id: OrderId, idempotency_key: Option<String>) -> OrderCreated {
        let mut created = self.created;
        created.order_id = order_id;
        created.idempotency_key = idempotency_key;
        created
    }

    /// Whether `created` records this same order (what an `Idempotency-Key` made earlier).
    pub fn is_recorded_by(&self, created: &OrderCreated) -> bool {
        created.customer_id == self.created.customer_id
            && created.items == self.created.items
            && created.currency == self.created.currency
    }
}

/// The customer a request names (the `customer_id` field or query parameter), or its flaw.
pub fn parse_customer(claimed: Option<&str>) -> Result<CustomerId, Flaw> {
    let claimed = claimed.ok_or_else(|| Flaw::new("customer_id", "is required"))?;
    CustomerId::new(claimed).map_err(|e| Flaw::new("customer_id", e.to_string()))
}

/// One line, or each of its fields that is wrong (`sku`, `quantity`, `unit_price_cents`).
fn parse_line(line: &RequestedLine<'_>) -> Result<LineItem, Vec<(&'static str, String)>> {
    let mut flaws = Vec::new();
    let sku = Sku::new(line.sku.to_owned())
        .map_err(|e| flaws.push(("sku", e.to_string())))
        .ok();
    if !(1..=MAX_QUANTITY).contains(&line.quantity) {
        flaws.push(("quantity", format!("must be 1 to {MAX_QUANTITY}")));
    }
    if !(1..=MAX_UNIT_PRICE_CENTS).contains(&line.unit_price_cents) {
        flaws.push((
            "unit_price_cents",
            format!("must be 1 to {MAX_UNIT_PRICE_CENTS}"),
        ));
    }
    match sku {
        Some(sku) if flaws.is_empty() => Ok(LineItem {
            sku,
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents,
        }),
        _ => Err(flaws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32, unit_price_cents: u64) -> RequestedLine<'_> {
        RequestedLine {
            sku,
            quantity,
            unit_price_cents,
        }
    }

    fn fields(flaws: Vec<Flaw>) -> Vec<String> {
        flaws.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn an_order_within_the_limits_parses_with_its_total() {
        let order = NewOrder::parse(
            Some("alice"),
            &[line("MUG", 2, 1250), line("PEN", 1, 99)],
            "EUR",
        )
        .unwrap();
        assert_eq!(order.customer().as_str(), "alice");
        let created = order.created(OrderId::new(), None);
        assert_eq!(created.total_cents, 2 * 1250 + 99);
    }

    #[test]
    fn every_flaw_is_named_at_once() {
        let flaws = NewOrder::parse(None, &[line("bad sku!", 0, 0)], "XXX").unwrap_err();
        assert_eq!(
            fields(flaws),
            [
                "customer_id",
                "currency",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price_cents"
            ]
        );
    }

    #[test]
    fn a_sku_on_two_lines_is_refused_on_the_second() {
        let flaws = NewOrder::parse(
            Some("alice"),
            &[line("MUG", 1, 1), line("MUG", 2, 1)],
            "EUR",
        )
        .unwrap_err();
        assert_eq!(fields(flaws), ["items[1].sku"]);
    }

    #[test]
    fn an_order_has_one_to_max_lines() {
        let empty = NewOrder::parse(Some("alice"), &[], "EUR").unwrap_err();
        assert_eq!(fields(empty), ["items"]);
        let skus: Vec<String> = (0..=MAX_LINES).map(|i| format!("SKU-{i}")).collect();
        let lines: Vec<_> = skus.iter().map(|s| line(s, 1, 1)).collect();
        let many = NewOrder::parse(Some("alice"), &lines, "EUR").unwrap_err();
        assert_eq!(fields(many), ["items"]);
    }

    #[test]
    fn the_limits_hold_at_their_edges() {
        let edge = [line("A", MAX_QUANTITY, MAX_UNIT_PRICE_CENTS)];
        assert!(NewOrder::parse(Some("alice"), &edge, "JPY").is_ok());
        let beyond = [line("A", MAX_QUANTITY + 1, MAX_UNIT_PRICE_CENTS + 1)];
        let flaws = NewOrder::parse(Some("alice"), &beyond, "JPY").unwrap_err();
        assert_eq!(
            fields(flaws),
            ["items[0].quantity", "items[0].unit_price_cents"]
        );
    }

    #[test]
    fn the_order_an_idempotency_key_made_is_recognised_by_its_contents() {
        let order = NewOrder::parse(Some("alice"), &[line("MUG", 2, 1250)], "EUR").unwrap();
        let created = order.clone().created(OrderId::new(), Some("k".into()));
        assert!(order.is_recorded_by(&created));
        let other = NewOrder::parse(Some("alice"), &[line("MUG", 3, 1250)], "EUR").unwrap();
        assert!(!other.is_recorded_by(&created));
    }
}

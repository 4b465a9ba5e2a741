//! Backup and restore: what a backup needs from the running system, and the round trip.

use events::StockRevisions;
use events::names::header;
use testkit::TestApp;

/// A backup tells, SKU by SKU, whether its copy of a stock record holds an order's take by
/// comparing revisions: so every decision says where its takes are.
#[tokio::test]
async fn a_reservation_says_which_stock_revision_holds_its_take() {
    let app = TestApp::builder().spawn().await;
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let stock = js.get_key_value("stock").await.unwrap();
    let revision_of = |sku: &'static str| {
        let stock = stock.clone();
        async move { stock.entry(sku).await.unwrap().unwrap().revision }
    };
    app.set_stock("BOOK", 10).await;
    app.set_stock("MUG", 10).await;
    let set_at = [revision_of("BOOK").await, revision_of("MUG").await];

    let order_id = app.place_order("ivan", &[("BOOK", 1), ("MUG", 2)]).await;
    app.wait_for_status(&order_id, "confirmed").await;

    let decision = js
        .get_stream("INVENTORY")
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&format!("inventory.*.ivan.{order_id}.reserved"))
        .await
        .unwrap();
    let revisions = decision
        .headers
        .get(header::STOCK_REVISION)
        .map(|v| StockRevisions::from_header(v.as_str()).unwrap())
        .expect("the decision carries its stock revisions");
    for (sku, set_at) in ["BOOK", "MUG"].into_iter().zip(set_at) {
        let taken_at = revisions.of(&events::Sku::new(sku).unwrap()).unwrap();
        // The take is a write of that SKU's record after the stock was set — at most the
        // record's revision now (a settle may have followed).
        let now = revision_of(sku).await;
        assert!(
            set_at < taken_at && taken_at <= now,
            "{sku}: stock set at {set_at}, taken at {taken_at}, record at {now}"
        );
    }
}

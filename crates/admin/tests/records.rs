//! `orderflow-admin order` and `stock`: the operator reads an order and reads or sets stock
//! straight from NATS (and the archive), with none of the services' API tokens — and sees
//! exactly what the API shows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use orderflow_admin::{Cli, Command};
use testkit::TestApp;

fn command(app: &TestApp, words: &[&str]) -> Command {
    let url = app.nats.url();
    let mut argv = vec!["orderflow-admin", words[0], "--nats-url", url.as_str()];
    argv.extend(&words[1..]);
    Cli::try_parse_from(argv).unwrap().command
}

async fn order(app: &TestApp, id: &str) -> Result<serde_json::Value, String> {
    let Command::Order(args) = command(app, &["order", "--archive-url", "none", id]) else {
        unreachable!()
    };
    orderflow_admin::order(&args)
        .await
        .map(|view| serde_json::to_value(view).unwrap())
}

async fn stock(app: &TestApp, words: &[&str]) -> serde_json::Value {
    let mut all = vec!["stock"];
    all.extend(words);
    let Command::Stock(args) = command(app, &all) else {
        unreachable!()
    };
    serde_json::to_value(orderflow_admin::stock(&args).await.unwrap()).unwrap()
}

#[tokio::test]
async fn stock_set_by_the_operator_is_what_the_api_shows_and_orders_take() {
    let app = TestApp::spawn().await;
    let set = stock(&app, &["OPS-MUG", "--set", "5"]).await;
    assert_eq!(
        (set["available"].as_u64(), set["reserved"].as_u64()),
        (Some(5), Some(0))
    );
    let id = app.place_order("ops", &[("OPS-MUG", 2)]).await;
    app.wait_for_status(&id, "confirmed").await;
    let read = stock(&app, &["OPS-MUG"]).await;
    assert_eq!(
        (read["available"].as_u64(), read["reserved"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(app.stock("OPS-MUG").await, (3, 2, 0));
}

#[tokio::test]
async fn an_order_reads_as_the_api_shows_it() {
    let app = TestApp::spawn().await;
    app.set_stock("OPS-BOOK", 1).await;
    let id = app.place_order("ops", &[("OPS-BOOK", 1)]).await;
    app.wait_for_status(&id, "confirmed").await;
    let looked_up = testkit::eventually_some("the notification is recorded", || async {
        let looked_up = order(&app, &id).await.unwrap();
        (looked_up == app.order(&id).await).then_some(looked_up)
    })
    .await;
    assert_eq!(looked_up["status"], "confirmed");
    let missing = order(&app, "0193a0a0-0000-7000-8000-000000000000").await;
    assert!(missing.unwrap_err().contains("no order"));
}

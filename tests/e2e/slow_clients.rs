//! Slow and greedy clients cannot sink a service: a connection whose request head does not
//! arrive in time is closed (slowloris), a head too large is refused, and connections beyond
//! the cap are closed at once — while orders are still taken.

use events::ServiceId;
use std::time::{Duration, Instant};

use testkit::TestApp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The order-service's address, `127.0.0.1:<port>`.
fn address(app: &TestApp) -> String {
    app.order_url().trim_start_matches("http://").to_owned()
}

/// `n` connections to `app`'s order-service, each holding half a request head.
async fn hold(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(address(app)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    held
}

/// A new connection to `app`'s order-service is closed within a second without an answer.
async fn closed_at_once(app: &TestApp, what: &str) {
    let mut extra = TcpStream::connect(address(app)).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{what} got {read:?}: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// A slowloris client: a request line and one header, then a header byte now and then, never
/// the blank line that ends the head. Returns when the server closes the connection, with how
/// long it was held; gives up after `longest`.
async fn slowloris(address: String, longest: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&address).await.ok()?;
    stream
        .write_all(b"POST /v1/orders HTTP/1.1\r\nHost: orderflow\r\nX-Slow: ")
        .await
        .ok()?;
    let mut buffer = [0u8; 256];
    while started.elapsed() < longest {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                // Closed (possibly after a 408 the server chose to write).
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if stream.write_all(b"a").await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn hundreds_of_slowloris_connections_are_closed_after_the_header_timeout_while_orders_go_on()
{
    let app = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_HEADER_READ_TIMEOUT_MS", "1500")
        .service_env(ServiceId::Order, "HTTP_RATE_LIMIT", "0")
        // Everyone here is 127.0.0.1: as if the slow clients came from many addresses.
        .service_env(ServiceId::Order, "HTTP_MAX_CONNECTIONS_PER_CLIENT", "1000")
        .spawn()
        .await;
    app.set_stock("SLOW", 100).await;
    let slow: Vec<_> = (0..300)
        .map(|_| tokio::spawn(slowloris(address(&app), Duration::from_secs(30))))
        .collect();
    // Held open meanwhile, the slow connections do not keep orders out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let order = app.place_order("patient", &[("SLOW", 1)]).await;
        app.wait_for_status(&order, "confirmed").await;
    }
    for connection in slow {
        let held = connection
            .await
            .unwrap()
            .expect("a slowloris connection was still open after 30 s");
        assert!(
            held >= Duration::from_millis(1000),
            "closed after {held:?}, before the timeout"
        );
    }
    // And the service takes orders as before.
    let order = app.place_order("patient", &[("SLOW", 1)]).await;
    app.wait_for_status(&order, "confirmed").await;
}

#[tokio::test]
async fn a_request_head_larger_than_the_limit_is_refused_with_431() {
    let app = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_MAX_HEADER_BYTES", "4096")
        .spawn()
        .await;
    let response = app
        .http
        .get(format!("{}/v1/orders?customer_id=big", app.order_url()))
        .header("x-padding", "p".repeat(8192))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_closed_at_once_and_the_cap_frees_as_slow_ones_time_out() {
    let app = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_MAX_CONNECTIONS", "20")
        .service_env(ServiceId::Order, "HTTP_HEADER_READ_TIMEOUT_MS", "2000")
        .spawn()
        .await;
    let held = hold(&app, 20).await;
    // The 21st is accepted by the kernel and closed by the service without an answer.
    closed_at_once(&app, "the connection over the cap").await;
    // Once the held ones time out, the service answers again.
    crate::support::eventually("the cap frees up", || async {
        app.http
            .get(format!("{}/healthz", app.order_url()))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_of_connections_unless_it_is_a_trusted_proxy() {
    let app = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_MAX_CONNECTIONS_PER_CLIENT", "5")
        .service_env(ServiceId::Order, "HTTP_HEADER_READ_TIMEOUT_MS", "2000")
        .spawn()
        .await;
    let held = hold(&app, 5).await;
    // The sixth from the same address is closed without an answer, though the service has
    // room for a thousand.
    closed_at_once(&app, "a sixth connection").await;
    drop(held);

    // Behind a trusted proxy, one address carries many clients: not capped.
    let proxied = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_MAX_CONNECTIONS_PER_CLIENT", "5")
        .service_env(ServiceId::Order, "HTTP_TRUSTED_PROXIES", "127.0.0.1/32")
        .spawn()
        .await;
    let _held = hold(&proxied, 10).await;
    let response = proxied
        .http
        .get(format!("{}/healthz", proxied.order_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut_off_after_the_write_timeout() {
    let app = TestApp::builder()
        .service_env(ServiceId::Order, "HTTP_WRITE_TIMEOUT_MS", "1000")
        .service_env(ServiceId::Order, "HTTP_RATE_LIMIT", "0")
        .spawn()
        .await;
    // Hundreds of pipelined requests for the OpenAPI document — megabytes of answers — into a
    // small receive window nobody reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(address(&app).parse().unwrap())
        .await
        .unwrap();
    let requests = 400;
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: orderflow\r\n\r\n".repeat(requests);
    stream.write_all(&request).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now finds the connection closed after what had been written before the stall.
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answers)).await;
    assert!(read.is_ok(), "the stalled connection was still open");
    let answered = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answered < requests, "all {requests} answers were written");
}

//! Spans leave the process over OTLP/HTTP protobuf: a real HTTP server on loopback decodes
//! what the exporter sends.

// Helpers outside `#[test]` fns are test code too: a panic here is a failed test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use telemetry::{LogFormat, Otlp, OtlpProtocol, Settings};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// A one-request-at-a-time HTTP/1.1 server that hands each request's path, content type and
/// body to the test and answers 200.
fn receiver() -> (u16, mpsc::Receiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx.send((path, content_type, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_protobuf_with_the_service_name_and_version() {
    let (port, requests) = receiver();
    let telemetry = telemetry::init_with(Settings {
        service_name: "otlp-test-service".into(),
        log_format: LogFormat::Json,
        log_filter: "off".into(),
        log_writer: BoxMakeWriter::new(std::io::sink),
        otlp: Some(Otlp {
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: Some(format!("http://127.0.0.1:{port}/v1/traces")),
        }),
    })
    .unwrap();
    tracing::info_span!("checkout", order_id = "o-42").in_scope(|| {});
    // Dropping the guard flushes the batch.
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .unwrap();

    let (path, content_type, body) = requests.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    let attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    assert_eq!(
        attribute("service.name"),
        Some(Value::StringValue("otlp-test-service".into()))
    );
    // The release's version: the one `--version` prints and the image tag carries.
    assert_eq!(
        attribute("service.version"),
        Some(Value::StringValue(env!("CARGO_PKG_VERSION").into()))
    );
    let spans: Vec<_> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("span not exported");
    assert!(checkout.attributes.iter().any(|a| a.key == "order_id"));
}

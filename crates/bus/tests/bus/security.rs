//! Auth and TLS from config against a server that requires them: the right credentials
//! connect and can use JetStream; wrong ones never become ready.

use std::time::Duration;

use bus::{Bus, BusConfig, NatsAuth, Secret, StreamSettings};
use testkit::NatsServer;

use crate::support;

/// Connects with `auth` and proves the connection works by provisioning the streams.
async fn assert_usable(server: &NatsServer, auth: NatsAuth) {
    let bus = support::connect(
        server,
        BusConfig {
            auth,
            ..BusConfig::new("secure")
        },
    )
    .await;
    bus.provision_streams(&StreamSettings::default())
        .await
        .unwrap();
}

/// Connects with `config` and checks the connection stays down for a while.
async fn assert_refused(server: &NatsServer, config: BusConfig) {
    let bus = Bus::connect(&config.with_url(server.url())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!bus.is_connected(), "connected despite bad credentials");
}

#[tokio::test]
async fn a_service_connects_with_user_and_password_and_not_without() {
    let server = NatsServer::builder()
        .config("authorization { user: order, password: \"s3cret-pass\" }")
        .start();
    let good = NatsAuth::UserPassword {
        user: "order".into(),
        password: Secret::new("s3cret-pass"),
    };
    assert_usable(&server, good).await;
    let bad = NatsAuth::UserPassword {
        user: "order".into(),
        password: Secret::new("wrong"),
    };
    assert_refused(
        &server,
        BusConfig {
            auth: bad,
            ..BusConfig::new("bad")
        },
    )
    .await;
}

#[tokio::test]
async fn a_service_connects_with_a_token() {
    let server = NatsServer::builder()
        .config("authorization { token: \"t0ken-abc\" }")
        .start();
    assert_usable(&server, NatsAuth::Token(Secret::new("t0ken-abc"))).await;
    assert_refused(&server, BusConfig::new("anonymous")).await;
}

#[tokio::test]
async fn a_service_connects_with_an_nkey_seed() {
    let key = nkeys::KeyPair::new_user();
    let server = NatsServer::builder()
        .config(&format!(
            "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}",
            key.public_key()
        ))
        .start();
    assert_usable(
        &server,
        NatsAuth::NKeySeed(Secret::new(key.seed().unwrap())),
    )
    .await;
    let stranger = nkeys::KeyPair::new_user();
    let config = BusConfig {
        auth: NatsAuth::NKeySeed(Secret::new(stranger.seed().unwrap())),
        ..BusConfig::new("stranger")
    };
    assert_refused(&server, config).await;
}

#[tokio::test]
async fn a_service_connects_over_mutual_tls_and_a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = testkit::Pki::generate(dir.path());
    let server = NatsServer::builder().config(&pki.server_config()).start();
    let tls = bus::NatsTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
    };
    let bus = support::connect(
        &server,
        BusConfig {
            tls,
            ..BusConfig::new("mtls")
        },
    )
    .await;
    bus.provision_streams(&StreamSettings::default())
        .await
        .unwrap();

    let no_client_cert = bus::NatsTls {
        ca: Some(pki.ca),
        cert: None,
        key: None,
    };
    assert_refused(
        &server,
        BusConfig {
            tls: no_client_cert,
            ..BusConfig::new("no-cert")
        },
    )
    .await;
}

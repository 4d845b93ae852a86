//! Reverse-proxy mode (`--http`): the client's address and certificate come from headers,
//! which is also how these tests reach the fix-up of unspecified hosts and port 0.

use data_encoding::BASE64;
use http::StatusCode;
use peerfold_protocol::identity::Identity;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::support::{Backend, Client, Harness};

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn unspecified_hosts_and_port_zero_are_filled_in(backend: Backend) {
    let h = Harness::start_with(backend, |config| config.http = true).await;
    assert!(h.server().url().starts_with("http://"));
    let identity = Identity::generate().unwrap();
    let client = Client::plain(h.addr());
    let pem = utf8_percent_encode(&identity.certificate_pem(), NON_ALPHANUMERIC).to_string();
    let reply = client
        .announce_with(
            &[
                "quic://:22000",
                "tcp://0.0.0.0:0",
                "quic://[::]:22001",
                "quic6://:22002",
                "quic://127.0.0.1:22000",
                "quic://192.0.2.1:0",
            ],
            &[
                ("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
                ("x-client-port", "40000"),
                ("x-ssl-cert", &pem),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = client.lookup(identity.device_id()).await.lookup();
    assert_eq!(
        reply.addresses,
        strings(&[
            "quic://192.0.2.1:40000",
            "quic://198.51.100.7:22000",
            "quic://198.51.100.7:22001",
            "tcp://198.51.100.7:40000",
        ])
    );

    // Caddy's header; no port header: port-0 addresses cannot be completed and go.
    let other = Identity::generate().unwrap();
    let der = BASE64.encode(other.certificate_der());
    let reply = client
        .announce_with(
            &["quic://:22000", "tcp://:0"],
            &[
                ("x-forwarded-for", "2001:db8::5"),
                ("x-tls-client-cert-der-base64", &der),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert_eq!(
        client.lookup(other.device_id()).await.lookup().addresses,
        strings(&["quic://[2001:db8::5]:22000"])
    );

    // Without a certificate header the proxy's client has none: 403.
    let reply = client
        .announce_with(&["quic://:22000"], &[("x-forwarded-for", "198.51.100.7")])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // The proxy's own loopback address fills in nothing.
    let reply = client
        .announce_with(&["quic://:22000"], &[("x-ssl-cert", &pem)])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // HTTP/2 with prior knowledge works too.
    let reply = client.clone().http2().lookup(identity.device_id()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unspecified_hosts_and_port_zero_are_filled_in() {
    unspecified_hosts_and_port_zero_are_filled_in(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unspecified_hosts_and_port_zero_are_filled_in() {
    unspecified_hosts_and_port_zero_are_filled_in(Backend::Redis).await;
}

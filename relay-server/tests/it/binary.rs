//! The built `peerfold-relay` binary: prints its ID, URL and status address, serves, and
//! stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{Message, RelayUrl, Response};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::Client;

#[tokio::test]
async fn the_binary_prints_its_relay_url_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerfold-relay"))
        .args(["--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut id: Option<DeviceId> = None;
    let mut url: Option<RelayUrl> = None;
    let mut status = false;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(text) = line.strip_prefix("device ID: ") {
                id = Some(text.parse().unwrap());
            }
            if let Some(text) = line.strip_prefix("relay URL: ") {
                url = Some(text.parse().unwrap());
            }
            status |= line.starts_with("status on http://127.0.0.1:");
            if id.is_some() && url.is_some() && status {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the binary printed its ID, URL and status address");
    let (id, url) = (id.unwrap(), url.unwrap());
    assert_eq!(url.id, Some(id));
    assert_eq!(url.host, "127.0.0.1");
    assert_ne!(url.port, 0);
    assert!(dir.path().join("cert.pem").exists());

    // A device joins, pinning the printed ID.
    let addr = format!("{}:{}", url.host, url.port).parse().unwrap();
    let mut client = Client::connect(addr, id, &Identity::generate().unwrap()).await;
    let reply = client
        .request(Message::JoinRelayRequest {
            token: String::new(),
        })
        .await;
    assert_eq!(reply.code, Response::SUCCESS);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the binary stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    client.expect_closed().await;
}

//! The built `peerfold-discovery` binary: prints its ID and real address, answers, and stops
//! cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::Client;

#[tokio::test]
async fn the_binary_prints_its_id_and_address_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("disco.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ndata = {:?}\nmax-connections = 50\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerfold-discovery"))
        .arg("--config")
        .arg(&config)
        // The flag wins over the file's port 1.
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut id: Option<DeviceId> = None;
    let mut addr = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(text) = line.strip_prefix("device ID: ") {
                id = Some(text.parse().unwrap());
            }
            if let Some(text) = line.strip_prefix("listening on https://") {
                addr = Some(text.parse::<std::net::SocketAddr>().unwrap());
            }
            if id.is_some() && addr.is_some() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the binary printed its ID and address");
    let (id, addr) = (id.unwrap(), addr.unwrap());
    assert_ne!(addr.port(), 0);
    assert!(dir.path().join("data/cert.pem").exists());

    // Pinned to the printed ID, as devices will be.
    let client = Client::device(addr, &Identity::generate().unwrap(), id);
    assert_eq!(client.get("/ping").await.status, StatusCode::NO_CONTENT);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the binary stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

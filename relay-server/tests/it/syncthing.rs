//! Interoperability: two stock Syncthing devices (Debian's `syncthing`, 1.19), each
//! listening only on our relay and knowing the other only by the relay URL, join it and
//! reach each other through a relayed session (BEP over TLS inside it). Fails, never skips,
//! when `syncthing` is missing (`tests/run.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::support::Relay;

/// A Syncthing home made by `syncthing generate`.
struct Home {
    dir: TempDir,
    id: String,
}

impl Home {
    async fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("syncthing")
            .arg("generate")
            .arg(format!("--home={}", dir.path().display()))
            .arg("--no-default-folder")
            .output()
            .await
            .expect("running `syncthing` (Debian package syncthing; tests/run.sh installs it)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let id = text
            .lines()
            .find_map(|line| line.split("Device ID: ").nth(1))
            .unwrap_or_else(|| panic!("syncthing generate printed no ID: {text}"))
            .trim()
            .to_owned();
        Self { dir, id }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.xml")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("syncthing.log")
    }

    /// Listens only on the relay, knows `peer` at `peer_address` (`dynamic`, with discovery
    /// off, means nowhere), no GUI.
    fn configure(&self, peer: &str, relay_url: &str, peer_address: &str) {
        let url = relay_url.replace('&', "&amp;");
        let peer_address = peer_address.replace('&', "&amp;");
        let mut config = std::fs::read_to_string(self.config()).unwrap();
        let replace = |config: &mut String, from: &str, to: &str| {
            assert!(config.contains(from), "{from} not in config.xml");
            *config = config.replacen(from, to, 1);
        };
        // `generate` writes `default`, or, when port 22000 is taken (another test's
        // Syncthing), three explicit addresses on a random port: all give way to the relay.
        config = only_listen_address(&config, &url);
        for option in [
            "globalAnnounceEnabled",
            "localAnnounceEnabled",
            "natEnabled",
            "startBrowser",
            "crashReportingEnabled",
        ] {
            replace(
                &mut config,
                &format!("<{option}>true</{option}>"),
                &format!("<{option}>false</{option}>"),
            );
        }
        replace(
            &mut config,
            "<gui enabled=\"true\"",
            "<gui enabled=\"false\"",
        );
        let device = format!(
            "<device id=\"{peer}\" name=\"peer\" compression=\"metadata\" introducer=\"false\" \
             skipIntroductionRemovals=\"false\" introducedBy=\"\">\n        \
             <address>{peer_address}</address>\n    </device>\n    <gui "
        );
        replace(&mut config, "<gui ", &device);
        std::fs::write(self.config(), config).unwrap();
    }

    fn serve(&self) -> Child {
        let log = std::fs::File::create(self.log()).unwrap();
        Command::new("syncthing")
            .arg("serve")
            .arg(format!("--home={}", self.dir.path().display()))
            .args(["--no-browser", "--no-restart", "--logflags=0"])
            .env("STNOUPGRADE", "1")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

/// `config` with its `<listenAddress>` lines replaced by one listening on `url`.
fn only_listen_address(config: &str, url: &str) -> String {
    let mut out = String::with_capacity(config.len());
    let mut placed = false;
    for line in config.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("<listenAddress>") {
            if !placed {
                let indent = &line[..line.len() - trimmed.len()];
                out += &format!("{indent}<listenAddress>{url}</listenAddress>\n");
                placed = true;
            }
            continue;
        }
        out += line;
        out.push('\n');
    }
    assert!(placed, "no <listenAddress> in config.xml:\n{config}");
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `done` holds, or fails with both logs after 60 s.
async fn wait_for(what: &str, a: &Home, b: &Home, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s\n--- a\n{}\n--- b\n{}",
            read(&a.log()),
            read(&b.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stock_syncthing_devices_connect_through_the_relay() {
    let relay = Relay::start(|_| {}).await;
    let url = relay.server.url();
    let (a, b) = tokio::join!(Home::generate(), Home::generate());
    // Only b dials (a cannot, as it knows no address of b): when both dial at once, each
    // Syncthing keeps its own connection and closes the other's, and both die.
    a.configure(&b.id, &url, "dynamic");
    b.configure(&a.id, &url, &url);
    let _a = a.serve();
    // b starts once a has joined, so its first dial finds a (else it retries in ~20 s).
    wait_for("a joins the relay", &a, &b, || {
        read(&a.log()).contains("Joined relay")
    })
    .await;
    let _b = b.serve();
    let connected = |home: &Home, peer: &str, side: &str| {
        read(&home.log()).lines().any(|line| {
            line.contains("Established secure connection")
                && line.contains(peer)
                && line.contains(side)
        })
    };
    wait_for("a relayed connection", &a, &b, || {
        connected(&a, &b.id, "/relay-server/") && connected(&b, &a.id, "/relay-client/")
    })
    .await;
    let status = relay.status().await;
    assert_eq!(status["numActiveSessions"], 1, "{status}");
    assert!(status["bytesProxied"].as_u64().unwrap() > 0, "{status}");
}

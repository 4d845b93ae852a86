//! Relays (issue 12) between real daemons: two homes behind NAT routers that cannot reach
//! each other sync through our `peerfold-relay` (which sees only ciphertext), survive the
//! relay being killed mid-transfer, and run over a lossy, rate-limited link; two peerfold
//! daemons sync through Debian's `strelaysrv`; a relayed link moves to a direct path that
//! appears later without interrupting a transfer. The namespace tests need root (CI runs
//! as root) and the Debian packages `nftables`, `iproute2`, `tcpdump` and
//! `syncthing-relaysrv` (tests/run.sh installs them).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::api::Api;
use crate::global_discovery::{OurServer, addresses, global_device, pair_dynamic};
use crate::netns::{Nat, Netns};
use crate::ns_daemon::{NsDaemon, wait_until};
use crate::support::{Device, noise, terminate, wait_for_same_tree};

/// A relay server process: ours or Debian's `strelaysrv`.
pub(crate) struct RelayProcess {
    child: Child,
    /// `relay://IP:PORT/?id=RELAY-ID`.
    pub(crate) url: String,
    /// What it needs to start again on the same port with the same identity.
    restart: Command,
    log: PathBuf,
}

/// Our relay's binary, next to the test binary's directory (`cargo test --workspace`
/// builds it for the relay server's own tests).
fn our_relay_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("peerfold-relay");
    assert!(
        binary.exists(),
        "{} is missing: build it (cargo build -p peerfold-relay)",
        binary.display()
    );
    binary
}

/// A free TCP port on `ip` (taken and let go: the relay binds it next).
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RelayProcess {
    /// Our `peerfold-relay` on `ip`, keeping its identity in `data`.
    pub(crate) fn ours(ip: Ipv4Addr, data: &Path) -> Self {
        let mut command = Command::new(our_relay_binary());
        command
            .arg("--listen")
            .arg(format!("{ip}:{}", free_port(ip)))
            .args(["--status-listen", ""])
            .arg("--data")
            .arg(data);
        Self::start(command, data.join("relay.log"))
    }

    /// Debian's `strelaysrv` on `ip`, keeping its identity in `data`; it joins no pool.
    pub(crate) fn strelaysrv(ip: Ipv4Addr, data: &Path) -> Self {
        let mut command = Command::new("strelaysrv");
        command
            .arg("-listen")
            .arg(format!("{ip}:{}", free_port(ip)))
            .args(["-status-srv", "", "-pools", "", "-keys"])
            .arg(data);
        Self::start(command, data.join("relay.log"))
    }

    /// Starts `command` and reads its relay URL from what it prints (either stream).
    fn start(mut command: Command, log: PathBuf) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let (lines, found) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .and_then(|mut f| {
                            std::io::Write::write_all(&mut f, (line.clone() + "\n").as_bytes())
                        });
                    let _ = lines.send(line);
                }
            });
        }
        let url = loop {
            let line = found
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{command:?} printed no relay URL"));
            if let Some(at) = line.find("relay://") {
                let url = line[at..].split_whitespace().next().unwrap();
                // Only the ID is needed to reach it (strelaysrv adds its options).
                let url = url.split('&').next().unwrap().to_owned();
                break url;
            }
        };
        Self {
            child,
            url,
            restart: command,
            log,
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts it again on the same address with the same identity.
    pub(crate) fn restart(&mut self) {
        let again = Self::start(
            std::mem::replace(&mut self.restart, Command::new("true")),
            self.log.clone(),
        );
        assert_eq!(again.url, self.url, "the restarted relay has the same URL");
        *self = again;
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

/// tcpdump on one interface of the root namespace, writing what it sees to a file.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(interface: &str, filter: &str, file: PathBuf) -> Self {
        let mut child = Command::new("tcpdump")
            // A 32 MiB buffer: a loaded machine must not make it drop what it saw.
            .args(["-i", interface, "-n", "-U", "-s", "0", "-B", "32768", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (apt-get install tcpdump)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("tcpdump exited before listening")
                .unwrap();
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, file }
    }

    /// Stops the capture; returns what it recorded.
    fn finish(mut self) -> Vec<u8> {
        terminate(&mut self.child);
        fs::read(&self.file).unwrap()
    }
}

/// `/rest/system/connections` for `device`: (type, address) while connected.
pub(crate) fn connection(api: &Api, device: &str) -> Option<(String, String)> {
    let connections = api.get("/rest/system/connections");
    let c = &connections["connections"][device];
    (c["connected"] == true).then(|| {
        (
            c["type"].as_str().unwrap_or_default().to_owned(),
            c["address"].as_str().unwrap_or_default().to_owned(),
        )
    })
}

/// Bytes received from `device` so far.
pub(crate) fn in_bytes(api: &Api, device: &str) -> u64 {
    api.get("/rest/system/connections")["connections"][device]["inBytesTotal"]
        .as_u64()
        .unwrap_or(0)
}

/// Two homes (behind `nats`), a discovery server and our relay on the "internet" (the root
/// namespace), and two devices that know only each other's IDs, the server and the relay.
pub(crate) struct TwoHomes {
    pub(crate) net: Netns,
    pub(crate) server: OurServer,
    pub(crate) relay: RelayProcess,
    pub(crate) homes: [usize; 2],
    pub(crate) routers: [usize; 2],
    _relay_data: tempfile::TempDir,
}

impl TwoHomes {
    pub(crate) fn new(nats: [Nat; 2]) -> Self {
        let mut net = Netns::new(0);
        let (router_a, home_a) = net.add_home(nats[0]);
        let (router_b, home_b) = net.add_home(nats[1]);
        let server = OurServer::start(&net);
        let relay_data = tempfile::tempdir().unwrap();
        let relay = RelayProcess::ours(net.host_ip(), relay_data.path());
        // The homes really cannot reach each other: nothing comes in unasked.
        let probe = format!(
            "timeout 2 bash -c 'echo > /dev/tcp/{}/22'",
            net.ip(router_b)
        );
        assert!(!net.run(home_a, ["bash", "-c", &probe]).status.success());
        Self {
            net,
            server,
            relay,
            homes: [home_a, home_b],
            routers: [router_a, router_b],
            _relay_data: relay_data,
        }
    }

    /// Devices `a` and `b` sharing `docs`, each announcing to the server; returns them with
    /// their folder roots.
    pub(crate) fn devices(&self) -> ([Device; 2], [PathBuf; 2]) {
        let (a, b) = (
            global_device(&self.server.url()),
            global_device(&self.server.url()),
        );
        let (root_a, root_b) = pair_dynamic(&a, &b);
        ([a, b], [root_a, root_b])
    }

    /// Starts `device` in home `i`, listening on QUIC and holding a slot on the relay, and
    /// waits until the server lists its relay address (so the other side's first lookup
    /// finds it; a miss is not asked again for a minute).
    pub(crate) fn serve(&self, i: usize, device: &Device) -> NsDaemon {
        let daemon = NsDaemon::serve_listening(
            &self.net,
            self.homes[i],
            device,
            &["quic://0.0.0.0:0", &self.relay.url],
        );
        wait_until("the relay address is announced", &[device], || {
            self.server
                .lookup(&device.id())
                .is_some_and(|found| addresses(&found).iter().any(|a| a.starts_with("relay://")))
        });
        daemon
    }
}

#[test]
fn homes_behind_symmetric_nat_sync_through_our_relay_which_sees_no_plaintext() {
    let homes = TwoHomes::new([Nat::Symmetric; 2]);
    let capture_file = tempfile::NamedTempFile::new().unwrap();
    let port = homes.relay.url.rsplit(':').next().unwrap();
    let port = port.split('/').next().unwrap();
    let capture = Capture::start(
        homes.net.host_link(),
        &format!("tcp port {port}"),
        capture_file.path().to_owned(),
    );
    let ([a, b], [root_a, root_b]) = homes.devices();
    // A marker that appears nowhere else, many times over, among incompressible bytes.
    let marker = format!("PEERFOLD-PLAINTEXT-MARKER-{:016x}", rand_u64());
    let mut content = Vec::new();
    for i in 0..2000 {
        content.extend_from_slice(marker.as_bytes());
        content.extend_from_slice(&noise(i, 1000));
    }
    fs::write(root_a.join("secret.bin"), &content).unwrap();
    fs::write(root_a.join(&marker), b"a name is private too").unwrap();

    let on_a = homes.serve(0, &a);
    let on_b = homes.serve(1, &b);
    wait_for_same_tree("b has a's files", 90, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_b.join("secret.bin")).unwrap(), content);
    let (kind, address) = connection(&on_b.api, &a.id()).expect("b is connected to a");
    assert!(kind.starts_with("relay-"), "{kind} at {address}");
    assert_eq!(address, homes.relay.url);
    let (kind_a, _) = connection(&on_a.api, &b.id()).expect("a is connected to b");
    assert!(kind_a.starts_with("relay-"), "{kind_a}");
    assert_ne!(kind, kind_a, "one side dialed, the other was invited");

    drop((on_a, on_b));
    let seen = capture.finish();
    assert!(
        seen.len() > content.len(),
        "the relay carried the data ({} bytes captured)",
        seen.len()
    );
    assert!(
        !contains(&seen, marker.as_bytes()),
        "the marker crossed the relay in plaintext"
    );
}

#[test]
fn a_relay_killed_mid_transfer_and_restarted_loses_nothing_on_a_lossy_slow_link() {
    // Symmetric NATs: no hole can be punched, so the transfer stays on the relay.
    let mut homes = TwoHomes::new([Nat::Symmetric; 2]);
    // 5% loss and 20 Mbit/s out of each home.
    for router in homes.routers {
        homes.net.loss(router, 5);
        homes.net.rate_limit(router, 20);
    }
    let ([a, b], [root_a, root_b]) = homes.devices();
    let content = noise(12, 24 << 20);
    fs::write(root_a.join("big.bin"), &content).unwrap();
    fs::write(root_a.join("small.txt"), b"before the crash").unwrap();
    let on_a = homes.serve(0, &a);
    let on_b = homes.serve(1, &b);
    wait_until("the transfer is under way", &[&a, &b], || {
        in_bytes(&on_b.api, &a.id()) > 4 << 20
    });
    homes.relay.kill();
    wait_until("both sides see the relay gone", &[&a, &b], || {
        connection(&on_b.api, &a.id()).is_none() && connection(&on_a.api, &b.id()).is_none()
    });
    assert_ne!(
        fs::read(root_b.join("big.bin")).ok().as_deref(),
        Some(&content[..]),
        "the transfer had not finished when the relay died"
    );
    homes.relay.restart();
    fs::write(root_a.join("after.txt"), b"after the crash").unwrap();
    wait_for_same_tree("b has everything", 120, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_b.join("big.bin")).unwrap(), content);
    assert_eq!(
        fs::read(root_b.join("after.txt")).unwrap(),
        b"after the crash"
    );
    drop((on_a, on_b));
}

#[test]
fn two_peerfold_daemons_sync_through_debians_strelaysrv() {
    let relay_data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::strelaysrv(Ipv4Addr::LOCALHOST, relay_data.path());
    let ([a, b], [root_a, root_b]) = reached_through(&[&relay.url]);
    fs::write(root_a.join("through.txt"), b"through strelaysrv").unwrap();
    fs::write(root_a.join("big.bin"), noise(3, 3 << 20)).unwrap();
    // QUIC on IPv6 sockets: relayed paths are then known to quinn by IPv4-mapped stand-ins.
    let on_a = a.serve_listening(&["quic://[::1]:0", &relay.url]);
    let on_b = b.serve_listening(&["quic://[::1]:0"]);
    wait_for_same_tree("b has a's files", 60, (&root_a, &a), (&root_b, &b));
    let api_b = Api::of(&b, &on_b);
    let (kind, address) = connection(&api_b, &a.id()).expect("b is connected to a");
    assert_eq!(kind, "relay-client");
    assert_eq!(address, relay.url);
    let api_a = Api::of(&a, &on_a);
    assert_eq!(connection(&api_a, &b.id()).unwrap().0, "relay-server");
    // a lists the relay among its listeners, with its slot held.
    let status = api_a.get("/rest/system/status");
    let listener = &status["connectionServiceStatus"][relay.url.as_str()];
    assert_eq!(listener["error"], Value::Null, "{status}");
    assert_eq!(listener["lanAddresses"][0], relay.url.as_str(), "{status}");
}

#[test]
fn a_relayed_link_moves_to_a_direct_path_that_appears_without_interrupting_the_transfer() {
    let net = Netns::new(2);
    let relay_data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::ours(net.host_ip(), relay_data.path());
    let a = Device::init();
    let b = Device::init();
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    let direct = |node: usize| format!("quic://{}:22100", net.ip(node));
    for (device, other, node) in [(&a, &b, 1), (&b, &a, 0)] {
        device.ok([
            "device",
            "add",
            &other.id(),
            "--address",
            &direct(node),
            "--address",
            &relay.url,
        ]);
        device.ok(["folder", "share", "docs", &other.id()]);
    }
    // No direct path at first: b drops QUIC from a and to a.
    let block = format!(
        "table inet pf_block {{\n\
         chain in {{ type filter hook input priority 0; ip saddr {} udp dport 22100 drop; }}\n\
         chain out {{ type filter hook output priority 0; ip daddr {} udp dport 22100 drop; }}\n\
         }}\n",
        net.ip(0),
        net.ip(0)
    );
    net.nft(1, &block);
    // Slow enough that the transfer is still running when the direct path opens.
    net.rate_limit(0, 40);
    let content = noise(5, 40 << 20);
    fs::write(root_a.join("big.bin"), &content).unwrap();
    let listen = ["quic://0.0.0.0:22100", relay.url.as_str()];
    let _on_a = NsDaemon::serve_listening(&net, 0, &a, &listen);
    let on_b = NsDaemon::serve_listening(&net, 1, &b, &listen);
    wait_until("b connects to a through the relay", &[&a, &b], || {
        connection(&on_b.api, &a.id()).is_some_and(|(kind, _)| kind.starts_with("relay-"))
    });
    wait_until("the transfer is under way", &[&a, &b], || {
        in_bytes(&on_b.api, &a.id()) > 2 << 20
    });
    net.ok(1, ["nft", "delete", "table", "inet", "pf_block"]);
    wait_until("the link moves to the direct path", &[&a, &b], || {
        connection(&on_b.api, &a.id()).is_some_and(|(kind, _)| kind.starts_with("quic-"))
    });
    wait_for_same_tree("b has a's file", 120, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_b.join("big.bin")).unwrap(), content);
    // Nothing failed along the way: no block request was cut off with the relayed link
    // (it drained instead), and no item ended with an error.
    assert!(
        !b.log().contains("block request failed"),
        "a request failed as the link moved:\n{}",
        b.log()
    );
    let finished = on_b
        .api
        .get("/rest/events?since=0&timeout=0&events=ItemFinished");
    for event in finished.as_array().unwrap() {
        assert_eq!(event["data"]["error"], Value::Null, "{event}");
    }
    let (kind, address) = connection(&on_b.api, &a.id()).unwrap();
    assert!(kind.starts_with("quic-"), "{kind} {address}");
    assert!(address.starts_with(&net.ip(0).to_string()), "{address}");
}

/// Devices `a` and `b` sharing `docs`, on loopback: b knows a only by `relays` (its
/// addresses), a knows b as `dynamic` and never dials it. Returns them and their folders.
fn reached_through(relays: &[&str]) -> ([Device; 2], [PathBuf; 2]) {
    let (a, b) = (Device::init(), Device::init());
    let (root_a, root_b) = (a.add_folder("docs", "docs"), b.add_folder("docs", "docs"));
    a.ok(["device", "add", &b.id()]);
    a.ok(["folder", "share", "docs", &b.id()]);
    let a_id = a.id();
    let mut add = vec!["device", "add", &a_id];
    for relay in relays {
        add.extend(["--address", relay]);
    }
    b.ok(add);
    b.ok(["folder", "share", "docs", &a_id]);
    ([a, b], [root_a, root_b])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[test]
fn a_relay_that_dies_is_replaced_by_the_next_one_on_the_list() {
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut first = RelayProcess::ours(Ipv4Addr::LOCALHOST, data[0].path());
    let second = RelayProcess::ours(Ipv4Addr::LOCALHOST, data[1].path());
    let ([a, b], [root_a, root_b]) = reached_through(&[&first.url, &second.url]);
    fs::write(root_a.join("one.txt"), b"through the first relay").unwrap();
    let on_a = a.serve_listening(&["quic://127.0.0.1:0", &first.url, &second.url]);
    let on_b = b.serve();
    let (api_a, api_b) = (Api::of(&a, &on_a), Api::of(&b, &on_b));
    wait_for_same_tree("b has the first file", 60, (&root_a, &a), (&root_b, &b));
    assert_eq!(connection(&api_b, &a.id()).unwrap().1, first.url);
    let slot = |url: &str| {
        api_a.get("/rest/system/status")["connectionServiceStatus"][url]["error"].clone()
    };
    assert_eq!(slot(&first.url), Value::Null);
    assert_ne!(slot(&second.url), Value::Null, "one slot at a time");

    first.kill();
    crate::support::wait_until("a holds a slot on the second relay", 60, || {
        slot(&second.url) == Value::Null && slot(&first.url) != Value::Null
    });
    fs::write(root_a.join("two.txt"), b"through the second relay").unwrap();
    wait_for_same_tree("b has the second file", 60, (&root_a, &a), (&root_b, &b));
    assert_eq!(connection(&api_b, &a.id()).unwrap().1, second.url);
}

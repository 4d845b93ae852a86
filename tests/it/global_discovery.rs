//! Global discovery between real daemons on a LAN of network namespaces (the servers drop
//! loopback addresses, so nothing here can run on 127.0.0.1): devices that know each other
//! only as `dynamic` find each other through our `peerfold-discovery` and through Debian's
//! `stdiscosrv`, and a stock Syncthing device uses our server both ways. Needs root (CI runs
//! as root) and the Debian packages `syncthing`, `syncthing-discosrv` and `curl`
//! (tests/run.sh installs them).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use peerfold_discovery::{Config, Server};
use serde_json::Value;

use crate::api::Api;
use crate::netns::Netns;
use crate::ns_daemon::{NsDaemon, discovered, wait_until};
use crate::support::{Device, wait_for_same_tree};

/// Our discovery server, in this process, on the root namespace's end of the LAN.
pub(crate) struct OurServer {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    _data: tempfile::TempDir,
}

impl OurServer {
    pub(crate) fn start(net: &Netns) -> Self {
        Self::start_at(net.host_ip())
    }

    /// On `ip` (an address of the root namespace).
    fn start_at(ip: std::net::Ipv4Addr) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = Config {
            listen: SocketAddr::new(ip.into(), 0),
            ..Config::testing(data.path())
        };
        let server = runtime
            .block_on(Server::bind(config))
            .expect("starting peerfold-discovery");
        Self {
            runtime,
            server: Some(server),
            _data: data,
        }
    }

    pub(crate) fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    /// `GET ?device=ID` through curl from the root namespace: the JSON, or `None` on a miss.
    pub(crate) fn lookup(&self, device: &str) -> Option<Value> {
        let addr = self.server.as_ref().unwrap().local_addr();
        curl_lookup(None, &format!("https://{addr}/?device={device}"))
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

/// A lookup with curl (`-k`: the servers' certificates are self-signed), from `node` or from
/// the root namespace.
fn curl_lookup(at: Option<(&Netns, usize)>, url: &str) -> Option<Value> {
    let args = ["curl", "-sk", "-w", "\n%{http_code}", url];
    let output = match at {
        Some((net, node)) => net.run(node, args),
        None => Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("curl (apt-get install curl)"),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim() {
        "200" => Some(serde_json::from_str(body).unwrap()),
        "404" => None,
        other => panic!("lookup {url} answered {other}: {body}"),
    }
}

pub(crate) fn addresses(found: &Value) -> Vec<String> {
    strings(&found["addresses"])
}

/// The strings of a JSON list (none when it is not a list).
pub(crate) fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A device that announces to `server` and knows `others` only as `dynamic`, sharing
/// `docs` with them.
pub(crate) fn global_device(server: &str) -> Device {
    let device = Device::init();
    device.ok(["config", "set", &format!("globalAnnounceServers={server}")]);
    device
}

pub(crate) fn pair_dynamic(a: &Device, b: &Device) -> (std::path::PathBuf, std::path::PathBuf) {
    let (root_a, root_b) = (a.add_folder("docs", "docs"), b.add_folder("docs", "docs"));
    for (device, other) in [(a, b.id()), (b, a.id())] {
        device.ok(["device", "add", &other]);
        device.ok(["folder", "share", "docs", &other]);
    }
    (root_a, root_b)
}

#[test]
fn dynamic_devices_find_each_other_through_our_discovery_server_and_sync() {
    let net = Netns::new(2);
    let server = OurServer::start(&net);
    let (a, b) = (global_device(&server.url()), global_device(&server.url()));
    let (root_a, root_b) = pair_dynamic(&a, &b);
    fs::write(
        root_a.join("hello.txt"),
        b"found through the discovery server",
    )
    .unwrap();

    // b announces first, so a's first lookup finds it (a miss is not asked again for 1 min).
    let on_b = NsDaemon::serve(&net, 1, &b);
    let b_at = format!("quic://{}:", net.ip(1));
    wait_until("b's announce reaches the server", &[&b], || {
        server
            .lookup(&b.id())
            .is_some_and(|found| addresses(&found).iter().any(|a| a.starts_with(&b_at)))
    });
    let on_a = NsDaemon::serve(&net, 0, &a);
    wait_until("a looks b up", &[&a, &b], || {
        discovered(&on_a.api)
            .get(&b.id())
            .is_some_and(|addrs| addrs.iter().any(|addr| addr.starts_with(&b_at)))
    });
    wait_for_same_tree("b has a's file", 30, (&root_a, &a), (&root_b, &b));
    assert_eq!(
        fs::read(root_b.join("hello.txt")).unwrap(),
        b"found through the discovery server"
    );
    // The server learned a's address too, with the host it saw (a announced 0.0.0.0).
    let a_at = format!("quic://{}:", net.ip(0));
    wait_until("a's announce reaches the server", &[&a], || {
        server
            .lookup(&a.id())
            .is_some_and(|found| addresses(&found).iter().any(|addr| addr.starts_with(&a_at)))
    });

    let status = on_a.api.get("/rest/system/status");
    let key = format!("global@{}", server.url());
    assert_eq!(status["discoveryEnabled"], true, "{status}");
    assert_eq!(
        status["discoveryStatus"][&key]["error"],
        Value::Null,
        "{status}"
    );
    assert_eq!(status["discoveryErrors"], serde_json::json!({}), "{status}");
    let events = on_a
        .api
        .get("/rest/events?since=0&timeout=0&events=DeviceDiscovered");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["device"] == b.id().as_str()),
        "{events}"
    );
    assert!(on_a.stop().success(), "{}", a.log());
    assert!(on_b.stop().success(), "{}", b.log());
}

/// The address `api`'s daemon is connected to `device` at, if it is.
fn connected_at(api: &Api, device: &str) -> Option<String> {
    let connections = api.get("/rest/system/connections");
    let connection = &connections["connections"][device];
    (connection["connected"] == true).then(|| connection["address"].as_str().unwrap().to_owned())
}

#[test]
fn a_link_found_through_the_global_server_moves_to_the_lan_once_mdns_finds_the_peer() {
    // Two networks between the nodes: the LAN (mDNS) and a WAN where the discovery server
    // is, so the address the server hands out is not the LAN one.
    let mut net = Netns::new(2);
    net.add_wan();
    let server = OurServer::start_at(net.wan_host_ip());
    let (a, b) = (global_device(&server.url()), global_device(&server.url()));
    let (root_a, root_b) = pair_dynamic(&a, &b);
    // The devices start with local discovery off (tests' default): only the server knows.
    let on_b = NsDaemon::serve(&net, 1, &b);
    let b_wan = format!("quic://{}:", net.wan_ip(1));
    wait_until("b's announce reaches the server", &[&b], || {
        server
            .lookup(&b.id())
            .is_some_and(|found| addresses(&found).iter().any(|a| a.starts_with(&b_wan)))
    });
    let on_a = NsDaemon::serve(&net, 0, &a);
    let sides = [(&on_a, b.id(), 1), (&on_b, a.id(), 0)];
    for (daemon, other, node) in &sides {
        let wan = format!("{}:", net.wan_ip(*node));
        wait_until("the devices connect over the WAN", &[&a, &b], || {
            connected_at(&daemon.api, other).is_some_and(|at| at.starts_with(&wan))
        });
    }
    fs::write(root_a.join("before.txt"), b"over the WAN").unwrap();
    wait_for_same_tree(
        "b has the file sent over the WAN",
        30,
        (&root_a, &a),
        (&root_b, &b),
    );

    // Local discovery on: each hears of the other on the LAN, and the link moves there.
    for daemon in [&on_a, &on_b] {
        let (status, answer) = daemon.api.send_json(
            "PATCH",
            "/rest/config/options",
            &serde_json::json!({ "localAnnounceEnabled": true }),
        );
        assert_eq!(status, 200, "{answer}");
    }
    for (daemon, other, node) in &sides {
        let lan = format!("{}:", net.ip(*node));
        wait_until("the link moves to the LAN", &[&a, &b], || {
            connected_at(&daemon.api, other).is_some_and(|at| at.starts_with(&lan))
        });
    }
    fs::write(root_a.join("after.txt"), b"over the LAN").unwrap();
    wait_for_same_tree(
        "b has the file sent over the LAN",
        30,
        (&root_a, &a),
        (&root_b, &b),
    );
    // It stays there: one move, made by the lower ID, and no flapping.
    std::thread::sleep(std::time::Duration::from_secs(3));
    for (daemon, other, node) in &sides {
        let at = connected_at(&daemon.api, other).expect("still connected");
        assert!(at.starts_with(&format!("{}:", net.ip(*node))), "{at}");
    }
    // (Which one is the lower ID is the registry's business: exactly one of them moved.)
    let moves: Vec<usize> = [&a, &b]
        .iter()
        .map(|d| d.log().matches("moving to a LAN path").count())
        .collect();
    assert!(
        moves == [1, 0] || moves == [0, 1],
        "moves {moves:?}\n{}\n{}",
        a.log(),
        b.log()
    );
    assert!(on_a.stop().success(), "{}", a.log());
    assert!(on_b.stop().success(), "{}", b.log());
}

#[test]
fn a_dead_discovery_server_is_reported_not_hidden() {
    let net = Netns::new(1);
    // Nothing listens there.
    let url = format!("https://{}:9/?insecure", net.host_ip());
    // `default` (no server) first: the dead server's status must still be its own.
    let a = global_device(&format!("default,{url}"));
    let on_a = NsDaemon::serve(&net, 0, &a);
    let key = format!("global@{url}");
    wait_until("the failed announce shows in the status", &[&a], || {
        let status = on_a.api.get("/rest/system/status");
        status["discoveryErrors"][&key]
            .as_str()
            .is_some_and(|e| e.contains("connect"))
    });
    assert!(on_a.stop().success(), "{}", a.log());
}

/// Debian's `stdiscosrv` in `node`, listening on the node's LAN address; returns it and the
/// URL devices use (pinned to its ID).
fn start_stdiscosrv(net: &Netns, node: usize, dir: &std::path::Path) -> (Child, String) {
    let mut command = Command::new("stdiscosrv");
    command
        .args(["-listen", &format!("{}:8443", net.ip(node))])
        .current_dir(dir);
    let mut child = net
        .wrap(node, &command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("stdiscosrv (apt-get install syncthing-discosrv)");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut id = None;
    for line in lines {
        let line = line.unwrap();
        if let Some(rest) = line.split("Server device ID is ").nth(1) {
            id = Some(rest.trim().to_owned());
            break;
        }
    }
    let id = id.expect("stdiscosrv printed no device ID");
    (child, format!("https://{}:8443/?id={id}", net.ip(node)))
}

#[test]
fn our_daemon_announces_to_syncthing_discosrv_and_looks_up_through_it() {
    let net = Netns::new(3);
    let dir = tempfile::tempdir().unwrap();
    let (mut stdiscosrv, url) = start_stdiscosrv(&net, 0, dir.path());
    let (a, b) = (global_device(&url), global_device(&url));
    let (root_a, root_b) = pair_dynamic(&a, &b);
    fs::write(root_a.join("via-stdiscosrv.txt"), b"hello").unwrap();

    let on_a = NsDaemon::serve(&net, 1, &a);
    let a_at = format!("quic://{}:", net.ip(1));
    let lookup_a = format!("https://{}:8443/?device={}", net.ip(0), a.id());
    wait_until("stdiscosrv returns a's address", &[&a], || {
        curl_lookup(Some((&net, 2)), &lookup_a)
            .is_some_and(|found| addresses(&found).iter().any(|addr| addr.starts_with(&a_at)))
    });
    let on_b = NsDaemon::serve(&net, 2, &b);
    wait_for_same_tree("b has a's file", 30, (&root_a, &a), (&root_b, &b));
    assert!(on_a.stop().success(), "{}", a.log());
    assert!(on_b.stop().success(), "{}", b.log());
    let _ = stdiscosrv.kill();
    let _ = stdiscosrv.wait();
}

/// Debian's Syncthing in `node`, its GUI/REST on the node's LAN address.
pub(crate) struct SyncthingDevice {
    child: Child,
    pub(crate) api: Api,
    pub(crate) id: String,
    _home: tempfile::TempDir,
}

impl SyncthingDevice {
    pub(crate) fn start(net: &Netns, node: usize) -> Self {
        let home = tempfile::tempdir().unwrap();
        let out = Command::new("syncthing")
            .args(["generate", &format!("--home={}", home.path().display())])
            .output()
            .expect("syncthing (apt-get install syncthing)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let id = text
            .split("Device ID: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("syncthing generate printed no ID: {text}"))
            .to_owned();
        let config = fs::read_to_string(home.path().join("config.xml")).unwrap();
        let key = config
            .split("<apikey>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .expect("an API key in config.xml")
            .to_owned();
        let gui = format!("{}:8384", net.ip(node));
        let mut command = Command::new("syncthing");
        command
            .args(["serve", "--no-browser", "--no-restart"])
            .arg(format!("--home={}", home.path().display()))
            .arg(format!("--gui-address=http://{gui}"))
            .env("STNODEFAULTFOLDER", "1")
            .env("STNOUPGRADE", "1");
        let child = net
            .wrap(node, &command)
            .stdin(Stdio::null())
            .stdout(fs::File::create(home.path().join("syncthing.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting syncthing");
        let api = Api::with_key(&format!("http://{gui}"), &key);
        wait_until("syncthing's REST API answers", &[], || {
            let url = format!("{}/rest/system/ping", api.base);
            api.agent
                .get(&url)
                .header("X-API-Key", &api.key)
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        Self {
            child,
            api,
            id,
            _home: home,
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self._home.path().join("syncthing.log")).unwrap_or_default()
    }

    /// A configuration change through Syncthing's REST API (it answers with no body).
    pub(crate) fn change(&self, method: &str, path: &str, body: &Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api.base))
            .header("X-API-Key", &self.api.key)
            .body(body.to_string())
            .unwrap();
        let response = self.api.agent.run(request).unwrap();
        assert_eq!(response.status(), 200, "{method} {path} {body}");
    }
}

impl Drop for SyncthingDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn syncthing_announces_to_our_server_and_finds_a_peerfold_device_there() {
    let net = Netns::new(2);
    let server = OurServer::start(&net);
    let peerfold = Device::new();
    peerfold.ok(["init", "--name", "pf-laptop"]);
    peerfold.ok([
        "config",
        "set",
        &format!("globalAnnounceServers={}", server.url()),
    ]);
    let on_peerfold = NsDaemon::serve(&net, 1, &peerfold);
    let peerfold_at = format!("quic://{}:", net.ip(1));
    wait_until("the peerfold device announces", &[&peerfold], || {
        server.lookup(&peerfold.id()).is_some()
    });

    let syncthing = SyncthingDevice::start(&net, 0);
    // Syncthing checks a peer certificate's name; peerfold's says "peerfold".
    syncthing.change(
        "PATCH",
        "/rest/config/options",
        &serde_json::json!({
            "globalAnnounceServers": [server.url()],
            "relaysEnabled": false,
            "natEnabled": false,
            "localAnnounceEnabled": false,
        }),
    );
    syncthing.change(
        "POST",
        "/rest/config/devices",
        &serde_json::json!({
            "deviceID": peerfold.id(),
            "addresses": ["dynamic"],
            "certName": "peerfold",
        }),
    );
    // Syncthing's announce is in our server with its LAN address.
    let syncthing_at = format!("quic://{}:22000", net.ip(0));
    wait_until("syncthing announces to our server", &[&peerfold], || {
        server
            .lookup(&syncthing.id)
            .is_some_and(|found| addresses(&found).contains(&syncthing_at))
    });
    // It looked the peerfold device up there, dialed it and read its Hello.
    wait_until(
        "syncthing looks up and reaches the peerfold device",
        &[&peerfold],
        || {
            let cache = syncthing.api.get("/rest/system/discovery");
            let found = addresses(&cache[peerfold.id().as_str()]);
            found.iter().any(|a| a.starts_with(&peerfold_at))
                && syncthing
                    .api
                    .get("/rest/events?since=0&timeout=1")
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| {
                        e["type"] == "DeviceConnected"
                            && e["data"]["id"] == peerfold.id().as_str()
                            && e["data"]["clientName"] == "peerfold"
                            && e["data"]["deviceName"] == "pf-laptop"
                    })
        },
    );
    // And peerfold looks Syncthing up through the same server (it keeps the QUIC address).
    peerfold.ok(["device", "add", &syncthing.id]);
    wait_until(
        "peerfold looks the Syncthing device up",
        &[&peerfold],
        || {
            discovered(&on_peerfold.api)
                .get(&syncthing.id)
                .is_some_and(|addrs| addrs.contains(&syncthing_at))
        },
    );
    assert!(
        peerfold.log().contains("a Syncthing device dialed in"),
        "{}\n{}",
        peerfold.log(),
        syncthing.log()
    );
    assert!(on_peerfold.stop().success(), "{}", peerfold.log());
}

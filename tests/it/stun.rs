//! Public address discovery: the daemon's QUIC socket asks STUN servers what address it is
//! seen from, shows it in `/rest/system/status` and announces it. On loopback against a STUN
//! responder of the test's own; behind a port-preserving NAT router (network namespaces,
//! root only) against our discovery server, which answers STUN on its port.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerfold_protocol::stun;
use serde_json::Value;

use crate::api::Api;
use crate::global_discovery::{OurServer, addresses, global_device, strings};
use crate::netns::{Nat, Netns};
use crate::ns_daemon::{NsDaemon, wait_until};
use crate::support::{self, Device};

/// A STUN responder on 127.0.0.1 in a thread: answers Binding requests with their source,
/// and remembers the sources.
struct Responder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_by, stopped) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(tx) = stun::parse_binding_request(&buf[..len]) {
                    seen_by.lock().unwrap().push(from);
                    let _ = socket.send_to(&stun::binding_response(tx, from), from);
                }
            }
        });
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first QUIC listener's entry in `/rest/system/status`: (its URL, the entry).
fn first_listener(api: &Api) -> (String, Value) {
    let status = api.get("/rest/system/status");
    let services = status["connectionServiceStatus"].as_object().unwrap();
    let (url, service) = services
        .iter()
        .find(|(url, _)| url.starts_with("quic://"))
        .expect("a QUIC listener");
    (url.clone(), service.clone())
}

fn wan_addresses(service: &Value) -> Vec<String> {
    strings(&service["wanAddresses"])
}

#[test]
fn the_quic_socket_learns_its_address_from_a_stun_server_on_loopback() {
    let responder = Responder::start();
    let device = Device::init();
    device.ok(["config", "set", &format!("stunServers={}", responder.addr)]);
    let running = device.serve();
    let api = Api::of(&device, &running);
    let me = format!("quic://127.0.0.1:{}", running.port);
    // On loopback the mapped address is the listener's own (listed once): what tells the
    // mapping was learned is the NAT type, which needs an answer with our port.
    support::wait_until("the STUN-mapped address is learned", 30, || {
        let (_, service) = first_listener(&api);
        wan_addresses(&service) == [me.clone()] && service["natType"] == "port-preserving"
    });
    // Asked from the QUIC socket itself, not from a socket of its own.
    let seen = responder.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|from| from.port() == running.port),
        "{seen:?} vs port {}",
        running.port
    );
    // STUN off: the address is forgotten.
    device.ok(["config", "set", "stunServers="]);
    support::wait_until("the mapped address is dropped", 30, || {
        let (_, service) = first_listener(&api);
        wan_addresses(&service) == [me.clone()] && service["natType"] == "unknown"
    });
    drop(running);
}

#[test]
fn a_home_behind_a_port_preserving_nat_announces_its_router_address() {
    let mut net = Netns::new(0);
    let (router, home) = net.add_home(Nat::PortPreserving);
    // The discovery server in the root namespace answers STUN on its port, and `default`
    // STUN servers are the configured discovery servers.
    let server = OurServer::start(&net);
    let device = global_device(&server.url());
    // Listening on the home's own address, so the server has nothing to fill in: a router
    // address in the announcement can only come from STUN.
    let daemon = NsDaemon::serve_listening(
        &net,
        home,
        &device,
        &[&format!("quic://{}:0", net.ip(home))],
    );
    let (url, _) = first_listener(&daemon.api);
    let port = url.rsplit(':').next().unwrap().to_owned();
    let public = format!("quic://{}:{port}", net.ip(router));
    wait_until("the router's address is announced", &[&device], || {
        server
            .lookup(&device.id())
            .is_some_and(|found| addresses(&found).contains(&public))
    });
    let (_, service) = first_listener(&daemon.api);
    assert!(wan_addresses(&service).contains(&public), "{service}");
    assert_eq!(service["natType"], "port-preserving", "{service}");
    drop(daemon);
}

//! Real daemons inside the nodes of a `Netns` LAN, for the discovery tests: `peerfold serve`
//! with QUIC on every interface and its REST API on the node's LAN address (reached from
//! the root namespace over the harness's link), and what their discovery says.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Api;
use crate::netns::Netns;
use crate::support::{Device, terminate};

/// `peerfold serve` in one node; stopped with SIGTERM when dropped.
pub(crate) struct NsDaemon {
    child: Child,
    pub(crate) api: Api,
}

impl NsDaemon {
    pub(crate) fn serve(net: &Netns, node: usize, device: &Device) -> Self {
        Self::serve_listening(net, node, device, &["quic://0.0.0.0:0"])
    }

    /// Like [`NsDaemon::serve`], listening on `listen` (QUIC addresses and relays).
    pub(crate) fn serve_listening(
        net: &Netns,
        node: usize,
        device: &Device,
        listen: &[&str],
    ) -> Self {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_peerfold"));
        serve.arg("serve");
        for address in listen {
            serve.args(["--listen", address]);
        }
        serve
            .arg("--api")
            .arg(format!("{}:0", net.ip(node)))
            .env("PEERFOLD_HOME", device.home())
            .env("RUST_LOG", "peerfold=debug,peerfold_engine=debug");
        let mut child = net
            .wrap(node, &serve)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(device.path("serve.log")).unwrap())
            .spawn()
            .expect("starting peerfold serve in a namespace");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let api_port: u16 = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("serve exited: {}", device.log()))
                .unwrap();
            if let Some(rest) = line.strip_prefix("REST API on http://") {
                let addr = rest.split(' ').next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        Self {
            child,
            api: Api::at(device, &format!("http://{}:{api_port}", net.ip(node))),
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

/// Polls `condition` for up to 30 s; a timeout fails the test with the daemons' logs.
pub(crate) fn wait_until(what: &str, devices: &[&Device], condition: impl FnMut() -> bool) {
    wait_up_to(30, what, devices, condition);
}

/// Polls `condition` for up to `seconds`; a timeout fails the test with the daemons' logs.
pub(crate) fn wait_up_to(
    seconds: u64,
    what: &str,
    devices: &[&Device],
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = devices.iter().map(|d| d.log()).collect();
    panic!("timed out waiting for: {what}\n{}", logs.join("\n-----\n"));
}

/// `/rest/system/discovery`: every device discovery knows, with its addresses.
pub(crate) fn discovered(api: &Api) -> BTreeMap<String, Vec<String>> {
    let known = api.get("/rest/system/discovery");
    let mut out = BTreeMap::new();
    for (device, entry) in known.as_object().into_iter().flatten() {
        let addresses = entry["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        out.insert(device.clone(), addresses);
    }
    out
}

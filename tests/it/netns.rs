//! Network namespaces for topology tests (root only): a LAN of N namespaces ("nodes") on one
//! bridge, and a link from the test's own (root) namespace to that bridge so the test can
//! reach services the nodes bind on their LAN addresses.
//!
//! ```text
//!   root ns: pf<pid>h<n> 10.A.B.254/24 (multicast off) ─┐
//!   <prefix>-sw: bridge br0 (multicast snooping off) ───┼─ s0 ── eth0 10.A.B.1/24 in <prefix>-n0
//!                                                       ├─ s1 ── eth0 10.A.B.2/24 in <prefix>-n1
//!                                                       └─ ...
//! ```
//! Each node has `lo` and `eth0` up, with multicast on (mDNS works between nodes). The root
//! end has multicast off, so nothing in the root namespace (an avahi, say) joins the LAN's
//! multicast and the machine's real LAN never hears the test. Everything is made under a
//! prefix unique to this process and harness (`pf<pid>-<n>`), deleted on drop, also when
//! the test panics; namespaces a killed test run left behind are swept when the next
//! harness starts.
//!
//! Usage: `let net = Netns::new(2);` then `net.command(0, "ping")` (a `Command` that runs
//! `ip netns exec <ns> ping`), `net.wrap(0, &command)` (the same for a `Command` already
//! built: program, arguments, environment and working directory carry over, stdio does not),
//! `net.spawn(0, &command)`, `net.ok(0, ["ip", "addr"])`, `net.ip(0)` (a node's LAN
//! address), `net.host_ip()` (the root end's), `net.name(0)` (for `ip netns exec` by hand),
//! `net.add_node()`, `net.add_wan()` (a second network, no mDNS on it: `net.wan_ip(0)`,
//! `net.wan_host_ip()`), `net.nft(0, rules)`.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Harnesses made by this process so far (part of each one's prefix).
static MADE: AtomicU32 = AtomicU32::new(0);

/// The namespaces, bridge and links of one test; deleted on drop.
pub(crate) struct Netns {
    /// `pf<pid>-<n>`: every namespace's name starts with it.
    prefix: String,
    /// The namespace holding the bridge.
    switch: String,
    /// The nodes' namespaces, in order.
    nodes: Vec<String>,
    /// The root namespace's end of the link to the bridge.
    host_link: String,
    /// The LAN's first three octets (`10.A.B`).
    subnet: [u8; 3],
    /// The second network, once made.
    wan: Option<Wan>,
    /// Nodes that are homes behind a NAT router (`add_home`): node index -> its private
    /// subnet.
    homes: std::collections::HashMap<usize, [u8; 3]>,
}

/// How a home's router rewrites what leaves it (`add_home`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nat {
    /// Linux masquerade: keeps the source port where it can (endpoint-independent
    /// mapping, so hole punching works).
    PortPreserving,
    /// `masquerade fully-random` (iptables' `--random-fully`): a new random port per
    /// connection (symmetric NAT).
    Symmetric,
}

/// A second network joining the nodes and the root namespace (`add_wan`): its own bridge,
/// each node's `eth1` and the root's end, and no mDNS on it.
struct Wan {
    host_link: String,
    subnet: [u8; 3],
}

impl Netns {
    /// A LAN of `nodes` namespaces on one bridge, reachable from this namespace. Panics
    /// (with the command's error) when a step fails, for instance when not run as root.
    pub(crate) fn new(nodes: usize) -> Self {
        assert!(
            crate::support::running_as_root(),
            "network namespaces need root: run the tests as root (CI does)"
        );
        sweep_leftovers();
        let pid = std::process::id();
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("pf{pid}-{n}");
        let mut net = Self {
            switch: format!("{prefix}-sw"),
            nodes: Vec::new(),
            host_link: format!("pf{pid}h{n}"),
            subnet: free_subnet(pid, n, None),
            prefix,
            wan: None,
            homes: std::collections::HashMap::new(),
        };
        // From here on, drop cleans up whatever was made.
        net.make_switch();
        for _ in 0..nodes {
            net.add_node();
        }
        net
    }

    /// Adds a node on the bridge; returns its index.
    pub(crate) fn add_node(&mut self) -> usize {
        assert!(self.wan.is_none(), "add the nodes before the WAN");
        let index = self.nodes.len();
        assert!(index < 250, "a /24 holds 250 nodes here");
        let name = format!("{}-n{index}", self.prefix);
        ip(["netns", "add", &name]);
        self.nodes.push(name.clone());
        let port = format!("s{index}");
        ip([
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &name,
        ]);
        ip(["-n", &self.switch, "link", "set", &port, "master", "br0"]);
        ip(["-n", &self.switch, "link", "set", &port, "up"]);
        let address = format!("{}/24", self.ip(index));
        ip(["-n", &name, "addr", "add", &address, "dev", "eth0"]);
        ip(["-n", &name, "link", "set", "eth0", "multicast", "on", "up"]);
        ip(["-n", &name, "link", "set", "lo", "up"]);
        index
    }

    /// Node `node`'s namespace name.
    pub(crate) fn name(&self, node: usize) -> &str {
        &self.nodes[node]
    }

    /// Node `node`'s LAN address (`10.A.B.<node + 1>`); a home's private address.
    pub(crate) fn ip(&self, node: usize) -> Ipv4Addr {
        if let Some([a, b, c]) = self.homes.get(&node) {
            return Ipv4Addr::new(*a, *b, *c, 2);
        }
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, u8::try_from(node + 1).unwrap())
    }

    /// Adds a home: a router node on the LAN (which plays the internet here) and, behind
    /// it, a host on a private subnet of its own whose traffic out is rewritten by `nat`
    /// (nftables). Nothing from the LAN reaches the host unless the host sent there first,
    /// so two homes cannot dial each other; the root namespace gets a route to the home
    /// (so the test reaches the host's REST API) and hosts it serves see the router's
    /// address. Returns (router node, home node); the home node's `ip` is its private
    /// address, and `tc_limit` / `loss` act on its router's LAN link.
    pub(crate) fn add_home(&mut self, nat: Nat) -> (usize, usize) {
        assert!(self.wan.is_none(), "add the homes before the WAN");
        let router = self.add_node();
        let home = self.nodes.len();
        let name = format!("{}-n{home}", self.prefix);
        ip(["netns", "add", &name]);
        self.nodes.push(name.clone());
        let n: u32 = self.prefix.rsplit('-').next().unwrap().parse().unwrap();
        let taken: Vec<[u8; 3]> = self.homes.values().copied().chain([self.subnet]).collect();
        let subnet = free_subnet_besides(std::process::id(), n + 100 * (home as u32 + 1), &taken);
        self.homes.insert(home, subnet);
        let [a, b, c] = subnet;
        let router_ns = self.nodes[router].clone();
        ip([
            "-n", &router_ns, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", &name,
        ]);
        ip([
            "-n",
            &router_ns,
            "addr",
            "add",
            &format!("{a}.{b}.{c}.1/24"),
            "dev",
            "lan0",
        ]);
        ip(["-n", &router_ns, "link", "set", "lan0", "up"]);
        ip([
            "-n",
            &name,
            "addr",
            "add",
            &format!("{a}.{b}.{c}.2/24"),
            "dev",
            "eth0",
        ]);
        ip(["-n", &name, "link", "set", "eth0", "up"]);
        ip(["-n", &name, "link", "set", "lo", "up"]);
        ip([
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &format!("{a}.{b}.{c}.1"),
        ]);
        self.ok(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        let masquerade = match nat {
            Nat::PortPreserving => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        // Only answers (and the root namespace, which plays the test's eyes) come in. Like
        // any home router's firewall (OpenWrt's drops what comes to it unasked on the WAN),
        // it drops unasked TCP and UDP addressed to itself: accepted, such a packet would
        // leave a conntrack entry that makes masquerade give the host's own next packet to
        // that sender another port (machine-notes), so no hole could be punched; and after
        // a `conntrack -F`, a TCP segment from outside would be answered with a reset
        // instead of waiting for the host's next one to restore the mapping.
        let lan_ip = self.ip(router);
        let host_ip = self.host_ip();
        self.nft(
            router,
            &format!(
                "table ip pf_nat {{\n\
                 chain post {{ type nat hook postrouting priority srcnat; oifname \"eth0\" {masquerade}; }}\n\
                 chain input {{ type filter hook input priority 0; iifname \"eth0\" ct state new meta l4proto {{ tcp, udp }} drop; }}\n\
                 chain forward {{ type filter hook forward priority 0; policy drop;\n\
                   ct state established,related accept;\n\
                   iifname \"lan0\" accept;\n\
                   iifname \"eth0\" ip saddr {host_ip} ip daddr != {lan_ip} accept; }}\n\
                 }}\n"
            ),
        );
        ip([
            "route",
            "add",
            &format!("{a}.{b}.{c}.0/24"),
            "via",
            &lan_ip.to_string(),
        ]);
        (router, home)
    }

    /// Drops `percent`% of the packets node `node` forwards or sends (nftables `numgen`;
    /// this kernel has no netem).
    pub(crate) fn loss(&self, node: usize, percent: u8) {
        self.nft(
            node,
            &format!(
                "table inet pf_loss {{\n\
                 chain forward {{ type filter hook forward priority -10; numgen random mod 100 < {percent} drop; }}\n\
                 chain out {{ type filter hook output priority -10; numgen random mod 100 < {percent} drop; }}\n\
                 }}\n"
            ),
        );
    }

    /// Limits what node `node` sends on its LAN link to `mbit` Mbit/s (tc tbf).
    pub(crate) fn rate_limit(&self, node: usize, mbit: u32) {
        self.ok(
            node,
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                "32kbit",
                "latency",
                "50ms",
            ],
        );
    }

    /// The root namespace's end of the LAN link (an interface name, for tcpdump).
    pub(crate) fn host_link(&self) -> &str {
        &self.host_link
    }

    /// The root namespace's address on the LAN (`10.A.B.254`).
    pub(crate) fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// `program` to be run in node `node` (`ip netns exec <ns> program`); add arguments,
    /// environment and stdio, then spawn it. `ip netns exec` execs the program, so the
    /// child's PID is the program's.
    pub(crate) fn command(&self, node: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.name(node)])
            .arg(program);
        command
    }

    /// `inner` to be run in node `node`: its program, arguments, environment changes and
    /// working directory carry over; set stdio on the result.
    pub(crate) fn wrap(&self, node: usize, inner: &Command) -> Command {
        let mut command = self.command(node, inner.get_program());
        command.args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            command.current_dir(dir);
        }
        command
    }

    /// Starts `inner` in node `node` with no stdin and this process's stdout and stderr;
    /// the caller stops it (before the harness is dropped).
    pub(crate) fn spawn(&self, node: usize, inner: &Command) -> Child {
        self.wrap(node, inner)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {inner:?} in {}: {e}", self.name(node)))
    }

    /// Runs `args` (a program and its arguments) in node `node` to the end.
    pub(crate) fn run<I, S>(&self, node: usize, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args = args.into_iter();
        let program = args.next().expect("a program");
        self.command(node, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ip netns exec")
    }

    /// Like [`Netns::run`], for a command that must succeed; returns its stdout.
    pub(crate) fn ok<I, S>(&self, node: usize, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(node, &args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name(node),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds a second network ("the WAN") beside the LAN: a bridge of its own, an `eth1` in
    /// every node so far (`wan_ip`) and a root end (`wan_host_ip`), so what the root serves
    /// there is reached over a path that is not the LAN. Multicast is off on it and the
    /// nodes drop mDNS on `eth1` (nftables), so local discovery never hears of it.
    pub(crate) fn add_wan(&mut self) {
        assert!(self.wan.is_none(), "one WAN per harness");
        let n: u32 = self.prefix.rsplit('-').next().unwrap().parse().unwrap();
        let subnet = free_subnet(std::process::id(), n + 5000, Some(self.subnet));
        let host_link = self.host_link.replacen('h', "w", 1);
        let sw = self.switch.clone();
        ip(["-n", &sw, "link", "add", "br1", "type", "bridge"]);
        ip(["-n", &sw, "link", "set", "br1", "up"]);
        ip([
            "link", "add", &host_link, "type", "veth", "peer", "name", "whost", "netns", &sw,
        ]);
        ip(["-n", &sw, "link", "set", "whost", "master", "br1"]);
        ip(["-n", &sw, "link", "set", "whost", "up"]);
        let [a, b, c] = subnet;
        ip([
            "addr",
            "add",
            &format!("{a}.{b}.{c}.254/24"),
            "dev",
            &host_link,
        ]);
        ip(["link", "set", &host_link, "multicast", "off", "up"]);
        for (index, name) in self.nodes.clone().iter().enumerate() {
            let port = format!("w{index}");
            ip([
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth1", "netns",
                name,
            ]);
            ip(["-n", &sw, "link", "set", &port, "master", "br1"]);
            ip(["-n", &sw, "link", "set", &port, "up"]);
            let address = format!("{a}.{b}.{c}.{}/24", index + 1);
            ip(["-n", name, "addr", "add", &address, "dev", "eth1"]);
            ip(["-n", name, "link", "set", "eth1", "multicast", "off", "up"]);
            let rules = "table inet pf_wan {\n\
                 chain in { type filter hook input priority 0; iifname \"eth1\" udp dport 5353 drop; }\n\
                 chain out { type filter hook output priority 0; oifname \"eth1\" udp dport 5353 drop; }\n\
                 }\n";
            self.nft(index, rules);
        }
        self.wan = Some(Wan { host_link, subnet });
    }

    /// Loads an nftables ruleset (text, as `nft -f` reads it) in node `node`.
    pub(crate) fn nft(&self, node: usize, rules: &str) {
        use std::io::Write;
        let mut child = self
            .command(node, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running nft (Debian package nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {}: {}\n{rules}",
            self.name(node),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Node `node`'s address on the WAN (`add_wan`).
    pub(crate) fn wan_ip(&self, node: usize) -> Ipv4Addr {
        let [a, b, c] = self.wan.as_ref().expect("add_wan first").subnet;
        Ipv4Addr::new(a, b, c, u8::try_from(node + 1).unwrap())
    }

    /// The root namespace's address on the WAN (`add_wan`).
    pub(crate) fn wan_host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.wan.as_ref().expect("add_wan first").subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// The bridge's namespace, the bridge, and the link from the root namespace.
    fn make_switch(&mut self) {
        ip(["netns", "add", &self.switch]);
        let sw = self.switch.clone();
        ip(["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        // Snooping would drop the IPv6 mDNS group until a querier shows up.
        ip([
            "-n",
            &sw,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(["-n", &sw, "link", "set", "br0", "up"]);
        ip(["-n", &sw, "link", "set", "lo", "up"]);
        let host = self.host_link.clone();
        ip([
            "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &sw,
        ]);
        ip(["-n", &sw, "link", "set", "host", "master", "br0"]);
        ip(["-n", &sw, "link", "set", "host", "up"]);
        let address = format!("{}/24", self.host_ip());
        ip(["addr", "add", &address, "dev", &host]);
        ip(["link", "set", &host, "multicast", "off", "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it, and so both ends of each veth pair;
        // the root end goes explicitly too, in case its peer's namespace is held open.
        for [a, b, c] in self.homes.values() {
            let _ = quiet_ip(["route", "del", &format!("{a}.{b}.{c}.0/24")]);
        }
        let _ = quiet_ip(["link", "del", &self.host_link]);
        if let Some(wan) = &self.wan {
            let _ = quiet_ip(["link", "del", &wan.host_link]);
        }
        for name in self.nodes.iter().chain([&self.switch]) {
            let _ = quiet_ip(["netns", "del", name]);
        }
    }
}

/// `ip ARGS`, which must succeed.
fn ip<const N: usize>(args: [&str; N]) {
    let out = quiet_ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet_ip<const N: usize>(args: [&str; N]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ip (iproute2)")
}

/// Deletes namespaces of harnesses whose process is gone (a test run that was killed).
/// Only names of exactly this harness's form are touched: `pf<pid>-<n>-sw` or
/// `pf<pid>-<n>-n<i>`.
fn sweep_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = harness_pid(name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = quiet_ip(["netns", "del", name]);
        }
    }
}

/// The PID in a namespace name this harness makes; `None` for any other name.
fn harness_pid(name: &str) -> Option<u32> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = name.strip_prefix("pf")?.split('-');
    let (pid, n, last) = (parts.next()?, parts.next()?, parts.next()?);
    let node = last == "sw" || last.strip_prefix('n').is_some_and(digits);
    (parts.next().is_none() && digits(pid) && digits(n) && node).then(|| pid.parse().ok())?
}

/// A `10.A.B.0/24` that no route of the root namespace uses yet (harnesses of this process
/// and of others running at once get different ones).
fn free_subnet(pid: u32, n: u32, besides: Option<[u8; 3]>) -> [u8; 3] {
    free_subnet_besides(pid, n, besides.as_slice())
}

/// [`free_subnet`], also avoiding each of `taken` (subnets made but not routed here yet).
fn free_subnet_besides(pid: u32, n: u32, taken: &[[u8; 3]]) -> [u8; 3] {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = pid.wrapping_mul(31).wrapping_add(n.wrapping_mul(7));
    for step in 0..(100 * 256) {
        let k = start.wrapping_add(step) % (100 * 256);
        let subnet = [10, 100 + (k / 256) as u8, (k % 256) as u8];
        let text = format!("{}.{}.{}.", subnet[0], subnet[1], subnet[2]);
        if !routes.contains(&text) && !taken.contains(&subnet) {
            return subnet;
        }
    }
    panic!("no free 10.x.y.0/24 subnet");
}

#[test]
fn the_harness_links_its_nodes_and_leaves_nothing_behind() {
    assert!(
        crate::support::running_as_root(),
        "network namespaces need root: run the tests as root (CI does)"
    );
    let mut net = Netns::new(1);
    let second = net.add_node();
    let names = [net.name(0).to_owned(), net.name(second).to_owned()];
    let eth0 = net.ok(0, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains(&format!("{}/24", net.ip(0))), "{eth0}");
    let link = net.ok(second, ["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("MULTICAST") && link.contains("UP"), "{link}");
    // From a node to the root namespace, over the bridge (bash's /dev/tcp needs no extra
    // tools). Node to node is what tests/it/lan_discovery.rs does.
    let listener = std::net::TcpListener::bind((net.host_ip(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dial = format!("echo hi > /dev/tcp/{}/{port}", net.host_ip());
    assert!(net.run(0, ["bash", "-c", &dial]).status.success());
    assert!(listener.accept().is_ok());
    let mut sleeper = Command::new("sleep");
    sleeper.arg("30").env("PF_HARNESS", "1");
    let mut child = net.spawn(second, &sleeper);
    // `ip` enters the namespace, then execs the program under the same PID.
    crate::support::wait_until("ip netns exec runs sleep", 10, || {
        std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .is_ok_and(|comm| comm.trim() == "sleep")
    });
    let inside = std::fs::read_link(format!("/proc/{}/ns/net", child.id())).unwrap();
    let here = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(inside, here, "spawn runs inside the node's namespace");
    child.kill().unwrap();
    child.wait().unwrap();
    let host_link = net.host_link.clone();
    drop(net);
    let left = String::from_utf8_lossy(&quiet_ip(["netns", "list"]).stdout).into_owned();
    for name in &names {
        assert!(!left.contains(name.as_str()), "{name} left behind: {left}");
    }
    assert!(!quiet_ip(["link", "show", &host_link]).status.success());
    assert_eq!(harness_pid("pf12-0-n3"), Some(12));
    assert_eq!(harness_pid("pf12-0-sw"), Some(12));
    for other in [
        "pfd1",
        "pf12",
        "pf12-0",
        "pf12-0-x",
        "pfx-0-sw",
        "pf12-0-n3-y",
    ] {
        assert_eq!(harness_pid(other), None, "{other}");
    }
}

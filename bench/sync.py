#!/usr/bin/env python3
"""Sync benchmarks: peerfold against Syncthing, two daemons in two network namespaces.

Usage (as root: it creates network namespaces):

    bench/sync.py [--runs N] [--cases a,b,c,d,e] [--only peerfold|syncthing|both]
                  [--scale full|small] [--no-build] [--bin DIR] [--fs host|xfs|btrfs]

Cases: (a) one 1 GiB file, (b) 20,000 files of 4-64 KiB, (c) 200,000 files of 1-4 KiB,
(d) after (a), on the same pair: 1 byte overwritten in the middle, 1 byte inserted near the
start, 1 MiB appended, (e) a small new file, from write on A to complete on B (median of 10,
also on the (a) pair; d and e therefore run (a) too). `--scale small` shrinks the data to a
64 MiB file, 2,000 and 5,000 files (a smoke test). Defaults: all cases, both daemons, 1 run;
with more runs the medians are printed.

Each daemon of a pair runs in its own network namespace (pfbenchA, pfbenchB, addresses
10.77.0.1 and 10.77.0.2 on a veth pair, MTU 1500), started with `ip netns exec`. "On the
wire" is the delta of rx_bytes + tx_bytes of the veth device on A's side (every frame that
crosses the link, both directions, Ethernet headers included), read with `ip -s link`, so it
does not depend on the daemons' own accounting. The namespaces are deleted at exit.

peerfold: two release `peerfold serve` (QUIC, port 22100), configured through the CLI.
Syncthing: Debian's `syncthing` (1.19; installed with apt-get if missing), two
`syncthing serve --no-browser --no-restart` instances over TCP port 22000, with global and
local discovery, relays, NAT traversal, usage and crash reporting and upgrades off, each
device knowing the other's address, folder "bench" shared both ways, everything else at
its defaults (file watcher on with its 10 s delay, low priority). Its REST API (GUI on
127.0.0.1:8384 inside each namespace) is reached through setns(2).

Per transfer (A has the data and has indexed it; B starts with an empty folder):
- time: from B's control interface answering (peerfold's status socket, Syncthing's REST
  API) until every file is on B's disk under its final name and B's own status says the
  folder is complete; "B startup" (process start until that interface answers) is reported
  apart. Throughput = data bytes / time.
- bytes on the wire, from B's start until 5 s after completion;
- peak (VmHWM) and steady (VmRSS 5 s after completion) RSS of both daemons; for Syncthing
  the worker process (1.19 always runs a monitor parent too; its RSS is printed apart);
- CPU seconds of each daemon, and the cores used meanwhile by the rest of the machine
  ("others", i.e. noise). Each case first waits (up to 15 min) for a quiet machine.
Each transfer starts from dropped kernel caches (`sync`, then `drop_caches`, before A's
data is made): on an ext4 without a journal (this machine's) the inode allocator skips
each inode freed in the last minute (six while its inode-table block is dirty) whose
inode-table block is still cached, so the trees the previous case deleted slowed the next
case's file creations, on A and B.
B's tree is then compared with A's (names and BLAKE2 hashes). After (c), B's status
calls are timed, 20 calls each (`peerfold status`, whose time includes starting the CLI's
process; `/rest/db/status` and `/rest/db/completion` on both daemons). Edits (d) and new
files (e) count as done when B's file has A's content (hashed when its stat changes).

Completion checks are spaced by ten times their own duration (peerfold's status walked the
whole index before it kept counters: 2 s for 200,000 files), so polling never slows the
daemon being measured. `--fs xfs` (or btrfs) puts both daemons' folders on a loop-mounted
filesystem with reflinks, for (d).
The peerfold binaries are copied to $BENCH_DIR/bin first, so one run uses one consistent
pair even if target/release is rebuilt meanwhile (--bin DIR takes them from DIR instead of
building). Work data and daemon logs are under $BENCH_DIR (default
/tmp/peerfold-sync-bench), raw results in results-*.json there.

The raw QUIC reference is measured by the same script on the same link before the
transfers: `quic_raw` (bench/src/bin/quic_raw.rs) moves the (a) file's size from A to B on
one stream of one quinn connection with peerfold's TLS and windows.
"""

import argparse
import copy
import datetime
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from benchlib import (
    BIN, LIVE, LOGS, NotReady, NsHTTPConnection, PB, PF, ST, ST_OPTIONS, WORK, children,
    count_files, cpu_since, cpu_snapshot, drop_caches, file_hash, fmt_bytes, fmt_s,
    git_info, start_run, rss_kib, set_st_options, sh, stat_sig, stop_process,
    tree_digest, tree_stats, wait_quiet)
from sync_report import report


NS = {"a": "pfbenchA", "b": "pfbenchB"}
IFACE = {"a": "pfbA", "b": "pfbB"}
ADDR = {"a": "10.77.0.1", "b": "10.77.0.2"}
PF_PORT, ST_PORT = 22100, 22000
PF_API_PORT, ST_API_PORT = 8385, 8384  # REST, on 127.0.0.1 inside each namespace
QR = os.path.join(BIN, "quic_raw")
RAW_PORT = 22200
RAW = {}  # the raw QUIC reference of this run: {"mb_s": ..., "seconds": ...}
SETTLE = 5.0
STATUS_CALLS = 20  # each status call timed this often on B after (c)

SCALES = {
    "full": {"big": 1 << 30, "b": (20000, 4096, 65536), "c": (200000, 1024, 4096)},
    "small": {"big": 64 << 20, "b": (2000, 4096, 65536), "c": (5000, 1024, 4096)},
}

PAIRS_ROOT = [WORK]  # where pairs keep their folders and homes (a loop filesystem with --fs)
FS_PACKAGES = {"xfs": ("mkfs.xfs", "xfsprogs", ["-q", "-m", "reflink=1"]),
               "btrfs": ("mkfs.btrfs", "btrfs-progs", ["-q"])}



# ---------------------------------------------------------------- network namespaces

class Net:
    """Two namespaces joined by one veth pair."""

    def __init__(self):
        self.made = False

    def setup(self):
        existing = sh("ip", "netns", "list")
        for ns in NS.values():
            if any(line.split()[0] == ns for line in existing.splitlines() if line.strip()):
                pids = sh("ip", "netns", "pids", ns).split()
                if pids:
                    sys.exit(f"network namespace {ns} exists with processes {' '.join(pids)} "
                             f"(an interrupted run?): stop them, then `ip netns del {ns}`")
                sh("ip", "netns", "del", ns)
        self.made = True
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", IFACE["a"], "netns", NS["a"], "type", "veth",
           "peer", "name", IFACE["b"], "netns", NS["b"])
        for w in "ab":
            ns, iface = NS[w], IFACE[w]
            # No IPv6 on the link: router solicitations and MLD reports would count as traffic.
            sh("ip", "netns", "exec", ns, "sh", "-c",
               f"echo 1 > /proc/sys/net/ipv6/conf/{iface}/disable_ipv6")
            sh("ip", "-n", ns, "addr", "add", f"{ADDR[w]}/24", "dev", iface)
            sh("ip", "-n", ns, "link", "set", iface, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            lo = json.loads(sh("ip", "-j", "-n", ns, "link", "show", "lo"))[0]
            if "UP" not in lo["flags"]:
                raise RuntimeError(f"lo is not up in {ns}: {lo['flags']}")

    def counters(self):
        """rx+tx bytes of each end of the veth pair."""
        out = {}
        for w in "ab":
            link = json.loads(sh("ip", "-j", "-s", "-n", NS[w], "link", "show", "dev", IFACE[w]))[0]
            stats = link["stats64"]
            out[w] = stats["rx"]["bytes"] + stats["tx"]["bytes"]
        return out

    def wire_since(self, before):
        now = self.counters()
        a, b = now["a"] - before["a"], now["b"] - before["b"]
        if abs(a - b) > max(0.01 * a, 10000):
            print(f"  note: veth ends disagree: A {a} bytes, B {b} bytes", flush=True)
        return a

    def teardown(self):
        if not self.made:
            return
        for ns in NS.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = False


NET = Net()



# ---------------------------------------------------------------- daemon pairs

class Pair:
    """Device a (has the data) and device b (pulls it), folder "bench". With `ns` and
    `addr` ({device: namespace}, {device: address}) any number of devices, each knowing
    and sharing the folder with every other (bench/scale.py's (g))."""

    name = None

    def __init__(self, label, ns=None, addr=None):
        self.label = label
        self.ns, self.addr = ns or NS, addr or ADDR
        self.dir = os.path.join(PAIRS_ROOT[0], label)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.root = {w: os.path.join(self.dir, w) for w in self.ns}
        for path in self.root.values():
            os.makedirs(path)
        self.procs = {}
        self.logs = {w: os.path.join(LOGS, f"{label}-{w}.log") for w in self.ns}

    def others(self, w):
        return [other for other in self.ns if other != w]

    def launch(self, w, argv, env):
        log = open(self.logs[w], "w")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[w], *argv], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[w] = proc
        LIVE.add(proc)

    def pids(self, w):
        """The daemon's processes (for Syncthing: its monitor and the worker it starts)."""
        if w not in self.procs:
            return []
        pid = self.procs[w].pid
        return [pid, *children(pid)]

    def worker(self, w):
        """The process that does the work (Syncthing 1.19 runs a monitor process as the
        parent of the real one, even with --no-restart)."""
        return self.pids(w)[-1]

    def rss(self, w, field):
        return rss_kib(self.worker(w), field) / 1024

    def monitor_rss(self):
        pids = self.pids("a")
        return rss_kib(pids[0], "VmRSS") / 1024 if len(pids) > 1 else 0.0

    def check_alive(self):
        for w, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} {w} exited with {proc.returncode}; "
                                   f"log: {self.logs[w]}")

    def stop(self):
        for proc in self.procs.values():
            stop_process(proc)
        self.procs = {}

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait(self, cond, timeout, poll, since=None):
        """Seconds from `since` (default: now) until cond() is true, taken at the start of
        the check that succeeded. Checks are spaced by at least 10 times their own duration
        (at most 5 s) so that polling costs little: peerfold's status walks the whole index
        (over 2 s for 200,000 files on this machine)."""
        start = time.monotonic() if since is None else since
        while True:
            self.check_alive()
            began = time.monotonic()
            try:
                if cond():
                    return began - start
            except NotReady:
                pass
            took = time.monotonic() - began
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"timed out after {timeout} s; last state: {self.describe()}")
            time.sleep(max(poll, min(10 * took, 5.0)))

    def get(self, w, path):
        """GET `path` from w's REST API (inside its namespace), as JSON."""
        conn = NsHTTPConnection(self.ns[w], "127.0.0.1", self.api_port, timeout=60)
        try:
            conn.request("GET", path, headers={"X-API-Key": self.key[w]})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise NotReady(f"HTTP {resp.status}: {body[:200]!r}")
            return json.loads(body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise NotReady(str(e)) from e
        finally:
            conn.close()

    def status_calls(self, w):
        """The calls whose duration (c) reports once B is complete, by name."""
        return {
            "/rest/db/status": lambda: self.get(w, "/rest/db/status?folder=bench"),
            "/rest/db/completion": lambda: self.get(w, "/rest/db/completion?folder=bench"),
        }

    def describe(self):
        out = []
        for w in self.ns:
            try:
                out.append(f"{w}: {json.dumps(self.folder_status(w))}")
            except NotReady as e:
                out.append(f"{w}: not reachable ({e})")
        return "; ".join(out)


class PeerfoldPair(Pair):
    name = "peerfold"
    api_port = PF_API_PORT

    def __init__(self, label, ns=None, addr=None):
        super().__init__(label, ns, addr)
        self.home = {w: os.path.join(self.dir, f"{w}-home") for w in self.ns}
        for w in self.ns:
            self.cli(w, "init")
            self.cli(w, "folder", "add", "--id", "bench", "--path", self.root[w])
        self.ids = {w: self.cli(w, "id").strip() for w in self.ns}
        self.key = {w: self.cli(w, "api-key").strip() for w in self.ns}
        for w in self.ns:
            for other in self.others(w):
                self.cli(w, "device", "add", self.ids[other], "--address",
                         f"quic://{self.addr[other]}:{PF_PORT}")
                self.cli(w, "folder", "share", "bench", self.ids[other])

    def env(self, w):
        return {**os.environ, "PEERFOLD_HOME": self.home[w]}

    def cli(self, w, *args):
        out = subprocess.run([PF, *args], env=self.env(w), capture_output=True, text=True)
        if out.returncode != 0:
            raise NotReady(out.stderr.strip())
        return out.stdout

    def start(self, w):
        self.launch(w, [PF, "serve", "--listen", f"quic://{self.addr[w]}:{PF_PORT}"],
                    self.env(w))

    def status(self, w):
        return json.loads(self.cli(w, "status", "--json"))

    def folder_status(self, w):
        return self.status(w)["folders"][0]

    def status_calls(self, w):
        # The CLI's time includes starting its process.
        return {"peerfold status": lambda: self.status(w), **super().status_calls(w)}

    def a_scanned(self, files, size):
        f = self.folder_status("a")
        return f["state"] == "idle" and f["local"]["files"] >= files and f["local"]["bytes"] >= size

    def b_complete(self, files, size):
        f = self.folder_status("b")
        return (f["local"]["files"] >= files and f["local"]["bytes"] >= size
                and f["need"]["files"] == 0)

    def connected(self, w):
        """How many of its peers w is connected to."""
        return sum(1 for d in self.status(w)["devices"] if d["connected"])


def configure_syncthing(home, listen, root, peers):
    """Edits a generated Syncthing home: options as ST_OPTIONS, one listen address, the GUI
    on 127.0.0.1:8384, `peers` ((id, name, address) each) as devices from the default device
    template, folder "bench" at `root` shared with all of them. Returns the API key."""
    path = os.path.join(home, "config.xml")
    tree = ET.parse(path)
    cfg = tree.getroot()
    set_st_options(cfg.find("options"), listen, ST_OPTIONS)
    cfg.find("gui/address").text = f"127.0.0.1:{ST_API_PORT}"
    defaults = cfg.find("defaults")
    # The folder, from the default folder template (which lists this device).
    folder = copy.deepcopy(defaults.find("folder"))
    folder.set("id", "bench")
    folder.set("label", "bench")
    folder.set("path", root)
    for peer_id, name, address in peers:
        device = copy.deepcopy(defaults.find("device"))
        device.set("id", peer_id)
        device.set("name", name)
        device.find("address").text = address
        last_device = max(i for i, el in enumerate(cfg) if el.tag == "device")
        cfg.insert(last_device + 1, device)
        shared = ET.Element("device", {"id": peer_id, "introducedBy": ""})
        ET.SubElement(shared, "encryptionPassword")
        mine = [i for i, el in enumerate(folder) if el.tag == "device"]
        folder.insert(mine[-1] + 1 if mine else 0, shared)
    cfg.insert(0, folder)
    tree.write(path)
    os.makedirs(os.path.join(root, ".stfolder"), exist_ok=True)
    return cfg.find("gui/apikey").text


class SyncthingPair(Pair):
    name = "syncthing"
    api_port = ST_API_PORT

    def __init__(self, label, ns=None, addr=None):
        super().__init__(label, ns, addr)
        self.home = {w: os.path.join(self.dir, f"{w}-home") for w in self.ns}
        self.ids, self.key = {}, {}
        for w in self.ns:
            sh(ST, "generate", "--home", self.home[w], "--no-default-folder")
            self.ids[w] = sh(ST, "serve", "--home", self.home[w], "--device-id").strip()
        for w in self.ns:
            peers = [(self.ids[other], other, f"tcp://{self.addr[other]}:{ST_PORT}")
                     for other in self.others(w)]
            self.key[w] = configure_syncthing(self.home[w], f"tcp://{self.addr[w]}:{ST_PORT}",
                                              self.root[w], peers)

    def start(self, w):
        self.launch(w, [ST, "serve", "--home", self.home[w], "--no-browser", "--no-restart",
                        "--no-default-folder"], {**os.environ, "STNOUPGRADE": "1"})

    def folder_status(self, w):
        return self.get(w, "/rest/db/status?folder=bench")

    def a_scanned(self, files, size):
        s = self.folder_status("a")
        return s["state"] == "idle" and s["localFiles"] >= files and s["localBytes"] >= size

    def b_complete(self, files, size):
        s = self.folder_status("b")
        return (s["state"] == "idle" and s["localFiles"] >= files and s["localBytes"] >= size
                and s["needFiles"] == 0 and s.get("needDeletes", 0) == 0)

    def connected(self, w):
        """How many of its peers w is connected to."""
        connections = self.get(w, "/rest/system/connections")["connections"]
        return sum(1 for c in connections.values() if c["connected"])


KINDS = {"peerfold": PeerfoldPair, "syncthing": SyncthingPair}


# ---------------------------------------------------------------- cases

def transfer(kind, case, run, make):
    """Fill A, let A index it, then start B and time it until it has everything."""
    pair = kind(f"{case}-{kind.name}-{run}")
    try:
        drop_caches()
        make(pair.root["a"])
        files, size = tree_stats(pair.root["a"])
        pair.start("a")
        pair.wait(lambda: pair.a_scanned(files, size), 3600, 0.25)
        time.sleep(1)
        return pair, pull_everything(pair, files, size)
    except BaseException:
        pair.stop()  # the data stays in the work dir for a look; the logs are in LOGS
        raise


def pull_everything(pair, files, size):
    """Starts B (empty) beside A (running, indexed) and times it until it has A's `files`
    files of `size` bytes in all; checks B's tree against A's."""
    quiet = wait_quiet()
    before, cpu0, t0 = NET.counters(), cpu_snapshot(pair), time.monotonic()
    pair.start("b")
    # B is up when its control interface answers (peerfold status socket, Syncthing REST);
    # the sync time runs from there.
    startup = pair.wait(lambda: pair.folder_status("b") is not None, 300, 0.02, since=t0)
    t1 = time.monotonic()
    # Complete: every file is on B's disk under its final name (both daemons rename a
    # finished temp file into place; counting names is cheap and outside the daemons),
    # and B's own status agrees. The tree is compared with A's afterwards.
    pair.wait(lambda: count_files(pair.root["b"]) >= files, 3600, 0.05, since=t1)
    seconds = pair.wait(lambda: pair.b_complete(files, size), 3600, 0.05, since=t1)
    cpu = cpu_since(pair, cpu0, time.monotonic() - t0)
    time.sleep(SETTLE)
    result = {
        "seconds": seconds, "startup": startup, "files": files, "bytes": size,
        "mb_s": size / seconds / 1e6, "wire": NET.wire_since(before),
        "peak_a": pair.rss("a", "VmHWM"), "peak_b": pair.rss("b", "VmHWM"),
        "steady_a": pair.rss("a", "VmRSS"), "steady_b": pair.rss("b", "VmRSS"),
        "monitor_rss": pair.monitor_rss(), "busy_before": quiet, **cpu,
    }
    if tree_digest(pair.root["b"]) != tree_digest(pair.root["a"]):
        raise RuntimeError(f"B reported complete but its tree differs from A's "
                           f"({tree_stats(pair.root['b'])} vs {(files, size)})")
    return result


def time_status_calls(pair, calls=STATUS_CALLS):
    """Milliseconds B's status calls take once it holds the whole folder: {call: {"median",
    "max", "calls"}} over `calls` calls each (peerfold keeps its counts; a status that walked the
    index took 2.2-2.8 s at 200,000 files)."""
    out = {}
    for name, call in pair.status_calls("b").items():
        took = []
        for _ in range(calls):
            began = time.monotonic()
            call()
            took.append((time.monotonic() - began) * 1000)
        out[name] = {"median": statistics.median(took), "max": max(took), "calls": calls}
    return out


def raw_quic(size):
    """The raw QUIC reference: quic_raw moves `size` bytes from A to B on one stream of one
    connection with peerfold's TLS and windows, over the same veth link."""
    recv = subprocess.Popen(["ip", "netns", "exec", NS["b"], QR, "recv", "--listen",
                             f"{ADDR['b']}:{RAW_PORT}"], stdout=subprocess.PIPE, text=True)
    LIVE.add(recv)
    try:
        device = recv.stdout.readline().split(":", 1)[1].strip()
        recv.stdout.readline()  # listening on ...
        sent = subprocess.run(["ip", "netns", "exec", NS["a"], QR, "send", "--to",
                               f"{ADDR['b']}:{RAW_PORT}", "--device", device, "--bytes",
                               str(size)], capture_output=True, text=True, timeout=600)
        if sent.returncode != 0:
            raise RuntimeError(f"quic_raw send failed: {sent.stderr.strip()}")
        result = json.loads(sent.stdout.strip().splitlines()[-1])
        recv.wait(timeout=30)
        return {"mb_s": result["mb_s"], "seconds": result["seconds"]}
    finally:
        stop_process(recv)
        LIVE.discard(recv)


def wait_same_file(pair, rel, timeout):
    """Seconds until B's copy of rel equals A's."""
    return arrival_times(pair, rel, timeout, "a", ["b"])["b"]


def arrival_times(pair, rel, timeout, src, dsts):
    """Seconds until each device of `dsts` has `src`'s copy of rel. A copy is hashed only
    when its stat changes (both daemons rename a finished temp file into place); the time
    taken is when that change was seen, not when the hash finished."""
    src_path = os.path.join(pair.root[src], rel)
    paths = {w: os.path.join(pair.root[w], rel) for w in dsts}
    seen = {w: stat_sig(path) for w, path in paths.items()}
    want, times = None, {}
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pair.check_alive()
        for w, path in paths.items():
            sig = stat_sig(path)
            if w in times or sig is None or sig == seen[w]:
                continue
            at = time.monotonic() - start
            seen[w] = sig
            if want is None:
                want = file_hash(src_path)
            if sig[1] == os.path.getsize(src_path) and file_hash(path) == want:
                times[w] = at
        if len(times) == len(paths):
            return times
        time.sleep(0.02)
    missing = sorted(set(paths) - set(times))
    raise RuntimeError(f"{rel} not on {', '.join(missing)} after {timeout} s; "
                       f"last state: {pair.describe()}")


def edits(pair):
    """(d): small edits to the big file; time until B has them and bytes on the wire."""
    path = os.path.join(pair.root["a"], "big.bin")
    size = os.path.getsize(path)
    appended = random.Random(4).randbytes(1 << 20)

    def overwrite():
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)[0]
            f.seek(size // 2)
            f.write(bytes([byte ^ 0xFF]))

    def append():
        with open(path, "ab") as f:
            f.write(appended)

    results = {}
    for key, action in [
        ("overwrite", overwrite),
        ("insert", lambda: subprocess.run([PB, "insert", path, "4096", "1"], check=True)),
        ("append", append),
    ]:
        # What earlier cases and edits left to write back (a GiB per install, 200,000
        # files after (c)) is written first, so each edit is timed on a quiet disk.
        os.sync()
        before = NET.counters()
        action()
        seconds = wait_same_file(pair, "big.bin", 600)
        time.sleep(2)
        results[key] = {"seconds": seconds, "wire": NET.wire_since(before)}
    return results


def latency(pair, n=10):
    """(e): a small new file on A until complete on B; median of n, and wire bytes per file."""
    times = []
    before = NET.counters()
    rnd = random.Random(5)
    for i in range(n):
        with open(os.path.join(pair.root["a"], f"latency-{i}.txt"), "wb") as f:
            f.write(rnd.randbytes(1000))
        times.append(wait_same_file(pair, f"latency-{i}.txt", 300))
    return {"seconds": statistics.median(times), "all": times,
            "wire_per_file": NET.wire_since(before) / n}


# ---------------------------------------------------------------- setup


class LoopFs:
    """--fs xfs|btrfs: both daemons' folders on a filesystem with reflinks, made in a
    sparse image file and loop-mounted under the work dir (the package that makes it is
    installed with apt-get when missing)."""

    def __init__(self, kind):
        self.kind = kind
        self.image = os.path.join(WORK, f"{kind}.img")
        self.mount = os.path.join(WORK, kind)

    def setup(self):
        mkfs, package, options = FS_PACKAGES[self.kind]
        if shutil.which(mkfs) is None:
            print(f"{mkfs} not found: apt-get install -y {package}", flush=True)
            if subprocess.run(["apt-get", "install", "-y", package]).returncode != 0:
                sys.exit(f"could not install {package}: apt-get update && apt-get install "
                         f"-y {package}, or run without --fs")
        self.teardown()
        with open(self.image, "wb") as f:
            f.truncate(16 << 30)
        sh(mkfs, *options, self.image)
        os.makedirs(self.mount, exist_ok=True)
        sh("mount", "-o", "loop", self.image, self.mount)
        PAIRS_ROOT[0] = self.mount

    def teardown(self):
        if os.path.ismount(self.mount):
            subprocess.run(["umount", self.mount], check=False)
        if os.path.exists(self.image):
            os.remove(self.image)


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cases", default="a,b,c,d,e")
    parser.add_argument("--only", choices=["peerfold", "syncthing", "both"], default="both")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--no-build", action="store_true",
                        help="do not run cargo build; use target/release as it is")
    parser.add_argument("--bin", help="take peerfold and peerfold-bench from DIR "
                        "(implies --no-build)")
    parser.add_argument("--fs", choices=["host", *sorted(FS_PACKAGES)], default="host",
                        help="put the folders on a loop-mounted XFS or btrfs (reflinks) "
                        "instead of the work dir's filesystem")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or any(c not in "abcde" for c in cases):
        parser.error("--cases takes a comma-separated subset of a,b,c,d,e")
    kinds = ["peerfold", "syncthing"] if args.only == "both" else [args.only]
    if os.geteuid() != 0:
        sys.exit("bench/sync.py must run as root: it creates network namespaces and a veth "
                 "pair (ip netns) to count the bytes on the wire. Try: sudo bench/sync.py")
    for tool in ("ip",):
        if shutil.which(tool) is None:
            sys.exit("`ip` not found: apt-get install iproute2")

    sizes = SCALES[args.scale]
    n_b, min_b, max_b = sizes["b"]
    n_c, min_c, max_c = sizes["c"]
    big = sizes["big"]
    big_label = f"{big >> 30} GiB" if big >= 1 << 30 else f"{big >> 20} MiB"
    case_labels = {
        "a": f"(a) one {big_label} file",
        "b": f"(b) {n_b:,} files of {min_b >> 10}-{max_b >> 10} KiB",
        "c": f"(c) {n_c:,} files of {min_c >> 10}-{max_c >> 10} KiB",
    }
    makers = {
        "a": lambda root: subprocess.run([PB, "gen-file", f"{root}/big.bin", str(big), "1"],
                                         check=True),
        "b": lambda root: subprocess.run([PB, "gen-tree", root, str(n_b), str(min_b),
                                          str(max_b), "2"], check=True),
        "c": lambda root: subprocess.run([PB, "gen-tree", root, str(n_c), str(min_c),
                                          str(max_c), "3"], check=True),
    }

    binaries, st_version, stamp = start_run(args, "syncthing" in kinds)
    print(f"# sync benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {os.cpu_count()} cores, {platform.platform()}, load {os.getloadavg()}")
    if args.bin:
        print(f"- peerfold source: whatever built {args.bin} (this checkout: {git_info()})")
    else:
        print(f"- peerfold source: {git_info()}")
    print(f"- binaries: {binaries}")
    print(f"- syncthing: {st_version}")
    print(f"- runs: {args.runs}, cases: {','.join(cases)}, daemons: {', '.join(kinds)}, "
          f"scale: {args.scale}, folders on: {args.fs}")
    print(f"- link: namespaces {NS['a']} / {NS['b']}, veth {IFACE['a']} {ADDR['a']} <-> "
          f"{IFACE['b']} {ADDR['b']}; work dir {WORK}\n", flush=True)

    results, failures = {}, []
    loop_fs = LoopFs(args.fs) if args.fs != "host" else None
    transfers = [c for c in "abc" if c in cases or (c == "a" and ("d" in cases or "e" in cases))]
    try:
        NET.setup()
        if loop_fs:
            loop_fs.setup()
        if "a" in transfers:
            try:
                RAW.update(raw_quic(big))
                print(f"raw QUIC reference: {RAW['mb_s']:.0f} MB/s "
                      f"({RAW['seconds']:.2f} s for {big_label})", flush=True)
            except (RuntimeError, subprocess.SubprocessError, ValueError, IndexError) as e:
                failures.append(f"raw QUIC reference: {e}")
                print(f"  raw QUIC reference FAILED: {e}", flush=True)
        for run in range(args.runs):
            for c in transfers:
                for k in kinds:
                    print(f"run {run + 1}: {case_labels[c]}, {k} ...", flush=True)
                    try:
                        pair, r = transfer(KINDS[k], c, run, makers[c])
                    except (RuntimeError, subprocess.CalledProcessError) as e:
                        failures.append(f"run {run + 1} {case_labels[c]} {k}: {e}")
                        print(f"  FAILED: {e}", flush=True)
                        continue
                    if c == "c":
                        try:
                            r["status_ms"] = time_status_calls(pair)
                        except NotReady as e:
                            failures.append(f"run {run + 1} status calls {k}: {e}")
                    results.setdefault((c, k), []).append(r)
                    print(f"  {fmt_s(r['seconds'])} (startup {r['startup']:.2f} s), "
                          f"{r['mb_s']:.1f} MB/s, wire {fmt_bytes(r['wire'])}, "
                          f"RSS peak {r['peak_a']:.1f} / {r['peak_b']:.1f} MB, "
                          f"steady {r['steady_a']:.1f} / {r['steady_b']:.1f} MB", flush=True)
                    try:
                        if c == "a" and "d" in cases:
                            d = edits(pair)
                            results.setdefault(("d", k), []).append(d)
                            print("  (d) " + ", ".join(
                                f"{e}: {fmt_s(v['seconds'])} {fmt_bytes(v['wire'])}"
                                for e, v in d.items()), flush=True)
                        if c == "a" and "e" in cases:
                            e = latency(pair)
                            results.setdefault(("e", k), []).append(e)
                            print(f"  (e) median {e['seconds']:.3f} s "
                                  f"({', '.join(f'{t:.2f}' for t in e['all'])})", flush=True)
                    except (RuntimeError, subprocess.CalledProcessError) as e:
                        failures.append(f"run {run + 1} (d)/(e) {k}: {e}")
                        print(f"  FAILED: {e}", flush=True)
                    finally:
                        pair.remove()
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e or 'Ctrl-C'}); results so far")
    finally:
        for proc in list(LIVE):
            stop_process(proc)
        NET.teardown()
        if loop_fs:
            loop_fs.teardown()
        path = os.path.join(WORK, f"results-{stamp}.json")
        with open(path, "w") as f:
            json.dump({"args": vars(args), "binaries": binaries, "syncthing": st_version,
                       "results": {f"{c}-{k}": v for (c, k), v in results.items()},
                       "failures": failures}, f, indent=1)
        print(f"\nraw results: {path}; daemon logs: {LOGS}")
    report(results, failures, case_labels, kinds, args.runs, RAW)


if __name__ == "__main__":
    main()

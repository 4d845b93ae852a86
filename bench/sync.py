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
B's tree is then compared with A's (names and BLAKE2 hashes). Edits (d) and new files (e)
count as done when B's file has A's content (hashed when its stat changes).

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
one stream of one quinn connection with peerfold's TLS and receive window.
"""

import argparse
import copy
import ctypes
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("BENCH_DIR", "/tmp/peerfold-sync-bench")
BIN = os.path.join(WORK, "bin")
LOGS = os.path.join(WORK, "logs")
PF = os.path.join(BIN, "peerfold")
PB = os.path.join(BIN, "peerfold-bench")
ST = "syncthing"

NS = {"a": "pfbenchA", "b": "pfbenchB"}
IFACE = {"a": "pfbA", "b": "pfbB"}
ADDR = {"a": "10.77.0.1", "b": "10.77.0.2"}
PF_PORT, ST_PORT = 22100, 22000
QR = os.path.join(BIN, "quic_raw")
RAW_PORT = 22200
RAW = {}  # the raw QUIC reference of this run: {"mb_s": ..., "seconds": ...}
SETTLE = 5.0

SCALES = {
    "full": {"big": 1 << 30, "b": (20000, 4096, 65536), "c": (200000, 1024, 4096)},
    "small": {"big": 64 << 20, "b": (2000, 4096, 65536), "c": (5000, 1024, 4096)},
}

LIVE = set()  # every daemon process still running, for the cleanup
PAIRS_ROOT = [WORK]  # where pairs keep their folders and homes (a loop filesystem with --fs)
FS_PACKAGES = {"xfs": ("mkfs.xfs", "xfsprogs", ["-q", "-m", "reflink=1"]),
               "btrfs": ("mkfs.btrfs", "btrfs-progs", ["-q"])}


class NotReady(Exception):
    pass


def sh(*cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


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

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def connect_in_ns(ns, address, timeout):
    """A TCP connection made from inside network namespace ns (sockets stay in the
    namespace they were created in, so this thread can switch back at once)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.create_connection(address, timeout)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


class NsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, ns, host, port, timeout):
        self.ns = ns
        super().__init__(host, port, timeout=timeout)

    def connect(self):
        self.sock = connect_in_ns(self.ns, (self.host, self.port), self.timeout)


# ---------------------------------------------------------------- helpers

def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """Child processes of pid (scanning /proc: this kernel has no .../children file)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(out)


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def machine_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4]  # all but idle and iowait


TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pair):
    me = os.times()
    return {"a": sum(cpu_ticks(p) for p in pair.pids("a")),
            "b": sum(cpu_ticks(p) for p in pair.pids("b")) if "b" in pair.procs else 0,
            "machine": machine_busy_ticks(),
            "me": me.user + me.system + me.children_user + me.children_system}


def cpu_since(pair, before, wall):
    """CPU seconds used by each daemon since `before`, and the cores used meanwhile by
    everything else on the machine (other users' builds make the figures noisy)."""
    now = cpu_snapshot(pair)
    a = (now["a"] - before["a"]) / TICK
    b = (now["b"] - before["b"]) / TICK
    machine = (now["machine"] - before["machine"]) / TICK
    others = max(0.0, machine - a - b - (now["me"] - before["me"]))
    return {"cpu_a": a, "cpu_b": b, "others_cores": others / wall}


def wait_quiet(limit=0.3, patience=900):
    """Wait (up to `patience` s) until the machine's other load is under `limit` cores, so
    that a case does not start in the middle of someone's build. Returns the busy cores
    seen last."""
    start, said = time.monotonic(), False
    while True:
        b0 = machine_busy_ticks()
        time.sleep(2)
        busy = (machine_busy_ticks() - b0) / TICK / 2
        if busy < limit or time.monotonic() - start > patience:
            if busy >= limit:
                print(f"  note: machine still busy ({busy:.2f} cores), going on", flush=True)
            return busy
        if not said:
            print(f"  waiting for a quiet machine ({busy:.2f} cores busy) ...", flush=True)
            said = True


def file_hash(path):
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def daemon_file(rel):
    """Files and directories that belong to a daemon, not to the synced data."""
    first = rel.split(os.sep)[0]
    base = os.path.basename(rel)
    return (first in (".peerfold", ".peerfoldignore", ".stfolder", ".stversions", ".stignore")
            or base.startswith(".syncthing.") or base.startswith("~syncthing~")
            or (base.startswith(".peerfold.") and base.endswith(".tmp")))


def walk_files(root):
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        dirs[:] = sorted(x for x in dirs
                         if not daemon_file(os.path.normpath(os.path.join(rel_d, x))))
        for f in sorted(files):
            rel = os.path.normpath(os.path.join(rel_d, f))
            if not daemon_file(rel):
                yield rel, os.path.join(d, f)


def count_files(root):
    """Names of data files under root (daemon files and temp files left out)."""
    n = 0
    for d, dirs, files in os.walk(root):
        if d == root:
            dirs[:] = [x for x in dirs if not daemon_file(x)]
        n += sum(1 for f in files if not (f.startswith(".peerfold.") or f.startswith(
            ".syncthing.") or f.startswith("~syncthing~") or (d == root and daemon_file(f))))
    return n


def tree_stats(root):
    count = total = 0
    for _, path in walk_files(root):
        count += 1
        total += os.path.getsize(path)
    return count, total


def tree_digest(root):
    h = hashlib.blake2b()
    for rel, path in walk_files(root):
        h.update(rel.encode() + b"\0" + file_hash(path).encode())
    return h.hexdigest()


def stat_sig(path):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- daemon pairs

class Pair:
    """Device a (has the data) and device b (pulls it), folder "bench"."""

    name = None

    def __init__(self, label):
        self.label = label
        self.dir = os.path.join(PAIRS_ROOT[0], label)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.root = {w: os.path.join(self.dir, w) for w in "ab"}
        for path in self.root.values():
            os.makedirs(path)
        self.procs = {}
        self.logs = {w: os.path.join(LOGS, f"{label}-{w}.log") for w in "ab"}

    def launch(self, w, argv, env):
        log = open(self.logs[w], "w")
        proc = subprocess.Popen(["ip", "netns", "exec", NS[w], *argv], env=env, stdout=log,
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

    def describe(self):
        out = []
        for w in "ab":
            try:
                out.append(f"{w}: {json.dumps(self.folder_status(w))}")
            except NotReady as e:
                out.append(f"{w}: not reachable ({e})")
        return "; ".join(out)


def stop_process(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    LIVE.discard(proc)


class PeerfoldPair(Pair):
    name = "peerfold"

    def __init__(self, label):
        super().__init__(label)
        self.home = {w: os.path.join(self.dir, f"{w}-home") for w in "ab"}
        for w in "ab":
            self.cli(w, "init")
            self.cli(w, "folder", "add", "--id", "bench", "--path", self.root[w])
        ids = {w: self.cli(w, "id").strip() for w in "ab"}
        for w, other in (("a", "b"), ("b", "a")):
            self.cli(w, "device", "add", ids[other], "--address",
                     f"quic://{ADDR[other]}:{PF_PORT}")
            self.cli(w, "folder", "share", "bench", ids[other])

    def env(self, w):
        return {**os.environ, "PEERFOLD_HOME": self.home[w]}

    def cli(self, w, *args):
        out = subprocess.run([PF, *args], env=self.env(w), capture_output=True, text=True)
        if out.returncode != 0:
            raise NotReady(out.stderr.strip())
        return out.stdout

    def start(self, w):
        self.launch(w, [PF, "serve", "--listen", f"quic://{ADDR[w]}:{PF_PORT}"], self.env(w))

    def status(self, w):
        return json.loads(self.cli(w, "status", "--json"))

    def folder_status(self, w):
        return self.status(w)["folders"][0]

    def a_scanned(self, files, size):
        f = self.folder_status("a")
        return f["state"] == "idle" and f["local"]["files"] >= files and f["local"]["bytes"] >= size

    def b_complete(self, files, size):
        f = self.folder_status("b")
        return (f["local"]["files"] >= files and f["local"]["bytes"] >= size
                and f["need"]["files"] == 0)


ST_OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "startBrowser": "false",
}


def set_st_options(options, listen_url, values):
    """Syncthing's <options>: one listen address, and `values` by element name."""
    for el in options.findall("listenAddress"):
        options.remove(el)
    listen = ET.Element("listenAddress")
    listen.text = listen_url
    options.insert(0, listen)
    for key, value in values.items():
        el = options.find(key)
        if el is None:
            el = ET.SubElement(options, key)
        el.text = value


class SyncthingPair(Pair):
    name = "syncthing"

    def __init__(self, label):
        super().__init__(label)
        self.home = {w: os.path.join(self.dir, f"{w}-home") for w in "ab"}
        ids, self.key = {}, {}
        for w in "ab":
            sh(ST, "generate", "--home", self.home[w], "--no-default-folder")
            ids[w] = sh(ST, "serve", "--home", self.home[w], "--device-id").strip()
        for w, other in (("a", "b"), ("b", "a")):
            self.key[w] = self.configure(w, other, ids)
            os.makedirs(os.path.join(self.root[w], ".stfolder"), exist_ok=True)

    def configure(self, w, other, ids):
        path = os.path.join(self.home[w], "config.xml")
        tree = ET.parse(path)
        cfg = tree.getroot()
        set_st_options(cfg.find("options"), f"tcp://{ADDR[w]}:{ST_PORT}", ST_OPTIONS)
        cfg.find("gui/address").text = "127.0.0.1:8384"
        defaults = cfg.find("defaults")
        # The peer, from the default device template.
        device = copy.deepcopy(defaults.find("device"))
        device.set("id", ids[other])
        device.set("name", other)
        device.find("address").text = f"tcp://{ADDR[other]}:{ST_PORT}"
        children = list(cfg)
        last_device = max(i for i, el in enumerate(children) if el.tag == "device")
        cfg.insert(last_device + 1, device)
        # The folder, from the default folder template (which lists this device).
        folder = copy.deepcopy(defaults.find("folder"))
        folder.set("id", "bench")
        folder.set("label", "bench")
        folder.set("path", self.root[w])
        shared = ET.Element("device", {"id": ids[other], "introducedBy": ""})
        ET.SubElement(shared, "encryptionPassword")
        mine = [i for i, el in enumerate(folder) if el.tag == "device"]
        folder.insert(mine[-1] + 1 if mine else 0, shared)
        cfg.insert(0, folder)
        tree.write(path)
        return cfg.find("gui/apikey").text

    def start(self, w):
        self.launch(w, [ST, "serve", "--home", self.home[w], "--no-browser", "--no-restart",
                        "--no-default-folder"], {**os.environ, "STNOUPGRADE": "1"})

    def get(self, w, path):
        conn = NsHTTPConnection(NS[w], "127.0.0.1", 8384, timeout=60)
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

    def folder_status(self, w):
        return self.get(w, "/rest/db/status?folder=bench")

    def a_scanned(self, files, size):
        s = self.folder_status("a")
        return s["state"] == "idle" and s["localFiles"] >= files and s["localBytes"] >= size

    def b_complete(self, files, size):
        s = self.folder_status("b")
        return (s["state"] == "idle" and s["localFiles"] >= files and s["localBytes"] >= size
                and s["needFiles"] == 0 and s.get("needDeletes", 0) == 0)


KINDS = {"peerfold": PeerfoldPair, "syncthing": SyncthingPair}


# ---------------------------------------------------------------- cases

def transfer(kind, case, run, make):
    """Fill A, let A index it, then start B and time it until it has everything."""
    pair = kind(f"{case}-{kind.name}-{run}")
    try:
        make(pair.root["a"])
        files, size = tree_stats(pair.root["a"])
        pair.start("a")
        pair.wait(lambda: pair.a_scanned(files, size), 3600, 0.25)
        time.sleep(1)
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
        return pair, result
    except BaseException:
        pair.stop()  # the data stays in the work dir for a look; the logs are in LOGS
        raise


def raw_quic(size):
    """The raw QUIC reference: quic_raw moves `size` bytes from A to B on one stream of one
    connection with peerfold's TLS and receive window, over the same veth link."""
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
    """Seconds until B's copy of rel equals A's. B's file is hashed only when its stat
    changes (both daemons rename a finished temp file into place); the time taken is when
    that change was seen, not when the hash finished."""
    a_path, b_path = os.path.join(pair.root["a"], rel), os.path.join(pair.root["b"], rel)
    seen = stat_sig(b_path)
    want = None
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pair.check_alive()
        sig = stat_sig(b_path)
        if sig is not None and sig != seen:
            at = time.monotonic() - start
            seen = sig
            if want is None:
                want = file_hash(a_path)
            if sig[1] == os.path.getsize(a_path) and file_hash(b_path) == want:
                return at
        time.sleep(0.02)
    raise RuntimeError(f"{rel} not on B after {timeout} s; last state: {pair.describe()}")


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

def prepare_binaries(args):
    if args.bin is None and not args.no_build:
        print("building release binaries (cargo build --release -p peerfold -p peerfold-bench)",
              flush=True)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "peerfold", "-p",
                        "peerfold-bench"], cwd=ROOT, check=True)
    src = args.bin or os.path.join(ROOT, "target/release")
    os.makedirs(BIN, exist_ok=True)
    info = []
    for name in ("peerfold", "peerfold-bench", "quic_raw"):
        shutil.copy2(os.path.join(src, name), os.path.join(BIN, name))
        st = os.stat(os.path.join(BIN, name))
        with open(os.path.join(BIN, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        mtime = datetime.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")
        info.append(f"{name} (built {mtime}, sha256 {digest}...)")
    return f"{src}: " + ", ".join(info)


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


def ensure_syncthing():
    if shutil.which(ST) is None:
        print("syncthing not found: apt-get install -y syncthing", flush=True)
        if subprocess.run(["apt-get", "install", "-y", "syncthing"]).returncode != 0:
            sys.exit("could not install syncthing: run `apt-get update && apt-get install -y "
                     "syncthing`, or use --only peerfold")
    return sh(ST, "--version").strip()


def git_info():
    try:
        head = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").strip()
        dirty = sh("git", "-C", ROOT, "status", "--porcelain", "--", "daemon", "protocol",
                   "proto").split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        return head + (f" (uncommitted changes in {', '.join(dirty)})" if dirty else "")
    except (RuntimeError, OSError):
        return "unknown"


# ---------------------------------------------------------------- report

def med(results, key):
    values = [r[key] for r in results]
    return statistics.median(values) if values else None


def fmt_bytes(n):
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    return f"{n / 1e3:,.1f} KB"


def fmt_s(s):
    return "-" if s is None else (f"{s:.2f} s" if s < 100 else f"{s:.0f} s")


def ratio(x, y, digits=2):
    if x is None or y is None or y == 0:
        return "-"
    return f"{x / y:.{digits}f}"


def report(results, failures, case_labels, kinds, runs):
    transfers = [c for c in "abc" if any(results.get((c, k)) for k in kinds)]
    agg = "median of " + str(runs) + " runs" if runs > 1 else "one run"
    print(f"\n## Results ({agg})\n")
    print("| case | daemon | time | B startup | throughput | on the wire | wire / data "
          "| peak RSS A / B | steady RSS A / B | CPU A / B | others |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in transfers:
        for k in kinds:
            rs = results.get((c, k), [])
            if not rs:
                continue
            print(f"| {case_labels[c]} | {k} | {fmt_s(med(rs, 'seconds'))} | "
                  f"{fmt_s(med(rs, 'startup'))} | {med(rs, 'mb_s'):.1f} MB/s | "
                  f"{fmt_bytes(med(rs, 'wire'))} | {med(rs, 'wire') / med(rs, 'bytes'):.3f} | "
                  f"{med(rs, 'peak_a'):.1f} / {med(rs, 'peak_b'):.1f} MB | "
                  f"{med(rs, 'steady_a'):.1f} / {med(rs, 'steady_b'):.1f} MB | "
                  f"{med(rs, 'cpu_a'):.1f} / {med(rs, 'cpu_b'):.1f} s | "
                  f"{med(rs, 'others_cores'):.2f} |")
    print("\ntime: from B's control interface answering (peerfold status socket, Syncthing "
          "REST) until B reports the folder complete; B startup: from starting B's process "
          "until then. Throughput = data bytes / time. On the wire: veth rx+tx, both "
          "directions, from B's start until 5 s after completion. Peak RSS: VmHWM of each "
          "daemon at the end; steady: VmRSS 5 s after completion. CPU: CPU seconds of each "
          "daemon from B's start to completion. others: cores used meanwhile by everything "
          "else on the machine (noise).")
    monitors = [r["monitor_rss"] for (c, k), rs in results.items() if c in "abc"
                and k == "syncthing" for r in rs if r.get("monitor_rss")]
    if monitors:
        print(f"Syncthing RSS is its worker process; each instance also runs a monitor "
              f"process (its parent) of about {statistics.median(monitors):.1f} MB RSS, "
              f"mostly the same binary's pages, not counted above.")
    edit_labels = {"overwrite": "1 byte overwritten in the middle",
                   "insert": "1 byte inserted near the start", "append": "1 MiB appended"}
    if any(results.get(("d", k)) for k in kinds):
        print("\n(d) edits to the big file after (a), on the same pair:\n")
        print("| edit | daemon | time until B has it | on the wire |")
        print("| --- | --- | --- | --- |")
        for e, label in edit_labels.items():
            for k in kinds:
                rs = [r[e] for r in results.get(("d", k), [])]
                if rs:
                    print(f"| {label} | {k} | {fmt_s(med(rs, 'seconds'))} | "
                          f"{fmt_bytes(med(rs, 'wire'))} |")
    if any(results.get(("e", k)) for k in kinds):
        print("\n(e) a 1,000-byte new file, from write on A to complete on B (median of 10):\n")
        print("| daemon | median | min - max | on the wire per file |")
        print("| --- | --- | --- | --- |")
        for k in kinds:
            rs = results.get(("e", k), [])
            if rs:
                every = [t for r in rs for t in r["all"]]
                print(f"| {k} | {med(rs, 'seconds'):.3f} s | {min(every):.3f} - "
                      f"{max(every):.3f} s | {fmt_bytes(med(rs, 'wire_per_file'))} |")

    if len(kinds) == 2:
        pf = lambda c: results.get((c, "peerfold"), [])  # noqa: E731
        st = lambda c: results.get((c, "syncthing"), [])  # noqa: E731
        print("\n## peerfold against Syncthing\n")
        print("speedup = Syncthing time / peerfold time (above 1: peerfold is faster); the other "
              "ratios are peerfold / Syncthing (below 1: peerfold uses less).\n")
        print("| case | speedup | wire pf/ST | peak RSS pf/ST (A; B) | steady RSS pf/ST (A; B) "
              "| pf throughput / raw QUIC |")
        print("| --- | --- | --- | --- | --- | --- |")
        for c in transfers:
            p, s = pf(c), st(c)
            if not p or not s:
                continue
            print(f"| {case_labels[c]} | {ratio(med(s, 'seconds'), med(p, 'seconds'))} | "
                  f"{ratio(med(p, 'wire'), med(s, 'wire'))} | "
                  f"{ratio(med(p, 'peak_a'), med(s, 'peak_a'))}; "
                  f"{ratio(med(p, 'peak_b'), med(s, 'peak_b'))} | "
                  f"{ratio(med(p, 'steady_a'), med(s, 'steady_a'))}; "
                  f"{ratio(med(p, 'steady_b'), med(s, 'steady_b'))} | "
                  f"{raw_share(med(p, 'mb_s'))} |")
        for e, label in edit_labels.items():
            p = [r[e] for r in pf("d")]
            s = [r[e] for r in st("d")]
            if p and s:
                print(f"| (d) {label} | {ratio(med(s, 'seconds'), med(p, 'seconds'))} | "
                      f"{ratio(med(p, 'wire'), med(s, 'wire'))} | | | |")
        if pf("e") and st("e"):
            print(f"| (e) small new file | {ratio(med(st('e'), 'seconds'), med(pf('e'), 'seconds'))}"
                  f" | {ratio(med(pf('e'), 'wire_per_file'), med(st('e'), 'wire_per_file'))} "
                  f"| | | |")
    if RAW:
        print(f"\nReference: raw QUIC (quic_raw: one quinn connection, one stream, "
              f"peerfold's TLS and receive window, A to B over the same link): "
              f"{RAW['mb_s']:.0f} MB/s ({RAW['seconds']:.2f} s).")
    if failures:
        print("\nFailures:")
        for f in failures:
            print(f"- {f}")


def raw_share(mb_s):
    return f"{100 * mb_s / RAW['mb_s']:.0f}%" if RAW and mb_s else "-"


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

    os.makedirs(LOGS, exist_ok=True)
    binaries = prepare_binaries(args)
    st_version = ensure_syncthing() if "syncthing" in kinds else "-"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
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
    report(results, failures, case_labels, kinds, args.runs)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Scale benchmarks: (f) one folder of a million files, (g) one folder shared by ten
devices on one bridge.

Usage (as root: it creates network namespaces):

    bench/scale.py [--cases f,g] [--files N] [--devices N] [--changes N]
                   [--only peerfold|syncthing|both] [--no-build] [--bin DIR]

(f), peerfold only (sync.py's (c) took Syncthing 725 s for 200,000 files; a million would
take it hours): device A's folder gets N files (default 1,000,000) of 128-1,024 bytes in
directories of 1,000 (`peerfold-bench gen-tree`). Measured: the cold scan (A's start until
its status says idle with every file), an unchanged rescan (POST /rest/db/scan, which
returns when the scan is done), then B, empty, pulls everything over sync.py's veth link
(time, wire, CPU, tree compared with A's as in sync.py's transfers). Peak (VmHWM) and
steady (VmRSS 5 s later) RSS of A after the scan and of both after the pull.

(g) N devices (default 10), each in a network namespace of its own with a veth to one
bridge (in a namespace of its own too; 10.78.0.0/24, MTU 1500), each knowing every other
by address and sharing folder "bench" with all of them. Once every device is connected to
every other, device 0 writes a new 1 MiB file, N times (--changes, default 5): the time
until the last device has it (median over the changes, and the median device), and the
bytes all devices sent meanwhile (the sum of the tx bytes of their veths: every frame
counted once), until 3 s after the last arrival. RSS of every daemon after the changes.
Syncthing runs the same case with sync.py's settings (TCP, its default 10 s watcher delay).

Work data and daemon logs are under $BENCH_DIR (default /tmp/peerfold-sync-bench).
"""

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import time

import sync
from benchlib import (
    LIVE, LOGS, PB, WORK, NotReady, NsHTTPConnection, fmt_bytes, fmt_s,
    git_info, start_run, sh, stop_process, tree_stats, wait_quiet)

SETTLE = 5.0
FILE_SIZES = (128, 1024)
BRIDGE_NS = "pfbenchBr"
SUBNET = "10.78.0"


# ---------------------------------------------------------------- (f) a million files

def rescan(pair, w):
    """Seconds an unchanged rescan of w's folder takes (the REST call returns when done)."""
    key = pair.key[w]
    conn = NsHTTPConnection(pair.ns[w], "127.0.0.1", sync.PF_API_PORT, timeout=7200)
    try:
        start = time.monotonic()
        conn.request("POST", "/rest/db/scan?folder=bench", headers={"X-API-Key": key})
        resp = conn.getresponse()
        body = resp.read()
        seconds = time.monotonic() - start
        if resp.status != 200:
            raise RuntimeError(f"rescan: HTTP {resp.status}: {body[:200]!r}")
        if json.loads(body).get("changed"):
            raise RuntimeError(f"rescan of an unchanged folder recorded changes: {body!r}")
        return seconds
    finally:
        conn.close()


def million_files(files):
    """(f): cold scan, unchanged rescan and initial sync of `files` small files."""
    pair = sync.PeerfoldPair("f-peerfold")
    try:
        t = time.monotonic()
        subprocess.run([PB, "gen-tree", pair.root["a"], str(files), str(FILE_SIZES[0]),
                        str(FILE_SIZES[1]), "6"], check=True)
        count, size = tree_stats(pair.root["a"])
        print(f"  generated {count:,} files, {fmt_bytes(size)} in {fmt_s(time.monotonic() - t)}",
              flush=True)
        result = {"files": count, "bytes": size, "busy_before_scan": wait_quiet()}
        t0 = time.monotonic()
        pair.start("a")
        result["scan"] = pair.wait(lambda: pair.a_scanned(count, size), 7200, 0.5, since=t0)
        time.sleep(SETTLE)
        result["scan_peak_a"] = pair.rss("a", "VmHWM")
        result["scan_steady_a"] = pair.rss("a", "VmRSS")
        print(f"  cold scan {fmt_s(result['scan'])}, A's RSS peak "
              f"{result['scan_peak_a']:.1f} MB, steady {result['scan_steady_a']:.1f} MB",
              flush=True)
        wait_quiet()
        result["rescan"] = rescan(pair, "a")
        time.sleep(SETTLE)
        result["rescan_steady_a"] = pair.rss("a", "VmRSS")
        print(f"  unchanged rescan {fmt_s(result['rescan'])}, A's RSS "
              f"{result['rescan_steady_a']:.1f} MB", flush=True)
        result["sync"] = sync.pull_everything(pair, count, size)
        r = result["sync"]
        print(f"  initial sync {fmt_s(r['seconds'])}, wire {fmt_bytes(r['wire'])}, RSS peak "
              f"{r['peak_a']:.1f} / {r['peak_b']:.1f} MB, steady {r['steady_a']:.1f} / "
              f"{r['steady_b']:.1f} MB, CPU {r['cpu_a']:.0f} / {r['cpu_b']:.0f} s", flush=True)
        return result
    finally:
        pair.remove()


# ---------------------------------------------------------------- (g) ten devices

class Bridge:
    """N namespaces, each with a veth to one bridge in a namespace of its own."""

    def __init__(self, n):
        self.ns = {str(i): f"pfbenchG{i}" for i in range(n)}
        self.addr = {str(i): f"{SUBNET}.{i + 1}" for i in range(n)}
        self.made = False

    def iface(self, w):
        return f"pfg{w}"

    def setup(self):
        names = [BRIDGE_NS, *self.ns.values()]
        existing = {line.split()[0] for line in sh("ip", "netns", "list").splitlines()
                    if line.strip()}
        for ns in names:
            if ns in existing:
                if sh("ip", "netns", "pids", ns).split():
                    sys.exit(f"network namespace {ns} exists with processes (an interrupted "
                             f"run?): stop them, then `ip netns del {ns}`")
                sh("ip", "netns", "del", ns)
        self.made = True
        for ns in names:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
        for w, ns in self.ns.items():
            iface = self.iface(w)
            sh("ip", "link", "add", iface, "netns", ns, "type", "veth", "peer", "name",
               f"{iface}br", "netns", BRIDGE_NS)
            sh("ip", "-n", BRIDGE_NS, "link", "set", f"{iface}br", "master", "br0", "up")
            # No IPv6: router solicitations and MLD reports would count as traffic.
            sh("ip", "netns", "exec", ns, "sh", "-c",
               f"echo 1 > /proc/sys/net/ipv6/conf/{iface}/disable_ipv6")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr[w]}/24", "dev", iface)
            sh("ip", "-n", ns, "link", "set", iface, "up")

    def sent(self):
        """Bytes every device has put on its veth (each frame on the bridge counted once)."""
        total = 0
        for w, ns in self.ns.items():
            link = json.loads(sh("ip", "-j", "-s", "-n", ns, "link", "show", "dev",
                                 self.iface(w)))[0]
            total += link["stats64"]["tx"]["bytes"]
        return total

    def teardown(self):
        if self.made:
            for ns in [*self.ns.values(), BRIDGE_NS]:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.made = False


def many_devices(kind, bridge, changes):
    """(g): device 0 writes new files; time until the last device has each, wire, RSS."""
    group = kind(f"g-{kind.name}", bridge.ns, bridge.addr)
    try:
        for w in group.ns:
            group.start(w)
        peers = len(group.ns) - 1
        t0 = time.monotonic()
        for w in group.ns:
            group.wait(lambda: group.connected(w) == peers, 300, 0.2)
        print(f"  all {len(group.ns)} devices connected to every other in "
              f"{fmt_s(time.monotonic() - t0)}", flush=True)
        time.sleep(SETTLE)
        wait_quiet()
        rnd = random.Random(7)
        others = group.others("0")
        rounds = []
        for i in range(changes):
            rel = f"change-{i}.bin"
            before = bridge.sent()
            with open(os.path.join(group.root["0"], rel), "wb") as f:
                f.write(rnd.randbytes(1 << 20))
            times = sync.arrival_times(group, rel, 600, "0", others)
            time.sleep(3)
            rounds.append({"last": max(times.values()),
                           "median": statistics.median(times.values()),
                           "wire": bridge.sent() - before, "times": times})
            print(f"  change {i + 1}: last device after {fmt_s(rounds[-1]['last'])}, "
                  f"median {fmt_s(rounds[-1]['median'])}, "
                  f"wire {fmt_bytes(rounds[-1]['wire'])}", flush=True)
        rss = {w: group.rss(w, "VmRSS") for w in group.ns}
        peak = {w: group.rss(w, "VmHWM") for w in group.ns}
        return {"rounds": rounds, "rss": rss, "peak": peak,
                "last": statistics.median(r["last"] for r in rounds),
                "median": statistics.median(r["median"] for r in rounds),
                "wire": statistics.median(r["wire"] for r in rounds)}
    finally:
        group.remove()


# ---------------------------------------------------------------- report

def report(results, files, devices, failures):
    f = results.get("f")
    if f:
        s = f["sync"]
        print(f"\n## (f) one folder of {f['files']:,} files ({fmt_bytes(f['bytes'])}), "
              f"peerfold\n")
        print("| step | time | peak RSS A / B | steady RSS A / B | other |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| cold scan | {fmt_s(f['scan'])} | {f['scan_peak_a']:.1f} MB | "
              f"{f['scan_steady_a']:.1f} MB | |")
        print(f"| unchanged rescan | {fmt_s(f['rescan'])} | | {f['rescan_steady_a']:.1f} MB | |")
        print(f"| initial sync to an empty peer | {fmt_s(s['seconds'])} | {s['peak_a']:.1f} / "
              f"{s['peak_b']:.1f} MB | {s['steady_a']:.1f} / {s['steady_b']:.1f} MB | "
              f"wire {fmt_bytes(s['wire'])}, CPU {s['cpu_a']:.0f} / {s['cpu_b']:.0f} s |")
        print("\nPeak RSS: VmHWM of the daemon since its start (after the scan for the scan "
              "row); steady: VmRSS 5 s after the step.")
    g = {k: v for k, v in results.items() if k.startswith("g-")}
    if g:
        print(f"\n## (g) one folder shared by {devices} devices on one bridge; device 0 "
              f"writes a new 1 MiB file\n")
        print("| daemon | to the last device | to the median device | on the wire per change "
              "| wire / file size | RSS per daemon (median, max) | peak RSS (max) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for key, r in g.items():
            rss = list(r["rss"].values())
            print(f"| {key[2:]} | {fmt_s(r['last'])} | {fmt_s(r['median'])} | "
                  f"{fmt_bytes(r['wire'])} | {r['wire'] / (1 << 20):.1f} | "
                  f"{statistics.median(rss):.1f} MB, {max(rss):.1f} MB | "
                  f"{max(r['peak'].values()):.1f} MB |")
        print("\nMedians over the changes. On the wire: the tx bytes of every device's veth "
              "from the write until 3 s after the last device had the file (each frame "
              "once). RSS: VmRSS of each daemon (Syncthing: its worker) after the changes.")
    if failures:
        print("\nFailures:")
        for failure in failures:
            print(f"- {failure}")


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="f,g")
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--only", choices=["peerfold", "syncthing", "both"], default="both",
                        help="daemons for (g); (f) runs peerfold only")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--bin", help="take the binaries from DIR (implies --no-build)")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or any(c not in ("f", "g") for c in cases):
        parser.error("--cases takes a comma-separated subset of f,g")
    if not 2 <= args.devices <= 200:
        parser.error("--devices takes 2 to 200")
    if os.geteuid() != 0:
        sys.exit("bench/scale.py must run as root: it creates network namespaces. "
                 "Try: sudo bench/scale.py")
    kinds = ["peerfold", "syncthing"] if args.only == "both" else [args.only]
    binaries, st_version, stamp = start_run(args, "g" in cases and "syncthing" in kinds)
    print(f"# scale benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {os.cpu_count()} cores, load {os.getloadavg()}")
    print(f"- peerfold source: {git_info()}; binaries: {binaries}")
    print(f"- syncthing: {st_version}")
    print(f"- cases: {','.join(cases)}; (f) {args.files:,} files; (g) {args.devices} devices, "
          f"{args.changes} changes, daemons: {', '.join(kinds)}; work dir {WORK}\n", flush=True)
    results, failures = {}, []
    bridge = Bridge(args.devices)
    try:
        if "f" in cases:
            print("(f) one folder of many files, peerfold ...", flush=True)
            try:
                sync.NET.setup()
                results["f"] = million_files(args.files)
            except (RuntimeError, subprocess.CalledProcessError, NotReady) as e:
                failures.append(f"(f): {e}")
                print(f"  FAILED: {e}", flush=True)
            finally:
                sync.NET.teardown()
        if "g" in cases:
            bridge.setup()
            for k in kinds:
                print(f"(g) {args.devices} devices, {k} ...", flush=True)
                try:
                    results[f"g-{k}"] = many_devices(sync.KINDS[k], bridge, args.changes)
                except (RuntimeError, subprocess.CalledProcessError, NotReady) as e:
                    failures.append(f"(g) {k}: {e}")
                    print(f"  FAILED: {e}", flush=True)
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e or 'Ctrl-C'}); results so far")
    finally:
        for proc in list(LIVE):
            stop_process(proc)
        bridge.teardown()
        path = os.path.join(WORK, f"scale-{stamp}.json")
        with open(path, "w") as f:
            json.dump({"args": vars(args), "binaries": binaries, "syncthing": st_version,
                       "results": results, "failures": failures}, f, indent=1)
        print(f"\nraw results: {path}; daemon logs: {LOGS}")
    report(results, args.files, args.devices, failures)


if __name__ == "__main__":
    main()

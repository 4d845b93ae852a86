#!/usr/bin/env python3
"""Sync benchmarks: two release `peerfold serve` daemons on loopback.

Usage: bench/sync.py [RUNS]     (default 3; medians are printed)

Cases: (a) one 1 GiB file, (b) 20,000 files of 4-64 KiB, (d) after (a): 1 byte overwritten
in the middle, 1 byte inserted near the start, 1 MiB appended, (e) a small new file from
write to complete on the other side (median of 10). For each transfer: time to complete,
throughput, bytes received by the pulling daemon (its QUIC socket counter, from
`peerfold status --json`), and the pulling daemon's peak and steady RSS.

Not yet here (see bench/RESULTS.md): Syncthing on the same data, 200,000-file case, bytes
measured outside the daemons in network namespaces.
"""

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("BENCH_DIR", "/tmp/peerfold-sync-bench")
PF = os.path.join(ROOT, "target/release/peerfold")
PB = os.path.join(ROOT, "target/release/peerfold-bench")


def run(home, *args):
    out = subprocess.run([PF, *args], env={**os.environ, "PEERFOLD_HOME": home},
                         check=True, capture_output=True, text=True)
    return out.stdout


def status(home):
    return json.loads(run(home, "status", "--json"))


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class Pair:
    """Devices a (has the data) and b (pulls it), folder "bench"."""

    next_port = 22310

    def __init__(self, name):
        self.port_a, self.port_b = Pair.next_port, Pair.next_port + 1
        Pair.next_port += 2
        self.dir = os.path.join(WORK, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.a_home, self.b_home = f"{self.dir}/a-home", f"{self.dir}/b-home"
        self.a_root, self.b_root = f"{self.dir}/a", f"{self.dir}/b"
        os.makedirs(self.a_root)
        os.makedirs(self.b_root)
        for home, root in [(self.a_home, self.a_root), (self.b_home, self.b_root)]:
            run(home, "init")
            run(home, "folder", "add", "--id", "bench", "--path", root)
        a_id, b_id = run(self.a_home, "id").strip(), run(self.b_home, "id").strip()
        run(self.a_home, "device", "add", b_id, "--address", f"quic://127.0.0.1:{self.port_b}")
        run(self.b_home, "device", "add", a_id, "--address", f"quic://127.0.0.1:{self.port_a}")
        run(self.a_home, "folder", "share", "bench", b_id)
        run(self.b_home, "folder", "share", "bench", a_id)
        self.procs = {}

    def start(self, which):
        home = self.a_home if which == "a" else self.b_home
        port = self.port_a if which == "a" else self.port_b
        log = open(f"{self.dir}/{which}.log", "w")
        self.procs[which] = subprocess.Popen(
            [PF, "serve", "--listen", f"quic://127.0.0.1:{port}"],
            env={**os.environ, "PEERFOLD_HOME": home}, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                return status(home)
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        raise RuntimeError(f"{which} did not start")

    def stop(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    def wait_scanned(self, files):
        while True:
            folder = status(self.a_home)["folders"][0]
            if folder["local"]["files"] >= files and folder["state"] == "idle":
                return
            time.sleep(0.05)

    def wait_b(self, done, timeout=3600, poll=0.02):
        start = time.time()
        while time.time() - start < timeout:
            if done():
                return time.time() - start
            time.sleep(poll)
        raise RuntimeError("timed out")

    def b_in_bytes(self):
        return status(self.b_home)["devices"][0]["inBytes"]


def file_hash(path):
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def b_matches(pair, rel, expected):
    path = os.path.join(pair.b_root, rel)
    try:
        return os.path.getsize(path) == os.path.getsize(os.path.join(pair.a_root, rel)) \
            and file_hash(path) == expected
    except OSError:
        return False


def transfer(name, make, count_files, total_bytes):
    pair = Pair(name)
    make(pair.a_root)
    pair.start("a")
    pair.wait_scanned(count_files)
    pair.start("b")
    b_pid = pair.procs["b"].pid

    def complete():
        folder = status(pair.b_home)["folders"][0]
        return folder["local"]["files"] >= count_files and folder["need"]["files"] == 0

    # Status walks the index: poll it gently so the measurement does not slow the daemon.
    seconds = pair.wait_b(complete, poll=0.25)
    peak = rss_kib(b_pid, "VmHWM")
    time.sleep(3)
    steady = rss_kib(b_pid, "VmRSS")
    received = pair.b_in_bytes()
    return pair, {"seconds": seconds, "mb_s": total_bytes / seconds / 1e6, "wire": received,
                  "peak_mb": peak / 1024, "steady_mb": steady / 1024}


def edits(pair):
    """(d): small edits to the 1 GiB file; bytes and time until b has them."""
    path = os.path.join(pair.a_root, "big.bin")
    results = {}
    for label, action in [
        ("1 byte overwritten in the middle", lambda f: (f.seek(512 << 20), f.write(b"\x42"))),
        ("1 byte inserted near the start", None),
        ("1 MiB appended", lambda f: (f.seek(0, 2), f.write(os.urandom(1 << 20)))),
    ]:
        before = pair.b_in_bytes()
        if action is None:
            subprocess.run([PB, "insert", path, "4096", "1"], check=True)
        else:
            with open(path, "r+b") as f:
                action(f)
        expected = file_hash(path)
        seconds = pair.wait_b(lambda: b_matches(pair, "big.bin", expected))
        time.sleep(1.5)
        results[label] = {"seconds": seconds, "wire": pair.b_in_bytes() - before}
    return results


def latency(pair, n=10):
    """(e): a small new file on a until complete on b."""
    times = []
    for i in range(n):
        data = os.urandom(1000)
        with open(os.path.join(pair.a_root, f"latency-{i}.txt"), "wb") as f:
            f.write(data)
        expected = hashlib.blake2b(data).hexdigest()
        times.append(pair.wait_b(lambda: b_matches(pair, f"latency-{i}.txt", expected)))
    return statistics.median(times)


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "peerfold", "-p", "peerfold-bench"],
                   cwd=ROOT, check=True)
    os.makedirs(WORK, exist_ok=True)
    cases = [
        ("(a) 1 GiB file", "one", lambda root: subprocess.run(
            [PB, "gen-file", f"{root}/big.bin", str(1 << 30), "1"], check=True), 1, 1 << 30),
        ("(b) 20,000 files of 4-64 KiB", "20k", lambda root: subprocess.run(
            [PB, "gen-tree", root, "20000", "4096", "65536", "2"], check=True), 20000, None),
    ]
    print(f"runs: {runs}, medians; {os.cpu_count()} cores\n")
    print("| case | time | throughput | bytes received | peak RSS (puller) | steady RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    kept = None
    for label, name, make, files, total in cases:
        results = []
        for i in range(runs):
            if total is None:
                probe = os.path.join(WORK, "probe")
                shutil.rmtree(probe, ignore_errors=True)
                make(probe)
                total = sum(os.path.getsize(os.path.join(d, f))
                            for d, _, fs in os.walk(probe) for f in fs)
                shutil.rmtree(probe)
            pair, result = transfer(f"{name}-{i}", make, files, total)
            results.append(result)
            if name == "one" and i == runs - 1:
                kept = pair
            else:
                pair.stop()
        print(f"| {label} | {median_of(results, 'seconds'):.2f} s | "
              f"{median_of(results, 'mb_s'):.0f} MB/s | {median_of(results, 'wire') / 1e6:.1f} MB | "
              f"{median_of(results, 'peak_mb'):.1f} MB | {median_of(results, 'steady_mb'):.1f} MB |")
    print()
    for label, r in edits(kept).items():
        print(f"(d) {label}: {r['seconds']:.2f} s, {r['wire'] / 1e3:.0f} KB received")
    print(f"(e) small new file, write to complete on the other side: median "
          f"{latency(kept):.3f} s of 10")
    kept.stop()


if __name__ == "__main__":
    main()

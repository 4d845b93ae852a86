"""What the benchmark scripts share: paths, processes, network namespaces, measurements
of processes and trees, Syncthing's options, and formatting."""

import ctypes
import datetime
import hashlib
import http.client
import os
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


LIVE = set()  # every daemon process still running, for the cleanup


class NotReady(Exception):
    pass


def sh(*cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


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


def drop_caches():
    """Writes dirty data out and drops the kernel's page, dentry and inode caches. ext4
    without a journal skips, when it allocates an inode, each one freed in the last minute
    (six while its inode-table block is dirty) whose inode-table block is still cached,
    reading that block to tell (`recently_deleted()` in fs/ext4/ialloc.c): the 400,000
    files a previous case deleted made the next case's file creations pay for them."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


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


def stop_process(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    LIVE.discard(proc)


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


def start_run(args, need_syncthing):
    """What every benchmark run does first: the log directory, the binaries (built unless
    told otherwise), Syncthing when needed, SIGTERM and SIGHUP as interrupts (results so
    far are kept). Returns (binaries, Syncthing's version or "-", a timestamp for files)."""
    os.makedirs(LOGS, exist_ok=True)
    binaries = prepare_binaries(args)
    st_version = ensure_syncthing() if need_syncthing else "-"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    return binaries, st_version, datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

"""The two daemons bench/gui.py measures the GUIs of: generated homes of peerfold and of
Debian's Syncthing holding the same folders and devices (valid device IDs made here), the
processes, and the small /proc and REST helpers they use. See bench/gui.py."""

import base64
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from benchlib import ST_OPTIONS, children, set_st_options, cpu_ticks as one_cpu_ticks

ST = "/usr/bin/syncthing"
SHARES_PER_FOLDER = 3
LIVE = []  # daemon processes and browsers still running, for the cleanup


# ---------------------------------------------------------------- helpers

def sh(*cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_ticks(pids):
    """utime + stime of the processes, in clock ticks."""
    return sum(one_cpu_ticks(pid) for pid in pids)


TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- device IDs

LUHN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def luhn32(s):
    """Syncthing's Luhn mod 32 check character over the base32 alphabet."""
    factor, total = 1, 0
    for ch in s:
        addend = factor * LUHN_ALPHABET.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return LUHN_ALPHABET[(32 - total % 32) % 32]


def device_id(seed):
    """A valid device ID: base32 of a SHA-256, 4 chunks of 13 characters each followed by
    its check character, in groups of 7 joined by '-'."""
    b32 = base64.b32encode(hashlib.sha256(seed).digest()).decode().rstrip("=")
    chunks = [b32[i:i + 13] for i in range(0, 52, 13)]
    full = "".join(c + luhn32(c) for c in chunks)
    return "-".join(full[i:i + 7] for i in range(0, 56, 7))


# ---------------------------------------------------------------- the shared setup

class Setup:
    """Folder and device lists; each daemon gets its own copy of the folder directories."""

    def __init__(self, tmp, n_folders, n_devices):
        self.tmp = tmp
        seed = secrets.token_bytes(16)
        self.devices = [(device_id(seed + i.to_bytes(4, "big")), f"device-{i:02d}")
                        for i in range(n_devices)]
        self.folders = []
        for i in range(n_folders):
            shared = [self.devices[(i * SHARES_PER_FOLDER + k) % n_devices][0]
                      for k in range(SHARES_PER_FOLDER)]
            self.folders.append((f"bench-{i:03d}", f"Folder {i:03d}", shared))

    def make_dirs(self, who, marker=None):
        """The folder directories of one daemon: two small files each."""
        paths = {}
        for i, (fid, _, _) in enumerate(self.folders):
            path = os.path.join(self.tmp, "data", who, fid)
            os.makedirs(path)
            with open(os.path.join(path, "notes.txt"), "w") as f:
                f.write(f"folder {fid}\n" * 4)
            with open(os.path.join(path, "data.bin"), "wb") as f:
                f.write(hashlib.sha256(fid.encode()).digest() * 64)  # 2 KiB
            if marker:
                os.makedirs(os.path.join(path, marker))
            paths[fid] = path
        return paths


# ---------------------------------------------------------------- REST

def rest(port, key, method, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


# ---------------------------------------------------------------- daemons

class Daemon:
    name = None
    # In-page JavaScript, given the number of folders as N: expressions over `document`.
    ROWS_JS = None         # the folder elements
    STATES_DONE_JS = None  # true when no folder's state is unknown any more
    LABEL_JS = None        # function (id, label) -> true when that folder shows label

    def __init__(self, tmp, setup):
        self.tmp = tmp
        self.setup = setup
        self.port = free_port()
        self.key = None
        self.proc = None
        self.log = os.path.join(tmp, f"{self.name}.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def launch(self, argv, env):
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        LIVE.append(self)

    def check_alive(self):
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log "
                               f"{self.log} ends:\n{tail}")

    def get(self, path, timeout=30):
        return rest(self.port, self.key, "GET", path, timeout=timeout)

    def wait_api(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                self.get("/rest/system/ping", timeout=5)
                return
            except (OSError, urllib.error.URLError, ValueError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: REST API on port {self.port} not up after "
                                       f"{timeout} s ({e}); log: {self.log}")
                time.sleep(0.5)

    def wait_idle(self, timeout=600):
        """Until every folder's /rest/db/status says idle, then until the daemon's CPU use
        is under 5% of a core over 2 s (at most 60 s more)."""
        deadline = time.monotonic() + timeout
        pending = [fid for fid, _, _ in self.setup.folders]
        while pending:
            self.check_alive()
            left = []
            for fid in pending:
                status = self.get("/rest/db/status?folder=" + urllib.parse.quote(fid))
                state = status["state"]
                if state == "error":
                    raise RuntimeError(f"{self.name}: folder {fid}: {status.get('error')}")
                if state != "idle":
                    left.append((fid, state))
            pending = [fid for fid, _ in left]
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: {len(left)} folders not idle after "
                                       f"{timeout} s, e.g. {left[:3]}")
                time.sleep(2)
        quiet_by = time.monotonic() + 60
        while time.monotonic() < quiet_by:
            c0 = cpu_ticks(self.pids())
            time.sleep(2)
            if (cpu_ticks(self.pids()) - c0) / TICK / 2 < 0.05:
                break

    def check_config(self):
        """The daemon has the folders and devices (+ itself) it was given."""
        cfg = self.get("/rest/config")
        got = (len(cfg["folders"]), len([d for d in cfg["devices"] if d["deviceID"] in
                                         {did for did, _ in self.setup.devices}]))
        want = (len(self.setup.folders), len(self.setup.devices))
        if got != want:
            raise RuntimeError(f"{self.name} has {got} folders and devices configured, not {want}")

    def pids(self):
        return [self.proc.pid, *children(self.proc.pid)]

    def worker(self):
        return self.proc.pid

    def rss(self):
        return rss_mib(self.worker())

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: it and its children
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


class Peerfold(Daemon):
    name = "peerfold"
    ROWS_JS = 'document.querySelectorAll(\'[data-test^="folder-"][data-state]\')'
    STATES_DONE_JS = ('document.querySelectorAll(\'[data-test^="folder-"][data-state]\').length >= N '
                      '&& !document.querySelector(\'[data-test^="folder-"][data-state="unknown"]\')')
    LABEL_JS = """(id, label) => {
        const el = document.querySelector(`[data-test="folder-${id}"] .name`);
        return !!el && el.textContent.trim() === label;
    }"""

    def __init__(self, tmp, setup, binary, gui_dir):
        super().__init__(tmp, setup)
        self.binary = binary
        self.gui_dir = gui_dir
        self.home = os.path.join(tmp, "peerfold-home")
        sh(binary, "--home", self.home, "init", "--name", "gui-bench",
           "--api", f"127.0.0.1:{self.port}")
        with open(os.path.join(self.home, "config.toml")) as f:
            for line in f:
                if line.strip().startswith("key = "):
                    self.key = json.loads(line.split("=", 1)[1].strip())
        if not self.key:
            raise RuntimeError(f"no API key in {self.home}/config.toml")
        self.write_config(setup.make_dirs("peerfold", marker=".peerfold"))

    def write_config(self, paths):
        q = json.dumps  # TOML basic strings and JSON strings agree for these values
        out = [
            "# written by bench/gui.py", 'device_name = "gui-bench"',
            'listen = ["quic://127.0.0.1:0"]', "",
            "[api]", f'address = "127.0.0.1:{self.port}"', f"key = {q(self.key)}", "",
            "[options]", "global_announce_enabled = false", "global_announce_servers = []",
            "local_announce_enabled = false", "relays_enabled = false",
            "reconnection_interval_s = 60", "stun_servers = []", "",
            "[defaults]", f"folder_path = {q(os.path.join(self.tmp, 'data', 'peerfold'))}", "",
        ]
        for fid, label, shared in self.setup.folders:
            out += ["[[folder]]", f"id = {q(fid)}", f"label = {q(label)}",
                    f"path = {q(paths[fid])}", 'type = "sendreceive"',
                    f"devices = [{', '.join(q(d) for d in shared)}]", ""]
        for did, name in self.setup.devices:
            out += ["[[device]]", f"id = {q(did)}", f"name = {q(name)}",
                    'addresses = ["dynamic"]', ""]
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write("\n".join(out))

    def start(self):
        env = dict(os.environ)
        env.pop("PEERFOLD_HOME", None)
        if self.gui_dir:
            env["PEERFOLD_GUI_DIR"] = self.gui_dir
        else:
            env.pop("PEERFOLD_GUI_DIR", None)
        self.launch([self.binary, "--home", self.home, "serve", "--listen",
                     "quic://127.0.0.1:0", "--api", f"127.0.0.1:{self.port}"], env)

    def check_device_ids(self):
        """Every generated device ID must be valid to peerfold (it checks the Luhn
        characters) and come back unchanged."""
        for did, _ in self.setup.devices:
            try:
                got = self.get("/rest/svc/deviceid?id=" + urllib.parse.quote(did))
            except urllib.error.HTTPError as e:
                raise RuntimeError(f"peerfold rejects generated device ID {did}: HTTP {e.code} "
                                   f"{e.read()[:200]!r}") from e
            if got.get("id") != did:
                raise RuntimeError(f"peerfold on generated device ID {did}: {got}")


class Syncthing(Daemon):
    name = "syncthing"
    # The folder panels; each heading holds the status (ng-switch: only the current state's
    # span is in the DOM) and the label (.panel-title-text).
    ROWS_JS = "document.querySelectorAll('#folders > .panel')"
    STATES_DONE_JS = """(() => {
        const panels = document.querySelectorAll('#folders > .panel');
        if (panels.length < N) return false;
        for (const p of panels) {
            const s = p.querySelector('.panel-heading .panel-status');
            if (!s || /^\\s*$|Unknown/.test(s.textContent)) return false;
        }
        return true;
    })()"""
    LABEL_JS = """(id, label) => {
        for (const el of document.querySelectorAll('#folders > .panel .panel-title-text')) {
            if (el.textContent.trim() === label) return true;
        }
        return false;
    }"""

    def __init__(self, tmp, setup):
        super().__init__(tmp, setup)
        self.home = os.path.join(tmp, "syncthing-home")
        sh(ST, "generate", f"--home={self.home}", "--no-default-folder")
        self.my_id = sh(ST, "serve", f"--home={self.home}", "--device-id").strip()
        self.key = secrets.token_hex(16)
        self.configure(setup.make_dirs("syncthing", marker=".stfolder"))

    def configure(self, paths):
        path = os.path.join(self.home, "config.xml")
        tree = ET.parse(path)
        cfg = tree.getroot()
        gui = cfg.find("gui")
        gui.set("tls", "false")
        gui.find("address").text = f"127.0.0.1:{self.port}"
        gui.find("apikey").text = self.key
        for tag in ("user", "password"):
            for el in gui.findall(tag):
                gui.remove(el)
        set_st_options(cfg.find("options"), f"tcp://127.0.0.1:{free_port()}", ST_OPTIONS)
        defaults = cfg.find("defaults")
        last_device = max(i for i, el in enumerate(cfg) if el.tag == "device")
        for n, (did, name) in enumerate(self.setup.devices):
            device = _clone(defaults.find("device"))
            device.set("id", did)
            device.set("name", name)
            for el in device.findall("address"):
                el.text = "dynamic"
            cfg.insert(last_device + 1 + n, device)
        for n, (fid, label, shared) in enumerate(self.setup.folders):
            folder = _clone(defaults.find("folder"))  # lists this device already
            folder.set("id", fid)
            folder.set("label", label)
            folder.set("path", paths[fid])
            mine = [i for i, el in enumerate(folder) if el.tag == "device"]
            at = mine[-1] + 1 if mine else 0
            for k, did in enumerate(shared):
                el = ET.Element("device", {"id": did, "introducedBy": ""})
                ET.SubElement(el, "encryptionPassword")
                folder.insert(at + k, el)
            cfg.insert(n, folder)
        tree.write(path)

    def start(self):
        self.launch([ST, "serve", f"--home={self.home}", "--no-browser", "--no-restart",
                     "--no-default-folder"], {**os.environ, "STNOUPGRADE": "1"})

    def worker(self):
        """Syncthing 1.19 runs a monitor process as the parent of the real one."""
        kids = children(self.proc.pid)
        return kids[-1] if kids else self.proc.pid

    def version(self):
        return sh(ST, "--version").split('"')[0].strip()


def _clone(el):
    return ET.fromstring(ET.tostring(el))

#!/usr/bin/env python3
"""Web GUI benchmark: peerfold's GUI against Syncthing's, side by side, 500 folders and 50
devices, in headless Chromium.

Usage (no root needed; everything on 127.0.0.1):

    bench/gui.py [--bin DIR] [--gui-dir DIR] [--loads N] [--updates N]
                 [--folders N] [--devices N] [--keep]

    # e.g. a debug daemon that serves the GUI from the work tree:
    bench/gui.py --bin /tmp/gui-dev --gui-dir daemon/gui

--bin DIR takes the `peerfold` binary from DIR (default target/release; nothing is built
here). --gui-dir DIR runs the daemon with PEERFOLD_GUI_DIR=DIR (a build that serves its GUI
from disk); without it the daemon serves its embedded GUI. Syncthing is Debian's
/usr/bin/syncthing (1.19). Browser: /usr/bin/chromium through /usr/bin/chromedriver, with
Python selenium from a venv the script makes on first use (${TMPDIR:-/tmp}/
peerfold-gui-bench-venv; `python3 -m venv` + `pip install selenium`) and re-runs itself in.

Setup, the same for both daemons: 500 folders (each a real directory with two small files and
the daemon's folder marker, .peerfold or .stfolder, its own copy per daemon), 50 devices (valid device IDs computed here: base32 of random
32 bytes with Syncthing's Luhn mod 32 check characters; peerfold's /rest/svc/deviceid checks
every one), each folder shared with 3 of them. Devices are "dynamic" with global and local
discovery, relays, NAT traversal, STUN, usage and crash reporting and upgrades off, so
nothing is dialed and nothing leaves the machine. peerfold: `peerfold init`, then
config.toml written whole; Syncthing: `syncthing generate`, then config.xml edited (GUI on
127.0.0.1 without user or password, a known API key). Both daemons run for the whole run; the
page loads alternate between them (peerfold, Syncthing, peerfold, ...), each in a fresh
browser (new profile, empty cache), window 1280x900. Before each load the daemon has scanned
every folder (/rest/db/status says idle for all 500).

Measured per page load, in the page (a script injected before the page's own runs, clock
`performance.now()`, whose zero is the navigation start):
- first full render: until all 500 folder elements are in the DOM (peerfold: 500
  `[data-test^="folder-"][data-state]` cards; Syncthing: 500 `#folders .panel` panels);
- states shown: until no folder shows its state as unknown any more (peerfold: no card
  with data-state="unknown"; Syncthing: no folder panel whose status reads "Unknown", the
  text its GUI shows until it has the folder's /rest/db/status);
  both checked in the animation frame after each DOM change (MutationObserver), so the
  time is that of the frame that shows it;
- page idle: when the page's last long task (over 50 ms, PerformanceObserver "longtask")
  ended, once none came for 2 s (waiting 3 s after "states shown", at most 60 s: a page
  still busy then is reported so, and measured on as it is), and the long tasks' summed
  duration until then: how long the page stays busy after it looks complete;
- live update (N per load, after the wait above, and between two updates a wait for 1 s
  without a long task, at most 15 s): a fetch from the page PATCHes
  /rest/config/folders/ID {"label": new} with X-API-Key; time from just before the request
  until the new label is in that folder's element (MutationObserver); also when the PATCH
  answered;
- JS heap: performance.memory.usedJSHeapSize (precise-memory-info on), settled, after a
  forced garbage collection (CDP HeapProfiler.collectGarbage), and before it;
- daemon RSS: VmRSS of the daemon (Syncthing: its worker process, not the monitor parent)
  with the page settled;
- transferred: transferSize of the navigation entry and of every resource entry (resource
  timing buffer raised so that none is dropped), split into page assets (documents,
  scripts, styles, fonts, images) and REST calls (fetch / XHR), up to "states shown";
  long polls still open then are not counted.
Also, for peerfold only, the gzipped size (level 9) of the files the daemon serves from
daemon/gui (*.md and the vendor LICENSE-* files left out).

Medians over the loads (and over all live updates) are printed as a Markdown table with the
ratio Syncthing / peerfold (above 1: peerfold is faster or smaller). Raw results go to
$BENCH_DIR/gui-results-*.json (default /tmp/peerfold-gui-bench). Daemons, browsers and the
temp dir are removed at the end, also after an error or Ctrl-C (--keep leaves the temp dir).
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from gui_daemons import (  # noqa: E402 (the script's own directory is on sys.path)
    Daemon,
    LIVE,
    Peerfold,
    ST,
    Setup,
    Syncthing,
    sh,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("BENCH_DIR", "/tmp/peerfold-gui-bench")
VENV = os.path.join(os.environ.get("TMPDIR", "/tmp"), "peerfold-gui-bench-venv")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SETTLE = 3.0



# ---------------------------------------------------------------- selenium, in a venv

def ensure_selenium():
    """Import selenium, or make the venv, install it there and re-run this script in it."""
    try:
        import selenium  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.environ.get("GUI_BENCH_IN_VENV"):
        sys.exit(f"selenium still missing in {VENV}: remove that directory and retry")
    if not os.path.exists(py):
        print(f"making a venv with selenium in {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "selenium"], check=True)
    os.environ["GUI_BENCH_IN_VENV"] = "1"
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


# ---------------------------------------------------------------- the browser

# Injected before any of the page's scripts: records when the folder elements are all
# there and when no folder's state is unknown. A DOM change (MutationObserver) schedules one
# check for the next animation frame, so the checks cost at most one per frame and the time
# is the frame that shows it. Long tasks (over 50 ms of script / layout) are recorded too.
PROBE_JS = """
(() => {
  const N = %(n)d;
  const R = window.__bench = { rows: null, states: null, checks: 0, lastLong: 0, longTotal: 0 };
  performance.setResourceTimingBufferSize(1000000);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      R.lastLong = Math.max(R.lastLong, e.startTime + e.duration);
      R.longTotal += e.duration;
    }
  }).observe({ type: 'longtask', buffered: true });
  const rows = () => %(rows)s;
  const statesDone = () => %(states)s;
  let pending = false;
  const check = () => {
    pending = false;
    R.checks++;
    if (R.rows === null) {
      if (rows().length < N) return;
      R.rows = performance.now();
    }
    if (R.states === null && statesDone()) {
      R.states = performance.now();
      obs.disconnect();
    }
  };
  const obs = new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(check); }
  });
  obs.observe(document, { childList: true, subtree: true, attributes: true, characterData: true });
})();
"""

# Run by execute_async_script: PATCH the label from the page, resolve when it is shown.
UPDATE_JS = """
const [url, key, id, label, timeoutMs, done] = arguments;
const shown = %(label)s;
const t0 = performance.now();
let answered = null, finished = false;
const finish = (r) => {
  if (finished) return;
  finished = true; obs.disconnect(); clearTimeout(timer);
  done({ ...r, answered });
};
const obs = new MutationObserver(() => {
  if (shown(id, label)) finish({ ms: performance.now() - t0 });
});
obs.observe(document, { childList: true, subtree: true, attributes: true, characterData: true });
const timer = setTimeout(() => finish({ error: 'label not shown after ' + timeoutMs + ' ms' }), timeoutMs);
fetch(url, { method: 'PATCH', headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
             body: JSON.stringify({ label }) })
  .then(async (r) => {
    answered = performance.now() - t0;
    if (!r.ok) finish({ error: 'HTTP ' + r.status + ': ' + (await r.text()).slice(0, 200) });
    else if (shown(id, label)) finish({ ms: performance.now() - t0 });
  })
  .catch((e) => finish({ error: String(e) }));
"""

TRANSFER_JS = """
const until = arguments[0];
const nav = performance.getEntriesByType('navigation')[0];
const out = { nav: nav ? nav.transferSize : 0, assets: 0, api: 0, assetCount: 0, apiCount: 0,
              late: 0 };
for (const e of performance.getEntriesByType('resource')) {
  if (e.responseEnd > until) { out.late++; continue; }
  if (e.initiatorType === 'fetch' || e.initiatorType === 'xmlhttprequest') {
    out.api += e.transferSize; out.apiCount++;
  } else { out.assets += e.transferSize; out.assetCount++; }
}
return out;
"""


def new_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--window-size=1280,900",
                "--enable-precise-memory-info", "--disable-extensions", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps"):
        options.add_argument(arg)
    service = Service(CHROMEDRIVER, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(180)
    return driver


def poll_page(driver, expr, timeout, what, daemon, required=True):
    """Evaluate expr in the page until it is not null; on timeout a clear error (or, if not
    required, a warning and None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + expr)
        if value is not None:
            return value
        daemon.check_alive()
        if time.monotonic() > deadline:
            state = driver.execute_script(
                "return {bench: window.__bench, rows: (() => { try { return %s.length } "
                "catch (e) { return String(e) } })(), errors: window.__peerfoldErrors || null}"
                % daemon.ROWS_JS)
            message = (f"{daemon.name}: {what} not reached after {timeout} s; "
                       f"page state: {json.dumps(state)[:500]}")
            if required:
                raise RuntimeError(message)
            print(f"  warning: {message}", flush=True)
            return None
        time.sleep(0.25)


def page_load(daemon, n_folders, updates, tag):
    """One fresh browser, one load of the daemon's GUI: render times, live updates,
    memory, transferred bytes."""
    driver = new_browser()
    LIVE.append(driver)
    try:
        probe = PROBE_JS % {"n": n_folders, "rows": daemon.ROWS_JS,
                            "states": daemon.STATES_DONE_JS}
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": probe})
        driver.get(daemon.url)
        rows = poll_page(driver, "window.__bench && window.__bench.rows", 180,
                         f"{n_folders} folder elements", daemon)
        states = poll_page(driver, "window.__bench && window.__bench.states", 180,
                           "every folder's state", daemon, required=False)
        transfer = driver.execute_script(TRANSFER_JS, 1e15 if states is None else states)
        print(f"  {daemon.name} {tag}: all folders at {rows:,.0f} ms, states at "
              f"{fmt_ms(states)}", flush=True)
        idle = wait_settled(driver, daemon)
        heap_before = driver.execute_script("return performance.memory.usedJSHeapSize")
        driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
        heap = driver.execute_script("return performance.memory.usedJSHeapSize")
        rss = daemon.rss()
        live = [live_update(driver, daemon, n_folders, tag, i) for i in range(updates)]
        return {"rows_ms": rows, "states_ms": states, "settled": idle["settled"],
                "idle_ms": idle["at"] if idle["settled"] else None, "checked_ms": idle["now"],
                "long_ms": idle["longTotal"], "heap": heap, "heap_before_gc": heap_before,
                "rss": rss, "transfer": transfer, "updates": live}
    finally:
        driver.quit()
        LIVE.remove(driver)


def wait_settled(driver, daemon, quiet_ms=2000, limit=60):
    """Until the page has had no long task for quiet_ms (at least SETTLE s from now, at most
    `limit` s). Returns when its last long task ended (ms from navigation start), the long
    tasks' total duration, and whether it did settle (a page that keeps re-rendering does
    not: it is measured as it is then)."""
    time.sleep(SETTLE)
    deadline = time.monotonic() + limit - SETTLE
    while True:
        r = driver.execute_script(
            "const R = window.__bench; return {now: performance.now(), at: R.lastLong, "
            "longTotal: R.longTotal}")
        r["settled"] = r["now"] - r["at"] >= quiet_ms
        if r["settled"] or time.monotonic() > deadline:
            return r
        daemon.check_alive()
        time.sleep(0.5)


def live_update(driver, daemon, n_folders, tag, i):
    """PATCH one folder's label from the page; ms until the page shows it."""
    fid = daemon.setup.folders[(37 * (i + 1)) % n_folders][0]
    label = f"Renamed {tag}-{i}"
    script = UPDATE_JS % {"label": daemon.LABEL_JS}
    url = f"/rest/config/folders/{urllib.parse.quote(fid)}"
    out = driver.execute_async_script(script, url, daemon.key, fid, label, 120000)
    if "error" in out:
        raise RuntimeError(f"{daemon.name}: live update of {fid}: {out['error']}")
    wait_settled(driver, daemon, quiet_ms=1000, limit=15)  # let the page finish the change
    return out


# ---------------------------------------------------------------- report

def gui_gzip_size(gui_dir):
    """(files, raw bytes, gzipped bytes) of what the daemon serves from its GUI directory."""
    n = raw = packed = 0
    for d, _, files in os.walk(gui_dir):
        for f in sorted(files):
            if f.endswith(".md") or f.startswith("LICENSE"):
                continue
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            n += 1
            raw += len(data)
            packed += len(gzip.compress(data, 9))
    return n, raw, packed


def fmt_ms(ms):
    return "not reached" if ms is None else f"{ms:,.0f} ms"


def med(values):
    return statistics.median(values) if values else None


def summarize(loads):
    ups = [u for r in loads for u in r["updates"]]
    return {
        "rows_ms": med([r["rows_ms"] for r in loads]),
        "states_ms": med([r["states_ms"] for r in loads if r["states_ms"] is not None]),
        "states_missing": sum(r["states_ms"] is None for r in loads),
        "idle_ms": (med([r["idle_ms"] for r in loads]) if all(r["settled"] for r in loads)
                    else None),
        "busy_at": max(r["checked_ms"] for r in loads if not r["settled"]) if not all(
            r["settled"] for r in loads) else None,
        "long_ms": med([r["long_ms"] for r in loads]),
        "update_ms": med([u["ms"] for u in ups]),
        "update_answered_ms": med([u["answered"] for u in ups if u["answered"] is not None]),
        "update_range": (min(u["ms"] for u in ups), max(u["ms"] for u in ups)) if ups else None,
        "heap": med([r["heap"] for r in loads]) / 1e6,
        "heap_before_gc": med([r["heap_before_gc"] for r in loads]) / 1e6,
        "rss": med([r["rss"] for r in loads]),
        "assets": med([r["transfer"]["nav"] + r["transfer"]["assets"] for r in loads]) / 1e3,
        "asset_count": med([r["transfer"]["assetCount"] + 1 for r in loads]),
        "api": med([r["transfer"]["api"] for r in loads]) / 1e3,
        "api_count": med([r["transfer"]["apiCount"] for r in loads]),
    }


def report(pf, st, args, gzinfo, loads_by):
    rows = [
        ("first full render: all folders in the DOM", "rows_ms", "{:,.0f} ms"),
        ("every folder's state shown", "states_ms", "{:,.0f} ms"),
        ("page idle: end of its last long task (no other for 2 s after)", "idle_ms", "{:,.0f} ms"),
        ("long tasks (over 50 ms) until then, summed", "long_ms", "{:,.0f} ms"),
        (f"live label update, PATCH to shown (median of {args.loads * args.updates})",
         "update_ms", "{:,.0f} ms"),
        ("... of which the PATCH answered after", "update_answered_ms", "{:,.0f} ms"),
        ("JS heap, settled, after GC", "heap", "{:.1f} MB"),
        ("JS heap, settled, before GC", "heap_before_gc", "{:.1f} MB"),
        ("daemon RSS, page open", "rss", "{:.1f} MiB"),
        ("transferred: page assets (incl. the document)", "assets", "{:,.1f} KB"),
        ("  asset requests", "asset_count", "{:.0f}"),
        ("transferred: REST calls until states shown", "api", "{:,.1f} KB"),
        ("  REST requests", "api_count", "{:.0f}"),
    ]
    lines = [f"| measure (median of {args.loads} loads) | peerfold | Syncthing | Syncthing / peerfold |",
             "| --- | --- | --- | --- |"]
    def cell(summary, key, fmt):
        value = summary.get(key)
        if key == "idle_ms" and value is None and summary.get("busy_at"):
            return f"still busy at {summary['busy_at'] / 1000:,.0f} s"
        if key == "states_ms" and summary.get("states_missing"):
            return (f"{fmt.format(value) if value is not None else '-'} "
                    f"({summary['states_missing']} load(s): not within 180 s)")
        return fmt.format(value) if value is not None else "-"

    for label, key, fmt in rows:
        a, b = pf.get(key), st.get(key)
        r = f"{b / a:.2f}x" if a and b is not None and key not in ("asset_count", "api_count") else ""
        lines.append(f"| {label} | {cell(pf, key, fmt)} | {cell(st, key, fmt)} | {r} |")
    n, raw, packed = gzinfo
    lines.append(f"| peerfold GUI files, gzip -9 ({n} files, {raw / 1e3:,.1f} KB raw) | "
                 f"{packed / 1e3:,.1f} KB | | |")
    lines.append("")
    for who, loads in loads_by.items():
        per = "; ".join(f"{r['rows_ms']:,.0f} ms / {fmt_ms(r['states_ms'])}" for r in loads)
        ups = ", ".join(f"{u['ms']:.0f}" for r in loads for u in r["updates"])
        lines.append(f"- {who}: render / states per load: {per}; live updates (ms): {ups}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release"),
                   help="directory with the peerfold binary (default target/release)")
    p.add_argument("--gui-dir", help="serve the GUI from this directory (PEERFOLD_GUI_DIR)")
    p.add_argument("--loads", type=int, default=3, help="page loads per daemon (default 3)")
    p.add_argument("--updates", type=int, default=5, help="live updates per load (default 5)")
    p.add_argument("--folders", type=int, default=500)
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (homes, logs)")
    args = p.parse_args()
    ensure_selenium()

    binary = os.path.join(args.bin, "peerfold")
    for path in (binary, ST, CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing: {path}")
    gui_dir = os.path.abspath(args.gui_dir) if args.gui_dir else None
    signal.signal(signal.SIGTERM, interrupted)
    os.makedirs(WORK, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="peerfold-gui-run-")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    try:
        setup = Setup(tmp, args.folders, args.devices)
        pf = Peerfold(tmp, setup, binary, gui_dir)
        st = Syncthing(tmp, setup)
        print(f"setup: {args.folders} folders, {args.devices} devices in {tmp}", flush=True)
        for d in (pf, st):
            d.start()
        for d in (pf, st):
            d.wait_api()
        pf.check_device_ids()
        for d in (pf, st):
            d.check_config()
        print(f"peerfold on :{pf.port}, Syncthing on :{st.port}; generated device IDs "
              f"accepted by peerfold; waiting for both to scan", flush=True)
        for d in (pf, st):
            t0 = time.monotonic()
            d.wait_idle()
            print(f"  {d.name}: all folders idle, quiet ({time.monotonic() - t0:.0f} s)",
                  flush=True)
        loads = {"peerfold": [], "syncthing": []}
        for i in range(args.loads):
            for d in (pf, st):
                r = page_load(d, args.folders, args.updates, f"{d.name}{i}")
                loads[d.name].append(r)
                ups = ", ".join(f"{u['ms']:.0f}" for u in r["updates"])
                print(f"  {d.name} load {i + 1}: render {r['rows_ms']:,.0f} ms, states "
                      f"{fmt_ms(r['states_ms'])}, updates {ups} ms, "
                      f"heap {r['heap'] / 1e6:.1f} MB, RSS {r['rss']:.1f} MiB", flush=True)
        pf_sum, st_sum = summarize(loads["peerfold"]), summarize(loads["syncthing"])
        gzinfo = gui_gzip_size(gui_dir or os.path.join(ROOT, "daemon", "gui"))
        table = report(pf_sum, st_sum, args, gzinfo, loads)
        load_end = os.getloadavg()
        print(f"\n## Web GUI: {args.folders} folders, {args.devices} devices\n")
        print(f"{started:%Y-%m-%d %H:%M} UTC; peerfold {binary}"
              f"{' with PEERFOLD_GUI_DIR=' + gui_dir if gui_dir else ''}; {st.version()}; "
              f"{sh(CHROMIUM, '--version').strip()}; {platform.node()}, {os.cpu_count()} cores; "
              f"load (1 min) {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end\n")
        print(table)
        out = os.path.join(WORK, f"gui-results-{started:%Y%m%dT%H%M%S}.json")
        with open(out, "w") as f:
            json.dump({"args": vars(args), "loads": loads, "peerfold": pf_sum,
                       "syncthing": st_sum, "gzip": gzinfo,
                       "loadavg": [load_start, load_end]}, f, indent=1)
        print(f"\nraw results: {out}")
    finally:
        cleanup(tmp, args.keep)


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # runs the cleanup in main's finally


def cleanup(tmp, keep):
    for thing in reversed(LIVE[:]):
        try:
            if isinstance(thing, Daemon):
                thing.stop()
            else:
                thing.quit()
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            print(f"cleanup: {e}", file=sys.stderr)
    LIVE.clear()
    if keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

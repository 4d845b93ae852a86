#!/usr/bin/env bash
# Relay benchmark (issue 12): our peerfold-relay against Debian's strelaysrv, side by side in
# one run, on loopback inside a private network namespace (only `lo`; nothing leaves it).
#
# (a) Sync: a SIZE_MB file (pseudo-random, generated once) goes from daemon A to a fresh
#     daemon B three ways: direct QUIC, through peerfold-relay, through strelaysrv. In the
#     relayed runs B knows A only by the relay URL and A holds a slot on that relay (A knows
#     B without an address and never dials). A starts first, indexes the file and (relayed)
#     joins the relay; the clock then runs from B's process start until the file is under its
#     final name on B's disk with its full size (the daemon renames a pulled file into place
#     only once every block is written and verified); `cmp` then checks it against A's copy
#     (not timed), and B's REST API must show the connection type expected (quic-client or
#     relay-client). Relay CPU = utime + stime (/proc/PID/stat) of the relay process over the
#     same interval, the daemons' likewise (B's from its start). ROUNDS rounds, the order of
#     the three rotating between rounds; medians.
# (b) Memory: each relay freshly started: VmRSS idle, then with CLIENTS idle permanent
#     clients joined (each its own TLS connection and certificate), then (restarted) with
#     PAIRS active sessions pumping SESSION_RATE bytes/s each way per session (0 = as fast as
#     the load generator can), then (restarted) the same sessions unpaced; the load comes
#     from bench/src/bin/relay_load.rs.
#
# Usage: bench/relay.sh            (as root: unshare --net; ulimit -n)
# Env:   BENCH_DIR     work directory (default /tmp/peerfold-relay-bench; the file is cached)
#        ROUNDS        sync rounds, medians reported (default 3)
#        SIZE_MB       file size in MiB (default 1024)
#        CLIENTS       idle clients for (b) (default 1000)
#        HOLD          seconds the idle clients hold their slots (default 10)
#        PAIRS         sessions for (b) (default 100)
#        SESSION_RATE  bytes/s per session and direction (default 1000000; 0 = unpaced)
#        SESSION_SECS  seconds the sessions are measured (default 15)
#        PARTS         "memory sync" (default), "memory" or "sync"
#        NO_BUILD      set: take the binaries in $CARGO_TARGET_DIR/release as they are
#        PERF          set: `perf record -g` of A, B and the relay during the first sync run
#                      of each mode, into $BENCH_DIR/perf-MODE.data (distorts that run)
#        PERF_OPTS     perf record options (default "-g -F 499"; Rust frames need
#                      "--call-graph dwarf,16384 -F 199")
#        STRELAYSRV    (default /usr/bin/strelaysrv)
# Our relay runs with --connect-rate 1000000 --connect-burst 1000000, so that its per-IP
# limit on connect requests (default 10/s, burst 50) never shapes the load: the session load
# sends PAIRS connect requests within a fraction of a second, spread over 16 loopback source
# IPs (at 100 pairs, about 7 per IP: the default would let them through too, more would not).
# strelaysrv 1.19 has no such limit. Both run with their status endpoint on loopback (read
# only at the end, for bytesProxied).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/tmp/peerfold-relay-bench}
ROUNDS=${ROUNDS:-3}
SIZE_MB=${SIZE_MB:-1024}
CLIENTS=${CLIENTS:-1000}
HOLD=${HOLD:-10}
PAIRS=${PAIRS:-100}
SESSION_RATE=${SESSION_RATE:-1000000}
SESSION_SECS=${SESSION_SECS:-15}
PARTS=${PARTS:-memory sync}
STRELAYSRV=${STRELAYSRV:-/usr/bin/strelaysrv}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

if [[ -z ${RELAY_BENCH_IN_NETNS:-} ]]; then
    if [[ -z ${NO_BUILD:-} ]]; then
        cargo build --release -q -p peerfold -p peerfold-relay -p peerfold-bench
    fi
    # Everything below runs in a network namespace of its own, with only loopback up.
    exec env RELAY_BENCH_IN_NETNS=1 unshare --net -- \
        bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi

PF=$BIN/peerfold
OURS=$BIN/peerfold-relay
LOAD=$BIN/relay_load
GEN=$BIN/peerfold-bench
SIZE=$((SIZE_MB * 1024 * 1024))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
if [[ -n ${PERF:-} ]]; then rm -f "$WORK"/perf-*.data; fi
rm -rf "$WORK/logs"
: >"$RESULTS"
load_avg() { sed 's/ [0-9]*\/.*//' /proc/loadavg; }
echo "start: $(date -u +%FT%TZ); load: $(load_avg); $(nproc) cores; commit $(git rev-parse --short HEAD)"
echo "file $SIZE_MB MiB, $ROUNDS rounds; $CLIENTS idle clients; $PAIRS sessions at $SESSION_RATE B/s per side"

declare -A PID URL ADDR STATUS DATA
ADDR[ours]=127.0.0.1:18467
ADDR[st]=127.0.0.1:18468
STATUS[ours]=127.0.0.1:18470
STATUS[st]=127.0.0.1:18471
DATA[ours]=$WORK/relay-ours
DATA[st]=$WORK/relay-st
DAEMONS=()

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

stop_all() {
    for p in "${DAEMONS[@]}"; do stop_pid "$p"; done
    DAEMONS=()
    for s in "${!PID[@]}"; do stop_pid "${PID[$s]}"; done
    PID=()
}
trap stop_all EXIT

# start_relay SERVER: starts it fresh (same identity every time) and reads its URL.
start_relay() {
    local s=$1 log=$WORK/relay-$1.log
    mkdir -p "${DATA[$s]}"
    : >"$log"
    case $s in
    ours)
        "$OURS" --listen "${ADDR[$s]}" --status-listen "${STATUS[$s]}" --data "${DATA[$s]}" \
            --connect-rate 1000000 --connect-burst 1000000 >>"$log" 2>&1 &
        ;;
    st)
        "$STRELAYSRV" -listen "${ADDR[$s]}" -status-srv "${STATUS[$s]}" -pools '' \
            -keys "${DATA[$s]}" >>"$log" 2>&1 &
        ;;
    esac
    PID[$s]=$!
    for _ in $(seq 300); do
        if grep -q 'relay://' "$log"; then
            URL[$s]=$(grep -o 'relay://[^ ]*' "$log" | head -1 | cut -d'&' -f1)
            return 0
        fi
        sleep 0.1
    done
    echo "$s printed no relay URL: $(cat "$log")" >&2
    return 1
}

stop_relay() {
    stop_pid "${PID[$1]}"
    unset "PID[$1]"
}

# kib PID FIELD: VmRSS / VmHWM in KiB.
kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
# cpu PID: utime + stime in clock ticks.
cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
TICK=$(getconf CLK_TCK)
note() { echo "$1" | tee -a "$RESULTS"; }

# ---------------------------------------------------------------------------------------------
# (b) memory

memory() {
    local s=$1 rss
    start_relay "$s"
    sleep 2
    rss=$(kib "${PID[$s]}" VmRSS)
    note "{\"relay\":\"$s\",\"test\":\"fresh\",\"rss_kib\":$rss}"
    "$LOAD" idle --relay "${URL[$s]}" --label "$s" --clients "$CLIENTS" --hold "$HOLD" \
        --watch-pid "${PID[$s]}" | tee -a "$RESULTS"
    stop_relay "$s"
    start_relay "$s"
    sleep 2
    "$LOAD" sessions --relay "${URL[$s]}" --label "$s" --pairs "$PAIRS" \
        --secs "$SESSION_SECS" --rate "$SESSION_RATE" --watch-pid "${PID[$s]}" | tee -a "$RESULTS"
    stop_relay "$s"
    if [[ $SESSION_RATE != 0 ]]; then
        # The same sessions unpaced: what the relay (sharing the 2 cores with the load
        # generator) carries at most.
        start_relay "$s"
        sleep 2
        "$LOAD" sessions --relay "${URL[$s]}" --label "$s" --pairs "$PAIRS" \
            --secs "$SESSION_SECS" --rate 0 --watch-pid "${PID[$s]}" | tee -a "$RESULTS"
        stop_relay "$s"
    fi
}

# ---------------------------------------------------------------------------------------------
# (a) sync

# pf SIDE ARGS...: the CLI with SIDE's home.
pf() {
    local side=$1
    shift
    PEERFOLD_HOME=$D/$side/home "$PF" "$@"
}

# a_scanned: A's folder is idle and holds the whole file.
a_scanned() {
    pf a status --json 2>/dev/null |
        jq -e --argjson size "$SIZE" \
            '.folders[0] | .state == "idle" and .local.bytes >= $size' >/dev/null
}

wait_for() {
    local what=$1 limit=$2
    shift 2
    local until=$((SECONDS + limit))
    while ! "$@"; do
        if ((SECONDS > until)); then
            echo "timed out waiting for $what" >&2
            tail -20 "$D"/*/serve.log >&2
            return 1
        fi
        sleep 0.05
    done
}

# rest_port SIDE: the REST API port from what serve printed.
rest_port() { sed -n 's|^REST API on http://[^:]*:\([0-9]*\).*|\1|p' "$D/$1/serve.out" | head -1; }
# Warnings, and the relay client's "holding a slot on the relay".
LOG_FILTER=warn,peerfold_engine::net::relay=info
a_on_relay() { grep -q 'holding a slot on the relay' "$D/a/serve.log"; }

sync_run() {
    local mode=$1 round=$2
    D=$WORK/sync-$mode
    rm -rf "$D"
    mkdir -p "$D/a/root" "$D/b/root"
    for side in a b; do
        pf "$side" init >/dev/null
        pf "$side" config set localAnnounceEnabled=false >/dev/null
        pf "$side" config set globalAnnounceEnabled=false >/dev/null
        pf "$side" folder add --id bench --path "$D/$side/root" >/dev/null
    done
    local id_a id_b address listen_a
    id_a=$(pf a id)
    id_b=$(pf b id)
    # A hard link: A only reads it.
    ln "$WORK/big.bin" "$D/a/root/big.bin"
    case $mode in
    direct)
        address=quic://127.0.0.1:22100
        listen_a=(--listen quic://127.0.0.1:22100)
        ;;
    *)
        address=${URL[$mode]}
        listen_a=(--listen quic://127.0.0.1:0 --listen "${URL[$mode]}")
        ;;
    esac
    pf a device add "$id_b" >/dev/null
    pf a folder share bench "$id_b" >/dev/null
    pf b device add "$id_a" --address "$address" >/dev/null
    pf b folder share bench "$id_a" >/dev/null

    PEERFOLD_HOME=$D/a/home RUST_LOG=$LOG_FILTER "$PF" serve "${listen_a[@]}" --api 127.0.0.1:0 \
        >"$D/a/serve.out" 2>"$D/a/serve.log" &
    DAEMONS+=($!)
    wait_for "A's scan" 300 a_scanned
    if [[ $mode != direct ]]; then wait_for "A's relay slot" 60 a_on_relay; fi
    sleep 1

    local relay_pid="" cpu0=0 cpu1=0 perf_pid="" a_pid=${DAEMONS[0]}
    if [[ $mode != direct ]]; then
        relay_pid=${PID[$mode]}
        cpu0=$(cpu "$relay_pid")
    fi
    local load_before t0 t1 final=$D/b/root/big.bin
    load_before=$(load_avg)
    local a_cpu0
    a_cpu0=$(cpu "$a_pid")
    t0=$EPOCHREALTIME
    PEERFOLD_HOME=$D/b/home RUST_LOG=$LOG_FILTER "$PF" serve --listen quic://127.0.0.1:0 --api 127.0.0.1:0 \
        >"$D/b/serve.out" 2>"$D/b/serve.log" &
    DAEMONS+=($!)
    local b_pid=$! until=$((SECONDS + 1800))
    if [[ -n ${PERF:-} && ! -e $WORK/perf-$mode.data ]]; then
        # shellcheck disable=SC2086
        perf record ${PERF_OPTS:--g -F 499} -p "$a_pid,$b_pid${relay_pid:+,$relay_pid}" \
            -o "$WORK/perf-$mode.data" 2>"$WORK/perf-$mode.log" &
        perf_pid=$!
        echo "perf: A $a_pid, B $b_pid, relay ${relay_pid:-none} -> $WORK/perf-$mode.data"
    fi
    until [[ -e $final ]] && (($(stat -c %s "$final") >= SIZE)); do
        if ((SECONDS > until)) || ! kill -0 "$b_pid" 2>/dev/null; then
            echo "$mode: B has no complete file" >&2
            tail -20 "$D"/*/serve.log >&2
            return 1
        fi
        sleep 0.02
    done
    t1=$EPOCHREALTIME
    if [[ -n $relay_pid ]]; then cpu1=$(cpu "$relay_pid"); fi
    local a_cpu1 b_cpu1
    a_cpu1=$(cpu "$a_pid")
    b_cpu1=$(cpu "$b_pid")
    if [[ -n $perf_pid ]]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi

    local identical=false kind port key
    cmp -s "$WORK/big.bin" "$final" && identical=true
    port=$(rest_port b)
    key=$(pf b api-key)
    kind=$(curl -s -H "X-API-Key: $key" "http://127.0.0.1:$port/rest/system/connections" |
        jq -r --arg a "$id_a" '.connections[$a].type // "none"')
    note "$(jq -nc --arg mode "$mode" --argjson round "$round" --argjson t0 "$t0" \
        --argjson t1 "$t1" --argjson size "$SIZE" --argjson c0 "$cpu0" --argjson c1 "$cpu1" \
        --argjson tick "$TICK" --arg kind "$kind" --argjson identical "$identical" \
        --arg load "$load_before" --argjson a0 "$a_cpu0" --argjson a1 "$a_cpu1" \
        --argjson b1 "$b_cpu1" \
        '{test: "sync", mode: $mode, round: $round, seconds: ($t1 - $t0), bytes: $size,
          mb_s: ($size / ($t1 - $t0) / 1e6), relay_cpu_s: (($c1 - $c0) / $tick),
          relay_cpu_s_per_gb: (($c1 - $c0) / $tick / ($size / 1e9)), connection: $kind,
          a_cpu_s: (($a1 - $a0) / $tick), b_cpu_s: ($b1 / $tick),
          identical: $identical, load_before: $load}')"
    for p in "${DAEMONS[@]}"; do stop_pid "$p"; done
    DAEMONS=()
    # The daemons' warnings stay, for a run that stands out.
    mkdir -p "$WORK/logs"
    for side in a b; do cp "$D/$side/serve.log" "$WORK/logs/$mode-$round-$side.log"; done
    if [[ $identical != true ]]; then
        echo "$mode: B's file differs from A's" >&2
        return 1
    fi
    rm -rf "$D"
}

sync_all() {
    if [[ ! -e $WORK/big.bin || $(stat -c %s "$WORK/big.bin") != "$SIZE" ]]; then
        "$GEN" gen-file "$WORK/big.bin" "$SIZE" 12
    fi
    # Read it once so every run starts with the file in the page cache.
    cat "$WORK/big.bin" >/dev/null
    start_relay ours
    start_relay st
    local order=(direct ours st)
    for round in $(seq "$ROUNDS"); do
        echo "round $round: load $(load_avg)"
        for mode in "${order[@]}"; do sync_run "$mode" "$round"; done
        order=("${order[@]:1}" "${order[0]}")
    done
    for s in ours st; do
        note "{\"relay\":\"$s\",\"test\":\"status\",\"status\":$(curl -s "http://${STATUS[$s]}/status" | jq -c '{bytesProxied, numConnections, numActiveSessions}')}"
        stop_relay "$s"
    done
}

for part in $PARTS; do
    case $part in
    memory) for s in ours st; do memory "$s"; done ;;
    sync) sync_all ;;
    esac
done
echo "end: $(date -u +%FT%TZ); load: $(load_avg)"
echo

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def pick(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
def med(found, key):
    values = [r[key] for r in found if r.get(key) is not None]
    return statistics.median(values) if values else None
names = {"direct": "direct QUIC", "ours": "peerfold-relay", "st": "strelaysrv 1.19.2"}
mb = lambda kib: "-" if kib is None else "%.1f MB" % (kib * 1024 / 1e6)
sync = {m: pick(test="sync", mode=m) for m in ("direct", "ours", "st")}
direct = med(sync["direct"], "mb_s")
print("| measure | direct QUIC | peerfold-relay | strelaysrv 1.19.2 | ours / strelaysrv |")
print("| --- | --- | --- | --- | --- |")
def line(label, cells, ratio=""):
    print("| %s | %s | %s |" % (label, " | ".join(cells), ratio))
speeds = {m: med(sync[m], "mb_s") for m in sync}
secs = {m: med(sync[m], "seconds") for m in sync}
if any(speeds.values()):
    line("sync time (median of %d)" % max(len(v) for v in sync.values()),
         ["-" if secs[m] is None else "%.2f s" % secs[m] for m in sync])
    line("sync MB/s", ["-" if speeds[m] is None else "%.1f" % speeds[m] for m in sync],
         "%.2fx" % (speeds["ours"] / speeds["st"]) if speeds["ours"] and speeds["st"] else "")
    line("ratio to direct", ["-" if not (speeds[m] and direct) else "%.0f%%" % (100 * speeds[m] / direct) for m in sync])
    cpu = {m: med(sync[m], "relay_cpu_s_per_gb") for m in ("ours", "st")}
    line("relay CPU s per GB", ["-"] + ["-" if cpu[m] is None else "%.2f" % cpu[m] for m in cpu],
         "%.2fx" % (cpu["ours"] / cpu["st"]) if cpu["ours"] and cpu["st"] else "")
    a = {m: med(sync[m], "a_cpu_s") for m in sync}
    b = {m: med(sync[m], "b_cpu_s") for m in sync}
    line("daemon CPU s, sender A / receiver B", ["-" if a[m] is None else "%.2f / %.2f" % (a[m], b[m]) for m in sync])
fresh = {s: (pick(test="fresh", relay=s) or [{}])[-1].get("rss_kib") for s in ("ours", "st")}
idle = {s: (pick(test="idle", relay=s) or [{}])[-1] for s in ("ours", "st")}
sess = {s: ([r for r in pick(test="sessions", relay=s) if r["rate_per_side"]] or [{}])[-1] for s in ("ours", "st")}
fast = {s: ([r for r in pick(test="sessions", relay=s) if not r["rate_per_side"]] or [{}])[-1] for s in ("ours", "st")}
def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else ""
if any(fresh.values()):
    line("RSS idle (fresh)", ["-"] + [mb(fresh[s]) for s in fresh], ratio(fresh["ours"], fresh["st"]))
    n = {s: idle[s].get("joined") for s in idle}
    line("RSS with %s idle clients" % "/".join(str(n[s]) for s in n), ["-"] + [mb(idle[s].get("rss_kib")) for s in idle],
         ratio(idle["ours"].get("rss_kib"), idle["st"].get("rss_kib")))
    per = {s: (idle[s]["rss_kib"] - fresh[s]) * 1.024 / idle[s]["joined"] if idle[s].get("rss_kib") and fresh[s] and idle[s].get("joined") else None for s in idle}
    line("RSS per idle client", ["-"] + ["-" if per[s] is None else "%.1f KB" % per[s] for s in per], ratio(per["ours"], per["st"]))
    line("RSS with %s sessions (median of 1 s samples / max)" % "/".join(str(sess[s].get("sides_joined", 0) // 2) for s in sess),
         ["-"] + ["%s / %s" % (mb(sess[s].get("rss_kib")), mb(sess[s].get("rss_max_kib"))) for s in sess],
         ratio(sess["ours"].get("rss_kib"), sess["st"].get("rss_kib")))
    line("sessions: relayed MB/s (both directions)", ["-"] + ["%s" % sess[s].get("mb_s", "-") for s in sess],
         ratio(sess["ours"].get("mb_s"), sess["st"].get("mb_s")))
    line("sessions: relay CPU s per GB", ["-"] + ["%s" % sess[s].get("relay_cpu_s_per_gb", "-") for s in sess],
         ratio(sess["ours"].get("relay_cpu_s_per_gb"), sess["st"].get("relay_cpu_s_per_gb")))
    if any(fast.values()):
        line("unpaced sessions: relayed MB/s (both directions)", ["-"] + ["%s" % fast[s].get("mb_s", "-") for s in fast],
             ratio(fast["ours"].get("mb_s"), fast["st"].get("mb_s")))
        line("unpaced sessions: relay CPU s per GB", ["-"] + ["%s" % fast[s].get("relay_cpu_s_per_gb", "-") for s in fast],
             ratio(fast["ours"].get("relay_cpu_s_per_gb"), fast["st"].get("relay_cpu_s_per_gb")))
        line("unpaced sessions: RSS (median / max)", ["-"] + ["%s / %s" % (mb(fast[s].get("rss_kib")), mb(fast[s].get("rss_max_kib"))) for s in fast],
             ratio(fast["ours"].get("rss_kib"), fast["st"].get("rss_kib")))
    line("peak RSS (VmHWM) idle / sessions", ["-"] + ["%s / %s" % (mb(idle[s].get("hwm_kib")), mb(sess[s].get("hwm_kib"))) for s in idle])
for r in rows:
    if r.get("failures") or r.get("dropped_while_held") or r.get("identical") is False:
        print("note: %s %s (rate %s): failures %s, dropped %s (%s)" % (r.get("relay"), r.get("test"), r.get("rate_per_side"), r.get("failures"), r.get("dropped_while_held"), r.get("first_failure")))
for m in ("ours", "st"):
    kinds = {r.get("connection") for r in sync[m]}
    if kinds - {"relay-client"}:
        print("note: %s sync runs had connection types %s" % (m, kinds))
for m in sync:
    print("%s runs: %s" % (m, ", ".join("%.2f s (%.0f MB/s)" % (r["seconds"], r["mb_s"]) for r in sync[m])))
EOF

#!/usr/bin/env bash
# Global discovery benchmark (issue 11): peerfold-discovery against Debian's stdiscosrv on the
# same load, in one run. Starts both on loopback with fresh data dirs, announces the same N
# devices to each (one TLS connection with its own certificate per device), then measures
# keep-alive lookups/s and new-connection announces/s on each, alternating which server goes
# first, and prints a side-by-side table with ratios, RSS and store size.
#
# Usage: bench/discovery.sh [N]          (default 1000000 devices)
# Env:   BENCH_DIR     work directory (default /tmp/peerfold-disco-bench; the identity pool
#                      of N certificates is cached there, ~430 MB for 1 M, and reused)
#        CONNS         concurrent connections for lookups and announces (default 64)
#        POP_CONNS     concurrent connections while populating (default 64)
#        DURATION      seconds per measurement (default 15)
#        ROUNDS        measurement rounds, medians reported (default 3)
#        SERVERS       "ours st", "ours" or "st" (default both)
#        STDISCOSRV    (default /usr/bin/stdiscosrv)
# Our server runs with --rate-limit 1000000 --rate-burst 1000000: the load comes from a few
# loopback IPs (127.0.0.2 and up), which the default per-IP limit (10/s) would stop at once.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
WORK=${BENCH_DIR:-/tmp/peerfold-disco-bench}
CONNS=${CONNS:-64}
POP_CONNS=${POP_CONNS:-64}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-ours st}
STDISCOSRV=${STDISCOSRV:-/usr/bin/stdiscosrv}
OURS_ADDR=127.0.0.1:18443
ST_ADDR=127.0.0.1:18444

cargo build --release -q -p peerfold-discovery -p peerfold-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
OURS=$BIN/peerfold-discovery
LOAD=$BIN/disco_load

mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
echo "start: $(date -u +%FT%TZ); load: $(uptime | sed 's/.*load average: //'); $(nproc) cores"
echo "N=$N, connections $CONNS (populate $POP_CONNS), $DURATION s per measurement, $ROUNDS rounds"

"$LOAD" keys --out "$WORK/pool.bin" --count "$N" | tee -a "$RESULTS"

declare -A PID ADDR DATA
ADDR[ours]=$OURS_ADDR
ADDR[st]=$ST_ADDR
DATA[ours]=$WORK/ours
DATA[st]=$WORK/st

stop_all() {
    for s in "${!PID[@]}"; do
        kill "${PID[$s]}" 2>/dev/null || true
        wait "${PID[$s]}" 2>/dev/null || true
    done
    PID=()
}
trap stop_all EXIT

wait_port() {
    local addr=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $addr" >&2
    return 1
}

start() {
    local s=$1
    rm -rf "${DATA[$s]}"
    mkdir -p "${DATA[$s]}"
    case $s in
    ours)
        "$OURS" --listen "${ADDR[$s]}" --data "${DATA[$s]}" \
            --rate-limit 1000000 --rate-burst 1000000 >"$WORK/$s.log" 2>&1 &
        ;;
    st)
        "$STDISCOSRV" -listen "${ADDR[$s]}" -db-dir "${DATA[$s]}/db" \
            -cert "${DATA[$s]}/cert.pem" -key "${DATA[$s]}/key.pem" >"$WORK/$s.log" 2>&1 &
        ;;
    esac
    PID[$s]=$!
    wait_port "${ADDR[$s]}"
}

# status_kib SERVER FIELD: VmRSS / VmHWM of the server, in KiB.
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/${PID[$1]}/status"; }
note() { echo "{\"server\":\"$1\",\"test\":\"$2\",$3}" | tee -a "$RESULTS"; }

for s in $SERVERS; do
    start "$s"
    "$LOAD" populate --server "${ADDR[$s]}" --label "$s" --pool "$WORK/pool.bin" \
        --count "$N" --concurrency "$POP_CONNS" | tee -a "$RESULTS"
    # Let the stores write out what they buffer before the disk and memory are measured.
    sleep 10
    note "$s" populated "\"rss_kib\":$(status_kib "$s" VmRSS),\"hwm_kib\":$(status_kib "$s" VmHWM),\"disk_bytes\":$(du -sb "${DATA[$s]}" | cut -f1)"
done

read -ra ORDER <<<"$SERVERS"
for round in $(seq "$ROUNDS"); do
    echo "round $round: load $(uptime | sed 's/.*load average: //')"
    for test in lookups announces; do
        for s in "${ORDER[@]}"; do
            case $test in
            lookups) extra=(--count "$N") ;;
            announces) extra=(--identities "$((N < 1000 ? N : 1000))") ;;
            esac
            "$LOAD" "$test" --server "${ADDR[$s]}" --label "$s" --pool "$WORK/pool.bin" \
                --concurrency "$CONNS" --duration "$DURATION" "${extra[@]}" | tee -a "$RESULTS"
        done
    done
    # Alternate which server is measured first.
    ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done

for s in $SERVERS; do
    note "$s" final "\"rss_kib\":$(status_kib "$s" VmRSS),\"hwm_kib\":$(status_kib "$s" VmHWM),\"disk_bytes\":$(du -sb "${DATA[$s]}" | cut -f1)"
done
stop_all
for s in $SERVERS; do
    note "$s" stopped "\"disk_bytes\":$(du -sb "${DATA[$s]}" | cut -f1)"
done
echo "end: $(date -u +%FT%TZ); load: $(uptime | sed 's/.*load average: //')"
echo

python3 - "$RESULTS" "$N" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
names = {"ours": "peerfold-discovery", "st": "stdiscosrv 1.19.2"}
servers = [s for s in ("ours", "st") if any(r.get("server") == s for r in rows)]
def pick(server, test):
    return [r for r in rows if r.get("server") == server and r.get("test") == test]
def med(server, test, key):
    values = [r[key] for r in pick(server, test)]
    return statistics.median(values) if values else None
def one(server, test, key):
    found = pick(server, test)
    return found[-1][key] if found else None
table = []
def row(label, key_fn, fmt, higher_better=True):
    values = [key_fn(s) for s in servers]
    cells = [fmt(v) if v is not None else "-" for v in values]
    ratio = ""
    if len(values) == 2 and None not in values and values[1]:
        ratio = "%.2fx" % (values[0] / values[1])
    table.append((label, cells, ratio))
mb = lambda kib: "%.0f MB" % (kib * 1024 / 1e6)
row("populate: announces/s (new conn, %d devices)" % n, lambda s: one(s, "populate", "rate"), lambda v: "{:,.0f}".format(v))
row("populate: wall time", lambda s: one(s, "populate", "seconds"), lambda v: "%.0f s" % v)
row("lookups/s (keep-alive)", lambda s: med(s, "lookups", "rate"), lambda v: "{:,.0f}".format(v))
row("lookup p50", lambda s: med(s, "lookups", "p50_ms"), lambda v: "%.2f ms" % v)
row("lookup p99", lambda s: med(s, "lookups", "p99_ms"), lambda v: "%.2f ms" % v)
row("announces/s (new TLS conn each)", lambda s: med(s, "announces", "rate"), lambda v: "{:,.0f}".format(v))
row("announce p50", lambda s: med(s, "announces", "p50_ms"), lambda v: "%.2f ms" % v)
row("announce p99", lambda s: med(s, "announces", "p99_ms"), lambda v: "%.2f ms" % v)
row("RSS after populate (VmRSS)", lambda s: one(s, "populated", "rss_kib"), mb)
row("RSS at end (VmRSS)", lambda s: one(s, "final", "rss_kib"), mb)
row("peak RSS (VmHWM)", lambda s: one(s, "final", "hwm_kib"), mb)
row("store on disk, running (du)", lambda s: one(s, "final", "disk_bytes"), lambda v: "%.0f MB" % (v / 1e6))
row("store on disk, stopped (du)", lambda s: one(s, "stopped", "disk_bytes"), lambda v: "%.0f MB" % (v / 1e6))
print("| measure | " + " | ".join(names[s] for s in servers) + (" | ratio |" if len(servers) == 2 else " |"))
print("| --- " * (len(servers) + 1 + (len(servers) == 2)) + "|")
for label, cells, ratio in table:
    print("| %s | %s |%s" % (label, " | ".join(cells), (" %s |" % ratio) if len(servers) == 2 else ""))
bad = [r for r in rows if r.get("failures") or any(k not in ("200", "204") for k in r.get("statuses", {}))]
for r in bad:
    print("note: %s %s: statuses %s, failures %s (%s)" % (r["server"], r["test"], r["statuses"], r["failures"], r.get("first_failure")))
EOF

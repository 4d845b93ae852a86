#!/usr/bin/env bash
# Scan benchmarks: (b) one 1 GiB file, (c) 20,000 files of 4-64 KiB, (d) 200,000 files of
# 1-4 KiB. For each: cold-index scan time, throughput, peak RSS, database size, and the time
# of an unchanged rescan; plus the bytes of new blocks after a 1-byte insert in the 1 GiB file.
#
# Usage: bench/scan.sh [RUNS]        (default 3; medians are reported)
# Env:   BENCH_DIR (default /tmp/peerfold-bench) holds the generated data (about 3 GB).
# "Cold" means a fresh index; the data is in the page cache unless noted. As root, the
# 1 GiB case is also measured after dropping the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
WORK=${BENCH_DIR:-/tmp/peerfold-bench}
mkdir -p "$WORK"

cargo build --release -q -p peerfold -p peerfold-bench
PF=$PWD/target/release/peerfold
PB=$PWD/target/release/peerfold-bench
HOME_DIR=$WORK/home

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# fresh_home DATA_DIR: a new home with DATA_DIR as folder "bench".
fresh_home() {
    rm -rf "$HOME_DIR" "$1/.peerfold"
    PEERFOLD_HOME=$HOME_DIR "$PF" init >/dev/null
    PEERFOLD_HOME=$HOME_DIR "$PF" folder add --id bench --path "$1" >/dev/null
}

# timed_scan: prints "seconds peak_rss_kib".
timed_scan() {
    PEERFOLD_HOME=$HOME_DIR /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$PF" scan bench >/dev/null
    cat "$WORK/time.txt"
}

# bench_case NAME DATA_DIR BYTES FILES
bench_case() {
    local name=$1 data=$2 bytes=$3 files=$4
    local times=() rss=() rescans=()
    for _ in $(seq "$RUNS"); do
        fresh_home "$data"
        read -r t m < <(timed_scan)
        times+=("$t"); rss+=("$m")
        read -r t _ < <(timed_scan)
        rescans+=("$t")
    done
    local t m r db
    t=$(printf '%s\n' "${times[@]}" | median)
    m=$(printf '%s\n' "${rss[@]}" | median)
    r=$(printf '%s\n' "${rescans[@]}" | median)
    db=$(stat -c %s "$HOME_DIR/index.db")
    awk -v n="$name" -v t="$t" -v m="$m" -v r="$r" -v b="$bytes" -v f="$files" -v db="$db" 'BEGIN {
        printf "| %s | %.2f s | %.0f MB/s | %.0f files/s | %.1f MB | %.1f MB | %.2f s |\n",
            n, t, b / t / 1e6, f / t, m / 1024, db / 1e6, r }'
}

if [ ! -f "$WORK/one/big.bin" ]; then
    mkdir -p "$WORK/one"
    "$PB" gen-file "$WORK/one/big.bin" $((1 << 30)) 1
fi
if [ ! -d "$WORK/20k" ]; then
    "$PB" gen-tree "$WORK/20k" 20000 4096 65536 2
fi
if [ ! -d "$WORK/200k" ]; then
    "$PB" gen-tree "$WORK/200k" 200000 1024 4096 3
fi
bytes_of() { find "$1" -type f -not -path '*/.peerfold/*' -printf '%s\n' | awk '{s+=$1} END {print s}'; }

echo "runs: $RUNS, medians; $(nproc) cores"
echo
echo "| case | cold scan | throughput | files/s | peak RSS | index.db | unchanged rescan |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
cat "$WORK/one/big.bin" >/dev/null
bench_case "(b) 1 GiB file" "$WORK/one" "$((1 << 30))" 1
bench_case "(c) 20,000 files of 4-64 KiB" "$WORK/20k" "$(bytes_of "$WORK/20k")" 20000
bench_case "(d) 200,000 files of 1-4 KiB" "$WORK/200k" "$(bytes_of "$WORK/200k")" 200000

if [ "$(id -u)" = 0 ]; then
    fresh_home "$WORK/one"
    sync; echo 3 >/proc/sys/vm/drop_caches
    read -r t m < <(timed_scan)
    awk -v t="$t" 'BEGIN { printf "\n(b) after dropping the page cache: %.2f s, %.0f MB/s\n", t, 1073741824 / t / 1e6 }'
fi

# 1-byte insert near the start of the 1 GiB file: bytes of blocks that are new afterwards.
fresh_home "$WORK/one"
timed_scan >/dev/null
PEERFOLD_HOME=$HOME_DIR "$PF" ls bench --json >"$WORK/before.json"
cp "$WORK/one/big.bin" "$WORK/big.orig"
"$PB" insert "$WORK/one/big.bin" 4096 1
# The insert rewrote the whole file: let its writeback finish so the rescan is timed alone.
sync
read -r t _ < <(timed_scan)
PEERFOLD_HOME=$HOME_DIR "$PF" ls bench --json >"$WORK/after.json"
mv "$WORK/big.orig" "$WORK/one/big.bin"
new=$("$PB" new-block-bytes "$WORK/before.json" "$WORK/after.json")
echo
echo "1-byte insert at offset 4096 of the 1 GiB file: rescan $t s, new blocks $new bytes"

#!/usr/bin/env bash
# NAT-traversal benchmark (issue 13): peerfold against Debian's Syncthing, side by side in one
# run, over the NAT matrix (both homes port-preserving, one symmetric, both symmetric), in
# network namespaces the test harness builds (tests/it/netns.rs: home routers with nftables
# masquerade, `fully-random` for symmetric, and a firewall that drops what comes unasked; our
# discovery server and our relay, both answering STUN, in the root namespace).
#
# For each program and cell, RUNS pairs (in parallel, each in namespaces of its own) that
# know only each other's IDs, the discovery server and the relay: whether the pair ends on a
# direct QUIC path within 90 s of its first relayed connection, the median and largest time
# from that relayed connection to the direct one (polled every 50 ms on the second device's
# /rest/system/connections), and for peerfold the bytes the relayed link carried before the
# switch (from its "hole punched" log line). Syncthing dials direct addresses it learns
# (its STUN-mapped ones, through discovery) every reconnectionIntervalS (60 s, its default)
# and does no coordinated punching.
#
# Usage: bench/punch.sh   (as root; needs syncthing, nftables, iproute2: tests/run.sh
#                          installs them)
# Env:   RUNS   pairs per cell (default 5)
# Output: the BENCH lines, also appended to $BENCH_DIR/punch.txt (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
BENCH_DIR="${BENCH_DIR:-/tmp}"
PUNCH_BENCH_RUNS="$RUNS" cargo test -p peerfold --test it --locked -- \
    --ignored --exact punch_bench::bench_nat_matrix --nocapture 2>&1 |
    grep '^BENCH' | tee -a "$BENCH_DIR/punch.txt"

"""The tables bench/sync.py prints at the end of a run."""

import statistics

from benchlib import fmt_bytes, fmt_s, med, ratio


def report(results, failures, case_labels, kinds, runs, raw):
    """`raw`: the raw QUIC reference of the run ({"mb_s", "seconds"}; empty if none)."""
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

    status_table(results, case_labels, kinds)

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
                  f"{raw_share(med(p, 'mb_s'), raw)} |")
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
    if raw:
        print(f"\nReference: raw QUIC (quic_raw: one quinn connection, one stream, "
              f"peerfold's TLS and windows, A to B over the same link): "
              f"{raw['mb_s']:.0f} MB/s ({raw['seconds']:.2f} s).")
    if failures:
        print("\nFailures:")
        for f in failures:
            print(f"- {f}")


def raw_share(mb_s, raw):
    return f"{100 * mb_s / raw['mb_s']:.0f}%" if raw and mb_s else "-"


def status_table(results, case_labels, kinds):
    """B's status calls once it holds everything of (c) (median, max of one run's calls)."""
    rows = [(k, r["status_ms"]) for k in kinds for r in results.get(("c", k), [])[:1]
            if r.get("status_ms")]
    if not rows:
        return
    calls = next(iter(rows[0][1].values()))["calls"]
    print(f"\nStatus on B once it holds {case_labels['c'][4:]} (ms, median / max of {calls} "
          f"calls each; the CLI's time includes starting its process):\n")
    print("| daemon | call | median | max |")
    print("| --- | --- | --- | --- |")
    for k, calls in rows:
        for name, t in calls.items():
            print(f"| {k} | {name} | {t['median']:.1f} | {t['max']:.1f} |")

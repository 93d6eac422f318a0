#!/usr/bin/env python3
"""Prints the one table of scripts/loadtest.sh from its raw results.

usage: report.py RESULTS_DIR

RESULTS_DIR holds oha's JSON output (max_<target>.json,
rate_<rate>_<target>.json), stream_load's (ttft_<target>.json,
hold_gateway.json), the rates run (rates) and meta.json.
"""
import json
import os
import sys
import time

TARGETS = ["direct", "nginx", "gateway"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(res):
    meta = load(os.path.join(res, "meta.json")) or {}
    rates = []
    try:
        with open(os.path.join(res, "rates")) as f:
            rates = [int(r) for r in f.read().split()]
    except OSError:
        pass

    def oha(name):
        return load(os.path.join(res, name + ".json"))

    def achieved(d):
        s = d["summary"]
        return s["requestsPerSec"] * s["successRate"]

    def pct_ms(d):
        p = d["latencyPercentiles"]
        return [p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3]

    def sustained(d, rate):
        return d is not None and achieved(d) >= 0.95 * rate and d["summary"]["successRate"] >= 0.999

    rows = []  # (label, direct, nginx, gateway, target, verdict)
    notes = []

    maxes = {}
    for t in TARGETS:
        d = oha("max_" + t)
        maxes[t] = achieved(d) if d else None
    rows.append(("max throughput (req/s, closed loop)",) + tuple(
        f"{maxes[t]:.0f}" if maxes[t] else "-" for t in TARGETS) + ("", ""))
    ratio_gn = maxes["gateway"] / maxes["nginx"] if maxes["gateway"] and maxes["nginx"] else None
    ratio_nd = maxes["nginx"] / maxes["direct"] if maxes["nginx"] and maxes["direct"] else None
    ratio_gd = maxes["gateway"] / maxes["direct"] if maxes["gateway"] and maxes["direct"] else None
    verdict = "-"
    if ratio_gn is not None:
        verdict = "MET" if ratio_gn >= 1.0 else f"MISSED by {(1 - ratio_gn) * 100:.0f}%"
    rows.append(("  ratio to direct; gateway/nginx ratio", "1.00",
                 f"{ratio_nd:.2f}" if ratio_nd else "-",
                 f"{ratio_gd:.2f}  (g/n {ratio_gn:.2f})" if ratio_gd and ratio_gn else "-",
                 "g/n >= 1.0", verdict))

    # Traffic recording on vs off: CPU µs per request of two gateways
    # serving the same fixed rate side by side; the median of the rounds' ratios.
    def cpu_us(mode, r):
        try:
            with open(os.path.join(res, f"recording_{mode}_{r}.cpu")) as f:
                ticks, hz = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            return None
        d = oha(f"recording_{mode}_{r}")
        n = sum(d["statusCodeDistribution"].values()) if d else 0
        return ticks / hz * 1e6 / n if n else None

    pairs = [(cpu_us("rec", r), cpu_us("norec", r)) for r in range(1, 10)]
    pairs = [(a, b) for a, b in pairs if a and b]
    if pairs:
        ratios = sorted(a / b for a, b in pairs)
        med = ratios[len(ratios) // 2]
        try:
            with open(os.path.join(res, "recording_rate")) as f:
                rate = f.read().strip()
        except OSError:
            rate = "?"
        rows.append((f"  gateway CPU per request, recording on / off, side by side @ {rate} req/s each", "", "",
                     " ".join(f"{a:.0f}/{b:.0f}us" for a, b in pairs) + f" = {med:.3f}",
                     "cost < 5%", "MET" if med < 1.05 else f"MISSED: +{(med - 1) * 100:.1f}%"))

    def fmt3(v):
        return "/".join(f"{x:.2f}" for x in v)

    def fmt3_added(v):
        return "/".join(f"{x:+.2f}" for x in v)

    added_p99 = {}
    for rate in rates:
        ds = {t: oha(f"rate_{rate}_{t}") for t in TARGETS}
        cells = []
        for t in TARGETS:
            d = ds[t]
            if d is None:
                cells.append("not run")
                continue
            c = fmt3(pct_ms(d))
            if not sustained(d, rate):
                c += f" (!{achieved(d):.0f}/s)"
            cells.append(c)
        rows.append((f"latency @ {rate} req/s, p50/p99/p99.9 ms",) + tuple(cells) + ("", ""))
        base = ds["direct"]
        added = []
        for t in TARGETS:
            d = ds[t]
            if t == "direct" or d is None or base is None:
                added.append("-")
                continue
            a = [x - y for x, y in zip(pct_ms(d), pct_ms(base))]
            added.append(fmt3_added(a))
            if t == "gateway":
                added_p99[rate] = (a[1], sustained(d, rate) and sustained(base, rate))
        rows.append(("  added over direct, ms",) + tuple(added) + ("", ""))

    # Added p99 at 5k (or the highest rate the gateway sustained).
    target_rate = 5000
    verdict = "-"
    label = "  added p99 @ 5000 req/s"
    if target_rate in added_p99 and added_p99[target_rate][1]:
        v = added_p99[target_rate][0]
        verdict = "MET" if v <= 1.0 else f"MISSED by {v - 1.0:.2f} ms"
        value = f"{v:+.2f} ms"
    else:
        ok = [r for r, (_, s) in added_p99.items() if s]
        if ok:
            r = max(ok)
            v = added_p99[r][0]
            label = f"  added p99 @ {r} req/s (5000 not sustained)"
            value = f"{v:+.2f} ms"
            verdict = ("MET at %d req/s only" % r) if v <= 1.0 else f"MISSED by {v - 1.0:.2f} ms"
            notes.append(f"5000 req/s was not sustained through the gateway on this machine; "
                         f"the latency target is judged at {r} req/s.")
        else:
            value = "-"
    rows.append((label, "", "", value, "p99 <= 1 ms", verdict))

    def ttft_rows(prefix, label, judge):
        tt = {t: load(os.path.join(res, f"{prefix}_{t}.json")) for t in TARGETS}
        if not any(tt.values()):
            return
        cells = []
        for t in TARGETS:
            d = tt[t]
            if not d or "p50_us" not in d:
                cells.append("-")
                continue
            c = f"{d['p50_us'] / 1e3:.2f}/{d['p99_us'] / 1e3:.2f}/{d['p999_us'] / 1e3:.2f}"
            if d.get("errors"):
                c += f" ({d['errors']} err)"
                notes.append(f"{label} via {t}: {d['errors']} stream errors, first: {d.get('first_error')}")
            cells.append(c)
        rows.append((label,) + tuple(cells) + ("", ""))
        added = ["-"]
        verdict = "-"
        for t in ["nginx", "gateway"]:
            if tt[t] and tt["direct"] and "p50_us" in tt[t] and "p50_us" in tt["direct"]:
                a = [(tt[t][k] - tt["direct"][k]) / 1e3 for k in ("p50_us", "p99_us", "p999_us")]
                added.append(fmt3_added(a))
                if t == "gateway" and judge:
                    verdict = "MET" if a[1] <= 1.0 else f"MISSED by {a[1] - 1.0:.2f} ms"
            else:
                added.append("-")
        rows.append(("  added TTFT over direct, ms",) + tuple(added) +
                    (("p99 <= 1 ms", verdict) if judge else ("", "")))

    streams = meta.get("ttft_streams", 1000)
    ttft_rows("ttft", f"TTFT, {streams} streams @ {1000 // max(1, meta.get('stream_interval_ms', 100))} tok/s, "
              "p50/p99/p99.9 ms", True)
    ttft_rows("ttftslow", f"TTFT, {streams} streams @ 1 tok/s (TTFT cost alone)", False)
    ttft_rows("ttftfast", f"TTFT, {streams} streams @ {1000 // max(1, meta.get('fast_interval_ms', 50))} tok/s, "
              "p50/p99/p99.9 ms", False)

    hold_n = meta.get("hold_streams", 10000)
    hs = {t: load(os.path.join(res, f"hold_{t}.json")) or {} for t in ("nginx", "gateway")}

    def mib(kb):
        return kb / 1024 if kb else None

    cells = {}
    per = {}
    for t, h in hs.items():
        v = mib(h.get("rss_after_hold_kb"))
        cells[t] = f"{v:.1f} MiB" if v else "-"
        if h.get("opened", hold_n) < hold_n:
            cells[t] += f" ({h.get('opened')} open)"
        b = mib(h.get("rss_before_kb"))
        ps = h.get("rss_per_stream_bytes")
        per[t] = (f"{b:.1f} MiB; {ps / 1024:.1f} KiB" if b is not None and ps else "-")
        if h and (h.get("opened", 0) < hold_n or h.get("errors")):
            notes.append(f"{t} hold: {h.get('opened')}/{hold_n} streams opened, {h.get('errors')} errors, "
                         f"first: {h.get('first_error')}")
    target_n = meta.get("hold_target", 10000)
    g = hs["gateway"]
    verdict = "not measured"
    label = f"RSS with {hold_n} open idle streams"
    if g.get("rss_after_hold_kb"):
        v = g["rss_after_hold_kb"] / 1024
        if hold_n < target_n and g.get("rss_per_stream_bytes") and g.get("rss_before_kb"):
            # Linear extrapolation to the target's stream count.
            v = (g["rss_before_kb"] * 1024 + g["rss_per_stream_bytes"] * target_n) / 2**20
            verdict = f"{target_n} extrapolated: {v:.0f} MiB, "
            notes.append(f"only {hold_n} streams fit under the file descriptor limit "
                         f"({meta.get('fd_limit')}); the verdict uses the RSS extrapolated to {target_n} "
                         f"(RSS before + {target_n} x the measured per-stream increase)")
        else:
            verdict = ""
        verdict += "MET" if v <= 64 else f"MISSED by {v - 64:.0f} MiB ({v / 64:.1f}x)"
    rows.append((label, "", cells["nginx"], cells["gateway"], "<= 64 MiB", verdict))
    rows.append(("  RSS before; added per open stream", "", per["nginx"], per["gateway"], "", ""))
    def hold_variant(name, label, n):
        """A further RSS row of the gateway: `n` streams held (the stream
        count of that pass), extrapolated to the target when fewer."""
        h = load(os.path.join(res, f"{name}.json")) or {}
        if not h.get("rss_after_hold_kb"):
            return
        v = h["rss_after_hold_kb"] / 1024
        cell = f"{v:.1f} MiB"
        if h.get("opened", n) < n or h.get("errors"):
            cell += f" ({h.get('opened')} open)"
            notes.append(f"{label}: {h.get('opened')}/{n} streams opened, "
                         f"{h.get('errors')} errors, first: {h.get('first_error')}")
        verdict = f"{n} streams held, " if n >= target_n else ""
        if n < target_n and h.get("rss_per_stream_bytes") and h.get("rss_before_kb"):
            v = (h["rss_before_kb"] * 1024 + h["rss_per_stream_bytes"] * target_n) / 2**20
            verdict = f"{target_n} extrapolated: {v:.0f} MiB, "
        verdict += "MET" if v <= 64 else f"MISSED by {v - 64:.0f} MiB ({v / 64:.1f}x)"
        rows.append((f"  same, {label}", "", "", cell, "<= 64 MiB", verdict))
        b, ps = h.get("rss_before_kb"), h.get("rss_per_stream_bytes")
        rows.append(("  RSS before; added per open stream", "", "",
                     f"{b / 1024:.1f} MiB; {ps / 1024:.1f} KiB" if b and ps else "-", "", ""))

    hold_variant("hold_gateway_h2", "provider with \"http2\": true (h2c)", hold_n)
    hold_variant("hold_gateway_h2h2", "clients too over HTTP/2 (h2c)", meta.get("hold_h2h2_streams", target_n))
    try:
        with open(os.path.join(res, "gateway_rss_after_load_kb")) as f:
            kb = int(f.read().strip())
        notes.append(f"gateway RSS right after the throughput and TTFT runs, before its restart for the "
                     f"RSS test: {kb / 1024:.1f} MiB")
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(res, "hold_gateway_failures.txt")) as f:
            fails = " ".join(f.read().split())
        if fails:
            notes.append(f"gateway attempts that failed during the RSS test (count, outcome): {fails}")
    except OSError:
        pass

    head = ("", "direct", "nginx", "gateway", "target", "verdict")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
    mode = "quick" if meta.get("quick") else "full"
    print()
    print(f"modelux load test ({mode}), {time.strftime('%Y-%m-%d %H:%M')}: "
          f"{meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('pinning', '')}")
    print(f"oha {meta.get('oha', '')}, {meta.get('conns')} connections, steps of {meta.get('step')} "
          f"(max throughput: {meta.get('max_step')}); {meta.get('nginx', '')}; "
          f"streams: {meta.get('stream_words')} chunks {meta.get('stream_interval_ms')} ms apart; "
          f"nginx RSS = master + worker(s); "
          f"load average at start / end: {meta.get('load_start', '?')} / {meta.get('load', '?')}")
    if meta.get("gateway_bin"):
        print(f"gateway binary: {meta['gateway_bin']}")
    sep = "+".join("-" * (w + 2) for w in widths)
    print(sep)
    print(" | ".join(str(head[i]).ljust(widths[i]) for i in range(6)))
    print(sep)
    for r in rows:
        print(" | ".join(str(r[i]).ljust(widths[i]) for i in range(6)))
    print(sep)
    print("Added latency is the gateway's (or nginx's) percentile minus the direct percentile at the same")
    print("rate in this run; '(!N/s)' marks a rate that was not sustained (N req/s achieved).")
    try:
        if float(str(meta.get("load_start", "0")).split()[0]) > 0.7:
            notes.append("the machine was not idle when the run started (load average above); other work "
                         "on it skews absolute figures, and to a lesser degree the ratios")
    except ValueError:
        pass
    for n in notes:
        print("note: " + n)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1])

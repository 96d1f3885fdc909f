"""Markdown tables of a bench_hook.py result file, as docs/benchmarks.md shows them.

.venv/bin/python bench/report.py bench/results/bench_hook-<time>.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

EVENTS = ("Stop", "SubagentStop", "SessionEnd")
# async (nothing waits for them): the kernel's fork -> exit of the hook's process, as SessionEnd
FACT_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")
SCENARIO_NAMES = {
    "fresh": "fresh session",
    "grown": "after +20 MB the hook never saw",
    "open": "25 MB open turn",
    "subagents": "10 parallel subagents",
    "facts": "tool calls, failures, denied Writes, subagents, resumes",
}
TAG_NAMES = {
    "first-after-growth": "first Stop after +20 MB",
    "open-turn": "Stop of the 25 MB open turn",
    "after-open": "next Stop after it",
}


def cell(st: dict | None, limit: float) -> str:
    if not st or not st.get("n"):
        return "–"
    ratio = st["ratio"]
    mark = "" if ratio is None else " ✅" if ratio <= limit else " ❌"
    return f"{st['ours_median']:g} / {st['floor_median']:g} ms = **{ratio}×**{mark}"


def lat_cell(lat: dict, limit: float) -> str:
    if not lat or lat.get("p95") is None:
        return "–"
    ok = lat["p95"] <= limit and lat["n"] == lat["of"]
    return f"{lat['p50']:.2f} / **{lat['p95']:.2f}** s{' ✅' if ok else ' ❌'} ({lat['n']}/{lat['of']})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="a bench/results/bench_hook-*.json file")
    args = ap.parse_args(argv)
    r = json.loads(pathlib.Path(args.result).read_text())
    limit = r["targets"]["ratio_to_floor"]
    lat_limit = r["targets"]["stop_to_standin_p95_s"]
    variants = list(r["variants"])
    scenarios = [s for s in SCENARIO_NAMES if any(s in v.get("summary", {}) for v in r["variants"].values())]
    out = []
    out.append("Hook duration, median ours / median do-nothing hook in the same runs = ratio (target ≤ %g×):\n" % limit)
    out.append("| scenario | event | " + " | ".join(variants) + " |")
    out.append("|---|---|" + "---|" * len(variants))
    for sc in scenarios:
        for event in EVENTS + FACT_EVENTS:
            cells = [cell(r["variants"][v]["summary"].get(sc, {}).get(event), limit) for v in variants]
            if all(c == "–" for c in cells):
                continue
            n = next(
                (r["variants"][v]["summary"][sc][event]["n"] for v in variants if r["variants"][v]["summary"].get(sc, {}).get(event)), 0
            )
            label = f"{event} (async, n={n})" if event in FACT_EVENTS else f"{event} (n={n})"
            out.append(f"| {SCENARIO_NAMES[sc]} | {label} | " + " | ".join(cells) + " |")
        for tag, name in TAG_NAMES.items():
            cells = [cell((r["variants"][v]["summary"].get(sc, {}).get(tag) or {}).get("Stop"), limit) for v in variants]
            if not all(c == "–" for c in cells):
                out.append(f"| {SCENARIO_NAMES[sc]} | {name} | " + " | ".join(cells) + " |")
    untimed = [
        f"{v} / {sc} / {event}: {st['not_timed'][0]} of ours, {st['not_timed'][1]} of the do-nothing hook's"
        + (f" (signals {st['untimed_signals'][0]} / {st['untimed_signals'][1]}; None = no exit seen)" if st.get("untimed_signals") else "")
        for v in variants
        for sc, scd in r["variants"][v]["summary"].items()
        for event in FACT_EVENTS
        for st in [scd.get(event)]
        if st and any(st.get("not_timed", ()))
    ]
    out.append("")
    out.append(
        "Async hooks (the fact events): the kernel's fork → exit of each hook's `/bin/sh -c` process, ours and the do-nothing "
        "hook's (registered async in the same handler group); n = processes of ours timed. Not timed (ended by a signal, "
        "e.g. Claude Code's SIGTERM at shutdown, or never seen to exit): " + ("; ".join(untimed) if untimed else "none") + "."
    )
    stdin_rows = []
    for sc in scenarios:
        for event in FACT_EVENTS:
            sts = [r["variants"][v]["summary"].get(sc, {}).get(event) or {} for v in variants]
            if not any(st.get("floor_stdin") for st in sts):
                continue
            cells = []
            for st in sts:
                fs = st.get("floor_stdin")
                cells.append(
                    f"{st['ours_median']:g} / {fs['median']:g} ms = **{fs['ratio_ours_to_it']}×** (it: {fs['ratio_it_to_floor']}× `-c pass`)"
                    if fs
                    else "–"
                )
            stdin_rows.append(f"| {SCENARIO_NAMES[sc]} | {event} | " + " | ".join(cells) + " |")
    if stdin_rows:
        out.append("")
        out.append(
            "`--stdin-floor`: ours against a do-nothing hook that reads its stdin to the end "
            "(`-c 'import sys; sys.stdin.buffer.read()'`, async, same group), and that hook against `-c pass`:\n"
        )
        out.append("| scenario | event | " + " | ".join(variants) + " |")
        out.append("|---|---|" + "---|" * len(variants))
        out += stdin_rows
    ro = [(v, info["readonly"]) for v, info in r["variants"].items() if info.get("readonly")]
    for v, info in ro:
        out.append(
            f"\n{v}: the package compiled ({info['pyc_files']} .pyc), then chmod a-w"
            + (" and chattr +i (the run was root, which ignores mode bits)" if info.get("immutable") else "")
            + "; the package "
            + (
                "was unchanged after the run (nothing wrote into it)"
                if info.get("package_unchanged")
                else f"CHANGED: {info.get('changed')}"
            )
            + "."
        )
        el = info.get("pyc_elsewhere_in_home")
        if el and not el["files"]:
            out.append("No bytecode was written elsewhere in that HOME during the run (no pycache prefix in use).")
        elif el:
            out.append(
                f"Bytecode written elsewhere in that HOME during the run: {el['files']} .pyc files, {el['mb']} MB "
                f"({el['of_the_package']} of them the package's own), under {', '.join(el['folders'])}."
            )
    out.append("")
    out.append("Stop → root span at the stand-in, p50 / **p95** (target p95 ≤ %g s), turns arrived / measured:\n" % lat_limit)
    out.append("| scenario | " + " | ".join(variants) + " |")
    out.append("|---|" + "---|" * len(variants))
    for sc in scenarios:
        out.append(
            f"| {SCENARIO_NAMES[sc]} | "
            + " | ".join(lat_cell(r["variants"][v]["summary"].get(sc, {}).get("stop_to_standin_s"), lat_limit) for v in variants)
            + " |"
        )
    for tag, name in TAG_NAMES.items():
        cells = []
        for v in variants:
            t = next((sc.get(tag) for sc in r["variants"][v]["summary"].values() if sc.get(tag)), None)
            cells.append(", ".join("–" if x is None else f"{x:.1f}" for x in t["stop_to_standin_s"]) + " s" if t else "–")
        if not all(c == "–" for c in cells):
            out.append(f"| {name} (each) | " + " | ".join(cells) + " |")
    rows = []
    for v in variants:
        w = [r["variants"][v]["summary"].get(sc, {}).get("workers_started_per_run") for sc in scenarios]
        if any(w):
            rows.append(f"| {v} | " + " | ".join(f"{x['median']:g} / {x['max']}" if x else "–" for x in w) + " |")
    if rows:
        out.append("")
        out.append("Background processes (worker; old hook: sender) started per `claude -p` run, median / max:\n")
        out.append("| variant | " + " | ".join(SCENARIO_NAMES[sc] for sc in scenarios) + " |")
        out.append("|---|" + "---|" * len(scenarios))
        out += rows
    out.append("")
    out.append("| variant | hook command | load (1 min) before → after | run time |")
    out.append("|---|---|---|---|")
    for v, info in r["variants"].items():
        out.append(f"| {v} | `{info['hook_command']}` | {info['load_before'][0]} → {info['load_after'][0]} | {info['run_s']} s |")
    checks = [
        (v, info["check_durationms_minus_process_life_ms"])
        for v, info in r["variants"].items()
        if info.get("check_durationms_minus_process_life_ms")
    ]
    if checks:
        out.append("")
        out.append(
            "Claude Code's `durationMs` minus the kernel's life of the same Stop hook process (the SessionEnd method's offset): "
            + "; ".join(f"{v} median {c['median']} ms (n={c['n']})" for v, c in checks)
        )
    diag = r.get("diagnosis")
    if diag:
        out.append("")
        out.append("Outside Claude Code, median wall ms of 20 interleaved runs:\n")
        out.append("| command | ms |")
        out.append("|---|---|")
        for k, val in diag["wall_ms_median"].items():
            out.append(f"| {k} | {val} |")
        for k, val in diag.items():
            if k.startswith("hook_starting"):
                out.append(f"| {k.replace('_', ' ')} | {val['median']} |")
        for k, val in diag.items():
            if k.startswith("importtime_"):
                out.append(
                    f"\n`-X importtime`, {k[11:]}: {val['total_ms']} ms of imports in all, the package's own {val['package_ms']} ms; "
                    "top level: " + ", ".join(f"{m} {ms} ms" for m, ms in val["top_level"][:8])
                )
    m = r.get("machine", {})
    out.append("")
    out.append(
        f"Machine: {m.get('cpu')}, nproc {m.get('nproc')}, {m.get('mem_total')}, kernel {m.get('kernel')}, {m.get('python')}, "
        f"Claude Code {m.get('claude')}; source {r.get('source', {}).get('commit')}; load {r.get('load_start')} → {r.get('load_end')}; "
        f"{r.get('elapsed_s')} s; started {r.get('started_utc')}."
    )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why a turn reached the stand-in late: what the stand-in received between its Stop and its root span.

Takes a results file of `bench_hook.py --keep` and the kept work folder (its standin-spans.jsonl).
For each measured Stop of the scenario whose Stop -> stand-in latency is over --over seconds
(the bench's figure: the first arrival of the turn's root span, not its last version), prints when
the hook started, when the root first arrived, the turn's later versions (a late fact or a finished
background agent queues a partial version), and every send the stand-in took in between, by trace:
which scenario, session and turn it belongs to, how many spans and whether it carried a root
(a whole or first version) or not (a partial version of a turn queued before).

    .venv/bin/python bench/late_turns.py bench/results/bench_hook-20261202T044106Z.json /tmp/bench-hook-ojxkerw0 \
        --variant readonly-precompiled --scenario facts
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "hooks"))
from claude_code_langfuse.records import trace_id_for  # noqa: E402


def hms(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S.%f")[:-4]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("work_dir")
    ap.add_argument("--variant", default="cached")
    ap.add_argument("--scenario", default="facts")
    ap.add_argument("--over", type=float, default=2.0, help="latency (s) from which a turn counts as late (default 2)")
    args = ap.parse_args()
    results = json.loads(pathlib.Path(args.results).read_text())
    names: dict[str, str] = {}
    for vname, v in results["variants"].items():
        for s in v["stops"]:
            names[trace_id_for(s["session_id"], s["turn_key"] or "")] = (
                f"{vname}/{s['scenario']}/{s['session_id'][:8]}, Stop {s['timestamp'][11:21]}"
            )
    spans = [json.loads(line) for line in open(pathlib.Path(args.work_dir) / "standin-spans.jsonl", "rb")]
    spans.sort(key=lambda s: s["received_at"])
    stops = [s for s in results["variants"][args.variant]["stops"] if s["scenario"] == args.scenario and s["measured"]]
    print(
        f"{args.variant} / {args.scenario}: Stop -> stand-in of the {len(stops)} measured turns: {[s['stop_to_standin_s'] for s in stops]}"
    )
    for s in stops:
        if s["stop_to_standin_s"] is None or s["stop_to_standin_s"] <= args.over:
            continue
        tid = trace_id_for(s["session_id"], s["turn_key"])
        start = dt.datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp() - s["ours_ms"] / 1000
        mine = [x for x in spans if x["trace_id"] == tid]
        first_root = min(x["received_at"] for x in mine if not x["parent_span_id"])
        versions = collections.Counter(round(x["received_at"], 1) for x in mine)
        print(
            f"\nturn {s['turn_key'][:8]} of {s['session_id'][:8]}: hook started {hms(start)}, root first at {hms(first_root)} ({s['stop_to_standin_s']} s)"
        )
        print("  its spans by arrival (0.1 s):", ", ".join(f"{hms(t)} {n}" for t, n in sorted(versions.items())))
        print("  what the stand-in took in between (per trace and 0.1 s: spans, root or not, whose):")
        seen = collections.OrderedDict()
        for x in spans:
            if start <= x["received_at"] < first_root:
                k = (hms(x["received_at"])[:10], x["trace_id"])
                n, root = seen.get(k, (0, False))
                seen[k] = (n + 1, root or not x["parent_span_id"])
        for (t, trace), (n, root) in seen.items():
            print(f"    {t}  {n:3d} span(s) {'root' if root else 'no root':7s} {names.get(trace, trace[:8] + ' (not a measured turn)')}")
        if not seen:
            print("    nothing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

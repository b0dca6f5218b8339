"""``dgm compare`` with ``--executor local`` against ``--executor ray``: wall time and the
leaderboard difference (the same runs, seeds and step budget should give the same figures).

The ``toy2d`` preset's data, training and evaluation options, on its models (or ``--models``),
with ``--seeds`` seeds and a budget of ``--steps`` steps (a step budget, not the preset's minutes:
a time budget would let the figures differ by what the time allowed). ``local`` runs with one torch
thread; ``ray`` starts a local Ray of ``--workers`` CPUs (its start-up counted in its wall time)
and runs one-thread tasks. Prints JSON and a Markdown table; saves
``results/compare_ray<tag>.json``::

    python compare_executors.py --models nsf vae flow-matching --seeds 3 --steps 500
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from _common import loadavg, report
from dgm.compare import PRESETS, compare

#: figures that measure time, not the model
TIMES = {"train_seconds", "seconds"}


def run(executor: str, out: Path, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    preset = PRESETS["toy2d"]
    models = args.models or list(preset.models)
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if executor == "ray":
        import ray  # an optional dependency: only this branch needs it

        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="error")
        extra = {"executor": "ray"}
    try:
        doc = compare(
            models, list(preset.data), out, steps=args.steps, seeds=args.seeds,
            train_options=dict(preset.train), model_configs=dict(preset.model_config),
            sample_options=dict(preset.sample_options), eval_options=dict(preset.eval),
            report=False, progress=False, **extra,
        )  # fmt: skip
    finally:
        if executor == "ray":
            ray.shutdown()
    return doc, time.perf_counter() - t0


def diff(local: dict[str, Any], remote: dict[str, Any]) -> dict[str, Any]:
    """The largest difference of any figure (mean and std over seeds), and the rows that differ."""
    worst, differing, ranks_equal = 0.0, [], True
    for tl, tr in zip(local["tables"], remote["tables"], strict=True):
        for rl, rr in zip(tl["rows"], tr["rows"], strict=True):
            ranks_equal &= (rl.get("rank"), rl["status"]) == (rr.get("rank"), rr["status"])
            for key in set(rl.get("metrics", {})) - TIMES:
                for stat in ("mean", "std"):
                    a, b = rl["metrics"][key][stat], rr["metrics"].get(key, {}).get(stat)
                    if a is None or b is None or (math.isnan(a) and math.isnan(b)):
                        if (a is None) != (b is None):
                            differing.append(f"{tl['data']}/{rl['model']}/{key}")
                        continue
                    worst = max(worst, abs(a - b))
                    if a != b:
                        differing.append(f"{tl['data']}/{rl['model']}/{key}.{stat}")
    return {"max_abs_diff": worst, "figures_differing": differing, "ranks_equal": ranks_equal}


def same_weights(a: Path, b: Path) -> tuple[int, int]:
    """(runs whose weights are bit-identical, runs) between two comparison directories."""
    runs = sorted(p.parent.relative_to(a) for p in a.rglob("runs/**/summary.json"))
    same = 0
    for rel in runs:
        wa, wb = (load_file(d / rel / "model.safetensors") for d in (a, b))
        same += wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return same, len(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="models of the toy2d preset (default: all)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray (1 per task)")
    ap.add_argument("--tag", default="_toy2d")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix="dgm-executors-"))
    load_before = loadavg()
    local, t_local = run("local", base / "local", args)
    remote, t_ray = run("ray", base / "ray", args)
    same, total = same_weights(base / "local", base / "ray")
    d = diff(local, remote)
    rows = [
        {"executor": "local", "workers": 1, "wall_s": round(t_local, 1)},
        {"executor": "ray", "workers": args.workers, "wall_s": round(t_ray, 1),
         "speedup": round(t_local / t_ray, 2)},
    ]  # fmt: skip
    for r in rows:
        r |= {"runs": total, "max_abs_diff": d["max_abs_diff"], "weights_identical": same}
    report(
        f"compare_ray{args.tag}", rows,
        ["executor", "workers", "wall_s", "speedup", "runs", "weights_identical", "max_abs_diff"],
        {"models": args.models or "all", "seeds": args.seeds, "steps": args.steps,
         "loadavg_before": load_before, "loadavg_after": loadavg(), "diff": d},
    )  # fmt: skip


if __name__ == "__main__":
    main()

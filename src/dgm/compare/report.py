"""``dgm report``: one self-contained HTML file for one or several runs (or a ``dgm compare`` DIR).

This module gathers what the page shows (:mod:`dgm.compare.page` writes the HTML):

* the leaderboard (a table per dataset, sortable by clicking a column head): ``dgm compare``'s, or
  one built from the runs' own ``eval.json`` / ``summary.json``,
* the training and validation curves of every run over each other, per dataset,
* per run: its samples (an image grid, or for 2-D data the true density, the model's density when
  it has an exact one and the model's samples side by side on the same axes), the other figures the
  run wrote (reconstructions, latent map), its own curves from ``metrics.jsonl``, the likelihood,
  two-sample, feature-space, mode and anomaly metrics of its ``eval.json``, and its config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dgm import api
from dgm.compare.labels import is_clock, label
from dgm.compare.leaderboard import aggregate, rank_rows, result_kind
from dgm.compare.page import data_uri, render
from dgm.core.errors import DgmError
from dgm.core.io import atomic_write_text
from dgm.core.progress import Progress
from dgm.data import load as load_dataset
from dgm.eval.conditional import CURVE_OPTIONS
from dgm.models import get as get_model
from dgm.plots.conditional import guidance_figure
from dgm.plots.figures import curves_figure, density_figure, figure_bytes

__all__ = ["gather", "overlay_panels", "read_records", "run_labels", "write_report"]

#: model options that change what the training loss measures (so runs differing in them get
#: separate axes): an EBM's objective, a score model's weighting
_LOSS_OPTIONS = ("objective", "weighting")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a torn or corrupt line is skipped)."""
    out = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
                out.append(rec)
    return out


def _curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """The run's curves by readable name: ``{"training": {...}, "validation": {...}}``, each a list
    of ``(step, value)``. Clocks (elapsed seconds, throughput, the learning rate) are not curves,
    and a series equal to the loss at every step (a flow's ``nll``) is not drawn twice."""
    train: dict[str, list] = {}
    val: dict[str, list] = {}
    for rec in records:
        for k, v in rec.items():
            if is_clock(k) or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            (val if k.startswith("val_") else train).setdefault(k, []).append((rec["step"], v))
    for k in [k for k in train if k != "loss" and _equals_loss(records, k)]:
        del train[k]
    return {
        "training": {label(k): pts for k, pts in train.items()},
        "validation": {label(k): pts for k, pts in val.items()},
    }


def _equals_loss(records: list[dict[str, Any]], key: str) -> bool:
    """True when ``key`` is the training loss under another name (every record with both
    agrees), as a flow's ``nll`` is."""
    both = [r for r in records if "loss" in r and key in r]
    return bool(both) and all(r["loss"] == r[key] for r in both)


def _family(model: str) -> str:
    try:
        return get_model(model).family or "other"
    except DgmError:
        return "other"


def _loss_panel(view: dict[str, Any]) -> str:
    """The axes a run's training loss is drawn on, shared only by losses of the same meaning: one
    per family when the loss is the NLL (nats), else one per model and loss-defining option (an
    EBM's objective, a score model's weighting), since those losses are not on one scale."""
    cfg = view["config"]
    family = _family(cfg["model"])
    if _equals_loss(view["records"], "nll"):
        return f"{family}: training NLL (nats)"
    title = (
        f"{family}: training loss" if family == cfg["model"] else f"{family}: {cfg['model']} loss"
    )
    opts = cfg.get("model_config") or {}
    how = [f"{k}={opts[k]}" for k in _LOSS_OPTIONS if k in opts]
    return title + (f" ({', '.join(how)})" if how else "")


def run_labels(items: Sequence[tuple[str, Path]]) -> list[str]:
    """A short, unique label per ``(model, run directory)``: the model's name, and where several
    runs share it, the fewest last parts of their paths that tell them apart (never the model's
    name again).

    >>> run_labels([("nsf", Path("a/nsf")), ("vae", Path("a/vae"))])
    ['nsf', 'vae']
    >>> run_labels([("nsf", Path("c/nsf/w=8/seed-0")), ("nsf", Path("c/nsf/w=16/seed-0"))])
    ['nsf w=8/seed-0', 'nsf w=16/seed-0']
    """
    out = []
    for i, (model, path) in enumerate(items):
        same = [[x for x in Path(p).parts if x != model] for m, p in items if m == model]
        if len(same) == 1:
            out.append(model)
            continue
        mine = [x for x in Path(path).parts if x != model]
        k = 1
        while k < len(mine) and sum(s[-k:] == mine[-k:] for s in same) > 1:
            k += 1
        out.append(f"{model} {'/'.join(mine[-k:]) or f'#{i + 1}'}")
    return out


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _live_figures(path: Path, cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Figures drawn from the trained model: for 2-D data, density beside truth and samples."""
    if tuple(cfg.get("spec", {}).get("event_shape", ())) != (2,):
        return []
    run = api.load_run(path)
    model, pre = run.model, run.preprocessor
    dataset = load_dataset(cfg["data"]["name"], data_dir=cfg["data"].get("data_dir"))
    density = getattr(dataset, "density", None)
    if density is not None:
        bounds = tuple(density.bounds)
    else:
        lo, hi = dataset.train.min(0).values, dataset.train.max(0).values
        bounds = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    trained = api.TrainedModel(model, pre, run.raw_spec, run.class_counts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        samples = trained.sample(2000).to("cpu")  # (2000, 2); a conditional model's labels drawn

    def log_q(pts: torch.Tensor) -> torch.Tensor:
        with model.inference():
            xm, ld = pre(pts.to(model.device, model.dtype))
            return (model.log_prob(xm) + ld).to("cpu", torch.float64)

    exact_true = density is not None and density.exact_log_prob
    fig = density_figure(
        samples,
        bounds,
        true_log_prob=density.log_prob if exact_true else None,
        model_log_prob=log_q if model.exact_likelihood else None,
        name=model.name,
    )
    caption = "true density, model density and model samples on the same axes"
    if not model.exact_likelihood:
        caption = "true density and model samples (the model has no exact density)"
    return [("density", caption, data_uri(figure_bytes(fig, "png"), "png"))]


def _run_view(path: Path, index: int) -> dict[str, Any]:
    cfg = api.read_run_config(path)
    view: dict[str, Any] = {"path": path, "id": f"run-{index}", "config": cfg, "notes": []}
    view["summary"] = _load_json(path / "summary.json") or {}
    view["eval"] = _load_json(path / "eval.json")
    if view["eval"] is None:
        view["notes"].append(f"no eval.json: run `dgm eval {path}` for the sample metrics")
    view["records"] = read_records(path / "metrics.jsonl")
    figures: list[tuple[str, str, str]] = []
    try:
        figures += _live_figures(path, cfg)
    except Exception as e:  # a report shows what it can; the reason goes into the page
        view["notes"].append(f"density figure not drawn: {type(e).__name__}: {e}")
    for name, kind in (("samples", "samples"), ("reconstructions", "figure"), ("latent", "figure")):
        if figures and name == "samples":
            continue  # 2-D samples are in the density figure
        png = path / f"{name}.png"
        if png.is_file():
            figures.append((kind, f"{name}.png", data_uri(png.read_bytes(), "png")))
    for key, (symbol, what) in CURVE_OPTIONS.items():
        curve = (view["eval"] or {}).get(f"{key}_curve")
        if isinstance(curve, list) and curve:
            fig = guidance_figure(curve, title=f"{cfg['model']}: {key}", key=key)
            caption = f"conditional accuracy (± standard error) against FID* over {what} {symbol}"
            figures.append(("figure", caption, data_uri(figure_bytes(fig, "svg"), "svg")))
    view["figures"] = figures
    title = f"{cfg['model']} on {cfg['data']['name']}"
    curves = _curves(view["records"])
    view["curve_names"] = {k: list(c) for k, c in curves.items()}
    view["curve"] = data_uri(figure_bytes(curves_figure(curves, title=title), "svg"), "svg")
    return view


def overlay_panels(views: list[dict[str, Any]], data: str) -> dict[str, dict[str, list]]:
    """The curves of every run on ``data``, by panel: the validation NLL (nats, comparable across
    families: each run's label says whether its figure is exact, a bound or an estimate) on one
    axes, and the training losses on one axes per kind of loss (:func:`_loss_panel`), so that
    losses on different scales (a GAN's, an EBM's, a negative ELBO) are never drawn over each
    other. Panels without a curve are left out."""
    on = [v for v in views if v["config"]["data"]["name"] == data]
    names = run_labels([(v["config"]["model"], v["path"]) for v in on])
    val: dict[str, list] = {}
    losses: dict[str, dict[str, list]] = {}
    for v, name in zip(on, names):
        c = _curves(v["records"])
        if c["training"].get(label("loss")):
            losses.setdefault(_loss_panel(v), {})[name] = c["training"][label("loss")]
        if c["validation"].get(label("val_nll")):
            kind = result_kind(v["summary"])
            val[f"{name} ({kind})"] = c["validation"][label("val_nll")]
    panels = {label("val_nll"): val} if val else {}
    return panels | dict(sorted(losses.items()))


def _overlay(views: list[dict[str, Any]], data: str) -> tuple[str, list[str]] | None:
    panels = overlay_panels(views, data)
    if not panels:
        return None
    fig = curves_figure(panels, title=data, ncols=3)
    return data_uri(figure_bytes(fig, "svg"), "svg"), list(panels)


def _run_leaderboard(run_dirs: list[Path]) -> dict[str, Any]:
    """A leaderboard of single runs (each its own row) from their eval.json or summary.json."""
    tables: dict[str, dict[str, Any]] = {}
    cfgs = [api.read_run_config(path) for path in run_dirs]
    for path, cfg in zip(run_dirs, cfgs):
        same = [
            (c["model"], p)
            for p, c in zip(run_dirs, cfgs)
            if c["data"]["name"] == cfg["data"]["name"]
        ]
        name = run_labels(same)[same.index((cfg["model"], path))]
        res = dict(_load_json(path / "summary.json") or {})
        res.update(_load_json(path / "eval.json") or {})
        table = tables.setdefault(cfg["data"]["name"], {"data": cfg["data"]["name"], "rows": []})
        table["rows"].append({
            "model": name, "family": _family(cfg["model"]), "status": "ok",
            "likelihood": res.get("likelihood"),
            "likelihood_kind": result_kind(res), "likelihood_info": res.get("likelihood_info"),
            "metrics": aggregate([res]), "runs": [str(path)], "fid_space": res.get("fid_space"),
        })  # fmt: skip
    for table in tables.values():
        table["rank_by"] = rank_rows(table["rows"])
    return {"tables": list(tables.values())}


def gather(paths: Sequence[str | Path]) -> tuple[list[Path], dict[str, Any] | None]:
    """Run directories and the leaderboard behind ``paths``: run directories as they are, and for
    a ``dgm compare`` directory its leaderboard and the runs it lists (merged, in order)."""
    runs: list[Path] = []
    tables: list[dict[str, Any]] = []
    command = []
    for p in map(Path, paths):
        board = p / "leaderboard.json"
        if board.is_file():
            doc = _load_json(board)
            if doc is None or not isinstance(doc.get("tables"), list):
                raise DgmError(f"{board} is not a dgm compare leaderboard; it is corrupt")
            tables += doc["tables"]
            command.append(doc.get("command", ""))
            runs += [p / r for t in doc["tables"] for row in t["rows"] for r in row.get("runs", [])]
        elif (p / "config.yaml").is_file():
            runs.append(p)
        else:
            raise DgmError(
                f"{p} is neither a run directory (config.yaml) nor a dgm compare directory "
                "(leaderboard.json)"
            )
    if not tables:
        return runs, None
    return runs, {"tables": tables, "command": " ; ".join(c for c in command if c)}


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    leaderboard: dict[str, Any] | None = None,
    base: str | Path | None = None,
    title: str = "dgm report",
    progress: bool = False,
) -> Path:
    """Write the self-contained HTML report of ``run_dirs`` to ``out`` (atomically). Without a
    ``leaderboard`` (from ``dgm compare``), one is built from the runs' own results.
    ``progress`` reports the runs drawn on stderr (each loads its model and draws its figures:
    minutes for a comparison of every family)."""
    dirs = [Path(p) for p in run_dirs]
    board = leaderboard if leaderboard is not None else _run_leaderboard(dirs)
    views = []
    with Progress("writing the report", len(dirs), unit="runs", enabled=progress) as bar:
        for i, p in enumerate(dirs):
            views.append(_run_view(p, i))
            bar.update(1)
    if base is not None:
        for v in views:
            try:
                v["path"] = v["path"].relative_to(Path(base))
            except ValueError:
                pass
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    overlays = {
        d: _overlay(views, d) for d in dict.fromkeys(v["config"]["data"]["name"] for v in views)
    }
    atomic_write_text(out, render(views, board, title, overlays))
    return out

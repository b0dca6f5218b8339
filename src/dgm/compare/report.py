"""``dgm report``: one self-contained HTML file for one or several runs (or a ``dgm compare`` DIR).

Everything is inside the file, so it opens offline and can be mailed: images are PNG or SVG data
URIs, the style and the few lines of script are inline, and nothing is fetched. It shows

* the leaderboard (a table per dataset, sortable by clicking a column head),
* the training and validation curves of every run over each other, per dataset,
* per run: its samples (an image grid, or for 2-D data the true density, the model's density when
  it has an exact one and the model's samples side by side on the same axes), the other figures the
  run wrote (reconstructions, latent map), its own curves from ``metrics.jsonl``, the likelihood,
  two-sample, feature-space, mode and anomaly metrics of its ``eval.json``, and its config.

The page checks itself when loaded: ``<body data-images=N data-images-ok=K data-ready=1>``
counts the images the browser decoded, and script errors are written into ``#js-errors``.
``report.html#sort=COLUMN`` (or ``#sort=COLUMN:desc``) opens with the first leaderboard sorted.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from dgm import api
from dgm.compare.leaderboard import COLUMNS, aggregate, format_stat, likelihood_kind, rank_rows
from dgm.core.errors import DgmError
from dgm.core.io import atomic_write_text
from dgm.data import load as load_dataset
from dgm.plots.figures import curves_figure, density_figure, figure_bytes

__all__ = ["gather", "read_records", "render", "write_report"]

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("likelihood", ("likelihood", "test_nll", "test_bpd", "val_nll", "kl", "reverse_kl", "tv",
                    "grid_integral")),
    ("two-sample tests", ("c2st_accuracy", "c2st_p_value", "mmd2", "mmd_p_value", "c2st_space")),
    ("feature space", ("fid", "kid", "kid_std", "precision", "recall", "features")),
    ("modes", ("modes_captured", "modes_total", "modes_high_quality", "modes_kl")),
    ("training", ("steps", "train_seconds", "parameters")),
)  # fmt: skip

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer} td:first-child,th:first-child{text-align:left}
td.text{text-align:left} .run{border-top:2px solid #ddd;margin-top:1.5em}
figure{display:inline-block;margin:.3em;vertical-align:top} figcaption{font-size:12px;color:#555}
img{max-width:100%} pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow:auto}
.note{color:#555;font-size:13px} #js-errors{color:#b00} .wide{overflow-x:auto}
td.status{font-size:12px;max-width:22em}
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("data-order") !== "asc";
      th.setAttribute("data-order", asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
        var nx = parseFloat(x), ny = parseFloat(y), c;
        if (isNaN(nx) || isNaN(ny)) { c = String(x).localeCompare(String(y)); }
        else { c = nx === ny ? 0 : (nx < ny ? -1 : 1); }
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
window.addEventListener("load", function () {
  // report.html#sort=COLUMN or #sort=COLUMN:desc opens with the first leaderboard so sorted
  var m = /^#sort=([^:]+)(:desc)?$/.exec(decodeURIComponent(location.hash));
  var first = document.querySelector("table.sortable");
  if (m && first) {
    Array.prototype.forEach.call(first.tHead.rows[0].cells, function (th) {
      if (th.textContent === m[1]) { th.click(); if (m[2]) { th.click(); } }
    });
  }
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-ok", String(ok));
  document.body.setAttribute("data-ready", "1");
});
"""

_ONERROR = """
window.onerror = function (msg, src, line) {
  var box = document.getElementById("js-errors") || document.documentElement;
  var p = document.createElement("p"); p.className = "js-error";
  p.textContent = "script error: " + msg + " (line " + line + ")"; box.appendChild(p);
};
"""


def _uri(data: bytes, fmt: str) -> str:
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _esc(x: Any) -> str:
    return html.escape(str(x))


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
    train: dict[str, list] = {}
    val: dict[str, list] = {}
    for rec in records:
        for k, v in rec.items():
            if k in ("step", "lr", "steps_per_s") or not isinstance(v, (int, float)):
                continue
            (val if k.startswith("val_") else train).setdefault(k, []).append((rec["step"], v))
    return {"training": train, "validation": val}


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
    with torch.random.fork_rng(devices=[]), model.inference():
        torch.manual_seed(0)
        samples = pre.inverse(model.sample(2000)).to("cpu")  # (2000, 2)

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
    return [("density", caption, _uri(figure_bytes(fig, "png"), "png"))]


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
            figures.append((kind, f"{name}.png", _uri(png.read_bytes(), "png")))
    view["figures"] = figures
    title = f"{cfg['model']} on {cfg['data']['name']}"
    view["curve"] = _uri(
        figure_bytes(curves_figure(_curves(view["records"]), title=title), "svg"), "svg"
    )
    return view


def _overlay(views: list[dict[str, Any]], data: str) -> str | None:
    panels: dict[str, dict[str, list]] = {"training loss": {}, "validation NLL": {}}
    for v in views:
        if v["config"]["data"]["name"] != data:
            continue
        label = f"{v['config']['model']} {v['path'].name}"
        c = _curves(v["records"])
        panels["training loss"][label] = c["training"].get("loss", [])
        panels["validation NLL"][label] = c["validation"].get("val_nll", [])
    if not any(any(p.values()) for p in panels.values()):
        return None
    return _uri(figure_bytes(curves_figure(panels, title=data), "svg"), "svg")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return "n/a" if v is None else str(v)


def _metrics_html(view: dict[str, Any]) -> str:
    res = dict(view["summary"])
    res.update(view["eval"] or {})
    rows = []
    for group, keys in _GROUPS + (
        ("anomaly detection", tuple(sorted(k for k in res if k.startswith("anomaly_")))),
    ):
        present = [k for k in keys if k in res]
        for i, k in enumerate(present):
            head = f"<td class='text' rowspan='{len(present)}'>{_esc(group)}</td>" if i == 0 else ""
            rows.append(
                f"<tr>{head}<td class='text'>{_esc(k)}</td><td>{_esc(_fmt(res[k]))}</td></tr>"
            )
    skipped = "".join(
        f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in (res.get("skipped") or {}).items()
    )
    out = "<table class='metrics'><thead><tr><th>group</th><th>metric</th><th>value</th></tr>"
    out += "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    return out + (
        f"<p class='note'>not applicable:</p><ul class='note'>{skipped}</ul>" if skipped else ""
    )


def _leaderboard_html(doc: dict[str, Any]) -> str:
    parts = []
    labels = dict(COLUMNS)
    for table in doc.get("tables", []):
        rows = table["rows"]
        keys = [k for k, _ in COLUMNS if any(k in r.get("metrics", {}) for r in rows)]
        keys += sorted({k for r in rows for k in r.get("metrics", {}) if k.endswith("_auroc")})
        head = ["rank", "model", "family", "likelihood"] + [labels.get(k, k) for k in keys]
        parts.append(f"<h3>{_esc(table['data'])}</h3>")
        if table.get("rank_by"):
            parts.append(f"<p class='note'>ranked by {_esc(table['rank_by'])}; click a column "
                         "head to sort</p>")  # fmt: skip
        parts.append("<div class='wide'>")
        parts.append(f"<table class='sortable leaderboard' data-data='{_esc(table['data'])}'>")
        parts.append("<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head + ["status"]))
        parts.append("</tr></thead><tbody>")
        for r in rows:
            m = r.get("metrics", {})
            rank = r.get("rank")
            cells = [(rank if rank is not None else 1e9, rank or "—")]
            cells += [(r["model"], r["model"]), (r.get("family", ""), r.get("family", ""))]
            kind = r.get("likelihood_kind", "none" if r.get("status") == "ok" else "")
            cells.append((kind, kind))
            for k in keys:
                cells.append((m[k]["mean"] if k in m else "Infinity", format_stat(m.get(k), k)))
            status = r.get("status", "")
            reason = r.get("reason") or ""
            short = reason if len(reason) <= 70 else reason[:67] + "..."
            cells.append((status, f"{status}: {short}" if reason else status))
            row = "".join(
                f"<td data-sort='{_esc(s)}'{' class=text' if isinstance(s, str) else ''}>"
                f"{_esc(t)}</td>" for s, t in cells[:-1]
            )  # fmt: skip
            row += f"<td data-sort='{_esc(status)}' class='text status' title='{_esc(reason)}'>"
            parts.append(f"<tr>{row}{_esc(cells[-1][1])}</td></tr>")
        parts.append("</tbody></table></div>")
    return "\n".join(parts)


def render(views: list[dict[str, Any]], leaderboard: dict[str, Any], title: str) -> str:
    """The HTML page (a string) for run views and a leaderboard."""
    body = [f"<h1>{_esc(title)}</h1>", "<div id='js-errors'></div>"]
    body.append(f"<p class='note'>{len(views)} run(s); written {time.strftime('%Y-%m-%d %H:%M')}"
                "; FID/KID use a small classifier's features, not Inception</p>")  # fmt: skip
    if leaderboard.get("command"):
        body.append(f"<p class='note'>command: <code>{_esc(leaderboard['command'])}</code></p>")
    body += ["<section id='leaderboard'><h2>Leaderboard</h2>", _leaderboard_html(leaderboard)]
    body.append("</section><section id='curves'><h2>Training and validation curves</h2>")
    for data in dict.fromkeys(v["config"]["data"]["name"] for v in views):
        uri = _overlay(views, data)
        if uri:
            body.append(f"<figure><img class='curve overlay' alt='curves on {_esc(data)}' "
                        f"src='{uri}'><figcaption>{_esc(data)}: every run</figcaption></figure>")  # fmt: skip
    body.append("</section><section id='runs'><h2>Runs</h2>")
    for v in views:
        cfg = v["config"]
        body.append(f"<article class='run' id='{v['id']}'><h3>{_esc(cfg['model'])} on "
                    f"{_esc(cfg['data']['name'])} <small>{_esc(v['path'])}</small></h3>")  # fmt: skip
        body += [f"<p class='note'>{_esc(n)}</p>" for n in v["notes"]]
        for kind, caption, uri in v["figures"]:
            body.append(f"<figure><img class='{kind}' alt='{_esc(caption)}' src='{uri}'>"
                        f"<figcaption>{_esc(caption)}</figcaption></figure>")  # fmt: skip
        body.append(f"<figure><img class='curve' alt='curves' src='{v['curve']}'>"
                    "<figcaption>training and validation curves (metrics.jsonl)</figcaption></figure>")  # fmt: skip
        body.append(_metrics_html(v))
        text = yaml.safe_dump(cfg, sort_keys=False)
        body.append(f"<details class='config'><summary>config</summary><pre>{_esc(text)}</pre>"
                    "</details></article>")  # fmt: skip
    body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style><script>{_ONERROR}</script></head>"
        f"<body data-ready='0'>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script></body></html>\n"
    )


def _run_leaderboard(run_dirs: list[Path]) -> dict[str, Any]:
    """A leaderboard of single runs (each its own row) from their eval.json or summary.json."""
    tables: dict[str, dict[str, Any]] = {}
    for path in run_dirs:
        cfg = api.read_run_config(path)
        res = dict(_load_json(path / "summary.json") or {})
        res.update(_load_json(path / "eval.json") or {})
        table = tables.setdefault(cfg["data"]["name"], {"data": cfg["data"]["name"], "rows": []})
        table["rows"].append({
            "model": f"{cfg['model']} ({path.name})", "family": "", "status": "ok",
            "likelihood": res.get("likelihood"),
            "likelihood_kind": likelihood_kind(res.get("likelihood")),
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
) -> Path:
    """Write the self-contained HTML report of ``run_dirs`` to ``out`` (atomically). Without a
    ``leaderboard`` (from ``dgm compare``), one is built from the runs' own results."""
    dirs = [Path(p) for p in run_dirs]
    board = leaderboard if leaderboard is not None else _run_leaderboard(dirs)
    views = [_run_view(p, i) for i, p in enumerate(dirs)]
    if base is not None:
        for v in views:
            try:
                v["path"] = v["path"].relative_to(Path(base))
            except ValueError:
                pass
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(views, board, title))
    return out

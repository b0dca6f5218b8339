"""The HTML of ``dgm report``: run views and a leaderboard in, one self-contained page out.

Everything is inside the page, so it opens offline and can be mailed: images are PNG or SVG data
URIs (:func:`data_uri`), the style and the few lines of script are inline, and nothing is fetched.
The leaderboard tables sort by clicking a column head; ``report.html#sort=COLUMN`` (or
``#sort=COLUMN:desc``) opens with the first one sorted. The page checks itself when loaded:
``<body data-images=N data-images-ok=K data-ready=1>`` counts the images the browser decoded, and
script errors are written into ``#js-errors``.
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any

import yaml

from dgm.compare.leaderboard import COLUMNS, format_stat
from dgm.core.likelihood import KINDS, Likelihood, brief

__all__ = ["data_uri", "render"]

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("likelihood", ("likelihood", "test_nll", "test_bpd", "val_nll", "ais_log_z",
                    "ais_log_z_stderr", "ais_ess", "ais_warning", "kl", "reverse_kl", "tv",
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


def data_uri(data: bytes, fmt: str) -> str:
    """``data:image/...;base64,...`` of PNG (``fmt="png"``) or SVG (``fmt="svg"``) bytes."""
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return "n/a" if v is None else str(v)


#: likelihood figures of a run and the quantity they show: their label says the figure's kind
_QUANTITY = {"test_nll": "NLL", "test_bpd": "bits/dim", "val_nll": "NLL"}


def _label(key: str, res: dict[str, Any]) -> str:
    """The metric's key, and for a likelihood figure the words of its kind (an upper bound...)."""
    info = res.get("likelihood_info")
    if key not in _QUANTITY or not isinstance(info, dict):
        return key
    return f"{key} ({Likelihood.from_dict(info).describe(_QUANTITY[key])})"


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
                f"<tr>{head}<td class='text'>{_esc(_label(k, res))}</td>"
                f"<td>{_esc(_fmt(res[k]))}</td></tr>"
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
            cells.append((kind, brief(kind, "NLL") if kind in KINDS else kind))
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


def render(
    views: list[dict[str, Any]],
    leaderboard: dict[str, Any],
    title: str,
    overlays: dict[str, str | None] | None = None,
) -> str:
    """The HTML page (a string) for run views and a leaderboard; ``overlays`` maps a dataset
    name to the data URI of the curves of every run on it (``None``: no curves to show).

    A run view is a dict with ``path``, ``id`` (the anchor), ``config`` (the run's config),
    ``notes`` (sentences), ``figures`` (``(kind, caption, data URI)``), ``curve`` (a data URI),
    and ``summary`` / ``eval`` (the run's results, ``eval`` may be ``None``).
    """
    body = [f"<h1>{_esc(title)}</h1>", "<div id='js-errors'></div>"]
    body.append(f"<p class='note'>{len(views)} run(s); written {time.strftime('%Y-%m-%d %H:%M')}"
                "; FID/KID use a small classifier's features, not Inception</p>")  # fmt: skip
    if leaderboard.get("command"):
        body.append(f"<p class='note'>command: <code>{_esc(leaderboard['command'])}</code></p>")
    body += ["<section id='leaderboard'><h2>Leaderboard</h2>", _leaderboard_html(leaderboard)]
    body.append("</section><section id='curves'><h2>Training and validation curves</h2>")
    for data, uri in (overlays or {}).items():
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

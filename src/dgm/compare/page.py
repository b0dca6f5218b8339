"""The HTML of ``dgm report``: run views and a leaderboard in, one self-contained page out.

Everything is inside the page, so it opens offline and can be mailed: images are PNG or SVG data
URIs (:func:`data_uri`), the style and the few lines of script are inline, and nothing is fetched.
The leaderboard tables sort by clicking a column head; ``report.html#sort=COLUMN`` (or
``#sort=COLUMN:desc``; COLUMN is a heading or a raw key) opens with the first one sorted. The page
checks itself when loaded: ``<body data-images=N data-images-ok=K data-ready=1>`` counts the images
the browser decoded, and script errors are written into ``#js-errors``. A leaderboard fits the
page's width (1200 px at most): figures never break, names and headings wrap, and a table that is
still too wide gets the class ``tight`` and breaks its names anywhere, then a smaller font. Headings and metric names
are readable names (:mod:`dgm.compare.labels`); the raw key of a metric is its cell's tooltip.
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any

import yaml

from dgm.compare.labels import label
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
    ("conditional", ("cond_accuracy", "cond_accuracy_stderr", "cond_fid_class_mean", "cond_fid",
                     "cond_model_test_accuracy", "cond_model_test_accuracy_stderr")),
    ("sampling", ("sample_options",)),
    ("training", ("steps", "train_seconds", "parameters")),
)  # fmt: skip

#: what ranked a leaderboard, in words (:data:`dgm.compare.leaderboard.RANK_METRICS`)
_RANKED_BY = {
    "fid": "FID* in the classifier's features (lower is better)",
    "c2st_accuracy": "|C2ST accuracy − 0.5| (distance from chance, lower is better)",
}

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer} td:first-child,th:first-child{text-align:left}
td.text{text-align:left} .run{border-top:2px solid #ddd;margin-top:1.5em}
table.leaderboard{font-size:12px}
table.leaderboard td{padding:2px 4px;white-space:nowrap;font-variant-numeric:tabular-nums}
table.leaderboard th{padding:2px 4px;font-weight:600;vertical-align:bottom;font-size:.92em}
table.leaderboard th:not(.num){text-align:left}
table.leaderboard td.text{white-space:normal}
table.leaderboard.tight td.text,table.leaderboard.tight th:not(.num){overflow-wrap:anywhere}
table.leaderboard .sd{display:block;color:#666;font-size:.92em}
code{overflow-wrap:anywhere} ul.note{overflow-wrap:anywhere}
figure{display:inline-block;margin:.3em;vertical-align:top;max-width:100%}
figcaption{font-size:12px;color:#555} img{max-width:100%;height:auto}
pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow:auto;white-space:pre-wrap}
table.metrics th{text-align:left} .note{color:#555;font-size:13px} #js-errors{color:#b00}
h3 small{font-weight:normal;color:#666}
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
      if (th.textContent === m[1] || th.title === m[1]) { th.click(); if (m[2]) { th.click(); } }
    });
  }
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-ok", String(ok));
  // a leaderboard wider than the page breaks its names anywhere, then takes a smaller font
  // (figures never break)
  var content = document.getElementById("leaderboard");
  function wide(t) {
    return t.getBoundingClientRect().right > content.getBoundingClientRect().right + 0.5;
  }
  document.querySelectorAll("table.leaderboard").forEach(function (t) {
    if (wide(t)) { t.classList.add("tight"); }
    for (var px = 11; wide(t) && px >= 8; px--) { t.style.fontSize = px + "px"; }
  });
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
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return "n/a" if v is None else str(v)


#: likelihood figures of a run and the quantity they show: their label says the figure's kind
_QUANTITY = {"test_nll": "NLL", "test_bpd": "bits/dim", "val_nll": "NLL"}


def _label(key: str, res: dict[str, Any]) -> str:
    """The metric's key, and for a likelihood figure the words of its kind (an upper bound...)."""
    info = res.get("likelihood_info")
    if key not in _QUANTITY or not isinstance(info, dict):
        return label(key)
    return f"{label(key)} ({Likelihood.from_dict(info).describe(_QUANTITY[key])})"


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
            name = f"<td class='text' title='{_esc(k)}'>{_esc(_label(k, res))}</td>"
            rows.append(f"<tr>{head}{name}<td>{_esc(_fmt(res[k]))}</td></tr>")
    skipped = "".join(
        f"<li title='{_esc(k)}'>{_esc(label(k))}: {_esc(v)}</li>"
        for k, v in (res.get("skipped") or {}).items()
    )
    out = "<table class='metrics'><thead><tr><th>group</th><th>metric</th><th>value</th></tr>"
    out += "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    return out + (
        f"<p class='note'>not applicable:</p><ul class='note'>{skipped}</ul>" if skipped else ""
    )


def _stat_html(stat: dict[str, Any] | None, key: str) -> str:
    """A leaderboard figure: the mean, and the spread over seeds on a line of its own (a narrow
    column)."""
    mean, _, sd = format_stat(stat, key).partition(" ± ")
    return _esc(mean) + (f"<span class='sd'>± {_esc(sd)}</span>" if sd else "")


def _short_head(key: str, labels: dict[str, str]) -> str:
    """A leaderboard column's heading: the leaderboard's own short label, ``AUROC: <test>`` for
    an anomaly test, else the readable name."""
    if key == "kl":
        return "KL(true ‖ model)"  # breakable
    if key.startswith("anomaly_") and key.endswith("_auroc"):
        return "AUROC: " + key[len("anomaly_") : -len("_auroc")].replace("_", " ")
    return labels.get(key) or label(key)


def _ranked_by(key: str) -> str:
    return _RANKED_BY.get(key, f"{label(key)} (lower is better)")


def _leaderboard_html(doc: dict[str, Any]) -> str:
    parts = []
    labels = dict(COLUMNS)
    for table in doc.get("tables", []):
        rows = table["rows"]
        keys = [k for k, _ in COLUMNS if any(k in r.get("metrics", {}) for r in rows)]
        keys += sorted({k for r in rows for k in r.get("metrics", {}) if k.endswith("_auroc")})
        said = []
        steps = {
            (m["mean"], m.get("std")) for r in rows if (m := r.get("metrics", {}).get("steps"))
        }
        ok = [r for r in rows if r.get("status") == "ok"]
        if (
            len(steps) == 1
            and next(iter(steps))[1] in (None, 0.0)
            and all("steps" in r.get("metrics", {}) for r in ok)
        ):
            keys.remove("steps")  # one budget for all: said once, not a column of equal figures
            said.append(f"every run trained {next(iter(steps))[0]:.0f} steps")
        head = [
            ("rank", "#"),
            ("model", "model"),
            ("family", "family"),
            ("likelihood", "likelihood"),
        ]
        head += [(k, _short_head(k, labels)) for k in keys] + [("status", "status")]
        parts.append(f"<h3>{_esc(table['data'])}</h3>")
        if table.get("rank_by"):
            said.append(f"ranked by {_ranked_by(table['rank_by'])}")
        said.append("click a column head to sort")
        parts.append(f"<p class='note'>{_esc('; '.join(said))}</p>")
        parts.append(f"<table class='sortable leaderboard' data-data='{_esc(table['data'])}'>")
        parts.append(
            "<thead><tr>"
            + "".join(
                f"<th title='{_esc(k)}'{' class=num' if k in keys else ''}>{_esc(h)}</th>"
                for k, h in head
            )
            + "</tr></thead><tbody>"
        )
        notes = []
        for r in rows:
            m = r.get("metrics", {})
            rank = r.get("rank")
            kind = r.get("likelihood_kind", "none" if r.get("status") == "ok" else "")
            status = r.get("status", "")
            cells = [(rank if rank is not None else 1e9, _esc(rank or "—"))]
            cells += [
                (r["model"], _esc(r["model"])),
                (r.get("family", ""), _esc(r.get("family", ""))),
            ]
            cells.append((kind, _esc(brief(kind, "NLL") if kind in KINDS else kind)))
            cells += [
                (m[k]["mean"] if k in m else "Infinity", _stat_html(m.get(k), k)) for k in keys
            ]
            cells.append((status, _esc(status)))
            parts.append("<tr>" + "".join(
                f"<td data-sort='{_esc(s)}'{' class=text' if isinstance(s, str) else ''}>{t}</td>"
                for s, t in cells
            ) + "</tr>")  # fmt: skip
            if r.get("reason"):
                notes.append(f"<li>{_esc(r['model'])}: {_esc(status)}: {_esc(r['reason'])}</li>")
        parts.append("</tbody></table>")
        if notes:
            parts.append(f"<ul class='note status'>{''.join(notes)}</ul>")
    return "\n".join(parts)


def render(
    views: list[dict[str, Any]],
    leaderboard: dict[str, Any],
    title: str,
    overlays: dict[str, tuple[str, list[str]] | str | None] | None = None,
) -> str:
    """The HTML page (a string) for run views and a leaderboard; ``overlays`` maps a dataset
    name to the data URI of the curves of every run on it and the titles of its panels (``None``:
    no curves to show).

    A run view is a dict with ``path``, ``id`` (the anchor), ``config`` (the run's config),
    ``notes`` (sentences), ``figures`` (``(kind, caption, data URI)``), ``curve`` (a data URI)
    with ``curve_names`` (optional: the names of the curves it draws), and ``summary`` / ``eval`` (the run's results, ``eval`` may be ``None``).
    """
    body = [f"<h1>{_esc(title)}</h1>", "<div id='js-errors'></div>"]
    body.append(f"<p class='note'>{len(views)} run(s); written {time.strftime('%Y-%m-%d %H:%M')}"
                "; FID/KID use a small classifier's features, not Inception</p>")  # fmt: skip
    if leaderboard.get("command"):
        body.append(f"<p class='note'>command: <code>{_esc(leaderboard['command'])}</code></p>")
    body += ["<section id='leaderboard'><h2>Leaderboard</h2>", _leaderboard_html(leaderboard)]
    body.append("</section><section id='curves'><h2>Training and validation curves</h2>")
    for data, overlay in (overlays or {}).items():
        if not overlay:
            continue
        uri, panels = (overlay, []) if isinstance(overlay, str) else overlay
        what = f"; panels: {'; '.join(panels)}" if panels else ""
        body.append(f"<figure class='overlay'><img class='curve overlay' alt='curves on "
                    f"{_esc(data)}{_esc(what)}' src='{uri}'><figcaption>{_esc(data)}: every run. "
                    "Validation NLLs share one axes; each kind of training loss has its own"
                    f"{_esc(what)}</figcaption></figure>")  # fmt: skip
    body.append("</section><section id='runs'><h2>Runs</h2>")
    for v in views:
        cfg = v["config"]
        body.append(f"<article class='run' id='{v['id']}'><h3>{_esc(cfg['model'])} on "
                    f"{_esc(cfg['data']['name'])} <small>{_esc(v['path'])}</small></h3>")  # fmt: skip
        body += [f"<p class='note'>{_esc(n)}</p>" for n in v["notes"]]
        for kind, caption, uri in v["figures"]:
            body.append(f"<figure><img class='{kind}' alt='{_esc(caption)}' src='{uri}'>"
                        f"<figcaption>{_esc(caption)}</figcaption></figure>")  # fmt: skip
        names = "; ".join(f"{k}: {', '.join(c)}" for k, c in v.get("curve_names", {}).items() if c)
        body.append(f"<figure><img class='curve' alt='curves{_esc(': ' + names if names else '')}' "
                    f"src='{v['curve']}'><figcaption>training and validation curves "
                    f"(metrics.jsonl){_esc(': ' + names if names else '')}</figcaption></figure>")  # fmt: skip
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

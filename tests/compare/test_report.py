"""dgm report: a self-contained HTML page, checked in a real browser (headless Chromium)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import dgm
from dgm.api import load_run
from dgm.cli.main import main
from dgm.compare import gather, read_records, report, write_report
from dgm.compare.leaderboard import COLUMNS
from dgm.compare.page import render
from dgm.core.io import atomic_write_text
from dgm.data import load
from dgm.eval.run import evaluate
from dgm.models import get
from dgm.plots import figures

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
]  # fmt: skip


def _chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (as .ci/run does)."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        cmd = "apt-get update -qq && apt-get install -y -qq chromium"
        subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and apt-get could not install it (CI installs it)")
    return found


class _Dom(HTMLParser):
    """Tags of the dumped DOM with their attributes, in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and (cls is None or cls in a.get("class", "").split())
        ]


def _render(page: Path, tmp: Path, extra: list[str], fragment: str = "") -> tuple[str, str]:
    proc = subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra,
         page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if "CONSOLE" in line]
    return [line for line in lines if re.search(r"Uncaught|Error|error", line)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Three tiny 2-D runs (two flows, a VAE) and one image run, each with its eval.json."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, data, metrics in (
        ("nsf", "8gaussians", None),
        ("realnvp", "8gaussians", None),
        ("vae", "8gaussians", ["nll", "c2st", "mmd"]),
        ("made", "digits", ["nll"]),  # image metrics without the feature network: fast
    ):
        d = dgm.train(
            name, data, root / f"run-{name}", steps=12, eval_every=4, log_every=3,
            model_config=dict(get(name).example.config), progress=False,
        )  # fmt: skip
        run = load_run(d)
        res = evaluate(
            run.model, load(data), run.preprocessor, metrics=metrics, max_test=300,
            num_samples=200, grid_size=40,
        )  # fmt: skip
        atomic_write_text(d / "eval.json", json.dumps(res))
        out.append(d)
    return out


def test_report_is_self_contained_and_complete(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html")
    text = page.read_text()
    # nothing is fetched: every src is a data URI, no external scripts or styles
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", text)
    dom = _Dom(text)
    assert len(dom.find("article", "run")) == 4
    assert len(dom.find("img", "curve")) == 4 + 2  # one per run + one overlay per dataset
    assert len(dom.find("img", "density")) == 3 and len(dom.find("img", "samples")) == 1
    assert len(dom.find("table", "leaderboard")) == 2  # 8gaussians and digits
    assert "C2ST accuracy" in text and "anomaly AUROC: noise" in text and "model_config" in text
    assert len(read_records(runs[0] / "metrics.jsonl")) > 3


@pytest.mark.slow  # two Chromium launches (~5 s on 2 quiet cores)
def test_report_renders_in_headless_chromium(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html")
    dom_text, stderr = _render(page, tmp_path, ["--dump-dom"], "#sort=model:desc")
    dom = _Dom(dom_text)
    body = dom.find("body")[0]
    n_img = len(_Dom(page.read_text()).find("img"))
    assert body["data-ready"] == "1", "the page's load handler did not run"
    assert body["data-images"] == body["data-images-ok"] == str(n_img)  # every image decoded
    assert len(dom.find("img", "curve")) == 6 and len(dom.find("img", "density")) == 3
    tables = dom.find("table", "leaderboard")
    assert [t["data-data"] for t in tables] == ["8gaussians", "digits"]
    # the first table was sorted by the page's own script: model names descending
    models = re.findall(r"<tr><td data-sort=[^>]*>[^<]*</td><td data-sort=\"([^\"]+)\"", dom_text)
    assert models[:3] == ["vae", "realnvp", "nsf"], models
    assert not dom.find("p", "js-error") and not _console_errors(stderr)

    shot = tmp_path / "shot.png"
    _render(page, tmp_path, [f"--screenshot={shot}", "--window-size=1200,1600"])
    img = plt.imread(shot)
    assert img.shape[:2] == (1600, 1200) and img.std() > 0.05  # not a blank page

    # the checks can fail: a broken image and a script error are both caught
    broken = tmp_path / "broken.html"
    broken.write_text(
        text := page.read_text().replace(
            "<div id='js-errors'></div>",
            "<div id='js-errors'></div><img src='data:image/png;base64,AAAA'>"
            "<script>no_such_function();</script>",
        )
    )
    assert "no_such_function" in text
    dom = _Dom(_render(broken, tmp_path, ["--dump-dom"])[0])
    body = dom.find("body")[0]
    assert int(body["data-images-ok"]) == int(body["data-images"]) - 1
    assert len(dom.find("p", "js-error")) == 1


def test_dgm_report_command_takes_runs_and_compare_dirs(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", *map(str, runs[:2]), "--out", str(out)]) == 0
    assert out.read_text().count("class='run'") == 2
    assert main(["report", str(tmp_path), "--out", str(out)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "r.txt")]) == 2
    # a compare directory: its leaderboard and the runs it lists
    cmp_dir = tmp_path / "cmp"
    (cmp_dir / "runs").mkdir(parents=True)
    shutil.copytree(runs[0], cmp_dir / "runs" / "a")
    board = {
        "command": "dgm compare nsf",
        "tables": [{"data": "8gaussians", "rank_by": None, "rows": [
            {"model": "nsf", "status": "ok", "runs": ["runs/a"], "metrics": {}},
            {"model": "made", "status": "not applicable", "reason": "needs discrete data"}]}],
    }  # fmt: skip
    atomic_write_text(cmp_dir / "leaderboard.json", json.dumps(board))
    found, doc = gather([cmp_dir])
    assert found == [cmp_dir / "runs" / "a"] and doc["command"] == "dgm compare nsf"
    assert main(["report", str(cmp_dir), "--out", str(out)]) == 0
    html = out.read_text()
    assert "not applicable: needs discrete data" in html and html.count("class='run'") == 1


def test_curves_show_no_clock_and_each_kind_of_loss_on_its_own_axes(runs, tmp_path, monkeypatch):
    """The metrics log's elapsed-time keys are not curves, and training losses of different
    families (a flow's NLL, a VAE's negative ELBO) are never drawn on one axes."""
    run = tmp_path / "nsf-copy"
    shutil.copytree(runs[0], run)
    with open(run / "metrics.jsonl", "a") as f:  # clocks other loggers write
        f.write('{"step": 13, "loss": 5.0, "seconds": 2.0, "time": 3.0, "elapsed": 1.0}\n')
    drawn: list[dict] = []

    def capture(panels, **kw):
        drawn.append(panels)
        return figures.curves_figure(panels, **kw)

    monkeypatch.setattr(report, "curves_figure", capture)
    write_report([run, *runs], tmp_path / "report.html")
    names = [name for panels in drawn for curves in panels.values() for name in curves]
    assert names and not [n for n in names if re.search(r"second|time|elapsed|steps_per", n)]
    overlay = drawn[-2]  # the curves of every run on 8gaussians
    losses = {
        title: sorted(curves) for title, curves in overlay.items() if "validation" not in title
    }
    assert losses == {
        "flows: training NLL (nats)": ["nsf nsf-copy", "nsf run-nsf", "realnvp"],
        "vae: training loss": ["vae"],
    }, losses
    val = sorted(overlay["validation NLL (nats)"])  # NLLs in nats: one axes, the kind in the name
    assert val == ["nsf nsf-copy (exact)", "nsf run-nsf (exact)", "realnvp (exact)", "vae (bound)"]


def test_plain_run_leaderboard_fills_the_family_column(runs, tmp_path):
    text = write_report(runs, tmp_path / "report.html").read_text()
    cells = re.findall(r"<tr><td data-sort='[^']*'>[^<]*</td><td data-sort='([^']*)' class=text>"
                       r"[^<]*</td><td data-sort='([^']*)'", text)  # fmt: skip
    assert sorted(cells) == [("made", "autoregressive"), ("nsf", "flows"),
                             ("realnvp", "flows"), ("vae", "vae")], cells  # fmt: skip


_MEASURE = """<script>
window.addEventListener("load", function () {
  var page = document.documentElement, out = {window: page.clientWidth, page: page.scrollWidth};
  out.tables = Array.prototype.map.call(document.querySelectorAll("table.leaderboard"),
    function (t) {
      var cut = Array.prototype.filter.call(t.querySelectorAll("td,th"),
        function (c) { return c.scrollWidth > c.clientWidth + 1; });
      return {right: t.getBoundingClientRect().right, box: t.parentElement.clientWidth,
              width: t.getBoundingClientRect().width, cut: cut.length};
    });
  var pre = document.createElement("pre"); pre.id = "measure";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script></body>"""


def _wide_board() -> dict:
    """A leaderboard with every column and three seeds: the widest a comparison writes."""
    keys = [k for k, _ in COLUMNS] + [f"anomaly_{t}_auroc" for t in ("noise", "flip", "other")]
    stat = {"mean": -1.44e29, "std": 1.9e27, "n": 3}
    rows = [
        {
            "model": m,
            "family": f,
            "status": "ok",
            "rank": i + 1,
            "likelihood_kind": "estimate",
            "metrics": {k: stat for k in keys},
        }
        for i, (m, f) in enumerate(
            [
                ("gated-pixelcnn", "autoregressive"),
                ("score-sde", "diffusion"),
                ("transformer", "autoregressive"),
            ]
        )
    ]
    rows.append(
        {
            "model": "ncsn",
            "family": "diffusion",
            "status": "not applicable",
            "reason": "needs continuous data " * 8,
        }
    )
    rows.append({"model": "gan", "family": "gan", "status": "failed", "reason": "x" * 300})
    return {"command": "dgm compare " + "x" * 300, "tables": [{"data": "digits",
            "rank_by": "fid", "rows": rows}]}  # fmt: skip


@pytest.mark.slow  # four Chromium launches
def test_leaderboard_fits_a_1200px_window(runs, tmp_path):
    """At 1200 px, nothing is wider than the window: measured in the DOM (the page, each
    leaderboard against its box, each cell against its content), and seen in a screenshot whose
    right margin is blank (content cut by the window's edge would show there)."""
    pages = [write_report(runs, tmp_path / "report.html"), tmp_path / "wide.html"]
    pages[1].write_text(render([], _wide_board(), "wide", {}))
    for page in pages:
        measured = tmp_path / f"measured-{page.name}"
        measured.write_text(page.read_text().replace("</body>", _MEASURE))
        dom, _ = _render(measured, tmp_path, ["--dump-dom", "--window-size=1200,900"])
        m = json.loads(html.unescape(re.search(r'<pre id="measure">(.*?)</pre>', dom).group(1)))
        assert m["page"] <= m["window"] <= 1200, m
        assert len(m["tables"]) == 1 + (page.name == "report.html") and all(
            t["right"] <= m["window"] and t["width"] <= t["box"] and t["cut"] == 0
            for t in m["tables"]
        ), m
        shot = tmp_path / f"{page.stem}.png"
        _render(page, tmp_path, [f"--screenshot={shot}", "--window-size=1200,900",
                                 "--hide-scrollbars"])  # fmt: skip
        img = plt.imread(shot)[:, :, :3]
        assert img.shape[:2] == (900, 1200) and img.std() > 0.05
        assert img[:, -8:].min() > 0.95, f"{page.name}: something reaches the window's edge"


def test_writing_the_report_shows_progress_per_run(runs, tmp_path, capsys):
    """Loading each run's model and drawing its figures took 153 s with no output at the end of a
    toy2d comparison (benchmarks/silent_stretches.py); the report is a progress phase."""
    write_report(runs, tmp_path / "r.html", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"dgm: writing the report: 0/{len(runs)} runs"
    write_report(runs, tmp_path / "q.html")  # off by default (the Python face)
    assert capsys.readouterr().err == ""


def test_dgm_report_shows_progress_unless_told_not_to(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", *map(str, runs[:2]), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dgm: writing the report: 0/2 runs" in err
    assert main(["report", *map(str, runs[:2]), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"dgm report: 2 run(s) written to {out}"]

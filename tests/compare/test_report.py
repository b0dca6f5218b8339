"""dgm report: a self-contained HTML page, checked in a real browser (headless Chromium)."""

from __future__ import annotations

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
from dgm.compare import gather, read_records, write_report
from dgm.core.io import atomic_write_text
from dgm.data import load
from dgm.eval.run import evaluate
from dgm.models import get

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
    """Two tiny 2-D runs and one image run, each with its eval.json."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, data, metrics in (
        ("nsf", "8gaussians", None),
        ("realnvp", "8gaussians", None),
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
        atomic_write_text(d / "eval.json", __import__("json").dumps(res))
        out.append(d)
    return out


def test_report_is_self_contained_and_complete(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html")
    text = page.read_text()
    # nothing is fetched: every src is a data URI, no external scripts or styles
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", text)
    dom = _Dom(text)
    assert len(dom.find("article", "run")) == 3
    assert len(dom.find("img", "curve")) == 3 + 2  # one per run + one overlay per dataset
    assert len(dom.find("img", "density")) == 2 and len(dom.find("img", "samples")) == 1
    assert len(dom.find("table", "leaderboard")) == 2  # 8gaussians and digits
    assert "c2st_accuracy" in text and "anomaly_noise_auroc" in text and "model_config" in text
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
    assert len(dom.find("img", "curve")) == 5 and len(dom.find("img", "density")) == 2
    tables = dom.find("table", "leaderboard")
    assert [t["data-data"] for t in tables] == ["8gaussians", "digits"]
    # the first table was sorted by the page's own script: model names descending
    models = re.findall(r"<tr><td data-sort=[^>]*>[^<]*</td><td data-sort=\"([^\"]+)\"", dom_text)
    assert models[:2] == ["realnvp (run-realnvp)", "nsf (run-nsf)"], models
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
    atomic_write_text(cmp_dir / "leaderboard.json", __import__("json").dumps(board))
    found, doc = gather([cmp_dir])
    assert found == [cmp_dir / "runs" / "a"] and doc["command"] == "dgm compare nsf"
    assert main(["report", str(cmp_dir), "--out", str(out)]) == 0
    html = out.read_text()
    assert "not applicable: needs discrete data" in html and html.count("class='run'") == 1

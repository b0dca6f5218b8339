"""Every registered model, through every command that shows a likelihood figure, says what the
figure is in the right direction (issue 24).

Each model is built from its ``example`` config, trained for two steps by ``dgm compare`` (which
trains with ``dgm.train``, evaluates, and writes ``leaderboard.json``/``.md`` and ``report.html``)
on tiny 2-D points and, where it takes them, tiny 8x8 digits; then ``dgm eval --metrics nll``
(``eval.json`` and the printed table) and ``dgm score`` (its stderr line, in nats and in bits/dim)
run on each run directory. The words are checked against the kind of the figure (exact, exact up
to the ODE tolerance, a bound, a stochastic estimate of a bound, an estimate, none): a bound on
log p is a *lower* bound, the NLL and bits/dim from it are *upper* bounds.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re

import numpy as np
import pytest
import torch

import dgm
from dgm.cli.main import main
from dgm.compare import compare
from dgm.data import load
from dgm.eval.likelihood import likelihood_of
from dgm.models import entries

# Opt-in (DGM_WALK=1) for its cost alone: it trains every registered model on two datasets and
# evaluates each (5 passed in 254 s on an idle 2-core machine, over 50 min at load 12), which the
# default run's 10-minute budget cannot hold. `make walk` runs it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DGM_WALK") != "1", reason="the walk over every model is opt-in: DGM_WALK=1"
    ),
]

MODELS = [cls.name for cls in entries()]
# cheaper settings for the tests's tiny data (a loose ODE tolerance, small U-Nets)
CHEAP = {
    "score-sde": {"rtol": 1e-2, "atol": 1e-2, "unet_width": 8, "unet_mults": (1,)},
    "ncsn": {"unet_width": 8, "unet_mults": (1,)},
    "ddpm": {"unet_width": 8},
    "flow-matching": {"unet_width": 8, "unet_mults": (1,)},
    "ebm": {"channels": (8,)},
}
SAMPLING = {"ncsn": {"steps_each": 2}, "score-sde": {"steps": 5}, "ebm": {"steps": 5}}


def _write_data(tmp) -> dict[str, str]:
    g = np.random.default_rng(0)
    points = {s: g.normal(size=(n, 2)) for s, n in (("train", 64), ("val", 16), ("test", 16))}
    np.savez(tmp / "points.npz", **points)
    digits, images = load("digits"), {}
    for s, n in (("train", 64), ("val", 16), ("test", 16)):
        x, y = digits.split(s)
        images[s], images[f"{s}_labels"] = x[:n].numpy().astype(np.int64), y[:n].numpy()
    np.savez(tmp / "images.npz", **images)
    return {"points": str(tmp / "points.npz"), "images": str(tmp / "images.npz")}


def _cli(*args: str) -> tuple[int, str]:
    """``dgm ARGS`` in this process: (exit code, what it wrote on stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One comparison of every model on both datasets, run once for the module: trained and
    judged by a sample metric first, then ``dgm eval --metrics nll`` on every run with a
    likelihood, then the comparison again (its runs and their eval.json reused) to write the
    leaderboard and the report with the likelihood figures."""
    tmp = tmp_path_factory.mktemp("labels")
    data = _write_data(tmp)
    configs = {c.name: {**c.example.config, **CHEAP.get(c.name, {})} for c in entries()}
    kw = {
        "steps": 2,
        "model_configs": configs,
        "sample_options": SAMPLING,
        "eval_options": {"metrics": ["mmd"], "num_samples": 8, "max_test": 8},
        "say": lambda _: None,
    }
    datasets = [data["points"], data["images"]]
    torch.manual_seed(0)
    doc = compare(MODELS, datasets, tmp / "cmp", report=False, **kw)
    tables = {}
    for table in doc["tables"]:
        for row in table["rows"]:
            path = tmp / "cmp" / row["runs"][0] if row["status"] == "ok" else None
            if path is not None and _kind(path) != "none":
                code, tables[path] = _cli("eval", str(path), "--metrics", "nll")
                assert code == 0, tables[path]
    doc = compare(MODELS, datasets, tmp / "cmp", **kw)
    return {"dir": tmp / "cmp", "doc": doc, "data": data, "tmp": tmp, "tables": tables}


def _runs(board):
    """(table, row, run directory) of every model that took the data and trained."""
    for table in board["doc"]["tables"]:
        for row in table["rows"]:
            if row["status"] == "ok":
                yield table, row, board["dir"] / row["runs"][0]


def _kind(run_dir) -> str:
    """The kind of the run's figure, from the model and its preprocessing (not from a label)."""
    run = dgm.api.load_run(run_dir)
    return likelihood_of(run.model, run.preprocessor).kind


def check_words(kind: str, nll_text: str | None = None, log_p_text: str | None = None) -> None:
    """The words of a figure of ``kind``: shown as NLL or bits/dim (``nll_text``) or as log p."""
    for text, side, other in ((nll_text, "upper", "lower"), (log_p_text, "lower", "upper")):
        if text is None:
            continue
        where = f"{kind}: {text!r}"
        if kind in ("bound", "bound_estimate"):
            assert f"{side} bound" in text and f"{other} bound" not in text, where
        else:
            assert "upper bound" not in text and "lower bound" not in text, where
        if kind in ("bound_estimate", "estimate"):
            assert "estimate" in text, where
        if kind in ("exact", "exact_ode"):
            assert "bound" not in text and "estimate" not in text, where
        if kind == "exact_ode":
            assert "exact up to" in text and "ODE" in text, where
        if kind == "none":
            assert "no likelihood" in text, where


def test_every_model_ran_on_the_data_it_takes(board):
    for table in board["doc"]["tables"]:
        rows = {r["model"]: r for r in table["rows"]}
        assert set(rows) == set(MODELS)
        failed = {m: r.get("reason") for m, r in rows.items() if r["status"] == "failed"}
        assert not failed, failed
    ok = {(t["data"], r["model"]) for t, r, _ in _runs(board)}
    assert (board["data"]["images"], "vae") in ok and (board["data"]["points"], "nsf") in ok


def test_eval_table_and_eval_json_say_which_way_the_bound_points(board):
    seen = set()
    for _, row, path in _runs(board):
        kind = _kind(path)
        seen.add(kind)
        if kind == "none":
            continue
        table = board["tables"][path]
        res = json.loads((path / "eval.json").read_text())
        assert res["likelihood_kind"] == kind, (row["model"], res["likelihood"])
        lines = {ln.split("  ")[1].strip(): ln for ln in table.splitlines()[2:] if "  " in ln}
        check_words(kind, nll_text=lines["test NLL (nats)"], log_p_text=lines["likelihood"])
        check_words(kind, nll_text=lines["test bits/dim"], log_p_text=res["likelihood"])
    assert {"exact", "exact_ode", "bound", "bound_estimate", "estimate", "none"} <= seen


def test_score_says_which_way_the_bound_points(board, tmp_path):
    for table, _, path in _runs(board):
        kind = _kind(path)
        x = np.load(table["data"])["test"][:4]
        np.save(tmp_path / "x.npy", x)
        args = ["score", str(path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.npy")]
        code, err = _cli(*args)
        if kind == "none":
            assert code == 2 and "no likelihood" in err
            continue
        assert code == 0, err
        check_words(kind, log_p_text=err.split(" from ")[1])
        code, err = _cli(*args, "--bits-per-dim")
        assert code == 0, err
        check_words(kind, nll_text=err.split(" from ")[1])


def test_leaderboard_says_which_way_the_bound_points(board):
    doc = json.loads((board["dir"] / "leaderboard.json").read_text())
    md = (board["dir"] / "leaderboard.md").read_text()
    sections = {  # one table per dataset, under a heading that names it
        part.splitlines()[0].strip(): part for part in md.split("\n## ")[1:]
    }
    for table in doc["tables"]:
        section = sections[str(table["data"])]
        for row in table["rows"]:
            if row["status"] != "ok":
                continue
            kind = _kind(board["dir"] / row["runs"][0])
            assert row["likelihood_kind"] == kind, row["model"]
            line = next(
                ln
                for ln in section.splitlines()
                if ln.startswith(f"| {row.get('rank') or '—'} | {row['model']} |")
            )
            if kind != "none":
                check_words(kind, nll_text=line, log_p_text=row["likelihood"])
    # the footnotes speak of the NLL too, in the NLL's words
    notes = [ln for ln in md.splitlines() if ln.startswith("NLL figures: ")]
    assert notes and any("upper bound" in n for n in notes)
    assert not any("lower bound" in n for n in notes)


def test_report_says_which_way_the_bound_points(board):
    page = html.unescape((board["dir"] / "report.html").read_text())
    for _, _, path in _runs(board):
        kind = _kind(path)
        rel = path.relative_to(board["dir"])
        article = page.split(f"<small>{rel}</small>")[1].split("</article>")[0]
        # a metric row: <td class='text' title='KEY'>LABEL</td><td>VALUE</td>
        cells = {
            key: (label, value)
            for key, label, value in re.findall(
                r"<td class='text' title='([^']*)'>([^<]*)</td><td>([^<]*)</td>", article
            )
        }
        assert cells, rel
        if kind == "none":
            continue
        check_words(kind, nll_text=cells["test_nll"][0], log_p_text=cells["likelihood"][1])
        check_words(kind, nll_text=cells["test_bpd"][0])

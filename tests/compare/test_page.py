"""The report's HTML from run views: escaped text, data URIs, overlays only where there are curves."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

from dgm.compare.labels import LABELS, is_clock
from dgm.compare.page import _GROUPS, data_uri, render


def _view() -> dict:
    return {
        "path": Path("runs/a"),
        "id": "run-0",
        "config": {"model": "nsf", "data": {"name": "toy<1>"}},
        "notes": ["no eval.json"],
        "figures": [("samples", "samples.png", data_uri(b"\x89PNG fake", "png"))],
        "curve": data_uri(b"<svg/>", "svg"),
        "summary": {"steps": 3},
        "eval": {"mmd2": 0.5, "anomaly_noise_auroc": 0.9, "skipped": {"fid": "no labels"}},
    }


def test_data_uris_hold_the_bytes_with_their_type():
    uri = data_uri(b"<svg/>", "svg")
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"<svg/>"
    assert data_uri(b"x", "png").startswith("data:image/png;base64,")


def test_page_escapes_text_and_shows_every_part_once():
    board = {
        "command": "dgm compare <nsf>",
        "tables": [{"data": "toy<1>", "rank_by": "mmd2", "rows": [
            {"model": "nsf", "family": "flows", "status": "ok", "rank": 1,
             "metrics": {"mmd2": {"mean": 0.5, "std": None, "n": 1}}},
            {"model": "made", "status": "not applicable", "reason": "needs discrete data"}]}],
    }  # fmt: skip
    page = render([_view()], board, "a <title>", {"toy<1>": None})
    assert "<nsf>" not in page and "&lt;nsf&gt;" in page and "a &lt;title&gt;" in page
    assert "toy&lt;1&gt;" in page and "toy<1>" not in page
    assert page.count("class='run'") == 1 and page.count("class='curve'") == 1
    assert "curve overlay" not in page  # no curves on that dataset: no overlay figure
    assert "anomaly detection" in page and "FID*: no labels" in page
    assert "not applicable: needs discrete data" in page
    overlay = (data_uri(b"<svg/>", "svg"), ["validation NLL (nats)", "flows: training NLL (nats)"])
    with_overlay = render([_view()], board, "t", {"toy<1>": overlay})
    assert with_overlay.count("curve overlay") == 1
    assert "panels: validation NLL (nats); flows: training NLL (nats)" in with_overlay


class _Text(HTMLParser):
    """The text a reader sees in the page's tables and lists (not the config, not attributes)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if "pre" not in self.stack and "script" not in self.stack and "style" not in self.stack:
            self.seen.append(data.strip())


def test_headings_and_metric_names_are_readable_not_raw_keys():
    view = _view()
    view["summary"] = {"steps": 3, "train_seconds": 1.5, "test_nll": 2.0, "test_bpd": 1.4}
    view["eval"] = {"c2st_accuracy": 0.6, "mmd2": 0.1, "kl": 0.2, "modes_high_quality": 0.9,
                    "anomaly_noise_auroc": 0.9, "skipped": {"fid": "no labels"}}  # fmt: skip
    stat = {"mean": 0.5, "std": 0.1, "n": 3}
    board = {"tables": [{"data": "toy", "rank_by": "c2st_accuracy", "rows": [
        {"model": "nsf", "family": "flows", "status": "ok", "rank": 1, "metrics": {
            k: stat for k in ("test_nll", "c2st_accuracy", "train_seconds",
                              "anomaly_noise_auroc", "modes_high_quality")}}]}]}  # fmt: skip
    page = render([view], board, "t", {})
    seen = [t for t in _Text(page).seen if t]
    raw = [t for t in seen if re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", t)]
    assert not raw, f"raw keys shown to the reader: {raw}"
    for name in ("test NLL (nats)", "C2ST accuracy (0.5 is best)", "anomaly AUROC: noise",
                 "training time (s)", "AUROC: noise", "FID*: no labels"):  # fmt: skip
        assert name in seen, name
    assert "ranked by |C2ST accuracy − 0.5|" in page
    # the raw key is still there for whoever looks for it: the cell's tooltip
    assert "title='test_nll'" in page and "title='anomaly_noise_auroc'" in page


def test_a_conditional_runs_figures_and_sampling_options_are_on_its_page():
    view = _view()
    view["summary"] = {"steps": 3}
    view["eval"] = {"cond_accuracy": 0.914, "cond_accuracy_stderr": 0.006, "cond_fid": 5.4,
                    "cond_fid_class_mean": 10.0, "cond_model_test_accuracy": 0.947,
                    "sample_options": {"temperature": 0.55}}  # fmt: skip
    page = render([view], {"tables": []}, "t", {})
    seen = [t for t in _Text(page).seen if t]
    for name in ("conditional", "conditional accuracy (feature classifier; estimate)",
                 "per-class FID*, mean over classes", "temperature=0.55", "0.914", "0.947",
                 "the model as a classifier, p(y | x): test accuracy"):  # fmt: skip
        assert name in seen, name
    assert not [t for t in seen if re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", t)]


def test_every_metric_the_page_groups_has_a_name_of_its_own():
    keys = [k for _, group in _GROUPS for k in group]
    assert [k for k in keys if k not in LABELS] == []
    assert is_clock("train_seconds") and is_clock("seconds") and is_clock("time")
    assert not any(is_clock(k) for k in ("loss", "nll", "val_nll", "d_loss", "energy_sq"))

"""The report's HTML from run views: escaped text, data URIs, overlays only where there are curves."""

from __future__ import annotations

import base64
from pathlib import Path

from dgm.compare.page import data_uri, render


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
    assert "anomaly detection" in page and "fid: no labels" in page
    assert "not applicable: needs discrete data" in page
    with_overlay = render([_view()], board, "t", {"toy<1>": data_uri(b"<svg/>", "svg")})
    assert with_overlay.count("curve overlay") == 1

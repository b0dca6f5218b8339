"""A student in a comparison names its teacher as ``teacher="@MODEL"``: the runner resolves it to
that model's run on the same data and seed, and a missing teacher run is one clear error."""

from __future__ import annotations

import pytest

from dgm.compare.runner import _Comparison
from dgm.core.errors import ConfigError


def job(out):
    return _Comparison(
        out=out, steps=10, max_minutes=None, seeds=2, grid={}, cv=0, train_options={},
        model_configs={}, sample_options={}, eval_options={}, data_dir=None, say=print,
    )  # fmt: skip


def test_teacher_reference_resolves_to_the_same_data_and_seed(tmp_path):
    run = tmp_path / "runs" / "8gaussians" / "flow-matching" / "default" / "seed-1"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"")
    cfg = job(tmp_path).resolve_teacher({"teacher": "@flow-matching", "pairs": 8}, "8gaussians", 1)
    assert cfg == {"teacher": str(run.resolve()), "pairs": 8}
    assert job(tmp_path).resolve_teacher({"width": 3}, "8gaussians", 1) == {"width": 3}
    with pytest.raises(ConfigError, match="has no finished run"):
        job(tmp_path).resolve_teacher({"teacher": "@flow-matching"}, "8gaussians", 0)

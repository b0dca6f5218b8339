"""``dgm list`` says what a default instance's likelihood is, on 2-D points and on 8x8 images."""

from __future__ import annotations

from dgm.cli.main import main
from dgm.models import entries


def _listing(capsys) -> dict[str, list[str]]:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    models = out.split("datasets:")[0].splitlines()[1:]
    rows: dict[str, list[str]] = {}
    for line in models:
        if line.startswith("  ") and not line.startswith("   "):
            name = line.split()[0]
            rows[name] = [line]
        else:
            rows[name].append(line.strip())
    return rows


def test_every_model_is_listed_with_its_family_and_a_line_per_kind_of_data(capsys):
    rows = _listing(capsys)
    for cls in entries():
        head, *data = rows[cls.name]
        assert head.split()[1] == cls.family
        assert [d.split(":")[0] for d in data] == ["on 2-D points", "on 8x8 images"]


def test_listed_likelihoods_point_the_right_way(capsys):
    rows = _listing(capsys)
    points, images = (dict((k, v[i]) for k, v in rows.items()) for i in (1, 2))
    assert points["nsf"].endswith("log_prob: exact")
    # a continuous flow on dequantized digits: a lower bound on the discrete log-likelihood
    assert "a lower bound on log p of the discrete data (dequantization bound)" in images["nsf"]
    assert "iwae_bound(k=100): a lower bound on log p" in images["vae"]
    # the EBM's log Z: grid quadrature in 2-D, an AIS estimate on images
    assert "grid quadrature" in points["ebm"] and points["ebm"].endswith(": exact")
    assert "annealed importance sampling" in images["ebm"] and "an estimate of" in images["ebm"]
    # score-sde: the exact trace in 2-D, Hutchinson's estimate on images, each with its tolerance
    assert "exact up to the ODE solver tolerance (dopri5, rtol=0.0001" in points["score-sde"]
    assert "Hutchinson" in images["score-sde"] and "estimate" in images["score-sde"]
    assert "exact log" not in images["score-sde"]
    assert "exact up to the ODE solver tolerance (dopri5, rtol=1e-05, atol=1e-05)" in points["cnf"]
    assert "stochastic estimate of a lower bound" in images["ddpm"]
    assert "no likelihood" in points["gan"] and "not applicable" in points["pixelcnn"]

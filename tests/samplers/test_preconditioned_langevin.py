"""Preconditioned unadjusted Langevin: a stiff Gaussian target that plain Langevin at the same step
leaves for NaN is sampled with the right covariance, and the tethered EBM uses it, so its samples
on strongly correlated data (8x8 digits' neighbouring pixels) stay finite; `dgm sample` refuses to
write samples that are not finite."""

from __future__ import annotations

import numpy as np
import torch

from conftest import one_sentence_error, run_cli
from dgm.core.spec import DataSpec
from dgm.models import build
from dgm.samplers.langevin import ula


def _stiff_gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-D Gaussian with standard deviations 1, 0.3 and 0.03 along rotated axes: ``(cov, C)``
    with ``C`` its Cholesky factor scaled to a largest covariance eigenvalue of 1."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)).double())
    cov = q @ torch.diag(torch.tensor([1.0, 0.09, 0.0009], dtype=torch.float64)) @ q.T
    chol = torch.linalg.cholesky(cov)
    return cov, chol / torch.linalg.matrix_norm(chol, ord=2)


def test_preconditioning_samples_a_stiff_gaussian_that_plain_langevin_cannot():
    cov, C = _stiff_gaussian()
    prec = torch.linalg.inv(cov)

    def score(x: torch.Tensor) -> torch.Tensor:
        return -x @ prec  # (B, 3), the precision matrix is symmetric

    x0 = torch.zeros(4000, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    # h = 0.01 against a Hessian eigenvalue of 1111: plain Langevin's iteration multiplies that
    # direction by |1 - 11.1| > 1 each step
    plain = ula(x0, score, 0.01, 100, generator=g)
    assert not float(plain.abs().max()) < 1e6  # diverged (to 1e98 or beyond, to inf and NaN)
    x = ula(x0, score, 0.01, 600, generator=g, precondition=C)
    assert torch.isfinite(x).all()
    # whitened by cov's Cholesky factor the samples' covariance is I: the stationary covariance
    # of the discretised chain is cov / (1 - h / 2) (M prec = I here), within 1% of cov, so the
    # 10% allowed is sampling error of 4000 draws, not bias
    white = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), x.T, upper=False)
    w = torch.linalg.eigvalsh(torch.cov(white))
    assert torch.all((w > 0.9) & (w < 1.1)), w


def test_precondition_of_the_wrong_size_is_one_sentence():
    try:
        ula(torch.zeros(2, 3), lambda x: -x, 0.1, 1, precondition=torch.eye(2))
    except Exception as e:  # noqa: BLE001 - the message is the interface
        assert "precondition must be (3, 3)" in str(e)
    else:
        raise AssertionError("a (2, 2) preconditioner for 3-D events was accepted")


def _correlated(n: int = 512) -> torch.Tensor:
    """Four pixels that move together (one factor) plus a little independent noise: the tether's
    fitted covariance has three eigenvalues near its ridge, a Hessian eigenvalue near 300."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, generator=g)
    return 0.25 * z.expand(n, 4) + 0.002 * torch.randn(n, 4, generator=g)


def test_a_tethered_ebm_samples_finite_values_on_strongly_correlated_data():
    torch.manual_seed(0)
    x = _correlated()
    m = build("ebm", DataSpec((4,)), objective="nce", tether=1.0, fourier_features=0)
    m.on_train_start(x)
    stiff = 1.0 / torch.linalg.eigvalsh(m.noise.chol @ m.noise.chol.T).min()
    assert stiff > 200  # the case that diverged: step 0.01 against a Hessian eigenvalue > 200
    with m.inference():
        s = m.sample(256)  # the default: unadjusted Langevin at step 0.01
    assert torch.isfinite(s).all()
    # and the chains stay on the data's line: the spread across the four pixels is small
    assert float(s.std(1).median()) < 0.2


def test_dgm_sample_refuses_to_write_samples_that_are_not_finite(tmp_path, capsys):
    x = _correlated().numpy()
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "ebm", "--data", tmp_path / "x.npy", "--out", run, "--steps", "2",
        "--no-progress", "--set", "fourier_features=0",
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "s.npy"
    # a step of 1000 is far past the stable range of any Langevin chain on this energy
    code, _, err = run_cli(
        capsys, "sample", run, "-n", "8", "--out", out, "--set", "step_size=1000"
    )
    line = one_sentence_error(code, err)
    assert "sampler diverged" in line and "of 8 samples" in line
    assert not out.exists()

r"""Tractable noise distributions for noise-contrastive estimation and for initialising MCMC chains.

Both keep their parameters in registered buffers (saved and restored with the model) and are
fitted to data by :meth:`fit`, called from ``EBM.on_train_start``; before fitting they are the
standard normal.

* :class:`GaussianNoise`: :math:`\mathcal{N}(m, S)` with the data mean and covariance plus a ridge
  of ``5%`` of the mean variance, which keeps ``S`` well conditioned when some dimensions hardly
  vary (image corners), so Langevin chains on a tethered energy stay stable;
* :class:`MixtureNoise`: a ``K``-component full-covariance Gaussian mixture fitted by EM
  (scikit-learn's ``GaussianMixture``), or, given class labels (:meth:`MixtureNoise.fit_classes`),
  one component per class: each class's mean and covariance (with the same ridge) weighted by the
  class frequencies, the generative model of quadratic discriminant analysis.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import chi2
from torch import Tensor, nn

__all__ = ["GaussianNoise", "MixtureNoise"]


def _gauss_log_prob(x: Tensor, mean: Tensor, chol: Tensor) -> Tensor:
    """``log N(x; mean, chol chol^T)`` for ``x (B, D)``, ``mean (..., D)``, ``chol (..., D, D)``;
    broadcasts components: returns ``(B, ...)``."""
    d = x.shape[-1]
    diff = x.T[None] - mean.reshape(-1, d)[..., None]  # (K, D, B)
    lo = chol.reshape(-1, d, d)  # (K, D, D)
    # one solve per component with the batch as right-hand sides: no (B, K, D, D) broadcast
    z = torch.linalg.solve_triangular(lo, diff, upper=False)  # (K, D, B)
    log_det = torch.log(torch.diagonal(lo, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    out = -0.5 * (z**2).sum(1).T - log_det - 0.5 * d * math.log(2 * math.pi)  # (B, K)
    return out.reshape(x.shape[0], *mean.shape[:-1])


def _ridge_chol(cov: Tensor) -> Tensor:
    d = cov.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    ridge = 0.05 * cov.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] + 1e-8
    return torch.linalg.cholesky(cov + ridge * eye)


class GaussianNoise(nn.Module):
    """A full-covariance Gaussian over flattened events."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        d = math.prod(event_shape)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("chol", torch.eye(d))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        flat = x.reshape(x.shape[0], -1).to(self.mean)  # (N, D)
        self.mean.copy_(flat.mean(0))
        cov = torch.cov(flat.T).reshape(self.chol.shape) if flat.shape[0] > 1 else self.chol
        self.chol.copy_(_ridge_chol(cov))

    def log_prob(self, x: Tensor) -> Tensor:
        return _gauss_log_prob(x.reshape(x.shape[0], -1), self.mean, self.chol)  # (B,)

    def sample(self, n: int) -> Tensor:
        z = torch.randn(n, self.mean.shape[0], dtype=self.mean.dtype, device=self.mean.device)
        return (self.mean + z @ self.chol.T).reshape(n, *self.event_shape)  # (n, *event)

    def tail_sample(self, n: int, spread: float = 2.0) -> Tensor:
        """Points of the Gaussian widened ``spread`` times, kept where they lie beyond its 99%
        Mahalanobis radius: where data are rare. Of ``n`` draws about 32% are kept in 2-D,
        nearly all in high dimension; shape ``(m, *event)``, ``m <= n``."""
        d = self.mean.shape[0]
        z = spread * torch.randn(n, d, dtype=self.mean.dtype, device=self.mean.device)
        z = z[z.norm(dim=1) > math.sqrt(chi2.ppf(0.99, d))]  # (m, D)
        return (self.mean + z @ self.chol.T).reshape(z.shape[0], *self.event_shape)


class MixtureNoise(nn.Module):
    """A ``K``-component Gaussian mixture over flattened events (full covariances)."""

    def __init__(self, event_shape: tuple[int, ...], components: int) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        d = math.prod(event_shape)
        self.register_buffer("logits", torch.zeros(components))
        self.register_buffer("means", torch.zeros(components, d))
        self.register_buffer("chols", torch.eye(d).repeat(components, 1, 1))

    @torch.no_grad()
    def fit(self, x: Tensor, seed: int = 0) -> None:
        from sklearn.mixture import GaussianMixture

        flat = x.reshape(x.shape[0], -1).double().cpu().numpy()
        k = min(self.logits.shape[0], flat.shape[0])
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed)
        gm.fit(flat)
        ref = self.means
        w = torch.full_like(self.logits, -math.inf)
        w[:k] = torch.as_tensor(gm.weights_).log().to(ref)
        self.logits.copy_(w)
        self.means[:k] = torch.as_tensor(gm.means_).to(ref)
        self.chols[:k] = _ridge_chol(torch.as_tensor(gm.covariances_).to(ref))

    @torch.no_grad()
    def fit_classes(self, x: Tensor, y: Tensor) -> None:
        """One component per class ``0..K-1``: the class's mean and covariance (ridge as
        :class:`GaussianNoise`), weighted by its frequency in ``y``. A class with fewer than two
        examples gets the pooled mean and covariance, and weight zero if it has none."""
        flat = x.reshape(x.shape[0], -1).to(self.means)  # (N, D)
        y = y.reshape(-1).to(flat.device).long()  # (N,)
        k = self.logits.shape[0]
        if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < k:
            raise ValueError(f"labels must lie in [0, {k - 1}], got {int(y.min())}..{int(y.max())}")
        counts = torch.bincount(y, minlength=k).to(self.means)  # (K,)
        pooled = torch.cov(flat.T).reshape(self.chols.shape[1:]) if len(flat) > 1 else None
        for c in range(k):
            xc = flat[y == c]  # (N_c, D)
            enough = xc.shape[0] > 1
            self.means[c] = xc.mean(0) if enough else flat.mean(0)
            cov = torch.cov(xc.T).reshape(pooled.shape) if enough else pooled  # type: ignore
            self.chols[c] = _ridge_chol(cov) if cov is not None else self.chols[c]
        self.logits.copy_(torch.log(counts / counts.sum().clamp_min(1)))

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log pi_k + log N(x; m_k, S_k)``, shape ``(B, K)``: the joint of component and point
        (``log_prob`` is its logsumexp)."""
        comp = _gauss_log_prob(x.reshape(x.shape[0], -1), self.means, self.chols)  # (B, K)
        return comp + torch.log_softmax(self.logits, 0)

    def component_log_prob_at(self, x: Tensor, k: Tensor) -> Tensor:
        """``log pi_k + log N(x; m_k, S_k)`` of each point's own component ``k (B,)``, shape
        ``(B,)``: one solve per component present, not all ``K`` for every point."""
        flat = x.reshape(x.shape[0], -1)  # (B, D)
        k = k.to(flat.device).long()
        log_pi = torch.log_softmax(self.logits, 0)  # (K,)
        out = flat.new_zeros(flat.shape[0])  # (B,)
        for c in k.unique().tolist():
            mine = k == c
            lp = _gauss_log_prob(flat[mine], self.means[c], self.chols[c])  # (B_c,)
            out = out.index_put((mine.nonzero().flatten(),), lp + log_pi[c])
        return out

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(x), -1)  # (B,)

    def sample(self, n: int, components: Tensor | None = None) -> Tensor:
        """``n`` draws of the mixture, or of the given ``components (n,)`` (long)."""
        k = components
        if k is None:
            k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)  # (n,)
        k = k.to(self.means.device).long()
        z = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, device=self.means.device)
        x = torch.empty_like(z)  # (n, D); by component: no (n, D, D) gather of the factors
        for c in k.unique().tolist():
            mine = k == c
            x[mine] = self.means[c] + z[mine] @ self.chols[c].T
        return x.reshape(n, *self.event_shape)

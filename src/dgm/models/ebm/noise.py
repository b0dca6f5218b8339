r"""Tractable noise distributions for noise-contrastive estimation and for initialising MCMC chains.

Both keep their parameters in registered buffers (saved and restored with the model) and are
fitted to data by :meth:`fit`, called from ``EBM.on_train_start``; before fitting they are the
standard normal.

* :class:`GaussianNoise`: :math:`\mathcal{N}(m, S)` with the data mean and covariance plus a ridge
  of ``5%`` of the mean variance, which keeps ``S`` well conditioned when some dimensions hardly
  vary (image corners), so Langevin chains on a tethered energy stay stable;
* :class:`MixtureNoise`: a ``K``-component full-covariance Gaussian mixture fitted by EM
  (scikit-learn's ``GaussianMixture``).
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
    diff = x[:, None, :] - mean.reshape(-1, d)[None]  # (B, K, D)
    lo = chol.reshape(-1, d, d)  # (K, D, D)
    z = torch.linalg.solve_triangular(lo[None], diff[..., None], upper=False)[..., 0]  # (B, K, D)
    log_det = torch.log(torch.diagonal(lo, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    out = -0.5 * (z**2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)  # (B, K)
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

    def log_prob(self, x: Tensor) -> Tensor:
        comp = _gauss_log_prob(x.reshape(x.shape[0], -1), self.means, self.chols)  # (B, K)
        return torch.logsumexp(comp + torch.log_softmax(self.logits, 0), -1)  # (B,)

    def sample(self, n: int) -> Tensor:
        k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)  # (n,)
        z = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, device=self.means.device)
        x = self.means[k] + (self.chols[k] @ z[..., None])[..., 0]  # (n, D)
        return x.reshape(n, *self.event_shape)

r"""Score-matching objectives for an energy ``E``: the model score is :math:`s(x) = -\nabla_x E(x)`.

All return one value per example ``(B,)``; the training loss is their mean. They never touch the
normaliser :math:`Z`, which does not depend on :math:`x`.

* **Exact score matching** (Hyvärinen 2005, "Estimation of Non-Normalized Statistical Models by
  Score Matching", JMLR 6): integrating the Fisher divergence by parts,

  .. math::

      \tfrac12 \mathbb{E}_p |s(x) - \nabla \log p(x)|^2
      = \mathbb{E}_p\big[\tfrac12 |s(x)|^2 + \operatorname{tr} \nabla_x s(x)\big] + C_p,

  with :math:`C_p = \tfrac12 \mathbb{E}_p |\nabla \log p|^2` independent of the model. The trace
  needs ``D`` extra backward passes: for low dimensions only.
* **Sliced score matching** (Song, Garg, Shi & Ermon 2019, UAI, arXiv:1905.07088), variance-reduced
  form: :math:`\mathbb{E}_{p, v}\big[v^\top \nabla_x (v^\top s(x)) + \tfrac12 |s(x)|^2\big]` with
  any :math:`v` of :math:`\mathbb{E}[v v^\top] = I`; here orthogonal slices of length
  :math:`\sqrt D` (lower variance than :math:`\mathcal{N}(0, I)`); one extra backward pass per
  projection.
* **Denoising score matching** (Vincent 2011, "A Connection Between Score Matching and Denoising
  Autoencoders"): with :math:`\tilde x = x + \sigma\epsilon`,
  :math:`\tfrac12 \mathbb{E}|\sigma s(\tilde x) + \epsilon|^2` (the usual
  :math:`\tfrac12|s(\tilde x) - (x - \tilde x)/\sigma^2|^2` times :math:`\sigma^2`). It fits the
  score of the *noised* density :math:`p * \mathcal{N}(0, \sigma^2 I)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["dsm_loss", "model_score", "slice_directions", "sm_loss", "ssm_loss"]

Energy = Callable[[Tensor], Tensor]


def model_score(energy: Energy, x: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """``(x with requires_grad, s(x) = -dE/dx)``; the graph is kept for losses on the score."""
    x = x.detach().requires_grad_(True)
    e = energy(x)  # (B,)
    (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)  # (B, *event)
    return x, -g


def sm_loss(energy: Energy, x: Tensor) -> Tensor:
    r"""Hyvärinen's objective :math:`\tfrac12|s|^2 + \operatorname{tr}\nabla s`, exact trace."""
    with torch.enable_grad():
        x, s = model_score(energy, x)
        b = x.shape[0]
        s_flat = s.reshape(b, -1)  # (B, D)
        trace = torch.zeros(b, dtype=x.dtype, device=x.device)
        for i in range(s_flat.shape[1]):
            (row,) = torch.autograd.grad(s_flat[:, i].sum(), x, create_graph=True)
            trace = trace + row.reshape(b, -1)[:, i]  # (B,)
        return 0.5 * (s_flat**2).sum(-1) + trace


def ssm_loss(energy: Energy, x: Tensor, n_projections: int = 1) -> Tensor:
    r"""Sliced score matching (variance-reduced), averaged over ``n_projections`` directions per
    example, drawn as orthogonal slices (:func:`slice_directions`)."""
    with torch.enable_grad():
        x, s = model_score(energy, x)
        b = x.shape[0]
        sq = 0.5 * (s.reshape(b, -1) ** 2).sum(-1)  # (B,)
        total = torch.zeros(b, dtype=x.dtype, device=x.device)
        for v in slice_directions(x, n_projections):  # (B, *event) each
            (gv,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)  # (B, *event)
            total = total + (gv * v).reshape(b, -1).sum(-1)
        return total / n_projections + sq


def slice_directions(x: Tensor, n: int) -> Tensor:
    r"""``n`` directions per example, ``(n, B, *event)``, each uniform on the sphere of radius
    :math:`\sqrt D` (so :math:`\mathbb E[v v^\top] = I` and the sliced trace is unbiased), drawn
    in blocks of up to ``D`` mutually orthogonal ones (a Haar-random orthonormal frame). Within a
    block the estimates of :math:`\operatorname{tr}\nabla s` are negatively correlated, and a
    full block of ``D`` gives the trace exactly: in 2-D, 4 directions make ssm exact score
    matching (Gaussian directions left ssm on rings at KL 0.097-0.158 by seed, issue 24)."""
    b, d = x.shape[0], x[0].numel()
    m = min(n, d)
    blocks = -(-n // m)
    g = torch.randn(b * blocks, d, m, dtype=x.dtype, device=x.device)
    q, r = torch.linalg.qr(g)  # (B * blocks, D, m): orthonormal columns
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar, not QR's bias
    v = q.reshape(b, blocks, d, m).permute(1, 3, 0, 2).reshape(blocks * m, b, d)[:n]
    return (d**0.5 * v).reshape(n, *x.shape)


def dsm_loss(energy: Energy, x: Tensor, sigma: float) -> Tensor:
    r"""Denoising score matching at noise level ``sigma``: :math:`\tfrac12|\sigma s(x + \sigma
    \epsilon) + \epsilon|^2`."""
    with torch.enable_grad():
        eps = torch.randn_like(x)  # (B, *event)
        _, s = model_score(energy, x + sigma * eps)
        return 0.5 * ((sigma * s + eps).reshape(x.shape[0], -1) ** 2).sum(-1)

r"""Contrastive objectives for an energy ``E``: contrastive divergence and noise-contrastive
estimation (which, with a flow as the noise, is flow-contrastive estimation).

* **Contrastive divergence** (Hinton 2002; persistent CD: Tieleman 2008; with Langevin negatives
  and a replay buffer: Du & Mordatch 2019). The log-likelihood gradient is
  :math:`-\nabla_\theta \mathbb{E}_{data} E + \nabla_\theta \mathbb{E}_{p_\theta} E`; negatives
  :math:`x^-` from a short MCMC run stand in for model samples, so the surrogate loss is

  .. math::

      \mathcal{L} = \overline{E(x^+)} - \overline{E(x^-)}
          + \alpha\, \overline{E(x^+)^2 + E(x^-)^2},

  the last term (Du & Mordatch 2019, §3.3) keeping energies near zero for stability.
* **Noise-contrastive estimation** (Gutmann & Hyvärinen 2010, AISTATS): with a learned log
  normaliser :math:`c`, :math:`\log p_m(x) = -E(x) - c`, noise :math:`q` of known density and
  :math:`\nu` noise samples per data point, logistic regression of data against noise on
  :math:`G(x) = \log p_m(x) - \log \nu q(x)`:

  .. math::

      \mathcal{L} = -\mathbb{E}_{data} \log\sigma(G(x)) - \nu\, \mathbb{E}_q \log\sigma(-G(y)).

  Its minimiser over :math:`(\theta, c)` is :math:`p_m = p_{data}` with :math:`c = \log Z`
  when the model family contains the data density.
* **Flow-contrastive estimation** (Gao, Nijkamp, Kingma, Xu, Dai & Wu 2020, CVPR,
  arXiv:1912.00589): the same value function :math:`V = -\mathcal{L}` (with :math:`\nu = 1`), the
  EBM maximising it and a flow noise :math:`q_\alpha` minimising it (a GAN-like game whose
  equilibrium for the flow is :math:`q = p_{data}`).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cd_loss", "nce_loss"]


def cd_loss(e_pos: Tensor, e_neg: Tensor, alpha: float = 0.0) -> dict[str, Tensor]:
    """Contrastive-divergence surrogate from energies of data ``(B,)`` and negatives ``(M,)``."""
    loss = e_pos.mean() - e_neg.mean()
    reg = (e_pos**2).mean() + (e_neg**2).mean()
    if alpha > 0:
        loss = loss + alpha * reg
    return {
        "loss": loss,
        "energy_data": e_pos.mean().detach(),
        "energy_negative": e_neg.mean().detach(),
        "energy_sq": reg.detach(),
    }


def nce_loss(
    log_model_data: Tensor,
    log_noise_data: Tensor,
    log_model_noise: Tensor,
    log_noise_noise: Tensor,
    nu: float,
) -> dict[str, Tensor]:
    """NCE logistic loss from (unnormalised-with-c) model and noise log-densities at the data
    ``(B,)`` and at the noise samples ``(nu * B,)``."""
    log_nu = math.log(nu)
    g_data = log_model_data - log_noise_data - log_nu  # (B,)
    g_noise = log_model_noise - log_noise_noise - log_nu  # (M,)
    loss = -F.logsigmoid(g_data).mean() - nu * F.logsigmoid(-g_noise).mean()
    acc = 0.5 * ((g_data > 0).float().mean() + (g_noise < 0).float().mean())
    return {"loss": loss, "classifier_accuracy": acc.detach()}

r"""The probability-flow likelihood shared by ``score-sde`` and ``flow-matching`` (and the models
built on flow matching): a deterministic ODE between the data and a standard normal is a
continuous normalising flow, so by the instantaneous change of variables (Chen et al. 2018,
arXiv:1806.07366; Song et al. 2021, arXiv:2011.13456, section 4.3)

.. math::

    \log p(x) = \log N(z(t_{noise}); 0, I) + \int_{t_{data}}^{t_{noise}}
        \nabla \cdot f(z(t), t)\, dt + \log |\det \partial z / \partial x|,

solved with dopri5 (the model's ``rtol``, ``atol``) for the augmented state ``(z, int div)`` from
the data end ``t_data`` to the noise end ``t_noise`` of the model's field ``f``. Score SDE runs
from ``t_eps`` to 1, flow matching from 1 to 0: the formula is the same, only the ends differ.

The divergence is exact (``D`` vector-Jacobian products) with ``trace="exact"`` or, with
``"auto"``, for data of at most :attr:`ProbabilityFlow.exact_trace_max_dims` dimensions;
otherwise it is Hutchinson's estimator with one probe per example fixed along the trajectory (as
FFJORD, Grathwohl et al. 2019), which makes the figure an **unbiased estimate** of ``log p``
(``log_prob_estimate``), neither exact nor a bound. Exact means exact up to the solver's
tolerance, which the likelihood's name records.

A model mixes :class:`ProbabilityFlow` in before its :class:`~dgm.models.diffusion.base.
DiffusionBase` base, calls :meth:`ProbabilityFlow.init_trace` in ``__init__`` and defines
:meth:`pf_field` and :attr:`pf_span`; its config is (a subclass of) :class:`ODELikelihoodConfig`,
which carries ``trace``, ``hutchinson_noise``, ``rtol`` and ``atol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from dgm.core.errors import ConfigError
from dgm.core.likelihood import Likelihood
from dgm.models.diffusion.base import NetConfig
from dgm.samplers.ode import divergence_exact, divergence_hutchinson, odeint

__all__ = ["ODELikelihoodConfig", "ProbabilityFlow"]


@dataclass
class ODELikelihoodConfig(NetConfig):
    """The probability-flow likelihood's options, shared by every model that mixes in
    :class:`ProbabilityFlow` (network fields: :class:`~dgm.models.diffusion.base.NetConfig`).

    Attributes:
        trace: ``"auto"`` (the exact divergence up to the model's ``exact_trace_max_dims``
            dimensions: 8 for score-sde, 64 for the flow-matching models; Hutchinson above),
            ``"exact"`` or ``"hutchinson"``.
        hutchinson_noise: ``"rademacher"`` or ``"gaussian"`` probe vectors.
        rtol, atol: tolerances of the dopri5 solve of the likelihood (and of dopri5 sampling).
    """

    trace: Literal["auto", "exact", "hutchinson"] = "auto"
    hutchinson_noise: Literal["rademacher", "gaussian"] = "rademacher"
    rtol: float = 1e-5
    atol: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.rtol > 0 and self.atol > 0):
            raise ConfigError(f"rtol and atol must be positive, not {self.rtol}, {self.atol}")


class ProbabilityFlow:
    """Mixin: ``log_prob`` through the probability-flow ODE (see the module docstring)."""

    #: ``trace="auto"`` uses the exact divergence up to this many dimensions
    exact_trace_max_dims: ClassVar[int] = 8
    #: set by :meth:`init_trace`
    exact_trace: bool = True

    # what the model defines -------------------------------------------------------------
    def pf_field(self, flat: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The ODE's right-hand side on flat model-space states ``(B, D)`` at a 0-dim time, for
        network labels ``y`` (a conditional model; the null class is the unconditional one)."""
        raise NotImplementedError

    @property
    def pf_span(self) -> tuple[float, float]:
        """``(t_data, t_noise)``: where the ODE starts from the data and where it reaches noise."""
        raise NotImplementedError

    def pf_prior_log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; 0, I)`` of flat ``(B, D)`` end points, ``(B,)``."""
        d = z.shape[1]
        return -0.5 * z.square().sum(1) - 0.5 * d * math.log(2 * math.pi)

    # the shared machinery --------------------------------------------------------------------
    def init_trace(self) -> None:
        """Decide once, from the config and the data's size, whether the trace is exact."""
        trace = self.config.trace  # type: ignore[attr-defined]
        self.exact_trace = trace == "exact" or (
            trace == "auto" and self.num_dims <= self.exact_trace_max_dims  # type: ignore[attr-defined]
        )

    @property
    def exact_likelihood(self) -> bool:  # type: ignore[override]
        """With the exact trace (up to the ODE tolerance); Hutchinson's is an estimate."""
        return self.exact_trace

    @property
    def likelihood_bound(self) -> str | None:  # type: ignore[override]
        """``"log_prob_estimate"`` with Hutchinson's trace (honestly named), else ``None``."""
        return None if self.exact_trace else "log_prob_estimate"

    def probability_flow(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Solve the flow from the data to the noise end (of the conditional model given labels
        ``y``; without them, of a conditional model's unconditional branch).

        Returns ``(z_noise (B, D), int div (B,), log_det (B,))`` so that
        ``log p(x) = log N(z_noise; 0, I) + int div + log_det``.
        """
        x = self.check_input(x)  # type: ignore[attr-defined]
        z, log_det = self.to_model_space(x.to(self.dtype))  # type: ignore[attr-defined]
        B = z.shape[0]
        flat = z.reshape(B, -1)  # (B, D)
        labels = self.net_labels(y, B)  # type: ignore[attr-defined]
        probe = None
        if not self.exact_trace:
            if self.config.hutchinson_noise == "gaussian":  # type: ignore[attr-defined]
                probe = torch.randn_like(flat)
            else:
                probe = torch.randint(0, 2, flat.shape, device=flat.device).to(flat) * 2 - 1

        def func(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                zf = state[0].detach().requires_grad_(True)
                f = self.pf_field(zf, t, labels)
                if probe is None:
                    div = divergence_exact(f, zf)
                else:
                    div = divergence_hutchinson(f, zf, probe)
            return f.detach(), div.detach()

        c = self.config  # type: ignore[attr-defined]
        t_data, t_noise = self.pf_span
        zero = torch.zeros(B, dtype=flat.dtype, device=flat.device)
        z_end, delta = odeint(func, (flat, zero), t_data, t_noise, rtol=c.rtol, atol=c.atol)
        return z_end, delta, log_det

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``log p(x)`` in nats ``(B,)`` by the probability-flow ODE (exact trace up to the
        solver's tolerance, or Hutchinson's estimate: see the module docstring); ``log p(x | y)``
        given labels ``y``, and without them a conditional model's unconditional ``log p(x)``."""
        z_end, delta, log_det = self.probability_flow(x, y)
        return self.pf_prior_log_prob(z_end) + delta + log_det

    def log_prob_estimate(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The Hutchinson estimate of ``log p(x)`` (the same computation as :meth:`log_prob`)."""
        return self.log_prob(x, y)

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """Exact up to the dopri5 tolerance with the exact trace; with Hutchinson's trace an
        unbiased estimate of ``log p``, neither exact nor a bound."""
        if bound_options:
            raise ConfigError(f"model {self.name!r} takes no likelihood options")  # type: ignore[attr-defined]
        c = self.config  # type: ignore[attr-defined]
        solver = f"dopri5, rtol={c.rtol:g}, atol={c.atol:g}"
        if self.exact_trace:
            return Likelihood("exact_ode", "log_prob", "probability-flow ODE, exact trace", solver)
        what = "probability-flow ODE, Hutchinson trace estimator"
        return Likelihood("estimate", "log_prob_estimate", what, solver, unbiased=True)

    def log_likelihood(
        self, x: Tensor, y: Tensor | None = None, **bound_options: Any
    ) -> tuple[Tensor, Likelihood]:
        info = self.likelihood_info(**bound_options)
        return self.log_prob(x, y if self.conditional else None), info  # type: ignore[attr-defined]

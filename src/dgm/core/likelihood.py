"""What a likelihood figure is, and the words that say so: one place for every command.

A model's likelihood figure has a *kind* (:data:`KINDS`):

=================  =========================================================================
``exact``          log p itself (up to float error, or a quadrature's error)
``exact_ode``      log p of a continuous-time flow, exact up to the ODE solver's error
``bound``          a lower bound on log p (an ELBO, an IWAE bound, a dequantization bound),
                   so the NLL and bits/dim shown are *upper* bounds
``bound_estimate`` a stochastic (unbiased) estimate of such a bound from a few random terms
                   (DDPM's bound over 32 of 999 steps): its standard error matters
``estimate``       an estimate that is neither exact nor a bound (an AIS estimate of log Z)
``none``           no likelihood: the model is judged by its samples
=================  =========================================================================

The figure is shown as one of three quantities (:data:`QUANTITIES`): ``"log p"``, ``"NLL"`` or
``"bits/dim"``; a lower bound on log p is an upper bound on the other two. :func:`describe` gives
the words for a kind and a quantity, and every label dgm prints is made from it, so no two
commands can disagree. A continuous model scored on dequantized discrete data gives an expected
lower bound on the discrete log-likelihood (Theis et al., 2016): :func:`on_dequantized_data` turns
its kind into the kind of that figure.

>>> describe("bound", "NLL")
'an upper bound on the NLL'
>>> describe("bound", "log p")
'a lower bound on log p'
>>> describe(on_dequantized_data("exact"), "bits/dim", discrete=True)
'an upper bound on the bits/dim of the discrete data (dequantization bound)'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dgm.core.errors import DgmError

__all__ = ["KINDS", "QUANTITIES", "Likelihood", "brief", "describe", "on_dequantized_data"]

KINDS = ("exact", "exact_ode", "bound", "bound_estimate", "estimate", "none")
QUANTITIES = ("log p", "NLL", "bits/dim")

# the kind of a figure when the model's density is evaluated at dequantized discrete data:
# E_u[log q(x + u)] <= log P(x), so exact densities become bounds, and an unbiased estimate of a
# density (Hutchinson's trace) becomes an unbiased estimate of that bound
_DEQUANTIZED = {
    "exact": "bound",
    "exact_ode": "bound",
    "bound": "bound",
    "bound_estimate": "bound_estimate",
    "estimate": "estimate",
    "none": "none",
}


def _check(kind: str, quantity: str) -> None:
    if kind not in KINDS:
        raise DgmError(f"unknown likelihood kind {kind!r}; the kinds are: {', '.join(KINDS)}")
    if quantity not in QUANTITIES:
        raise DgmError(f"unknown quantity {quantity!r}; choose from: {', '.join(QUANTITIES)}")


def on_dequantized_data(kind: str, unbiased: bool = False) -> str:
    """The kind of a figure computed on dequantized discrete data from a density of ``kind``.

    An ``estimate`` that is ``unbiased`` (a Hutchinson trace) becomes a ``bound_estimate``; a
    biased one (AIS) stays an ``estimate``.

    >>> on_dequantized_data("exact"), on_dequantized_data("estimate", unbiased=True)
    ('bound', 'bound_estimate')
    """
    _check(kind, "log p")
    if kind == "estimate" and unbiased:
        return "bound_estimate"
    return _DEQUANTIZED[kind]


def describe(
    kind: str, quantity: str, *, discrete: bool = False, solver: str = "", unbiased: bool = False
) -> str:
    """The words for a figure of ``kind`` shown as ``quantity`` (``"log p"``, ``"NLL"`` or
    ``"bits/dim"``).

    ``discrete``: the figure is about discrete data reached through dequantization; ``solver``:
    for ``exact_ode``, the solver and its tolerance (``"dopri5, rtol=1e-05, atol=1e-05"``);
    ``unbiased``: an ``estimate`` whose expectation is the true value.

    >>> describe("exact_ode", "NLL", solver="dopri5, rtol=0.0001, atol=0.0001")
    'exact up to the ODE solver tolerance (dopri5, rtol=0.0001, atol=0.0001)'
    >>> describe("bound_estimate", "NLL")
    'a stochastic estimate of an upper bound on the NLL'
    """
    _check(kind, quantity)
    what = {"log p": "log p", "NLL": "the NLL", "bits/dim": "the bits/dim"}[quantity]
    if discrete:
        what += " of the discrete data"
    side = "lower" if quantity == "log p" else "upper"
    tail = " (dequantization bound)" if discrete else ""
    ode = f"the ODE solver tolerance ({solver})" if solver else "the ODE solver tolerance"
    a_side = "an upper" if side == "upper" else "a lower"
    if kind == "exact":
        return "exact"
    if kind == "exact_ode":
        return f"exact up to {ode}"
    if kind == "none":
        return "no likelihood"
    if kind == "bound":
        words = f"{a_side} bound on {what}{tail}"
    elif kind == "bound_estimate":
        words = f"a stochastic estimate of {a_side} bound on {what}{tail}"
    else:
        words = f"an {'unbiased ' if unbiased else ''}estimate of {what}, neither exact nor a bound"
    return words + (f", up to {ode}" if solver else "")


def brief(kind: str, quantity: str) -> str:
    """A few words for a table cell: the direction of :func:`describe` without the details.

    >>> brief("bound", "NLL"), brief("bound", "log p"), brief("exact_ode", "bits/dim")
    ('upper bound on NLL', 'lower bound on log p', 'exact up to ODE tolerance')
    """
    _check(kind, quantity)
    side = "lower" if quantity == "log p" else "upper"
    return {
        "exact": "exact",
        "exact_ode": "exact up to ODE tolerance",
        "bound": f"{side} bound on {quantity}",
        "bound_estimate": f"estimate of {'an' if side == 'upper' else 'a'} {side} bound on {quantity}",
        "estimate": f"estimate of {quantity}",
        "none": "no likelihood",
    }[kind]


@dataclass(frozen=True)
class Likelihood:
    """What a likelihood figure is: its ``kind`` (one of :data:`KINDS`), the ``method`` that
    computed it (``"log_prob"``, ``"iwae_bound(k=100)"``), a ``detail`` of how (``"32 of 999
    middle terms, one draw each"``), the ``solver`` of an ``exact_ode`` figure, and whether it is
    about ``discrete`` data reached through dequantization.

    ``str()`` is the name reports show; :meth:`describe` the words for a quantity.

    >>> str(Likelihood("bound", "iwae_bound(k=100)"))
    'iwae_bound(k=100): a lower bound on log p'
    >>> Likelihood("exact", "log_prob").dequantized().describe("NLL")
    'an upper bound on the NLL of the discrete data (dequantization bound)'
    """

    kind: str
    method: str
    detail: str = ""
    solver: str = ""
    discrete: bool = False
    #: an ``estimate`` that is unbiased for log p (a Hutchinson trace), not a biased one (AIS)
    unbiased: bool = False

    def __post_init__(self) -> None:
        _check(self.kind, "log p")

    def describe(self, quantity: str) -> str:
        """The words for this figure shown as ``quantity`` (see :func:`describe`)."""
        return describe(
            self.kind, quantity, discrete=self.discrete, solver=self.solver, unbiased=self.unbiased
        )

    def dequantized(self) -> Likelihood:
        """The same method evaluated on dequantized discrete data (see the module docstring)."""
        kind = on_dequantized_data(self.kind, self.unbiased)
        return Likelihood(kind, self.method, self.detail, self.solver, True, self.unbiased)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Likelihood:
        """Back from ``dataclasses.asdict`` (the ``likelihood_info`` of a results file)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in names})

    def __str__(self) -> str:
        head = self.method + (f" ({self.detail})" if self.detail else "")
        return f"{head}: {self.describe('log p')}"

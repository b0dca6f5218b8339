"""The words of every likelihood kind and quantity come from one function, in the right direction."""

from __future__ import annotations

import pytest

from dgm.core.errors import DgmError
from dgm.core.likelihood import KINDS, QUANTITIES, Likelihood, brief, describe, on_dequantized_data


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_a_bound_on_log_p_is_lower_and_on_the_nll_upper(kind, quantity):
    words, short = describe(kind, quantity), brief(kind, quantity)
    for text in (words, short):
        if kind in ("bound", "bound_estimate"):
            side = "lower" if quantity == "log p" else "upper"
            other = "upper" if side == "lower" else "lower"
            assert f"{side} bound" in text and f"{other} bound" not in text
        else:
            assert "upper bound" not in text and "lower bound" not in text
        if kind in ("exact", "exact_ode"):
            assert "bound" not in text and "estimate" not in text
        if kind in ("estimate", "bound_estimate"):
            assert "estimate" in text


def test_dequantization_makes_exact_figures_upper_bounds_on_the_discrete_nll():
    assert on_dequantized_data("exact") == on_dequantized_data("exact_ode") == "bound"
    assert on_dequantized_data("estimate") == "estimate"  # AIS: biased, no bound
    assert on_dequantized_data("estimate", unbiased=True) == "bound_estimate"  # Hutchinson
    lik = Likelihood("exact_ode", "log_prob", "exact trace", "dopri5, rtol=1e-05, atol=1e-05")
    assert (
        lik.describe("NLL")
        == "exact up to the ODE solver tolerance (dopri5, rtol=1e-05, atol=1e-05)"
    )
    deq = lik.dequantized()
    assert deq.kind == "bound" and deq.describe("NLL").startswith(
        "an upper bound on the NLL of the discrete data (dequantization bound), up to the ODE"
    )
    assert str(deq).startswith("log_prob (exact trace): a lower bound on log p of the discrete")
    assert Likelihood.from_dict({**deq.__dict__, "extra": 1}) == deq


def test_unknown_kinds_and_quantities_are_one_sentence():
    with pytest.raises(DgmError, match="unknown likelihood kind 'lower'"):
        describe("lower", "NLL")
    with pytest.raises(DgmError, match="unknown quantity 'nats'"):
        describe("bound", "nats")

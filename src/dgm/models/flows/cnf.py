r"""``cnf``: a continuous normalizing flow, FFJORD (Grathwohl et al. 2019).

Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form Continuous Dynamics for
Scalable Reversible Generative Models", ICLR 2019, arXiv:1810.01367; Chen, Rubanova, Bettencourt
& Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018.

A data point ``x = z(0)`` flows along :math:`\dot z = f_\theta(z, t)` (an MLP that also takes
``t``) to ``z(T)``, compared with a standard normal. By the instantaneous change of variables
:math:`\frac{d}{dt} \log p(z(t)) = -\operatorname{tr}(\partial f / \partial z)`,

.. math::

    \log p(x) = \log \mathcal{N}(z(T); 0, I) + \int_0^T \operatorname{tr}
    \Big(\frac{\partial f_\theta}{\partial z}(z(t), t)\Big)\, dt,

solved as one ODE on the state ``(z, \int tr)`` by :func:`dgm.samplers.ode.odeint`. Sampling
integrates ``z ~ N(0, I)`` backward from ``T`` to ``0``.

The trace: :meth:`CNF.log_prob` always uses the exact trace (``D`` vector-Jacobian products per
function evaluation), so it is the exact log-density of the continuous flow up to the ODE
solver's error (``eval_method``, ``rtol``/``atol``; the default dopri5 at 1e-5 is good to about
1e-4 nats) -- cheap in 2-D, ``D`` times the work of one pass in high dimensions. Training uses
``trace="auto"``: exact for ``D <= 8``, else Hutchinson's estimator
:math:`\epsilon^\top (\partial f/\partial z)\, \epsilon` with one noise draw per solve, which makes
the training loss an unbiased *estimate* of the NLL (not a bound). :meth:`CNF.log_prob_estimate`
gives that cheap unbiased estimate of ``log p(x)`` at evaluation time too; it is not used by
generic code (it is neither exact nor a bound).

Training integrates with the fixed-step ``method``/``ode_steps`` (default rk4, 8 steps) for speed;
evaluation and sampling use ``eval_method`` (default adaptive dopri5). Gradients flow by plain
autograd through the solver steps (no adjoint). Optional RNODE regularisers (Finlay et al. 2020,
"How to train your neural ODE", arXiv:2002.02798): ``kinetic`` weights
:math:`\int |f|^2 dt` and ``jacobian`` weights :math:`\int |\epsilon^\top \partial f/\partial z|^2
dt` (a Frobenius-norm estimate), both averaged over the batch.

**Class labels** (``conditional=True``): the one-hot label ``c`` joins the state at the field's
first layer, ``f_theta(z, t; c)``; ``c`` is constant along the solve, so the trace is still that of
``partial f / partial z`` and ``log_prob(x, y)`` is ``log p(x | y)`` by the same integral. Without
labels a conditional CNF samples them uniformly (as the other flows do).

>>> from dgm.core.spec import DataSpec
>>> model = CNF(DataSpec((2,)), CNF.Config(hidden=(8,), eval_method="rk4", eval_ode_steps=4))
>>> model.log_prob(torch.zeros(3, 2)).shape
torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgm.core.distributions import StandardNormal
from dgm.core.errors import ConfigError
from dgm.core.likelihood import Likelihood
from dgm.core.model import Batch, Example, Model, check_labels, unpack
from dgm.core.registry import register
from dgm.core.spec import DataSpec
from dgm.models.flows.base import ConditionalOptions, check_temperature
from dgm.nn.mlp import activation as make_activation
from dgm.samplers.ode import METHODS, divergence_exact, divergence_hutchinson, odeint

__all__ = ["CNF", "CNFConfig", "CNFSampleOptions", "ODENet"]

EXACT_TRACE_MAX_DIMS = 8


@dataclass
class CNFConfig(ConditionalOptions):
    """Hyperparameters of :class:`CNF` (and ``conditional``: a one-hot label read by the
    field's first layer).

    Attributes:
        hidden: hidden widths of the vector field MLP; ``()`` gives a linear field
            ``f = W z (+ u t + b)`` (a Gaussian model).
        activation: a smooth activation (the ODE needs a Lipschitz, differentiable field).
        time_embedding: ``"concatsquash"`` (FFJORD's layer: ``(W h + b) * sigmoid(a t + c) + d t``)
            or ``"concat"`` (``W [h, t] + b``).
        time: the integration horizon ``T``.
        method, ode_steps: the solver used for training (``ode_steps`` for rk4/euler; dopri5 is
            adaptive).
        eval_method, eval_ode_steps: the solver for ``log_prob`` and ``sample``.
        rtol, atol: dopri5 tolerances (training and evaluation).
        trace: training trace, ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for
            ``D <= 8``).
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``.
        kinetic, jacobian: weights of the RNODE regularisers (0 disables them).
    """

    #: keys of earlier versions and their names now (saved runs are translated)
    renamed: ClassVar[dict[str, str]] = {"steps": "ode_steps", "eval_steps": "eval_ode_steps"}

    hidden: tuple[int, ...] = (64, 64, 64)
    activation: Literal["tanh", "softplus", "elu", "silu"] = "tanh"
    time_embedding: Literal["concatsquash", "concat"] = "concatsquash"
    time: float = 1.0
    method: Literal["dopri5", "rk4", "euler"] = "rk4"
    ode_steps: int | None = 8
    eval_method: Literal["dopri5", "rk4", "euler"] = "dopri5"
    eval_ode_steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    trace: Literal["auto", "exact", "hutchinson"] = "auto"
    noise: Literal["rademacher", "gaussian"] = "rademacher"
    kinetic: float = 0.0
    jacobian: float = 0.0

    def __post_init__(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden widths must be positive, not {self.hidden}")
        if not self.time > 0:
            raise ConfigError(f"time (the horizon T) must be positive, not {self.time}")
        for m, s, what in (
            (self.method, self.ode_steps, ""),
            (self.eval_method, self.eval_ode_steps, "eval_"),
        ):
            if m == "dopri5" and s is not None:
                raise ConfigError(f"{what}method='dopri5' is adaptive: set {what}ode_steps=None")
            if m != "dopri5" and (s is None or s < 1):
                raise ConfigError(f"{what}method={m!r} needs {what}ode_steps >= 1, not {s}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ConfigError(f"rtol and atol must be positive, not {self.rtol}, {self.atol}")
        if self.kinetic < 0 or self.jacobian < 0:
            raise ConfigError("the regulariser weights kinetic and jacobian must be >= 0")


@dataclass
class CNFSampleOptions:
    """Options of :meth:`CNF.sample`.

    Attributes:
        method: ODE solver of the sampling solve; ``None``: the config's ``eval_method``.
        steps: its fixed steps (rk4, euler); ``None``: the config's ``eval_ode_steps``.
        temperature: ``T``; the base noise is ``N(0, T^2 I)``. 1: samples of the model's
            ``p(x)``; below 1 reduced-temperature samples, sharper and not of ``p(x)``.
    """

    method: Literal["dopri5", "rk4", "euler"] | None = None
    steps: int | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_temperature(self.temperature)


class TimeLinear(nn.Module):
    """A linear layer that also sees the time ``t`` (a 0-dim tensor)."""

    def __init__(self, d_in: int, d_out: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "concat":
            self.linear = nn.Linear(d_in + 1, d_out)
        else:
            self.linear = nn.Linear(d_in, d_out)
            self.gate = nn.Linear(1, d_out)
            self.shift = nn.Linear(1, d_out, bias=False)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        tt = t.reshape(1, 1).to(h.dtype)  # (1, 1)
        if self.mode == "concat":
            return self.linear(torch.cat([h, tt.expand(h.shape[0], 1)], dim=-1))  # (B, out)
        return self.linear(h) * torch.sigmoid(self.gate(tt)) + self.shift(tt)  # (B, out)


class ODENet(nn.Module):
    """The vector field ``f(t, z)``: an MLP of :class:`TimeLinear` layers, ``(B, D) -> (B, D)``;
    with ``context = K > 0`` the first layer also reads a context ``c (B, K)``, ``f(t, z; c)``."""

    def __init__(
        self, d: int, hidden: tuple[int, ...], activation: str, mode: str, context: int = 0
    ) -> None:
        super().__init__()
        dims = [d + context, *hidden, d]
        self.layers = nn.ModuleList(TimeLinear(a, b, mode) for a, b in zip(dims, dims[1:]))
        self.act = make_activation(activation)

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        h = z if context is None else torch.cat([z, context], dim=-1)  # (B, D [+ K])
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h  # (B, D)


@register
class CNF(Model):
    """FFJORD continuous normalizing flow over continuous vectors (see the module docstring).

    ``log_prob`` is exact up to the ODE solver's tolerance (exact trace); ``log_prob_estimate``
    is an unbiased Hutchinson estimate; ``sample`` integrates backward. Any event shape is
    flattened to ``D`` dimensions.
    """

    name = "cnf"
    family = "flows"
    description = (
        "FFJORD continuous flow: ODE vector field, log-density by the exact trace integral, "
        "accurate up to the ODE solver tolerance (Grathwohl et al. 2019)"
    )
    Config = CNFConfig
    #: 2000 steps of 512 with a cosine decay (``benchmarks/results/defaults.json``)
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 2000, "batch_size": 512, "schedule": "cosine",
    }  # fmt: skip
    SampleOptions = CNFSampleOptions
    exact_likelihood = True
    data_kinds = frozenset({"continuous"})
    needs_grad_for_inference = True
    example = Example(
        spec=DataSpec((2,), num_classes=2),
        config={
            "hidden": (8,),
            "ode_steps": 2,
            "eval_method": "rk4",
            "eval_ode_steps": 3,
        },
        variants=({"conditional": True},),
    )

    def __init__(self, spec: DataSpec, config: CNFConfig | None = None) -> None:
        super().__init__(spec, config)
        c: CNFConfig = self.config
        self.num_classes = 0
        if self.conditional:
            if not spec.num_classes:
                raise ConfigError(
                    "cnf with conditional=True needs labelled data (num_classes in the data spec)"
                )
            self.num_classes = int(spec.num_classes)
        self.net = ODENet(
            self.num_dims, tuple(c.hidden), c.activation, c.time_embedding, self.num_classes
        )
        self.base = StandardNormal((self.num_dims,))

    # ------------------------------------------------------------------ integration
    def _train_trace(self) -> str:
        c = self.config
        if c.trace != "auto":
            return c.trace
        return "exact" if self.num_dims <= EXACT_TRACE_MAX_DIMS else "hutchinson"

    def _noise(self, like: Tensor) -> Tensor:
        eps = torch.randn_like(like)  # (B, D)
        return eps.sign() if self.config.noise == "rademacher" else eps

    def _solve(
        self,
        z: Tensor,
        t0: float,
        t1: float,
        trace: str | None,
        method: str,
        steps: int | None,
        regularise: bool = False,
        context: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """Integrate ``(z, int tr, [int |f|^2, int |eps^T J|^2])`` from ``t0`` to ``t1`` (the
        field given the one-hot ``context`` of a conditional CNF).

        ``trace=None`` integrates ``z`` alone (sampling)."""
        c: CNFConfig = self.config

        def field(t: Tensor, z: Tensor) -> Tensor:
            return self.net(t, z, context)

        graph = torch.is_grad_enabled()  # differentiable result wanted (training)
        opts = {"method": method, "steps": steps, "rtol": c.rtol, "atol": c.atol}
        if method == "dopri5" and steps is None:
            opts.pop("steps")
        if trace is None:
            return (odeint(field, z, t0, t1, **opts),)  # type: ignore[arg-type]
        eps = self._noise(z) if (trace == "hutchinson" or regularise) else None
        zeros = z.new_zeros(z.shape[0])  # (B,)
        state = (z, zeros, zeros, zeros) if regularise else (z, zeros)

        def func(t: Tensor, s: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            with torch.enable_grad():
                zt = s[0] if s[0].requires_grad else s[0].detach().requires_grad_(True)
                f = field(t, zt)  # (B, D)
                if regularise:
                    (vjp,) = torch.autograd.grad(f, zt, eps, create_graph=graph, retain_graph=True)
                    div = (
                        divergence_exact(f, zt, create_graph=graph)
                        if trace == "exact"
                        else (vjp * eps).sum(-1)
                    )
                    out = (f, div, f.square().sum(-1), vjp.square().sum(-1))
                elif trace == "exact":
                    out = (f, divergence_exact(f, zt, create_graph=graph))
                else:
                    out = (f, divergence_hutchinson(f, zt, eps, create_graph=graph))
            return out if graph else tuple(o.detach() for o in out)

        return odeint(func, state, t0, t1, **opts)  # type: ignore[arg-type,return-value]

    def _flat(self, x: Tensor, what: str = "input") -> Tensor:
        return self.check_input(x, what).reshape(x.shape[0], self.num_dims)  # (B, D)

    def _context(self, y: Tensor | None, n: int) -> Tensor | None:
        """The one-hot context ``(n, K)`` of checked labels, ``None`` for an unconditional CNF
        (which refuses labels)."""
        y = check_labels(self, y, n)
        return None if y is None else F.one_hot(y, self.num_classes).to(self.dtype)

    # ------------------------------------------------------------------ the contract
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        x, y = unpack(batch)
        c: CNFConfig = self.config
        reg = c.kinetic > 0 or c.jacobian > 0
        flat = self._flat(x)
        ctx = self._context(y, flat.shape[0])
        out = self._solve(flat, 0.0, c.time, self._train_trace(), c.method, c.ode_steps, reg, ctx)
        nll = -(self.base.log_prob(out[0]) + out[1])  # (B,)
        terms = {"nll": nll.mean().detach()}
        loss = nll.mean()
        if reg:
            loss = loss + c.kinetic * out[2].mean() + c.jacobian * out[3].mean()
            terms |= {"kinetic": out[2].mean().detach(), "jacobian": out[3].mean().detach()}
        return {"loss": loss, **terms}

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats, ``(B,)``: exact trace, accurate up to the eval solver's error
        (``log p(x | y)`` given labels, for a conditional CNF)."""
        c: CNFConfig = self.config
        flat = self._flat(x)
        ctx = self._context(y, flat.shape[0])
        z, div = self._solve(
            flat, 0.0, c.time, "exact", c.eval_method, c.eval_ode_steps, context=ctx
        )
        return self.base.log_prob(z) + div  # (B,)

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """``log_prob`` is exact up to the evaluation solver's error: dopri5's tolerance, or a
        fixed-step solver's discretisation error."""
        self._check_bound_options(bound_options)
        c: CNFConfig = self.config
        if c.eval_method == "dopri5":
            solver = f"dopri5, rtol={c.rtol:g}, atol={c.atol:g}"
        else:
            solver = f"{c.eval_method} with {c.eval_ode_steps} fixed steps"
        return Likelihood("exact_ode", "log_prob", "exact trace", solver)

    def log_prob_estimate(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """An unbiased Hutchinson estimate of log p(x), ``(B,)`` (one noise draw per row; cost
        independent of ``D``). Neither exact nor a bound: use :meth:`log_prob` for reporting."""
        c: CNFConfig = self.config
        flat = self._flat(x)
        ctx = self._context(y, flat.shape[0])
        z, div = self._solve(
            flat, 0.0, c.time, "hutchinson", c.eval_method, c.eval_ode_steps, context=ctx
        )
        return self.base.log_prob(z) + div  # (B,)

    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        method: str | None = None,
        steps: int | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """``n`` samples: ``z ~ N(0, I)`` integrated from ``T`` back to 0, ``(n, *event_shape)``;
        ``temperature`` scales ``z`` (reduced-temperature sampling: not a sample of ``p(x)``).
        A conditional CNF samples class ``y`` (labels drawn uniformly when not given)."""
        temperature = check_temperature(temperature)
        if self.conditional and y is None:
            y = torch.randint(0, self.num_classes, (n,), device=self.device)
        ctx = self._context(y, n)
        c: CNFConfig = self.config
        method = method or c.eval_method
        if method not in METHODS:
            raise ConfigError(f"unknown ODE method {method!r}; choose one of {', '.join(METHODS)}")
        if steps is None and method == c.eval_method:
            steps = c.eval_ode_steps
        z = temperature * self.base.sample(n, device=self.device, dtype=self.dtype)  # (n, D)
        (x,) = self._solve(z, c.time, 0.0, None, method, steps, context=ctx)
        return x.reshape(n, *self.event_shape)

    # ------------------------------------------------------------------ the bijection
    def forward_transform(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to noise: ``(z (B, *event_shape), log|det dz/dx| (B,))`` (exact trace)."""
        c: CNFConfig = self.config
        ctx = self._context(y, x.shape[0])
        z, div = self._solve(
            self._flat(x), 0.0, c.time, "exact", c.eval_method, c.eval_ode_steps, context=ctx
        )
        return z.reshape(x.shape), div

    def inverse_transform(self, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Noise to data: ``(x (B, *event_shape), log|det dx/dz| (B,))`` (exact trace)."""
        c: CNFConfig = self.config
        ctx = self._context(y, z.shape[0])
        x, div = self._solve(
            self._flat(z, "z"), c.time, 0.0, "exact", c.eval_method, c.eval_ode_steps, context=ctx
        )
        return x.reshape(z.shape), div

    def extra_repr(self) -> str:
        return f"spec={self.spec}, trace={self._train_trace()!r}"

"""The contract every dgm model meets, whatever its family: the :class:`Model` base class.

Every model is a :class:`torch.nn.Module` deriving from :class:`Model` and offers

* ``loss(batch) -> dict`` with a ``"loss"`` entry (a scalar to minimise) and any named terms;
* ``sample(n) -> Tensor`` of shape ``(n, *event_shape)``;
* ``log_prob(x) -> Tensor`` of shape ``(B,)`` in nats, when the likelihood is exact
  (``exact_likelihood = True``), or a clearly named lower bound otherwise
  (``likelihood_bound = "elbo"`` names the method that computes it).

Generic code (the engine, ``dgm score``, ``dgm eval``) reads the capability flags, never the class.
Adversarial and MCMC-based families override :meth:`Model.training_step` and
:meth:`Model.param_groups` to use the same engine with several optimizers. The class docstring is
the guide to adding a model; optional abilities (latent variables, a fast autoregressive decoder,
labels, an estimated likelihood, held-out statistics of its own) are the Protocols of
:mod:`dgm.core.protocols`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgm.core.config import build_sample_options
from dgm.core.errors import ConfigError, DataError, DgmError
from dgm.core.likelihood import Likelihood
from dgm.core.progress import Deadline
from dgm.core.protocols import ConditionalModel
from dgm.core.spec import DataSpec

__all__ = ["Model", "Example", "Batch", "Stepper", "check_labels", "completion_mask", "unpack"]

Batch = Tensor | tuple[Tensor, Tensor] | tuple[Tensor, None]
# A stepper is given by the engine: stepper(loss, group) runs backward, checks for non-finite
# gradients, clips, steps the optimizer of parameter group ``group`` and zeroes its gradients.
Stepper = Callable[..., None]


def unpack(batch: Batch) -> tuple[Tensor, Tensor | None]:
    """Split a batch into data ``x`` and optional labels ``y``."""
    if isinstance(batch, Tensor):
        return batch, None
    x, y = batch
    return x, y


@dataclass(frozen=True)
class Example:
    """A small instance of a model, declared by its class: ``build(name)`` without a spec builds
    on ``spec``, ``dgm list`` reports the capabilities of the instance built from ``spec`` and
    ``config``, and the conformance suite (``tests/test_conformance.py``) checks that instance and
    one more per entry of ``variants`` (config overrides merged over ``config``)."""

    #: the data the example is built for
    spec: DataSpec = DataSpec((2,))
    #: small hyperparameters (fields of the model's ``Config``)
    config: Mapping[str, Any] = field(default_factory=dict)
    #: further configurations the conformance suite checks, e.g. ``({"objective": "sm"},)``
    variants: tuple[Mapping[str, Any], ...] = ()


class Model(nn.Module):
    """Base class of every generative model in dgm. This docstring is all you need to add one.

    **What a model is.** A :class:`torch.nn.Module` built as ``Model(spec, config)``:

    * ``spec`` (:class:`~dgm.core.spec.DataSpec`) describes one example of the data (event shape,
      ``"continuous"`` or ``"discrete"`` with its ``levels``, ``num_classes`` if labelled); the
      model never sees the data itself at construction (scikit-learn's rule);
    * ``config`` is an instance of the class's ``Config`` dataclass: every hyperparameter as a
      typed field with a default (``None`` builds ``Config()``). ``dgm train --set key=value`` and
      :func:`dgm.models.build` check keys and types against it and save it with the weights.

    At hand in every method: ``self.spec``, ``self.config``, ``event_shape``, ``num_dims``,
    ``device``, ``dtype`` and ``conditional``; callers sample and score inside
    ``with model.inference():`` (``torch.inference_mode``, or ``no_grad`` when
    ``needs_grad_for_inference``).

    **What it must define.**

    * ``loss(batch) -> dict``: a ``"loss"`` scalar to minimise plus named terms for the log. The
      default is the mean negative ``log_prob``, so an exact-likelihood model needs no ``loss``.
      ``batch`` is ``x`` or ``(x, y)``; split it with :func:`unpack`.
    * ``sample(n, y=None, **options) -> (n, *event_shape)``; the options (a sampler's name, a
      number of steps) are the fields of the ``SampleOptions`` dataclass, if it has one.
    * the best likelihood it can honestly give: ``log_prob(x, y=None) -> (B,)`` in nats when
      exact (set ``exact_likelihood = True``), else a lower bound under a name of its own, e.g.
      ``elbo(x)``, named by ``likelihood_bound = "elbo"`` (with ``bound_options = ("k",)`` if it
      takes a number of samples). A model with neither (a GAN) is judged by its samples.
      Generic code calls :meth:`log_likelihood`, which picks the right one and says which
      (:meth:`likelihood_info`: its kind, exact, bound, estimate, ..., of :mod:`dgm.core.likelihood`).
    * validate input with :meth:`check_input` at the top of ``log_prob``/the bound (and so of
      ``loss``): a wrong shape, a NaN or a value outside the levels is one :class:`DataError`.

    **The class attributes.** ``name`` (the registry key), ``family`` (its folder under
    ``dgm.models``), ``description`` (one line for ``dgm list``), ``Config``, ``SampleOptions``,
    ``example`` (an :class:`Example`: a small spec and config for ``dgm list`` and the
    conformance suite) and the capability flags below. Generic code reads the flags, never the
    class name. A flag that depends on the configuration (a flow with variational dequantization
    only has a bound; an EBM's log Z is exact on 2-D data only) is a ``property`` of the instance,
    so read flags from an instance, not from the class.

    **Optional abilities** are Protocols (:mod:`dgm.core.protocols`): define their members and
    generic code finds them with ``isinstance`` -- ``LatentVariableModel`` (``encode``,
    ``reconstructions``, ``latent_map``), ``FastAutoregressive`` (``autoregress``),
    ``ConditionalModel`` (``num_classes`` and ``conditional``: then ``log_prob(x, y)`` and
    ``sample(n, y)`` take labels, checked with :func:`check_labels`) and ``LikelihoodEstimator``
    (an AIS estimate of an intractable normaliser).

    **Training hooks** with working defaults, overridden by families that need them:
    ``on_train_start(data)`` (data-dependent initialisation), ``param_groups`` (torch param-group
    dicts with a ``"name"`` and per-group optimizer options) with ``training_step`` (several
    optimizers, e.g. a GAN's two players, with ``group_objectives`` naming the term each group
    lowers), and ``train_defaults`` (training options the model prefers, e.g. a GAN's ``ema``).

    **A minimal model** (registering it, ``@dgm.core.registry.register`` on the class and one
    import line in ``dgm/models/<family>/__init__.py``, makes it buildable by name, listed by
    ``dgm list`` and checked by the conformance suite):

    >>> from dataclasses import dataclass
    >>> import torch
    >>> from torch import nn
    >>> from dgm.core.model import Example, Model
    >>> from dgm.core.spec import DataSpec
    >>> @dataclass
    ... class GaussianConfig:
    ...     init_loc: float = 0.0
    >>> class Gaussian(Model):
    ...     name = "gaussian"
    ...     family = "toy"
    ...     description = "a diagonal Gaussian fitted by maximum likelihood"
    ...     Config = GaussianConfig
    ...     exact_likelihood = True
    ...     example = Example(DataSpec((2,)), {"init_loc": 0.5})
    ...
    ...     def __init__(self, spec, config=None):
    ...         super().__init__(spec, config)
    ...         self.loc = nn.Parameter(torch.full(self.event_shape, self.config.init_loc))
    ...         self.log_scale = nn.Parameter(torch.zeros(self.event_shape))
    ...
    ...     def log_prob(self, x, y=None):
    ...         x = self.check_input(x)  # (B, *event_shape)
    ...         normal = torch.distributions.Normal(self.loc, self.log_scale.exp())
    ...         return normal.log_prob(x).flatten(1).sum(1)  # (B,)
    ...
    ...     def sample(self, n, y=None):
    ...         eps = torch.randn(n, *self.event_shape, dtype=self.dtype)
    ...         return self.loc + self.log_scale.exp() * eps  # (n, *event_shape)
    >>> model = Gaussian(DataSpec((2,)))
    >>> model.loss(torch.zeros(4, 2))["loss"].shape  # the default loss: mean -log_prob
    torch.Size([])
    >>> str(model.log_likelihood(torch.zeros(4, 2))[1])
    'log_prob: exact'
    >>> model.sample(3).shape
    torch.Size([3, 2])
    >>> model.log_prob(torch.zeros(4, 3))
    Traceback (most recent call last):
    ...
    dgm.core.errors.DataError: input has shape (4, 3), but model 'gaussian' expects (N, 2)
    """

    # ------------------------------------------------------------------ what it is
    #: registry name, e.g. ``"made"``
    name: ClassVar[str] = ""
    #: family folder under ``dgm.models``: ``"autoregressive"``, ``"flows"``, ``"vae"``, ...
    family: ClassVar[str] = ""
    #: one line for ``dgm list``
    description: ClassVar[str] = ""
    #: the hyperparameter dataclass
    Config: ClassVar[type]
    #: dataclass of the options ``sample(n, **options)`` takes (e.g. ``sampler="fast"``, ``steps``);
    #: ``dgm sample --sampler X --set key=value`` is checked against it. ``None``: no options.
    SampleOptions: ClassVar[type | None] = None
    #: a small instance: the default spec of ``build(name)``, what ``dgm list`` reports and what
    #: the conformance suite checks
    example: ClassVar[Example] = Example()

    # ------------------------------------------------------------------ capability flags
    # (a subclass may make any of these a property when it depends on the configuration)
    #: ``log_prob`` is the exact log-likelihood (in nats, up to float error)
    exact_likelihood: bool = False
    #: name of a method ``(x) -> (B,)`` giving a lower bound on log p(x), e.g. ``"elbo"``
    likelihood_bound: str | None = None
    #: keyword options the bound method takes from ``dgm score/eval`` (e.g. ``("k",)`` for the
    #: number of importance samples of an IWAE bound)
    bound_options: tuple[str, ...] = ()
    #: kinds of data the model takes directly; the engine dequantizes discrete data for
    #: continuous-only models (read from the class, before a model is built)
    data_kinds: ClassVar[frozenset[str]] = frozenset({"continuous"})
    #: sampling or scoring needs autograd (MCMC on an energy, exact trace of a CNF); then
    #: :meth:`inference` uses ``torch.no_grad`` instead of ``torch.inference_mode``
    needs_grad_for_inference: bool = False
    #: models with several players (GANs): the term of ``loss()`` that each parameter group
    #: minimises, e.g. ``{"discriminator": "d_loss", "generator": "g_loss"}``; the conformance
    #: suite then checks that one step of each group lowers its own term (fixed batch and noise)
    #: instead of checking that ``training_step`` lowers ``loss``. ``None``: one objective.
    group_objectives: dict[str, str] | None = None
    #: training options (fields of ``TrainConfig``) this model prefers, e.g. a GAN's smaller
    #: ``lr``; ``dgm.train`` uses them for the options the caller does not set
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: on images above 16 pixels a side (MNIST), training options over ``train_defaults``; a
    #: run length here (e.g. ``max_minutes``) replaces theirs (``dgm.api.train_defaults_for``)
    large_image_train_defaults: ClassVar[dict[str, Any]] = {}
    #: set by the engine before training: the point after which the model's setup
    #: (:meth:`on_train_start`, or the same work redone on a resume) starts no new work, so that
    #: a time budget (``max_minutes``) bounds it: half the budget left (``dgm.train.engine.SETUP_SHARE``). No limit
    #: without a budget.
    setup_deadline: Deadline = Deadline()
    #: how many training examples :meth:`on_train_start` sees: ``0``, the first batch; ``N``, the
    #: first ``N`` of the first epoch's order (a model that fits a density to the data, such as
    #: the EBM's full-covariance noise, needs more points than a batch has dimensions); an
    #: instance may set its own (a VAE with the VampPrior asks for its K pseudo-inputs)
    init_examples: ClassVar[int] = 0
    #: the engine step being trained while :meth:`training_step` computes the loss (``None``
    #: otherwise): for losses that follow the step (noise annealing, a curriculum, KL warm-up)
    step_in_training: int | None = None

    def __init__(self, spec: DataSpec, config: Any | None = None) -> None:
        super().__init__()
        if spec.kind not in self.data_kinds:
            kinds = " or ".join(sorted(self.data_kinds))
            raise ConfigError(
                f"model {self.name!r} takes {kinds} data, not {spec.kind} data "
                f"with event shape {spec.event_shape}"
            )
        self.spec = spec
        self.config = config if config is not None else self.Config()

    # ------------------------------------------------------------------ properties
    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.spec.event_shape

    @property
    def num_dims(self) -> int:
        return self.spec.num_dims

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            return t.dtype
        return torch.get_default_dtype()

    @property
    def conditional(self) -> bool:
        """True when this instance was built to take class labels."""
        return bool(getattr(self.config, "conditional", False))

    def inference(self) -> contextlib.AbstractContextManager:
        """Context for sampling and scoring: ``torch.inference_mode()`` unless the model needs
        autograd inside (``needs_grad_for_inference``), then ``torch.no_grad()``."""
        return torch.no_grad() if self.needs_grad_for_inference else torch.inference_mode()

    # ------------------------------------------------------------------ the contract
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Training objective on a batch. The default is the mean negative log-likelihood."""
        x, y = unpack(batch)
        if not self.exact_likelihood:
            raise NotImplementedError(f"{type(self).__name__} must define loss()")
        nll = -self.log_prob(x, y) if self.conditional else -self.log_prob(x)
        return {"loss": nll.mean(), "nll": nll.mean().detach()}

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact log-likelihood log p(x) in nats, shape ``(B,)``."""
        raise DgmError(
            f"model {self.name!r} has no exact likelihood"
            + (f"; use its bound {self.likelihood_bound!r}" if self.likelihood_bound else "")
        )

    def sample(self, n: int, y: Tensor | None = None, **options: Any) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *event_shape)``.

        ``options`` are the fields of :attr:`SampleOptions` (sampler choice, number of steps, ...).
        """
        raise NotImplementedError

    def inference_batch(self) -> int:
        """Examples per forward pass when dgm scores data (``log_likelihood``, ``dgm score``,
        ``dgm eval``, :class:`~dgm.api.Run`'s scores): the spec's inference batch here
        (:data:`dgm.core.spec.INFERENCE_VALUES` input values, 41 MNIST images), which keeps a
        network's feature maps small enough to be reused. A model whose activations per example
        are a few hidden vectors, not maps, asks for more (MADE, MAF, IAF: 1000)."""
        return self.spec.inference_batch()

    def sample_batch(self) -> int:
        """Samples per :meth:`sample` call in dgm's sampling loops (``dgm sample``, ``dgm eval``),
        which draw more in several calls: 1000 here; a model whose sampler runs a network over
        whole images at every step asks for fewer (:class:`~dgm.models.diffusion.base.
        DiffusionBase`: its inference batch, so the maps stay in cache and are not page-faulted
        in anew)."""
        return 1000

    def sample_config(self, options: Mapping[str, Any]) -> Any:
        """``options`` (keyword arguments of :meth:`sample`) as a checked ``SampleOptions``.

        Unknown keys, wrong types, and an option that the chosen sampler does not take (the
        ``by_sampler`` table of ``SampleOptions``) are each one :class:`ConfigError`. ``None``
        for a model without sampling options (given none).
        """
        if self.SampleOptions is None:
            if options:
                raise ConfigError(
                    f"model {self.name!r} takes no sampling options, but got "
                    + ", ".join(sorted(options))
                )
            return None
        return build_sample_options(self.SampleOptions, dict(options), what=f"model {self.name!r}")

    def likelihood_info(self, **bound_options: Any) -> Likelihood:
        """What :meth:`log_likelihood` returns, without computing it: a
        :class:`~dgm.core.likelihood.Likelihood` (its kind, the method and its options).

        The default reads the flags: ``exact`` for ``exact_likelihood``, ``bound`` for
        ``likelihood_bound``, else ``none``. A model whose figure is of another kind (an ODE
        solve, a stochastic estimate of a bound) overrides this, and generic code reads the kind
        from here, never from the name.
        """
        self._check_bound_options(bound_options)
        if self.exact_likelihood:
            return Likelihood("exact", "log_prob")
        if self.likelihood_bound:
            opts = ", ".join(f"{k}={v}" for k, v in bound_options.items())
            return Likelihood("bound", f"{self.likelihood_bound}({opts})")
        return Likelihood("none", "")

    def _check_bound_options(self, bound_options: Mapping[str, Any]) -> None:
        unknown = set(bound_options) - set(self.bound_options)
        if unknown:
            what = f"its {self.likelihood_bound}" if self.likelihood_bound else "its likelihood"
            raise DgmError(
                f"model {self.name!r} takes no option {sorted(unknown)[0]!r} for {what}; "
                f"it takes: {', '.join(self.bound_options) or 'none'}"
            )

    def log_likelihood(
        self, x: Tensor, y: Tensor | None = None, **bound_options: Any
    ) -> tuple[Tensor, Likelihood]:
        """The best honest log-likelihood the model offers: ``(values (B,), likelihood)``.

        ``likelihood`` (:meth:`likelihood_info`) says what the values are: its ``kind``
        (``"exact"``, ``"bound"``, ...), its ``method`` (``"log_prob"``,
        ``"iwae_bound(k=5000)"``), and ``str(likelihood)`` is the name reports show.
        ``bound_options`` (those named in ``bound_options``) go to the bound method.
        """
        info = self.likelihood_info(**bound_options)
        kwargs = {"y": y} if self.conditional else {}
        if self.exact_likelihood:
            return self.log_prob(x, **kwargs), info
        if self.likelihood_bound:
            return getattr(self, self.likelihood_bound)(x, **kwargs, **bound_options), info
        raise DgmError(
            f"model {self.name!r} has no likelihood (neither exact nor a bound); "
            "judge it by its samples with `dgm eval`"
        )

    # ------------------------------------------------------------------ engine hooks
    def param_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters as torch's param-group dicts, one optimizer per group.

        Each dict has a ``"name"`` (what :meth:`training_step` passes to the stepper) and
        ``"params"``; any other key is an optimizer option of that group (e.g. a GAN's
        ``"betas": (0.5, 0.999)``) over the engine's ``lr`` and ``weight_decay``. The default is
        one group, ``"model"``, holding every parameter that requires a gradient.
        """
        return [{"name": "model", "params": [p for p in self.parameters() if p.requires_grad]}]

    def training_step(self, batch: Batch, step: int, stepper: Stepper) -> dict[str, Tensor]:
        """One optimisation step. Families with several optimizers override this.

        ``stepper(loss, "group")`` does backward, clipping and the optimizer step for that group.
        Returns the loss terms for logging.
        """
        with self.training_at(step):
            out = self.loss(batch)
        stepper(out["loss"], "model")
        return out

    @contextlib.contextmanager
    def training_at(self, step: int) -> Iterator[None]:
        """Within the block, :attr:`step_in_training` is ``step``."""
        self.step_in_training = step
        try:
            yield
        finally:
            self.step_in_training = None

    def on_train_start(  # noqa: B027 - optional hook
        self, train_data: Tensor, labels: Tensor | None = None
    ) -> None:
        """Called once before training with (preprocessed) training data, e.g. for
        data-dependent initialisation: the first batch, or the first :attr:`init_examples` of the
        first epoch's order; ``labels`` are theirs when the model is conditional (else ``None``).
        The default does nothing. Its time counts in the run's time budget; work that grows with a
        setting (reflow's teacher pairs) stops at :attr:`setup_deadline`."""

    # ------------------------------------------------------------------ input checks
    def check_input(self, x: Tensor, what: str = "input") -> Tensor:
        """Raise a one-sentence :class:`DataError` for a wrong shape or non-finite values."""
        if not isinstance(x, Tensor):
            raise DataError(f"{what} must be a torch.Tensor, not {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape:
            raise DataError(
                f"{what} has shape {tuple(x.shape)}, but model {self.name!r} expects "
                f"(N, {', '.join(map(str, self.event_shape))})"
            )
        if x.numel() == 0:
            return x
        # one reduction for the common case (a NaN makes both ends NaN, an infinity one end
        # infinite): 16 us for 100 MNIST images against 153 for ``isfinite(x).all()``, whose
        # cost every training step paid (the VAE's step is 5.5 ms; the discrete checks below
        # cost 64 us instead of 369)
        lo, hi = (float(v) for v in torch.aminmax(x))
        if x.is_floating_point() and not (math.isfinite(lo) and math.isfinite(hi)):
            raise DataError(f"{what} contains NaN or infinite values; clean or drop those rows")
        if self.spec.kind == "discrete":
            levels = self.spec.levels
            if lo >= 0 and hi <= levels - 1 and (not x.is_floating_point() or
                                                  torch.equal(x, x.round())):  # fmt: skip
                return x
            bad = (x < 0) | (x > levels - 1) | (x != x.round())
            if bad.any():
                raise DataError(
                    f"{what} must hold integers 0..{levels - 1} for model {self.name!r}, "
                    f"found {x[bad].flatten()[0].item()!r}"
                )
        return x

    def extra_repr(self) -> str:
        return f"spec={self.spec}"


def check_labels(model: Model, y: Tensor | None, n: int) -> Tensor | None:
    """Labels ``y`` for ``model`` checked: long ``(n,)`` (a scalar is broadcast) for a model built
    with ``conditional=True`` (a :class:`~dgm.core.protocols.ConditionalModel`), ``None`` for an
    unconditional one; anything else is one :class:`DataError`."""
    if not model.conditional:
        if y is not None:
            raise DataError(
                f"model {model.name!r} is unconditional (built without conditional=True); "
                "call it without labels y"
            )
        return None
    if y is None:
        raise DataError(f"model {model.name!r} is conditional; pass class labels y of shape ({n},)")
    y = torch.as_tensor(y, device=model.device)
    if y.dim() == 0:
        y = y.expand(n)
    if tuple(y.shape) != (n,):
        raise DataError(f"labels y have shape {tuple(y.shape)}, expected ({n},)")
    if y.is_floating_point() and (y != y.round()).any():
        raise DataError("labels y must be integers")
    num_classes = model.num_classes if isinstance(model, ConditionalModel) else 0
    if ((y < 0) | (y >= num_classes)).any():
        raise DataError(f"labels y must lie in 0..{num_classes - 1}")
    return y.long()


def completion_mask(model: Model, x: Tensor, mask: Any) -> Tensor:
    """The observed entries of :meth:`~dgm.core.protocols.Completer.complete` checked: a bool
    ``(B, D)`` of flat rows for ``x`` ``(B, *event_shape)``, from a mask of ``x``'s shape, of one
    example's shape (the same mask for every row) or ``(B, D)``, holding booleans or 0/1 (1 =
    observed); anything else is one :class:`DataError`."""
    n, d = x.shape[0], model.num_dims
    m = torch.as_tensor(mask, device=x.device)
    if m.dtype != torch.bool:
        if not ((m == 0) | (m == 1)).all():
            raise DataError("the mask must hold 0 (missing) and 1 (observed) or booleans only")
        m = m != 0
    if tuple(m.shape) == tuple(model.event_shape):
        m = m.expand(n, *model.event_shape)
    if tuple(m.shape) not in {tuple(x.shape), (n, d)}:
        shape = ", ".join(map(str, model.event_shape))
        raise DataError(
            f"the mask has shape {tuple(m.shape)}; give the data's shape {tuple(x.shape)}, one "
            f"example's ({shape}) or ({n}, {d})"
        )
    return m.reshape(n, d)

"""The contract every dgm model meets, whatever its family.

Every model is a :class:`torch.nn.Module` deriving from :class:`Model` and offers

* ``loss(batch) -> dict`` with a ``"loss"`` entry (a scalar to minimise) and any named terms;
* ``sample(n) -> Tensor`` of shape ``(n, *event_shape)``;
* ``log_prob(x) -> Tensor`` of shape ``(B,)`` in nats, when the likelihood is exact
  (``exact_likelihood = True``), or a clearly named lower bound otherwise
  (``likelihood_bound = "elbo"`` names the method that computes it).

Generic code (the engine, ``dgm score``, ``dgm eval``) reads the capability flags, never the class.
Adversarial and MCMC-based families override :meth:`Model.training_step` and
:meth:`Model.param_groups` to use the same engine with several optimizers; optional abilities the
engine looks for are the Protocols of :mod:`dgm.core.hooks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgm.core.config import config_to_dict
from dgm.core.errors import ConfigError, DataError, DgmError
from dgm.core.spec import DataSpec

__all__ = ["Model", "Batch", "Stepper", "unpack"]

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


class Model(nn.Module):
    """Base class of every generative model in dgm.

    Subclasses set the class attributes below, define a ``Config`` dataclass of hyperparameters with
    defaults, and take ``(spec, config)`` in their constructor: hyperparameters, never data.
    """

    #: registry name, e.g. ``"made"``
    name: ClassVar[str] = ""
    #: family folder under ``dgm.models``: ``"autoregressive"``, ``"flows"``, ``"vae"``, ...
    family: ClassVar[str] = ""
    #: one line for ``dgm list``
    description: ClassVar[str] = ""
    #: the hyperparameter dataclass
    Config: ClassVar[type]
    #: ``log_prob`` is the exact log-likelihood (in nats, up to float error)
    exact_likelihood: ClassVar[bool] = False
    #: name of a method ``(x) -> (B,)`` giving a lower bound on log p(x), e.g. ``"elbo"``
    likelihood_bound: ClassVar[str | None] = None
    #: keyword options the bound method takes from ``dgm score/eval`` (e.g. ``("k",)`` for the
    #: number of importance samples of an IWAE bound)
    bound_options: ClassVar[tuple[str, ...]] = ()
    #: ``sample(n)`` draws exact samples from the model (False: approximate, e.g. MCMC)
    exact_sampling: ClassVar[bool] = True
    #: kinds of data the model takes directly; the engine dequantizes discrete data for
    #: continuous-only models
    data_kinds: ClassVar[frozenset[str]] = frozenset({"continuous"})
    #: whether the model can be conditioned on class labels (``log_prob(x, y)``, ``sample(n, y)``)
    supports_labels: ClassVar[bool] = False
    #: the model has a latent space: ``reconstructions(x)`` and ``latent_map(x)`` (plots use them)
    has_latent: ClassVar[bool] = False
    #: sampling or scoring needs autograd (MCMC on an energy, exact trace of a CNF); then
    #: :meth:`inference` uses ``torch.no_grad`` instead of ``torch.inference_mode``
    needs_grad_for_inference: ClassVar[bool] = False
    #: dataclass of the options ``sample(n, **options)`` takes (e.g. ``sampler="fast"``, ``steps``);
    #: ``dgm sample --sampler X --set key=value`` is checked against it. ``None``: no options.
    SampleOptions: ClassVar[type | None] = None
    #: small hyperparameters and a data spec for the conformance suite and quick tests
    test_config: ClassVar[dict[str, Any]] = {}
    test_spec: ClassVar[DataSpec] = DataSpec((2,))
    #: models with several players (GANs): the term of ``loss()`` that each parameter group
    #: minimises, e.g. ``{"discriminator": "d_loss", "generator": "g_loss"}``; the conformance
    #: suite then checks that one step of each group lowers its own term (fixed batch and noise)
    #: instead of checking that ``training_step`` lowers ``loss``. ``None``: one objective.
    group_objectives: ClassVar[dict[str, str] | None] = None
    #: training options (fields of ``TrainConfig``) this model prefers, e.g. a GAN's smaller
    #: ``lr``; ``dgm.train`` uses them for the options the caller does not set
    train_defaults: ClassVar[dict[str, Any]] = {}

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

    @classmethod
    def legacy_config(cls, config: dict[str, Any], weight_names: set[str]) -> dict[str, Any] | None:
        """The hyperparameters under which weights saved by an earlier version load, or None.

        :func:`dgm.load_run` asks when the saved weights ``weight_names`` do not fit the model
        built from ``config``: a class whose default changed the parameters it holds returns the
        config that rebuilds the old model (e.g. the option that restores the old layer).
        """
        return None

    def hparams(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (what is saved beside the weights)."""
        return config_to_dict(self.config)

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

    def log_likelihood(
        self, x: Tensor, y: Tensor | None = None, **bound_options: Any
    ) -> tuple[Tensor, str]:
        """The best honest log-likelihood the model offers: ``(values (B,), name)``.

        ``name`` is ``"log_prob"`` for exact likelihoods, else the bound's name with its options
        and the words "lower bound" (e.g. ``"iwae_bound(k=5000), a lower bound"``).
        ``bound_options`` (those named in ``bound_options``) go to the bound method.
        """
        kwargs = {"y": y} if self.conditional else {}
        if self.exact_likelihood:
            return self.log_prob(x, **kwargs), "log_prob"
        if self.likelihood_bound:
            unknown = set(bound_options) - set(self.bound_options)
            if unknown:
                raise DgmError(
                    f"model {self.name!r} takes no option {sorted(unknown)[0]!r} for its "
                    f"{self.likelihood_bound}; it takes: {', '.join(self.bound_options) or 'none'}"
                )
            opts = ", ".join(f"{k}={v}" for k, v in bound_options.items())
            values = getattr(self, self.likelihood_bound)(x, **kwargs, **bound_options)
            return values, f"{self.likelihood_bound}({opts}), a lower bound"
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
        out = self.loss(batch)
        stepper(out["loss"], "model")
        return out

    def on_train_start(self, train_data: Tensor) -> None:  # noqa: B027 - optional hook
        """Called once before training with the (preprocessed) training data, e.g. for
        data-dependent initialisation. The default does nothing."""

    # ------------------------------------------------------------------ input checks
    def check_labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Checked class labels as long ``(n,)`` (a scalar is broadcast), or ``None`` for an
        unconditional model; one-sentence :class:`DataError` otherwise. Needs ``num_classes``."""
        if not self.conditional:
            if y is not None:
                raise DataError(
                    f"model {self.name!r} is unconditional (built without conditional=True); "
                    "call it without labels y"
                )
            return None
        if y is None:
            raise DataError(
                f"model {self.name!r} is conditional; pass class labels y of shape ({n},)"
            )
        y = torch.as_tensor(y, device=self.device)
        if y.dim() == 0:
            y = y.expand(n)
        if tuple(y.shape) != (n,):
            raise DataError(f"labels y have shape {tuple(y.shape)}, expected ({n},)")
        if y.is_floating_point() and (y != y.round()).any():
            raise DataError("labels y must be integers")
        num_classes = int(getattr(self, "num_classes", 0))
        if ((y < 0) | (y >= num_classes)).any():
            raise DataError(f"labels y must lie in 0..{num_classes - 1}")
        return y.long()

    def check_input(self, x: Tensor, what: str = "input") -> Tensor:
        """Raise a one-sentence :class:`DataError` for a wrong shape or non-finite values."""
        if not isinstance(x, Tensor):
            raise DataError(f"{what} must be a torch.Tensor, not {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape:
            raise DataError(
                f"{what} has shape {tuple(x.shape)}, but model {self.name!r} expects "
                f"(N, {', '.join(map(str, self.event_shape))})"
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise DataError(f"{what} contains NaN or infinite values; clean or drop those rows")
        if self.spec.kind == "discrete":
            levels = self.spec.levels
            bad = (x < 0) | (x > levels - 1) | (x != x.round())
            if bad.any():
                raise DataError(
                    f"{what} must hold integers 0..{levels - 1} for model {self.name!r}, "
                    f"found {x[bad].flatten()[0].item()!r}"
                )
        return x

    def extra_repr(self) -> str:
        return f"spec={self.spec}"

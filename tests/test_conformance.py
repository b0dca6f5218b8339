"""One conformance suite over the model registry (scikit-learn's ``parametrize_with_checks`` idea).

Every registered model is enrolled by registering it; nothing here branches on a class. Each model
declares an ``example`` (a small data spec and config, plus variants: other configs checked too);
the checks read the capability flags of the instance.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import dgm
from conftest import perturb
from dgm.core.config import build_config, config_to_dict
from dgm.core.errors import ConfigError, DataError
from dgm.core.io import load_tensors, save_tensors
from dgm.core.protocols import ConditionalModel
from dgm.models import build, entries

# every registered model, plus ``name[key=value,...]`` for each of its ``example.variants``
# (config overrides merged over ``example.config``: one model checked in several configurations)
CASES = {}
for _cls in entries():
    CASES[_cls.name] = (_cls, {})
    for _v in _cls.example.variants:
        CASES[f"{_cls.name}[{','.join(f'{k}={v}' for k, v in _v.items())}]"] = (_cls, dict(_v))
# issue 27: every model whose Config has a ``conditional`` option is also checked conditional (on
# its example spec, given two classes when it has none), unless a declared variant already is
SPECS = {}
for _cls in entries():
    _declared = [_cls.example.config, *_cls.example.variants]
    if "conditional" in {f.name for f in dataclasses.fields(_cls.Config)} and not any(
        v.get("conditional") for v in _declared
    ):
        _name = f"{_cls.name}[conditional=True]"
        CASES[_name] = (_cls, {"conditional": True})
        if not _cls.example.spec.num_classes:
            SPECS[_name] = dataclasses.replace(_cls.example.spec, num_classes=2)
MODELS = list(CASES)


def make(name: str, dtype=torch.float64):
    cls, extra = CASES[name]
    torch.manual_seed(0)
    spec = SPECS.get(name, cls.example.spec)
    return build(cls.name, spec, **{**cls.example.config, **extra}).to(dtype)


def data_for(model, n: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spec = model.spec
    if spec.kind == "discrete":
        x = torch.randint(0, spec.levels, (n, *spec.event_shape), generator=g)
        return x.to(model.dtype)
    return torch.randn(n, *spec.event_shape, generator=g, dtype=model.dtype)


def labels_for(model, n: int) -> torch.Tensor | None:
    return torch.arange(n) % model.spec.num_classes if model.conditional else None


def batch_for(model, n: int = 16):
    x, y = data_for(model, n), labels_for(model, n)
    return x if y is None else (x, y)


def draw(model, n: int) -> torch.Tensor:
    """``n`` samples, with labels for a conditional model."""
    y = labels_for(model, n)
    with model.inference():
        return model.sample(n) if y is None else model.sample(n, y)


def has_likelihood(model) -> bool:
    return bool(model.exact_likelihood or model.likelihood_bound)


def score(model, x, y=None) -> torch.Tensor:
    """The model's log-likelihood of ``x`` (exact or its bound), ``(B,)``; for a model with neither
    (a GAN), ``B`` samples flattened, ``(B, D)``: what round-trip and determinism checks compare."""
    if has_likelihood(model):
        ll, _ = model.log_likelihood(x, y)
        return ll
    return draw(model, x.shape[0]).flatten(1)


def mode_dependent(model) -> bool:
    """The model holds layers that act differently in train and eval mode (dropout, batch norm)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p > 0 or isinstance(m, nn.modules.batchnorm._NormBase):
            return True
    return False


def test_registry_is_not_empty():
    assert {"made", "nsf"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_declares_the_contract(name):
    cls, extra = CASES[name]
    assert cls.description and cls.family and cls.name
    assert cls.example.spec.kind in cls.data_kinds
    build_config(cls.Config, {**cls.example.config, **extra})  # the example config is valid
    model = make(name)  # the flags are read from an instance: some depend on the config
    assert isinstance(model.exact_likelihood, bool)
    assert model.likelihood_bound is None or isinstance(model.likelihood_bound, str)
    assert not (model.exact_likelihood and model.likelihood_bound), "exact models need no bound"
    assert set(model.bound_options) <= ({"k"} if model.likelihood_bound else set())
    if model.likelihood_bound is not None:
        assert callable(getattr(model, model.likelihood_bound))


@pytest.mark.parametrize("name", MODELS)
def test_unknown_hyperparameter_names_the_valid_keys(name):
    cls = CASES[name][0]
    with pytest.raises(ConfigError, match="valid keys are"):
        build(cls.name, cls.example.spec, no_such_key=1)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_and_dtypes(name):
    model = make(name)
    batch = batch_for(model, 8)
    out = model.loss(batch)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    x = batch[0] if isinstance(batch, tuple) else batch
    if has_likelihood(model):
        ll, _ = model.log_likelihood(x, labels_for(model, 8))
        assert ll.shape == (8,) and ll.dtype == torch.float64 and torch.isfinite(ll).all()
    s = draw(model, 5)
    assert s.shape == (5, *model.event_shape) and s.dtype == torch.float64
    if model.exact_likelihood:
        with model.inference():
            lp = model.log_prob(s, labels_for(model, 5))
        assert lp.shape == (5,) and lp.dtype == torch.float64 and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", MODELS)
def test_samples_lie_in_the_data_space(name):
    model = make(name)
    s = draw(model, 32)
    assert torch.isfinite(s).all()
    if model.spec.kind == "discrete":
        assert ((s >= 0) & (s <= model.spec.levels - 1) & (s == s.round())).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = make(name)
    perturb(model, 0.05, seed=3)
    model.loss(batch_for(model, 32))["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_one_step_lowers_the_loss_on_a_fixed_batch(name):
    model = make(name)
    perturb(model, 0.01, seed=3)
    batch = batch_for(model, 64)
    opt = {"model": torch.optim.Adam(model.parameters(), lr=1e-3)}
    opt.update({g["name"]: torch.optim.Adam(g["params"], lr=1e-3) for g in model.param_groups()})

    def stepper(loss, group="model"):
        opt[group].zero_grad()
        loss.backward()
        opt[group].step()

    if model.group_objectives:  # several players: each group's step lowers its own term
        groups = {g["name"]: g["params"] for g in model.param_groups()}
        for group, key in model.group_objectives.items():
            step = torch.optim.Adam(groups[group], lr=1e-3)
            torch.manual_seed(5)  # the same noise before and after
            term = model.loss(batch)[key]
            step.zero_grad()
            term.backward()
            step.step()
            torch.manual_seed(5)
            after = float(model.loss(batch)[key].detach())
            assert after < float(term.detach()), f"a step of {group!r} does not lower {key!r}"
        return
    torch.manual_seed(5)
    before = float(model.loss(batch)["loss"].detach())
    for step in range(3):
        torch.manual_seed(10 + step)
        model.training_step(batch, step, stepper)
    torch.manual_seed(5)
    after = float(model.loss(batch)["loss"].detach())
    assert after < before


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, tmp_path):
    model = make(name)
    perturb(model, 0.05, seed=3)
    save_tensors(model.state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(99)  # a different init: loading must overwrite everything that matters
    other = build(model.name, model.spec, **config_to_dict(model.config)).to(torch.float64)
    other.load_state_dict(load_tensors(tmp_path / "w.safetensors"))
    model.eval(), other.eval()
    x = data_for(model, 8)
    y = labels_for(model, 8)
    torch.manual_seed(1)
    a = score(model, x, y)
    torch.manual_seed(1)
    b = score(other, x, y)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_evaluation_is_deterministic_in_eval_mode(name):
    """In eval mode the score depends on the input and the torch RNG alone: the same seed gives the
    same values, and an exact likelihood needs no seed at all (no dropout left on) and no other
    examples of the batch (no batch statistics)."""
    model = make(name)
    perturb(model, 0.05, seed=3)
    model.eval()
    x, y = data_for(model, 8), labels_for(model, 8)
    if model.exact_likelihood:
        a = score(model, x, y)
        b = score(model, x, y)  # no reseeding
        assert torch.equal(a, b)
        part = score(model, x[:3], None if y is None else y[:3])
        # an adaptive ODE solver picks its steps for the whole batch, so a sub-batch agrees to the
        # solver's tolerance only; batch statistics would move the scores by O(1)
        torch.testing.assert_close(part, a[:3], rtol=0, atol=0.05)
    else:  # a Monte Carlo bound or samples: the RNG is their only randomness
        torch.manual_seed(2)
        a = score(model, x, y)
        torch.manual_seed(2)
        b = score(model, x, y)
        assert torch.equal(a, b)


MODE_DEPENDENT = [n for n in MODELS if mode_dependent(make(n))]


def test_some_example_acts_differently_in_train_and_eval_mode():
    assert {"made[dropout=0.2]", "transformer[dropout=0.2]"} <= set(MODE_DEPENDENT)


@pytest.mark.parametrize("name", MODE_DEPENDENT)
def test_eval_mode_turns_off_train_only_randomness(name):
    """A model with dropout scores differently in train mode (from the same seed) and, in eval
    mode, the same without reseeding: ``eval()`` reaches every layer."""
    model = make(name)
    perturb(model, 0.05, seed=3)
    x, y = data_for(model, 8), labels_for(model, 8)
    model.train()
    torch.manual_seed(2)
    train_score = score(model, x, y).detach()
    model.eval()
    torch.manual_seed(2)
    eval_score = score(model, x, y)
    assert not torch.allclose(train_score, eval_score)
    assert torch.equal(eval_score, score(model, x, y))


def test_load_returns_a_model_in_eval_mode(tmp_path):
    """``dgm.load`` hands back a model ready to score: every layer in eval mode, so a model with
    dropout scores the same twice."""
    run = dgm.train(
        "made", "digits", tmp_path / "run", steps=2, eval_every=2, log_every=1, progress=False,
        model_config={"hidden": (16,), "dropout": 0.3},
    )  # fmt: skip
    model = dgm.load(run)
    assert mode_dependent(model)
    assert not any(m.training for m in model.modules())
    x = data_for(model, 8)
    assert torch.equal(score(model, x), score(model, x))


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_through_loss_and_likelihood_is_one_clear_error(name):
    """A wrong shape or a NaN reaches the model through ``loss`` and through its likelihood
    (``log_prob`` or the named bound): each is one :class:`DataError`, never a torch traceback."""
    model = make(name)
    x, y = data_for(model, 4), labels_for(model, 4)
    nan = x.clone()
    nan.view(4, -1)[0, 0] = float("nan")
    scorers = [lambda v: model.loss(v if y is None else (v, y))]
    if model.exact_likelihood:
        scorers.append(lambda v: model.log_prob(v, y))
    if model.likelihood_bound:
        scorers.append(lambda v: getattr(model, model.likelihood_bound)(v, y))
    for scorer in scorers:
        with pytest.raises(DataError, match="expects"):
            scorer(x[:, None])
        with pytest.raises(DataError, match="NaN"):
            scorer(nan)


@pytest.mark.parametrize("name", MODELS)
def test_float32_works_too(name):
    model = make(name, torch.float32)
    x = data_for(model, 4)
    ll = score(model, x, labels_for(model, 4))
    assert ll.dtype == torch.float32 and torch.isfinite(ll).all()


CONDITIONAL = [n for n in MODELS if make(n).conditional]


def test_every_family_enrols_a_conditional_variant():
    """Issue 27: conditioning is a property of every family."""
    families = {CASES[n][0].family for n in MODELS}
    assert {CASES[n][0].family for n in CONDITIONAL} == families


@pytest.mark.parametrize("name", CONDITIONAL)
def test_a_conditional_model_samples_the_labels_asked_and_refuses_others(name):
    """Labels of the right shape give samples of the right shape (the other checks above already
    train and score the conditional variants with labels); a label outside the classes is one
    DataError."""
    model = make(name)
    k = model.spec.num_classes
    assert isinstance(model, ConditionalModel) and model.num_classes == k
    y = torch.arange(4) % k
    with model.inference():
        assert model.sample(4, y).shape == (4, *model.event_shape)
        with pytest.raises(DataError, match="labels"):
            model.sample(2, torch.tensor([0, k]))

"""One conformance suite over the model registry (scikit-learn's ``parametrize_with_checks`` idea).

Every registered model is enrolled by registering it; nothing here branches on a class. Each model
declares ``test_spec`` and ``test_config`` (small hyperparameters); the checks read capability flags.
"""

from __future__ import annotations

import pytest
import torch

from dgm.core.config import build_config
from dgm.core.errors import ConfigError, DataError
from dgm.core.io import load_tensors, save_tensors
from dgm.models import build, entries

# every registered model, plus ``name[key=value,...]`` for each entry of its ``test_variants``
# (config overrides merged over ``test_config``: one model checked in several configurations)
CASES = {}
for _cls in entries():
    CASES[_cls.name] = (_cls, {})
    for _v in getattr(_cls, "test_variants", ()):
        CASES[f"{_cls.name}[{','.join(f'{k}={v}' for k, v in _v.items())}]"] = (_cls, dict(_v))
MODELS = list(CASES)


def make(name: str, dtype=torch.float64):
    cls, extra = CASES[name]
    torch.manual_seed(0)
    model = build(cls.name, cls.test_spec, **{**cls.test_config, **extra}).to(dtype)
    return model


def data_for(model, n: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spec = model.spec
    if spec.kind == "discrete":
        x = torch.randint(0, spec.levels, (n, *spec.event_shape), generator=g)
        return x.to(model.dtype)
    return torch.randn(n, *spec.event_shape, generator=g, dtype=model.dtype)


def batch_for(model, n: int = 16):
    x = data_for(model, n)
    if model.conditional:
        return x, torch.arange(n) % model.spec.num_classes
    return x


def has_likelihood(model) -> bool:
    return bool(model.exact_likelihood or model.likelihood_bound)


def score(model, x, y=None) -> torch.Tensor:
    """The model's log-likelihood of ``x`` (exact or its bound), ``(B,)``; for a model with neither
    (a GAN), ``B`` samples flattened, ``(B, D)``: what round-trip and determinism checks compare."""
    if has_likelihood(model):
        ll, _ = model.log_likelihood(x, y)
        return ll
    with model.inference():
        return model.sample(x.shape[0]).flatten(1)


def perturb(model, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (zero-initialised output layers would otherwise
    block gradients to earlier layers at step 0)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_registry_is_not_empty():
    assert {"made", "nsf"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_declares_the_contract(name):
    cls, extra = CASES[name]
    assert cls.description and cls.family
    assert isinstance(cls.exact_likelihood, bool) and isinstance(cls.exact_sampling, bool)
    assert cls.likelihood_bound is None or isinstance(cls.likelihood_bound, str)
    assert not (cls.exact_likelihood and cls.likelihood_bound), "exact models need no bound"
    assert set(cls.bound_options) <= ({"k"} if cls.likelihood_bound else set())
    if cls.likelihood_bound is not None:
        assert callable(getattr(cls, cls.likelihood_bound))
    assert cls.test_spec.kind in cls.data_kinds
    # the test config is a valid config
    build_config(cls.Config, {**cls.test_config, **extra})


@pytest.mark.parametrize("name", MODELS)
def test_unknown_hyperparameter_names_the_valid_keys(name):
    cls = CASES[name][0]
    with pytest.raises(ConfigError, match="valid keys are"):
        build(cls.name, cls.test_spec, no_such_key=1)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_and_dtypes(name):
    model = make(name)
    batch = batch_for(model, 8)
    out = model.loss(batch)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    x = batch[0] if isinstance(batch, tuple) else batch
    if has_likelihood(model):
        ll, _ = model.log_likelihood(x, batch[1] if isinstance(batch, tuple) else None)
        assert ll.shape == (8,) and ll.dtype == torch.float64 and torch.isfinite(ll).all()
    with model.inference():
        s = model.sample(5)
    assert s.shape == (5, *model.event_shape) and s.dtype == torch.float64
    if model.exact_likelihood:
        with model.inference():
            lp = model.log_prob(s)
        assert lp.shape == (5,) and lp.dtype == torch.float64 and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", MODELS)
def test_samples_lie_in_the_data_space(name):
    model = make(name)
    with model.inference():
        s = model.sample(32)
    assert torch.isfinite(s).all()
    if model.spec.kind == "discrete":
        assert ((s >= 0) & (s <= model.spec.levels - 1) & (s == s.round())).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = make(name)
    perturb(model)
    model.loss(batch_for(model, 32))["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_one_step_lowers_the_loss_on_a_fixed_batch(name):
    model = make(name)
    perturb(model, 0.01)
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
    perturb(model)
    save_tensors(model.state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(99)  # a different init: loading must overwrite everything that matters
    other = build(model.name, model.spec, **model.hparams()).to(torch.float64)
    other.load_state_dict(load_tensors(tmp_path / "w.safetensors"))
    x = data_for(model, 8)
    y = torch.arange(8) % model.spec.num_classes if model.conditional else None
    torch.manual_seed(1)
    a = score(model, x, y)
    torch.manual_seed(1)
    b = score(other, x, y)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_evaluation_is_deterministic(name):
    model = make(name).eval()
    x = data_for(model, 8)
    torch.manual_seed(2)
    a = score(model, x)
    torch.manual_seed(2)
    b = score(model, x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_is_one_clear_error(name):
    model = make(name)
    x = data_for(model, 4)
    with pytest.raises(DataError, match="expects"):
        model.check_input(x[:, None])
    bad = x.clone()
    bad.view(4, -1)[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        model.check_input(bad)


@pytest.mark.parametrize("name", MODELS)
def test_float32_works_too(name):
    model = make(name, torch.float32)
    x = data_for(model, 4)
    ll = score(model, x)
    assert ll.dtype == torch.float32 and torch.isfinite(ll).all()

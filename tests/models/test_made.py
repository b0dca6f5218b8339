"""MADE: the autoregressive property, exact normalisation and ancestral sampling, in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.models.autoregressive import MADE

D64 = torch.float64


def made(shape, levels, num_classes=None, **config) -> MADE:
    spec = DataSpec(shape, "discrete", levels=levels, num_classes=num_classes)
    return MADE(spec, MADE.Config(**config)).double()


def sharpen(model: MADE, factor: float) -> MADE:
    """Scale all weights so the conditionals are far from uniform (and from independence)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


def all_configurations(num_dims: int, levels: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=num_dims)), dtype=D64)


# ---------------------------------------------------------------------------------- autoregressive
@pytest.mark.parametrize("ordering", ["natural", "random"])
@pytest.mark.parametrize("hidden", [(20,), (15, 12, 18)])
@pytest.mark.parametrize("conditional", [False, True])
def test_binary_logits_are_autoregressive(ordering, hidden, conditional):
    torch.manual_seed(0)
    model = made(
        (6,),
        2,
        num_classes=3 if conditional else None,
        hidden=hidden,
        ordering=ordering,
        seed=5,
        activation="tanh",
        direct=True,
        conditional=conditional,
    )
    y = torch.tensor([1]) if conditional else None
    x = torch.rand(6, dtype=D64)  # continuous relaxation of a binary input
    jac = jacobian(lambda v: model.logits(v[None], y)[0], x)  # (D, D): d logit_i / d x_j
    order = model.net.order
    forbidden = order[None, :] >= order[:, None]
    assert (jac[forbidden] == 0).all()
    assert (jac[~forbidden] != 0).all()  # cyclic degrees and tanh: every allowed pair is used
    if ordering == "random":
        assert not torch.equal(order, torch.arange(6))


@pytest.mark.parametrize("ordering", ["natural", "random"])
@pytest.mark.parametrize("connectivity", ["cyclic", "random"])
def test_categorical_logits_are_autoregressive_in_the_one_hot_blocks(ordering, connectivity):
    torch.manual_seed(0)
    levels, num_dims = 4, 5
    model = made(
        (num_dims,),
        levels,
        hidden=(16, 16),
        ordering=ordering,
        connectivity=connectivity,
        seed=2,
        activation="elu",
    )
    assert model.encoding == "onehot"
    v = torch.rand(num_dims, levels, dtype=D64)  # relaxed one-hot blocks
    jac = jacobian(lambda t: model.net(t[None])[0], v)  # (D, L, D, L)
    dep = jac.abs().amax(dim=(1, 3)) > 0  # (D, D)
    order = model.net.order
    allowed = order[None, :] < order[:, None]
    assert not (dep & ~allowed).any()
    assert dep.any()


def test_scalar_encoding_for_categorical_data():
    model = made((3,), 5, hidden=(8,), input_encoding="scalar")
    assert model.encoding == "scalar" and model.net.in_features == 1
    x = torch.tensor([[0.0, 2.0, 4.0]], dtype=D64)
    assert torch.equal(model.encode(x), x / 4)


# ---------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "shape,levels,config",
    [
        ((4,), 2, dict(hidden=(10,))),
        ((2, 2), 2, dict(hidden=(8, 8), ordering="random", direct=True, activation="tanh")),
        ((3,), 3, dict(hidden=(12,))),
        (
            (3,),
            3,
            dict(hidden=(9, 7), ordering="random", connectivity="random", input_encoding="scalar"),
        ),
    ],
)
def test_probabilities_sum_to_one(shape, levels, config):
    torch.manual_seed(0)
    model = sharpen(made(shape, levels, **config), 3.0)
    num_dims = math.prod(shape)
    xs = all_configurations(num_dims, levels).view(-1, *shape)  # every configuration
    logp = model.log_prob(xs)
    assert logp.shape == (levels**num_dims,)
    torch.testing.assert_close(
        torch.logsumexp(logp, 0), torch.tensor(0.0, dtype=D64), atol=1e-12, rtol=0
    )
    assert logp.max() - logp.min() > 1.0  # far from uniform, so the check has teeth


def test_conditional_probabilities_sum_to_one_for_every_label():
    torch.manual_seed(0)
    model = sharpen(made((3,), 3, num_classes=4, hidden=(12,), conditional=True), 3.0)
    xs = all_configurations(3, 3)
    per_label = []
    for label in range(4):
        logp = model.log_prob(xs, torch.full((27,), label))
        torch.testing.assert_close(
            torch.logsumexp(logp, 0), torch.tensor(0.0, dtype=D64), atol=1e-12, rtol=0
        )
        per_label.append(logp)
    assert (per_label[0] - per_label[1]).abs().max() > 0.1  # the label matters


def test_log_prob_matches_a_direct_chain_rule_computation():
    torch.manual_seed(0)
    model = sharpen(made((3,), 3, hidden=(10,), ordering="random", seed=1), 2.0)
    x = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=D64)
    logits = model.logits(x)  # (B, D, L)
    ref = torch.distributions.Categorical(logits=logits).log_prob(x.long()).sum(-1)
    torch.testing.assert_close(model.log_prob(x), ref)
    binary = sharpen(made((3,), 2, hidden=(10,)), 2.0)
    xb = torch.tensor([[1.0, 0.0, 1.0]], dtype=D64)
    ref = torch.distributions.Bernoulli(logits=binary.logits(xb)).log_prob(xb).sum(-1)
    torch.testing.assert_close(binary.log_prob(xb), ref)


# ---------------------------------------------------------------------------------- sampling
def chi_square_threshold(df: int, z: float = 4.0) -> float:
    """Upper quantile of chi^2_df at a normal z-score (Wilson-Hilferty), ~3e-5 for z = 4."""
    k = 2.0 / (9 * df)
    return df * (1 - k + z * math.sqrt(k)) ** 3


@pytest.mark.parametrize(
    "shape,levels,ordering,label",
    [((4,), 2, "random", None), ((3,), 3, "natural", None), ((3,), 3, "random", 2)],
)
def test_ancestral_samples_follow_the_model(shape, levels, ordering, label):
    torch.manual_seed(0)
    model = sharpen(
        made(
            shape,
            levels,
            num_classes=3 if label is not None else None,
            hidden=(12, 12),
            ordering=ordering,
            seed=4,
            conditional=label is not None,
        ),
        2.5,
    )
    num_dims = math.prod(shape)
    xs = all_configurations(num_dims, levels)
    y = None if label is None else torch.full((len(xs),), label)
    p = model.log_prob(xs.view(-1, *shape), y).exp()  # (K,)
    # power: q is the product of the model's marginals, what a sampler that ignored the
    # conditioning would produce; the test below must reject it
    marg = [torch.stack([p[xs[:, d] == v].sum() for v in range(levels)]) for d in range(num_dims)]
    q = torch.ones_like(p)
    for d in range(num_dims):
        q = q * marg[d][xs[:, d].long()]

    n = 40000
    torch.manual_seed(1)
    s = model.sample(n, None if label is None else torch.tensor(label))
    assert s.shape == (n, *shape) and s.dtype == D64
    codes = (s.reshape(n, -1).long() * levels ** torch.arange(num_dims - 1, -1, -1)).sum(-1)
    counts = torch.bincount(codes, minlength=len(xs)).to(D64)
    expected = n * p
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < chi_square_threshold(len(xs) - 1)
    # the same statistic on the same samples rejects the independent (wrong) distribution
    assert ((counts - n * q) ** 2 / (n * q)).sum().item() > 3 * chi_square_threshold(len(xs) - 1)


# ---------------------------------------------------------------------------------- contract bits
def test_masks_and_ordering_are_saved_with_the_weights():
    torch.manual_seed(0)
    a = made((5,), 2, hidden=(8,), ordering="random", connectivity="random", seed=1)
    state = a.state_dict()
    assert "net.order" in state and "net.layers.0.mask" in state and "net.out.mask" in state
    b = made((5,), 2, hidden=(8,), ordering="random", connectivity="random", seed=2)
    assert not torch.equal(a.net.order, b.net.order)
    b.load_state_dict(state)
    x = torch.randint(0, 2, (7, 5)).to(D64)
    torch.testing.assert_close(b.log_prob(x), a.log_prob(x))


def test_images_float32_and_training():
    torch.manual_seed(0)
    model = MADE(DataSpec((1, 4, 4), "discrete", levels=2), MADE.Config(hidden=(32,)))
    data = (torch.rand(256, 1, 4, 4) < torch.linspace(0.1, 0.9, 16).view(1, 1, 4, 4)).float()
    data[:, 0, 1, 1] = data[:, 0, 0, 0]  # a dependency to learn
    before = model.loss(data)["loss"].item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model.loss(data)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < before - 1.0
    with model.inference():
        s = model.sample(5)
    assert s.shape == (5, 1, 4, 4) and s.dtype == torch.float32
    assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_errors():
    binary = made((3,), 2, hidden=(4,))
    with pytest.raises(DataError, match="integers 0..1"):
        binary.log_prob(torch.tensor([[0.0, 2.0, 1.0]], dtype=D64))
    with pytest.raises(DataError, match="shape"):
        binary.log_prob(torch.zeros(2, 4, dtype=D64))
    with pytest.raises(DataError, match="without conditional"):
        binary.log_prob(torch.zeros(2, 3, dtype=D64), torch.zeros(2))
    cond = made((3,), 2, num_classes=2, hidden=(4,), conditional=True)
    with pytest.raises(DataError, match="pass class labels"):
        cond.log_prob(torch.zeros(2, 3, dtype=D64))
    with pytest.raises(DataError, match=r"0\.\.1"):
        cond.sample(2, torch.tensor([0, 2]))
    with pytest.raises(ConfigError, match="num_classes"):
        made((3,), 2, hidden=(4,), conditional=True)
    with pytest.raises(ConfigError, match="discrete"):
        MADE(DataSpec((3,)))
    with pytest.raises(ConfigError, match="hidden"):
        MADE.Config(hidden=())


# ---------------------------------------------------------------------------------- mask ensembles
def test_every_mask_set_is_autoregressive_in_its_own_order():
    torch.manual_seed(0)
    model = made((6,), 2, hidden=(20, 20), masks=4, direct=True, activation="tanh")
    x = torch.rand(6, dtype=D64)
    orders = []
    for k in range(4):
        model.net.use_mask(k)
        jac = jacobian(lambda v: model.logits(v[None])[0], x)  # (D, D)
        order = model.net.order.clone()
        forbidden = order[None, :] >= order[:, None]
        assert (jac[forbidden] == 0).all()
        assert (jac[~forbidden] != 0).any()
        orders.append(order)
    assert torch.equal(orders[0], torch.arange(6))  # set 0 keeps the configured ordering
    assert len({tuple(o.tolist()) for o in orders}) == 4


@pytest.mark.parametrize("levels,encoding", [(2, "auto"), (3, "onehot"), (3, "scalar")])
def test_mask_mixture_is_normalised_and_is_the_mean_of_its_members(levels, encoding):
    torch.manual_seed(0)
    model = sharpen(made((4,), levels, hidden=(12,), masks=3, input_encoding=encoding), 3.0)
    xs = all_configurations(4, levels)
    logp = model.log_prob(xs)
    torch.testing.assert_close(
        torch.logsumexp(logp, 0), torch.tensor(0.0, dtype=D64), atol=1e-12, rtol=0
    )
    members = []
    for k in range(3):
        model.net.use_mask(k)
        members.append(model.chain_log_prob(xs))
    members = torch.stack(members)  # (K, N)
    torch.testing.assert_close(logp, members.exp().mean(0).log())
    assert (members[0] - members[1]).abs().max() > 0.1  # the members differ: a real mixture


def test_mask_mixture_samples_follow_the_mixture():
    torch.manual_seed(0)
    model = sharpen(made((3,), 3, hidden=(12, 12), masks=3, connectivity="random"), 2.5)
    xs = all_configurations(3, 3)
    p = model.log_prob(xs).exp()
    n = 40000
    torch.manual_seed(1)
    s = model.sample(n)
    codes = (s.long() * 3 ** torch.arange(2, -1, -1)).sum(-1)
    counts = torch.bincount(codes, minlength=len(xs)).to(D64)
    chi2 = ((counts - n * p) ** 2 / (n * p)).sum().item()
    assert chi2 < chi_square_threshold(len(xs) - 1)
    model.net.use_mask(0)
    p0 = model.chain_log_prob(xs).exp()  # one member alone is a different distribution
    assert ((counts - n * p0) ** 2 / (n * p0)).sum().item() > 3 * chi_square_threshold(26)


def test_order_agnostic_training_visits_every_mask_set_and_saves_them():
    torch.manual_seed(0)
    model = made((5,), 2, hidden=(8,), masks=4, seed=3)
    model.train()
    x = torch.randint(0, 2, (16, 5)).to(D64)
    seen = set()
    for _ in range(40):
        model.loss(x)
        seen.add(int(model.net.mask_index))
    assert seen == {0, 1, 2, 3}
    model.eval()
    other = made((5,), 2, hidden=(8,), masks=4, seed=9)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.log_prob(x), model.log_prob(x))
    with pytest.raises(ValueError, match="mask set 4 does not exist"):
        model.net.use_mask(4)
    with pytest.raises(ConfigError, match="masks must be a positive"):
        made((5,), 2, hidden=(8,), masks=0)


def test_connectivity_agnostic_mask_sets_share_the_ordering():
    torch.manual_seed(0)
    model = sharpen(
        made((4,), 2, hidden=(12,), masks=3, order_agnostic=False, connectivity="random"), 3.0
    )
    xs = all_configurations(4, 2)
    torch.testing.assert_close(
        torch.logsumexp(model.log_prob(xs), 0), torch.tensor(0.0, dtype=D64), atol=1e-12, rtol=0
    )
    layers = []
    for k in range(3):
        model.net.use_mask(k)
        assert torch.equal(model.net.order, torch.arange(4))
        layers.append(model.net.layers[0].mask.clone())
    assert not torch.equal(layers[0], layers[1])  # the hidden connectivity differs
    with pytest.raises(ConfigError, match="repeat one mask set"):
        made((4,), 2, hidden=(12,), masks=3, order_agnostic=False)


def test_one_mask_set_keeps_the_state_dict_of_earlier_versions():
    # networks saved before mask sets existed have no mask bookkeeping: they must still load
    single = made((5,), 2, hidden=(8,)).state_dict()
    assert not any("bank" in k or "mask_index" in k for k in single)
    several = made((5,), 2, hidden=(8,), masks=2).state_dict()
    assert {"net.mask_index", "net.order_bank", "net.degree_bank_0"} <= set(several)


# ---------------------------------------------------------------------------------- dropout
def test_dropout_keeps_the_autoregressive_property_and_is_off_in_eval_mode():
    torch.manual_seed(0)
    model = sharpen(made((6,), 2, hidden=(30,), dropout=0.5, activation="tanh", direct=True), 2.0)
    order = model.net.order
    forbidden = order[None, :] >= order[:, None]
    x = torch.rand(6, dtype=D64)
    model.train()
    dropped = []
    for seed in range(5):  # every dropout draw is a sub-network of the masked one
        torch.manual_seed(seed)
        jac = jacobian(lambda v: model.logits(v[None])[0], x)
        assert (jac[forbidden] == 0).all()
        dropped.append(model.logits(x[None]))
    assert not torch.equal(dropped[0], dropped[1])  # dropout is active in training mode
    model.eval()
    xs = all_configurations(6, 2)
    first, second = model.log_prob(xs), model.log_prob(xs)
    assert torch.equal(first, second)  # eval: deterministic, the density the weights define
    assert torch.logsumexp(first, 0).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="dropout"):
        MADE.Config(dropout=1.0)


# ---------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize(
    "levels,config",
    [
        (2, {"hidden": (16, 12)}),
        (4, {"hidden": (16,), "direct": True, "ordering": "random"}),
        (3, {"hidden": (12, 12), "input_encoding": "scalar", "conditional": True}),
        (3, {"hidden": (16,), "masks": 3, "connectivity": "random"}),
    ],
)
def test_fast_and_naive_samplers_draw_identical_samples(levels, config):
    model = sharpen(made((2, 3), levels, num_classes=3, **config), 3.0).eval()
    y = torch.tensor([0, 1, 2] * 10) if model.conditional else None
    draws = []
    for sampler in ("fast", "naive"):
        torch.manual_seed(4)
        draws.append(model.sample(30, y, sampler=sampler))
    assert torch.equal(*draws) and len(draws[0].unique()) == levels


def test_made_temperature_zero_and_top_k_one_are_the_argmax_path():
    model = sharpen(made((5,), 4, hidden=(16,), ordering="random", seed=2), 3.0)
    x = torch.zeros(1, 5, dtype=D64)
    for d in torch.argsort(model.net.order).tolist():  # greedy decoding by hand
        x[0, d] = torch.softmax(model.logits(x)[0, d], -1).argmax()
    assert len(x.unique()) > 1
    for options in ({"temperature": 0.0}, {"top_k": 1}, {"top_k": 1, "sampler": "naive"}):
        assert torch.equal(model.sample(3, **options), x.expand(3, 5)), options
    torch.manual_seed(0)
    cold = model.sample(4000, temperature=0.5)
    torch.manual_seed(0)
    warm = model.sample(4000)
    # sharper conditionals: the argmax path is far more frequent at T = 0.5
    assert (cold == x).all(-1).sum() > 1.5 * (warm == x).all(-1).sum()

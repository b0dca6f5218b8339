"""PixelCNN, Gated PixelCNN, causal Transformer and LSTM: the chain rule checked in float64.

* the autoregressive property through gradients (nothing from pixels at or after the current one),
* the Gated PixelCNN's receptive field is a full window (no blind spot), the PixelCNN's is not,
* exact normalisation over all 2^9 binary 3x3 images,
* the fast and naive samplers draw identical samples from one seed, and the samples follow
  ``exp(log_prob)``,
* class conditioning changes ``log_prob``.
"""

from __future__ import annotations

import itertools

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from dgm.core.errors import ConfigError, DataError
from dgm.core.spec import DataSpec
from dgm.models.autoregressive import RNN, GatedPixelCNN, PixelCNN, Transformer
from dgm.models.autoregressive.base import tempered
from dgm.models.autoregressive.gated_pixelcnn import gate

D64 = torch.float64

TINY = {
    "pixelcnn": (PixelCNN, {"width": 6, "depth": 2, "first_kernel": 3, "head": 8}),
    "gated-pixelcnn": (GatedPixelCNN, {"width": 4, "depth": 2, "first_kernel": 3, "head": 8}),
    "transformer": (Transformer, {"width": 8, "depth": 2, "heads": 2, "mlp_ratio": 2}),
    "rnn": (RNN, {"embed": 4, "width": 8}),
}
NAMES = list(TINY)


def build(name, shape=(1, 3, 3), levels=2, num_classes=None, scale=0.3, **overrides):
    """A tiny float64 model with weights moved off their init (conditionals far from uniform)."""
    cls, cfg = TINY[name]
    spec = DataSpec(shape, "discrete", levels=levels, num_classes=num_classes)
    torch.manual_seed(0)
    model = cls(spec, cls.Config(**(cfg | overrides))).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=D64))
    return model.eval()


def dependence(model, height: int, width: int) -> torch.Tensor:
    """``(D, D)``: entry ``[i, j]`` is ``sum_l |d logit_{i,l} / d input_j|`` at a random input.

    Pixel models are differentiated through their (real-valued) input image, sequence models
    through the embeddings of the input values.
    """
    g = torch.Generator().manual_seed(2)
    if isinstance(model, (PixelCNN, GatedPixelCNN)):
        x = torch.rand(1, 1, height, width, generator=g, dtype=D64)
        jac = jacobian(lambda v: model.logits(v), x, vectorize=True)  # (1, D, L, 1, 1, H, W)
        return jac.abs().sum(2).reshape(height * width, height * width)
    x = torch.randint(0, model.levels, (1, height * width), generator=g)
    e = model.embed(x).detach()  # (1, D, E)
    jac = jacobian(model.logits_from_embeddings, e, vectorize=True)  # (1, D, L, 1, D, E)
    return jac.abs().sum((2, 5))[0, :, 0]  # (D, D)


# ---------------------------------------------------------------------------------- autoregressive
@pytest.mark.parametrize("name", NAMES)
def test_no_output_depends_on_the_current_or_a_later_input(name):
    height, width = 5, 5
    model = build(name, shape=(1, height, width), levels=3)
    dep = dependence(model, height, width)
    later = torch.ones(height * width, height * width).triu().bool()  # j >= i
    assert (dep[later] == 0).all()
    assert (dep[~later] != 0).any()


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_sequence_models_see_every_earlier_element(name):
    model = build(name, shape=(9,), levels=3)
    dep = dependence(model, 1, 9)
    earlier = torch.ones(9, 9).tril(-1).bool()
    assert (dep[earlier] != 0).all()


def test_gated_pixelcnn_sees_its_whole_window_no_blind_spot():
    height, width = 7, 7
    model = build("gated-pixelcnn", shape=(1, height, width), levels=3)
    r = model.receptive_radius  # first_kernel 3, 2 layers: R = 1 + 1 = 2
    dep = dependence(model, height, width)
    for q in range(height * width):
        i, j = divmod(q, width)
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[i, max(j - r, 0) : j] = True  # left of the pixel on its row
        expected[max(i - 1 - r, 0) : i, max(j - r, 0) : j + r + 1] = True  # rows above
        assert torch.equal(dep[q].view(height, width) != 0, expected), f"pixel {(i, j)}"


def _paper_gate(a: torch.Tensor) -> torch.Tensor:
    """``tanh(t) * sigmoid(s)`` over the channel halves, by PyTorch's own functions."""
    t, s = a.chunk(2, dim=1)
    return torch.tanh(t) * torch.sigmoid(s)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(5, 6), (3, 8, 4, 5)])
def test_the_gate_is_tanh_times_sigmoid_in_value_and_derivatives(dtype, shape):
    """The one-sigmoid gate against ``torch.tanh(t) * torch.sigmoid(s)``: values, gradients and
    (float64) second derivatives, on rows (the fast decoder's) and channels-last maps."""
    g = torch.Generator().manual_seed(0)
    a = 4 * torch.randn(shape, generator=g, dtype=dtype)
    if len(shape) == 4:
        a = a.contiguous(memory_format=torch.channels_last)
    a.requires_grad_()
    ours, ref = gate(a), _paper_gate(a)
    assert ours.shape == (shape[0], shape[1] // 2, *shape[2:]) and ours.dtype == dtype
    tol = 1e-15 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours, ref, rtol=0, atol=tol)
    w = torch.randn(ref.shape, generator=g, dtype=dtype)
    (d_ours,) = torch.autograd.grad((ours * w).sum(), a, create_graph=True)
    (d_ref,) = torch.autograd.grad((ref * w).sum(), a, create_graph=True)
    torch.testing.assert_close(d_ours, d_ref, rtol=0, atol=10 * tol)
    if dtype == torch.float64:
        (dd_ours,) = torch.autograd.grad(d_ours.pow(2).sum(), a)
        (dd_ref,) = torch.autograd.grad(d_ref.pow(2).sum(), a)
        torch.testing.assert_close(dd_ours, dd_ref, rtol=1e-10, atol=1e-12)


def _gated_reference_logits(model: GatedPixelCNN, x: torch.Tensor, y=None) -> torch.Tensor:
    """The gated stacks from the paper's equations, apart from the fast path's choices:
    channels-first maps, full masked kernels, the vertical shift as a zero row on top, and the
    gate by ``torch.tanh`` and ``torch.sigmoid`` (the model's goes through one sigmoid)."""
    v = h = 2.0 * x / (model.levels - 1) - 1.0
    for layer, b in zip(model.stack, model._biases(y)):
        k = layer.vconv.kernel_size[0] // 2
        vpre = F.conv2d(v, layer.vconv.weight * layer.vconv.mask, layer.vconv.bias, padding=k)
        down = torch.cat([torch.zeros_like(vpre[:, :, :1]), vpre[:, :, :-1]], dim=2)
        hpre = F.conv2d(h, layer.hconv.weight * layer.hconv.mask, layer.hconv.bias, padding=k)
        hpre = hpre + F.conv2d(down, layer.link.weight, layer.link.bias)
        if b is not None:
            hpre, vpre = hpre + b[:, :, None, None], vpre + b[:, :, None, None]
        hnew = F.conv2d(_paper_gate(hpre), layer.hout.weight, layer.hout.bias)
        h = hnew if layer.first else h + hnew
        v = _paper_gate(vpre)
    out = F.conv2d(torch.relu(F.conv2d(h, model.head1.weight, model.head1.bias)),
                   model.head2.weight, model.head2.bias)  # fmt: skip
    return out.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("conditional", [False, True])
def test_gated_pixelcnn_fast_layout_keeps_the_reference_values(dtype, conditional):
    """The training forward (channels-last maps, cropped kernels, the shift as one padded copy)
    gives the reference's logits and input gradients within float tolerance."""
    model = build("gated-pixelcnn", shape=(1, 6, 5), levels=3, depth=3,
                  num_classes=2 if conditional else None, conditional=conditional).to(dtype)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (4, 1, 6, 5), generator=g).to(dtype).requires_grad_()
    y = torch.tensor([0, 1, 1, 0]) if conditional else None
    fast, ref = model.logits(x, y), _gated_reference_logits(model, x, y)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)
    w = torch.randn(fast.shape, generator=g, dtype=dtype)
    (grad_fast,) = torch.autograd.grad((fast * w).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=tol, atol=tol)


def _pixelcnn_support(model: PixelCNN, i: int, j: int, height: int, width: int) -> torch.Tensor:
    """Pixels reachable from output ``(i, j)`` by walking the masks back through the layers."""
    reach = torch.zeros(height, width, dtype=torch.bool)
    reach[i, j] = True
    convs = [(b.conv.mask[0, 0].bool(), True) for b in reversed(model.blocks)]
    for mask, residual in [*convs, (model.first.mask[0, 0].bool(), False)]:
        c = mask.shape[0] // 2
        new = reach.clone() if residual else torch.zeros_like(reach)
        for a, b in reach.nonzero().tolist():
            for da, db in mask.nonzero().tolist():
                y, x = a + da - c, b + db - c
                if 0 <= y < height and 0 <= x < width:
                    new[y, x] = True
        reach = new
    return reach


def test_pixelcnn_has_a_blind_spot_to_the_upper_right():
    """The plain PixelCNN's receptive field is a staircase: pixels before the current one and
    inside its window are never seen (van den Oord et al. 2016b, Fig. 1). This test documents
    them: the gradient support equals what the masks reach, and that misses earlier pixels."""
    height, width = 7, 7
    model = build("pixelcnn", shape=(1, height, width), levels=3, depth=2)
    r = model.config.first_kernel // 2 + len(model.blocks) * (model.config.kernel // 2)  # 3
    dep = dependence(model, height, width)
    i, j = 5, 3
    seen = dep[i * width + j].view(height, width) != 0
    assert torch.equal(seen, _pixelcnn_support(model, i, j, height, width))
    window = torch.zeros(height, width, dtype=torch.bool)
    window[max(i - r, 0) : i, max(j - r, 0) : j + r + 1] = True
    window[i, max(j - r, 0) : j] = True
    blind = window & ~seen
    spots = blind.nonzero().tolist()
    assert spots, "expected a blind spot"
    assert all(b > j and a < i for a, b in spots), f"blind spot outside the upper right: {spots}"
    assert [i - 2, j + 3] in spots  # two rows up, three to the right: inside the window, unseen


# ---------------------------------------------------------------------------------- normalisation
def all_binary_images(height: int, width: int) -> torch.Tensor:
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=height * width)), dtype=D64)
    return grid.view(-1, 1, height, width)  # (2^k, 1, H, W)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_log_prob_sums_to_one_over_all_512_binary_images(name, conditional):
    model = build(name, num_classes=3 if conditional else None, conditional=conditional)
    x = all_binary_images(3, 3)
    y = torch.full((len(x),), 2) if conditional else None
    total = model.log_prob(x, y).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=D64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_class_conditional_log_prob_differs_by_label(name):
    model = build(name, levels=3, num_classes=4, conditional=True)
    x = torch.randint(0, 3, (5, 1, 3, 3), generator=torch.Generator().manual_seed(4)).double()
    lp = torch.stack([model.log_prob(x, torch.full((5,), k)) for k in range(4)])  # (K, B)
    assert (lp[1:] - lp[:1]).abs().min() > 1e-6
    with pytest.raises(DataError, match="conditional"):
        model.log_prob(x)
    with pytest.raises(DataError, match="0..3"):
        model.log_prob(x, torch.full((5,), 7))


# ---------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conditional", [False, True])
def test_fast_and_naive_samplers_draw_identical_samples(name, conditional):
    model = build(name, shape=(1, 4, 5), levels=5, num_classes=3 if conditional else None,
                  conditional=conditional)  # fmt: skip
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if conditional else None
    torch.manual_seed(11)
    fast = model.sample(6, y, sampler="fast")
    torch.manual_seed(11)
    naive = model.sample(6, y, sampler="naive")
    assert torch.equal(fast, naive)
    assert fast.shape == (6, 1, 4, 5) and len(fast.unique()) > 1
    torch.manual_seed(12)
    assert not torch.equal(model.sample(6, y), fast)  # another seed, other samples


@pytest.mark.parametrize("name", NAMES)
def test_fast_decoder_reproduces_the_teacher_forced_conditionals(name):
    model = build(name, shape=(1, 4, 5), levels=4)
    x = torch.randint(0, 4, (3, 1, 4, 5), generator=torch.Generator().manual_seed(5)).double()
    flat = x.view(3, -1)
    probs = []
    model.autoregress(3, lambda d, p: probs.append(p) or flat[:, d], sampler="fast")
    full = torch.softmax(model.logits(x), dim=-1)  # (3, D, 4)
    torch.testing.assert_close(torch.stack(probs, 1), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_samples_follow_the_model_distribution(name):
    model = build(name, shape=(1, 1, 3), scale=0.8)
    torch.manual_seed(0)
    s = model.sample(4000).view(4000, 3)
    counts = torch.bincount((s[:, 0] * 4 + s[:, 1] * 2 + s[:, 2]).long(), minlength=8)
    probs = model.log_prob(all_binary_images(1, 3)).exp().detach()
    _, p = scipy.stats.chisquare(counts.numpy(), (4000 * probs).numpy())
    assert p > 1e-3


# ---------------------------------------------------------------------------------- errors
def test_bad_configurations_are_one_sentence():
    with pytest.raises(ConfigError, match="single-channel images"):
        PixelCNN(DataSpec((12,), "discrete", levels=2))
    with pytest.raises(ConfigError, match="odd"):
        GatedPixelCNN.Config(kernel=4)
    with pytest.raises(ConfigError, match="divisible"):
        Transformer.Config(width=10, heads=4)
    with pytest.raises(ConfigError, match="continuous"):
        RNN(DataSpec((4,), "continuous"))
    with pytest.raises(ConfigError, match="sampler"):
        build("rnn").sample(2, sampler="slow")


def test_gated_pixelcnn_size_follows_the_image_unless_given():
    """Unset width and depth are 64x6 on small images and the deep, narrow 24x20 of the MNIST
    recipe above 16 pixels a side (its receptive field then spans the image); given ones win."""
    small = GatedPixelCNN(DataSpec((1, 8, 8), "discrete", levels=17))
    large = GatedPixelCNN(DataSpec((1, 28, 28), "discrete", levels=2))
    given = GatedPixelCNN(
        DataSpec((1, 28, 28), "discrete", levels=2), GatedPixelCNN.Config(width=8, depth=3)
    )
    assert small.net_size == {"width": 64, "depth": 6} and len(small.stack) == 6
    assert large.net_size == {"width": 24, "depth": 20} and len(large.stack) == 20
    assert large.stack[1].hout.in_channels == 24 and large.receptive_radius == 3 + 19
    assert given.net_size == {"width": 8, "depth": 3} and len(given.stack) == 3
    with pytest.raises(ConfigError, match="width must be at least 1"):
        GatedPixelCNN.Config(width=0)


# ---------------------------------------------------------------------------------- temperature
def greedy(model, y=None, n=4):
    """The argmax path: every dimension takes its conditional's most probable value."""
    return model.autoregress(n, lambda d, p: p.argmax(-1), y, sampler="naive").double()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sampler", ["fast", "naive"])
def test_temperature_zero_and_top_k_one_are_the_argmax_path(name, sampler):
    model = build(name, shape=(1, 3, 4), levels=4, scale=0.8)
    path = greedy(model).view(4, 1, 3, 4)
    assert len(path.unique()) > 1  # not a constant image: the path follows the conditionals
    torch.manual_seed(3)
    assert torch.equal(model.sample(4, sampler=sampler, temperature=0.0), path)
    torch.manual_seed(4)
    assert torch.equal(model.sample(4, sampler=sampler, top_k=1), path)
    torch.manual_seed(5)  # a small temperature: the same path with overwhelming probability
    assert torch.equal(model.sample(4, sampler=sampler, temperature=1e-3), path)


@pytest.mark.parametrize("name", NAMES)
def test_temperature_and_top_k_keep_fast_and_naive_identical(name):
    model = build(name, shape=(1, 3, 4), levels=5, scale=0.8)
    draws = []
    for sampler in ("fast", "naive"):
        torch.manual_seed(8)
        draws.append(model.sample(20, sampler=sampler, temperature=0.7, top_k=3))
    assert torch.equal(*draws)
    torch.manual_seed(8)
    plain = model.sample(20)
    torch.manual_seed(8)
    assert torch.equal(model.sample(20, temperature=1.0, top_k=0), plain)  # the defaults


def test_tempered_is_the_softmax_of_scaled_logits_over_the_top_k():
    g = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(6, 7, generator=g, dtype=D64)
    probs = torch.softmax(logits, -1)
    for t in (0.3, 1.0, 2.5):
        torch.testing.assert_close(tempered(probs, t), torch.softmax(logits / t, -1))
        top = logits.topk(3, -1).indices
        masked = torch.full_like(logits, -torch.inf).scatter(-1, top, logits.gather(-1, top))
        torch.testing.assert_close(tempered(probs, t, top_k=3), torch.softmax(masked / t, -1))
    assert torch.equal(tempered(probs, 0.0).argmax(-1), logits.argmax(-1))
    assert torch.equal(tempered(probs, 0.0).sum(-1), torch.ones(6, dtype=D64))
    with pytest.raises(ConfigError, match="temperature must be a finite number >= 0"):
        build("rnn").sample(2, temperature=-1.0)
    with pytest.raises(ConfigError, match="top_k must be an integer >= 0"):
        build("rnn").sample(2, top_k=-2)

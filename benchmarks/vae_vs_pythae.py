"""dgm's ``vae`` against pythae's ``VAE`` on the fixed binarized MNIST: same data, architecture,
optimizer, batch size and number of epochs; seconds per epoch and test negative ELBO (nats).

    .venv/bin/pip install pythae   # not a dgm dependency
    .venv/bin/python benchmarks/vae_vs_pythae.py [--epochs 3] [--hidden 300] [--latent 40]

Both models: MLP encoder 784 -> H -> H -> 2 * latent (ELU), decoder latent -> H -> H -> 784
Bernoulli logits (ELU; the last linear map without bias plus a free per-pixel bias, as in dgm, and
that bias started at the logit of the smoothed pixel marginal of dgm's first training batch, as
dgm's ``on_train_start`` does). Adam, constant learning rate, one reparameterized sample per step.

Differences that the APIs impose (reported as caveats):

* the encoder's second head is ``log sigma`` in dgm, ``log sigma^2`` in pythae (same layers);
* pythae's decoder must return probabilities: its BCE is on ``sigmoid(logits)`` (log clamped at
  -100 by ``F.binary_cross_entropy``); dgm uses the logits directly;
* dgm clips the gradient norm at 10 by default; here ``grad_clip=0`` to match pythae;
* dgm slices batches from a tensor; pythae goes through a ``DataLoader`` over a ``BaseDataset``.

Timed: dgm, the engine's fit loop (``train_seconds`` of summary.json: the steps plus the final
checkpoint write; no validation, ``eval_every=0``); pythae, ``BaseTrainer.train()`` (the steps, its
per-epoch logging and the final model write; no eval set). The wall clock of the whole call
(dgm: ``dgm.api.train`` including run-directory setup and its summary with ``eval_k=1``; pythae:
trainer construction plus ``train()``) is reported too.

Test negative ELBO: computed here for both from the encoder / decoder outputs with the same
estimator and the same noise: closed-form KL plus the Bernoulli reconstruction term (BCE with
logits summed over the 784 pixels), averaged over 10 single-sample draws, on the same 2000 test
images (a random subset, seed 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import dgm.data
from _common import mean_sem, report
from dgm.api import load, train


def mlp(sizes: list[int], last_bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(a, b, bias=last_bias or not last))
        if not last:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


def pythae_networks(hidden: int, latent: int, init_bias: torch.Tensor):
    from pythae.models.base.base_utils import ModelOutput  # optional peer (``bench`` extra)
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.net = mlp([784, hidden, hidden, 2 * latent])

        def forward(self, x):
            mu, log_var = self.net(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.net = mlp([latent, hidden, hidden, 784], last_bias=False)
            self.bias = nn.Parameter(init_bias.reshape(1, 28, 28).clone())

        def logits(self, z):
            return self.net(z).view(z.shape[0], 1, 28, 28) + self.bias

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.logits(z)))

    return Encoder(), Decoder()


def neg_elbo(encode, decode_logits, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-image ``KL + mean_s BCE(x, logits(mu + sigma eps_s))`` (nats); ``encode`` -> (mu, log_std)."""
    mu, log_std = encode(x)
    kl = 0.5 * (mu.square() + torch.exp(2 * log_std) - 1 - 2 * log_std).sum(-1)
    xf = x.reshape(x.shape[0], -1)
    recon = torch.stack(
        [
            F.binary_cross_entropy_with_logits(
                decode_logits(mu + log_std.exp() * e).reshape(x.shape[0], -1), xf, reduction="none"
            ).sum(-1)
            for e in eps
        ]
    ).mean(0)
    return (recon + kl).double()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=300)
    ap.add_argument("--latent", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-n", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(2)
    import pythae  # optional peer: the ``bench`` extra
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    E, B, H, L, lr = args.epochs, args.batch_size, args.hidden, args.latent, args.lr
    data = dgm.data.load("binarized-mnist")
    x_train, x_test = data.train.float(), data.test.float()
    sub = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(0))[: args.test_n]
    x_eval = x_test[sub]
    eps = torch.randn(args.draws, x_eval.shape[0], L, generator=torch.Generator().manual_seed(1))
    tmp = Path(tempfile.mkdtemp(prefix="vae_vs_pythae_"))

    # ---------------------------------------------------------------- dgm
    torch.manual_seed(0)
    t0 = time.perf_counter()
    out = train(
        "vae", data, tmp / "dgm", overwrite=True, progress=False, checkpoint_every=0,
        model_config={"latent_dim": L, "hidden": [H, H], "activation": "elu", "eval_k": 1,
                      "prior": "standard"},
        epochs=E, batch_size=B, lr=lr, grad_clip=0.0, eval_every=0,
    )  # fmt: skip
    dgm_wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    model = load(out).model  # the model itself (model space): its encoder and bound methods
    with torch.no_grad():
        model.eval()
        dgm_nelbo = neg_elbo(
            lambda x: model.encode(x),
            lambda z: model.decoder_params(z)[:, 0],
            x_eval.to(model.dtype), eps.to(model.dtype),
        )  # fmt: skip
    n_params_dgm = sum(p.numel() for p in model.parameters())

    # ---------------------------------------------------------------- pythae
    # dgm's first training batch (engine._batch at step 0, seed 0) for the same bias start
    first = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(0))[:B]
    p = (x_train[first].sum(0) + 1.0) / (B + 2.0)
    torch.manual_seed(0)
    enc, dec = pythae_networks(H, L, torch.logit(p))
    pmodel = VAE(
        VAEConfig(input_dim=(1, 28, 28), latent_dim=L, reconstruction_loss="bce"),
        encoder=enc, decoder=dec,
    )  # fmt: skip
    n_params_pythae = sum(p.numel() for p in pmodel.parameters())
    tcfg = BaseTrainerConfig(
        output_dir=str(tmp / "pythae"), num_epochs=E, learning_rate=lr,
        per_device_train_batch_size=B, per_device_eval_batch_size=B, no_cuda=True,
        optimizer_cls="Adam", scheduler_cls=None, steps_saving=None, steps_predict=None, seed=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer = BaseTrainer(pmodel, BaseDataset(x_train, torch.zeros(x_train.shape[0])), None, tcfg)
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()
    pythae_fit, pythae_wall = t2 - t1, t2 - t0
    pm = trainer.model.eval()
    with torch.no_grad():

        def encode(x):
            o = pm.encoder(x)
            return o.embedding, 0.5 * o.log_covariance

        pythae_nelbo = neg_elbo(encode, pm.decoder.logits, x_eval, eps)

    def sem(v: torch.Tensor) -> float:
        return mean_sem(v)[1]

    rows = [
        {
            "library": "dgm " + dgm.__version__,
            "s_per_epoch": summary["train_seconds"] / E,
            "wall_s_per_epoch": dgm_wall / E,
            "test_neg_elbo": float(dgm_nelbo.mean()),
            "test_neg_elbo_sem": sem(dgm_nelbo),
            "params": n_params_dgm,
        },
        {
            "library": "pythae " + version("pythae"),
            "s_per_epoch": pythae_fit / E,
            "wall_s_per_epoch": pythae_wall / E,
            "test_neg_elbo": float(pythae_nelbo.mean()),
            "test_neg_elbo_sem": sem(pythae_nelbo),
            "params": n_params_pythae,
        },
    ]
    diff = dgm_nelbo - pythae_nelbo  # paired: same images, same noise
    rows.append(
        {
            "library": "ratio dgm/pythae",
            "s_per_epoch": rows[0]["s_per_epoch"] / rows[1]["s_per_epoch"],
            "wall_s_per_epoch": rows[0]["wall_s_per_epoch"] / rows[1]["wall_s_per_epoch"],
            "test_neg_elbo": rows[0]["test_neg_elbo"] / rows[1]["test_neg_elbo"],
            "test_neg_elbo_sem": "",
            "params": n_params_dgm / n_params_pythae,
        }
    )
    columns = list(rows[0])
    extra = {
        "setup": {
            "epochs": E, "batch_size": B, "lr": lr, "hidden": [H, H], "latent_dim": L,
            "activation": "elu", "optimizer": "Adam", "grad_clip": 0, "test_n": x_eval.shape[0],
            "elbo_draws": args.draws, "pythae": getattr(pythae, "__version__", version("pythae")),
        },
        "neg_elbo_diff_dgm_minus_pythae": float(diff.mean()),
        "neg_elbo_diff_sem": sem(diff),
        "dgm_train_seconds": summary["train_seconds"],
        "pythae_train_seconds": pythae_fit,
    }  # fmt: skip
    report("vae_vs_pythae", rows, columns, extra)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

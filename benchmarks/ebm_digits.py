"""An MLP energy-based model on ``digits`` (8x8, 17 levels, dequantized to [0, 1)) trained with
persistent contrastive divergence through the dgm engine: a grid of MCMC samples and the test NLL
from an annealed-importance-sampling estimate of log Z (``dgm eval``'s ``test_nll``: an
estimate, neither exact nor a bound), beside a reference: the full-covariance Gaussian the EBM's
chains start from (the AIS initial distribution), whose NLL is exact.

    .venv/bin/python benchmarks/ebm_digits.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import dgm.data
from _common import RESULTS, loadavg, report
from dgm.api import load_run
from dgm.eval.ais import ebm_log_likelihood
from dgm.eval.run import evaluate
from dgm.plots import save_samples

CONFIG = {
    "objective": "pcd",
    "energy": "mlp",
    "hidden": (256, 256),
    "mcmc": "langevin",
    "mcmc_steps": 40,
    "mcmc_step_size": 0.002,
    "alpha": 0.1,
    "buffer_size": 5000,
    "tether": 1.0,
    "fourier_features": 0,  # the settings of its figure, not pcd's 2-D defaults (issue 24)
    "cd_init": "noise",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = loadavg()
    data = dgm.data.load("digits")
    out = Path(tempfile.mkdtemp()) / "ebm-digits"
    t0 = time.perf_counter()
    dgm.train(
        "ebm", data, out, model_config=CONFIG, steps=args.steps, batch_size=args.batch_size,
        lr=1e-4, schedule="cosine", progress=False, checkpoint_every=0, log_every=100,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    run = load_run(out)
    model = run.model
    torch.manual_seed(0)
    with model.inference():
        s = model.sample(64, steps=400)
        s = run.preprocessor.inverse(s).clamp(0, run.raw_spec.levels - 1)
    png = RESULTS / "ebm_digits_samples.png"
    save_samples(s, png, levels=run.raw_spec.levels)
    t1 = time.perf_counter()
    res = evaluate(model, data, run.preprocessor, metrics=["nll"])
    ais_s = time.perf_counter() - t1
    # a longer annealing schedule: how much the estimate moves with the number of temperatures
    g = torch.Generator().manual_seed(1)
    x = data.split("test")[0].to(model.dtype)
    xm, log_det = run.preprocessor(x, generator=torch.Generator().manual_seed(0))
    with model.inference():
        values, _, info_long = ebm_log_likelihood(model, xm, chains=256, n_temps=1000, generator=g)
    ais_long = float(-(values + log_det).mean())
    # the exact NLL of the initial Gaussian (same dequantization), for scale
    with torch.no_grad():
        gauss_nll = float(-(model.noise.log_prob(xm) + log_det).mean())
    d = 64
    row = {
        "model": "ebm/pcd (mlp 256x256)",
        "steps": args.steps,
        "train_s": train_s,
        "ais_nll_estimate": res["test_nll"],
        "ais_nll_estimate_sem": res["test_nll_sem"],  # includes the error of log Z
        "ais_bpd_estimate": res["test_bpd"],
        "ais_log_z_stderr": res["ais_log_z_stderr"],
        "ais_ess": res["ais_ess"],
        "ais_s": ais_s,
        "ais1000_nll_estimate": ais_long,
        "ais1000_log_z_stderr": info_long["log_z_stderr"],
        "ais1000_ess": info_long["ess"],
        "gaussian_nll_exact": gauss_nll,
        "gaussian_bpd_exact": gauss_nll / (d * math.log(2)),
    }
    report(
        "ebm_digits",
        [row],
        list(row),
        {"config": CONFIG, "samples": png.name, "likelihood": res["likelihood"],
         "loadavg_start": load_start},
    )  # fmt: skip


if __name__ == "__main__":
    main()

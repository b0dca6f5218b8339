"""bfloat16 mixed precision: the training forward pass runs under autocast, everything else (the
weights, gradients, optimizer state and the saved model) stays float32."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dgm.cli.main import main
from dgm.core.config import build_config
from dgm.core.errors import ConfigError
from dgm.core.spec import DataSpec
from dgm.models import build
from dgm.train.config import TrainConfig
from dgm.train.engine import Trainer


def _nsf_logging_dtypes() -> tuple[torch.nn.Module, list[torch.dtype]]:
    """A small 2-D nsf and the list its first linear layer appends each output's dtype to."""
    model = build("nsf", DataSpec((2,)), depth=2, hidden=[16, 16])
    seen: list[torch.dtype] = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return model, seen


def test_bf16_mixed_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(256, 2) * torch.tensor([1.0, 0.3])
    model, seen = _nsf_logging_dtypes()
    cfg = TrainConfig(steps=4, batch_size=64, precision="bf16-mixed", progress=False,
                      checkpoint_every=0)  # fmt: skip
    trainer = Trainer(model, x, config=cfg, out=tmp_path)
    trainer.fit()
    assert seen and set(seen) == {torch.bfloat16}  # every training forward pass
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    state = trainer.optimizers["model"].state
    assert all(s["exp_avg"].dtype == torch.float32 for s in state.values())
    seen.clear()
    with torch.no_grad():
        model.log_prob(x[:8])  # outside training: full precision
    assert set(seen) == {torch.float32}


def test_full_precision_stays_float32(tmp_path):
    x = torch.randn(128, 2)
    model, seen = _nsf_logging_dtypes()
    Trainer(
        model, x, config=TrainConfig(steps=2, batch_size=64, progress=False), out=tmp_path
    ).fit()
    assert set(seen) == {torch.float32}


def test_cli_trains_a_tiny_run_in_bf16_mixed(tmp_path, capsys):
    out = tmp_path / "bf16"
    code = main(["train", "made", "--data", "digits", "--out", str(out), "--steps", "6",
                 "--set", "hidden=[32]", "--precision", "bf16-mixed", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    weights = load_file(out / "model.safetensors")
    floats = [w for w in weights.values() if w.is_floating_point()]
    assert floats and all(w.dtype == torch.float32 for w in floats)
    summary = json.loads(capsys.readouterr().out)
    assert torch.isfinite(torch.tensor(summary["test_nll"]))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"dtype": "bfloat16"}, "use precision 'bf16-mixed'"),
        ({"dtype": "float64", "precision": "bf16-mixed"}, "does not combine with dtype"),
        ({"precision": "bf16"}, "must be one of 'full', 'bf16-mixed'"),
        ({"dtype": "int8"}, "'float32' or 'float64', not 'int8'"),
    ],
)
def test_bad_precision_options_are_one_sentence(options, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, options, what="training")


def test_cli_dtype_bfloat16_points_to_the_mixed_precision_option(tmp_path, capsys):
    code = main(["train", "nsf", "--data", "8gaussians", "--out", str(tmp_path / "x"),
                 "--dtype", "bfloat16"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--precision bf16-mixed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (False, False)])
def test_auto_precision_is_bf16_mixed_only_on_bfloat16_hardware(
    tmp_path, monkeypatch, amx, avx512_bf16
):
    """``precision="auto"`` trains in bf16-mixed on a CPU with AMX tiles or AVX-512 bfloat16
    instructions, in full precision on one without either (bfloat16 there is converted and
    slower), and always in full with float64; the summary names the precision the run used."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)  # fmt: skip
    bf16 = amx or avx512_bf16  # either unit: bf16-mixed
    want = "bf16-mixed" if bf16 else "full"
    assert TrainConfig(precision="auto").resolved_precision() == want
    assert TrainConfig(precision="auto", dtype="float64").resolved_precision() == "full"
    assert TrainConfig(precision="full").resolved_precision() == "full"  # explicit wins
    assert TrainConfig(precision="bf16-mixed").resolved_precision() == "bf16-mixed"
    x = torch.randn(128, 2)
    model, seen = _nsf_logging_dtypes()
    cfg = TrainConfig(steps=2, batch_size=64, precision="auto", progress=False,
                      checkpoint_every=0)  # fmt: skip
    info = Trainer(model, x, config=cfg, out=tmp_path).fit()
    assert info["train_precision"] == want
    assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}

"""The README's quick start and examples stay true: its code blocks run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dgm.cli.main import main
from dgm.models import names

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quick_start_is_two_make_targets():
    quick = blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in quick.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    # the demo target is what the README says: a dgm train into runs/demo, then dgm eval
    assert "runs/demo" in makefile and "$(BIN)/dgm eval runs/demo" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")[0]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "torch.Size([5]) torch.Size([100, 2])" in proc.stdout


def test_cli_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines = [line.split("  #")[0].strip() for line in blocks("bash")[1].splitlines()]
    commands = [shlex.split(line) for line in lines if line.startswith("dgm ")]
    assert len(commands) >= 6
    # the score example for made needs an input file: make one from its own samples
    for argv in commands:
        if argv[1] == "score" and argv[2] == "runs/made":
            assert main(["sample", "runs/made", "-n", "20", "--out", "runs/made/x.npy"]) == 0
        assert main(argv[1:]) == 0, " ".join(argv)
    assert (tmp_path / "runs/nsf/eval.json").is_file()
    assert (tmp_path / "runs/made/bpd.npy").is_file()


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_targets_parse(target):
    proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_model_table_names_every_registered_model():
    table = README[: README.index("## Quick start")]
    listed = set(re.findall(r"`([a-z0-9-]+)`", table))
    assert set(names()) <= listed, f"README's model table lacks {sorted(set(names()) - listed)}"

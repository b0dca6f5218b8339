"""dgm compare --executor ray: the same leaderboard as local, a killed worker's run resumed, and a
one-sentence error without Ray. Marked ``ray`` (``-m "not ray"`` skips them); a local Ray of 2
CPUs is started once for the module."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dgm.cli.main import main
from dgm.compare import compare
from dgm.compare.executors import RayExecutor, RunJob
from dgm.core.errors import DgmError

pytestmark = pytest.mark.ray

#: figures that measure time, not the model: they differ between any two runs
_TIMES = {"train_seconds", "seconds"}


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:  # a short temp dir: Ray's socket paths must stay under ~107 characters
        ray.init(
            num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
            _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"), log_to_driver=False,
            logging_level="error",
        )  # fmt: skip
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def one_thread():
    """Ray tasks of one CPU train with one torch thread; the local runs do the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        str(p.parent.relative_to(out)): load_file(p) for p in out.rglob("runs/**/model.safetensors")
    }


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb) and wa
    for run in wa:
        assert wa[run].keys() == wb[run].keys()
        assert all(torch.equal(wa[run][k], wb[run][k]) for k in wa[run]), run


def test_ray_gives_the_local_leaderboard(cluster, one_thread, tmp_path, tiny):
    kw = dict(
        steps=20, seeds=2, model_configs=tiny.configs("nsf", "realnvp"),
        train_options=tiny.train, eval_options=tiny.eval | {"metrics": ["mmd"]},
        report=False, progress=False,
    )  # fmt: skip
    local = compare(["nsf", "realnvp"], ["8gaussians"], tmp_path / "local", **kw)
    ray = compare(["nsf", "realnvp"], ["8gaussians"], tmp_path / "ray", executor="ray", **kw)
    assert ray["complete"] and not ray["failed"]
    rows_l, rows_r = local["tables"][0]["rows"], ray["tables"][0]["rows"]
    assert [(r["model"], r["status"], r["rank"]) for r in rows_r] == [
        (r["model"], r["status"], r["rank"]) for r in rows_l
    ]
    for rl, rr in zip(rows_l, rows_r):
        assert rr["runs"] == rl["runs"]
        assert rr["metrics"].keys() == rl["metrics"].keys()
        for key in rl["metrics"].keys() - _TIMES:
            for stat in ("mean", "std"):
                assert rr["metrics"][key][stat] == pytest.approx(
                    rl["metrics"][key][stat], rel=1e-9, abs=1e-12, nan_ok=True
                ), key
    _same_weights(tmp_path / "local", tmp_path / "ray")


def _logged_steps(run: Path) -> list[int]:
    """Steps of the training records in ``metrics.jsonl`` (validation records left out)."""
    if not (run / "metrics.jsonl").is_file():
        return []
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.endswith("}")]
    return [r["step"] for r in records if "loss" in r]


def _task_pids() -> list[int]:
    """Processes running a dgm run as a Ray task (Ray titles a busy worker ``ray::FUNCTION``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::_ray_task" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_killed_worker_resumes_its_run(cluster, one_thread, tmp_path, tiny):
    kw = dict(
        steps=300, model_configs=tiny.configs("nsf"),
        train_options=tiny.train | {"checkpoint_every": 20, "log_every": 10},
        eval_options=tiny.eval | {"metrics": ["mmd"]}, report=False, progress=False,
    )  # fmt: skip
    run = tmp_path / "ray" / "runs/8gaussians/nsf/default/seed-0"
    killed: list[int] = []

    def kill_mid_run() -> None:  # SIGKILL the task once a checkpoint and later steps exist
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            steps = _logged_steps(run)
            if steps and steps[-1] >= 50 and not (run / "summary.json").exists():
                for pid in _task_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    doc = compare(["nsf"], ["8gaussians"], tmp_path / "ray", seeds=2, executor="ray", jobs=1, **kw)
    killer.join()
    assert killed, "the run ended before the test could kill its worker"
    assert doc["complete"] and doc["tables"][0]["rows"][0]["status"] == "ok"
    # one resume: the log goes back once, to just after a checkpoint, never to the first step
    steps = _logged_steps(run)
    back = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert len(back) == 1 and steps[back[0]] > 20 and steps.count(10) == 1
    assert steps[-1] == 300 and sorted(set(steps)) == list(range(10, 301, 10))
    # its weights are those of a run never interrupted
    compare(["nsf"], ["8gaussians"], tmp_path / "local", seeds=1, **kw)
    ref = load_file(tmp_path / "local/runs/8gaussians/nsf/default/seed-0/model.safetensors")
    got = load_file(run / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_ray_executor_without_ray_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.chdir(tmp_path)
    argv = ["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5"]
    assert main([*argv, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray" in err and "pip install 'dgm[ray]'" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--jobs", "2"], "--address and --jobs are for --executor ray"),
        (["--address", "auto"], "--address and --jobs are for --executor ray"),
        (["--executor", "ray", "--jobs", "0"], "--jobs must be at least 1, not 0"),
    ],
)
def test_bad_executor_options_are_one_sentence(extra, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["compare", "nsf", "--data", "8gaussians", "--out", "x", "--steps", "5"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_run_that_fails_on_its_own_is_recorded_and_the_others_go_on(cluster, tmp_path, tiny):
    junk = tmp_path / "cmp/runs/8gaussians/realnvp/default/seed-0"
    junk.mkdir(parents=True)
    (junk / "notes.txt").write_text("not a run")
    doc = compare(
        ["nsf", "realnvp"], ["8gaussians"], tmp_path / "cmp", steps=5,
        model_configs=tiny.configs("nsf", "realnvp"), train_options=tiny.train,
        eval_options=tiny.eval | {"metrics": ["mmd"]}, report=False, progress=False,
        executor="ray",
    )  # fmt: skip
    rows = {r["model"]: r for r in doc["tables"][0]["rows"]}
    assert rows["nsf"]["status"] == "ok" and rows["realnvp"]["status"] == "failed"
    assert rows["realnvp"]["reason"] == f"{junk} holds files but no dgm run; delete it to let " \
        "compare train there"  # fmt: skip
    assert doc["failed"] == ["realnvp on 8gaussians"]


def test_the_driver_counts_runs_done_running_and_failed(cluster, tmp_path, tiny, capsys):
    bad = []
    for i in range(2):  # runs that fail at once: their directories hold files but no run
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "x.txt").write_text("x")
        bad.append(RunJob(str(tmp_path / f"r{i}"), "nsf", "8gaussians", {}, tiny.train, 0, False))
    ex = RayExecutor(jobs=1, progress=True)
    try:
        for job in bad:
            ex.submit(job)
        assert len(ex.inflight) == 1 and len(ex.queue) == 1  # --jobs 1: one at a time
        with pytest.raises(DgmError, match="holds files but no dgm run"):
            ex.result(bad[0])
        assert ex.bar.status.startswith("done 0, running 1, failed 1, left ~")
        with pytest.raises(DgmError, match="holds files but no dgm run"):
            ex.result(bad[1])
        assert ex.bar.status.startswith("done 0, running 0, failed 2, left ~0 s (estimate)")
    finally:
        ex.close()
    err = capsys.readouterr().err
    assert f"{bad[1].path} failed: {bad[1].path} holds files but no dgm run" in err

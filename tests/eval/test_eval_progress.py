"""``evaluate`` reports each of its phases on stderr when asked to, and is silent otherwise."""

from __future__ import annotations

from dgm.data import default_preprocessor, load
from dgm.eval.run import evaluate
from dgm.models import get


def test_evaluate_reports_each_phase_only_when_asked(capsys):
    data = load("8gaussians")
    cls = get("nsf")
    pre = default_preprocessor(data.spec, cls.data_kinds)
    model = cls(pre.spec(data.spec), cls.Config(**cls.example.config))
    kw = {"metrics": ["nll", "mmd"], "max_test": 200, "num_samples": 100}
    quiet = evaluate(model, data, pre, **kw)
    assert capsys.readouterr().err == ""
    loud = evaluate(model, data, pre, progress=True, **kw)
    err = capsys.readouterr().err.splitlines()
    # (a slow machine adds a line every 10 s to a phase: only the phases' first lines are compared)
    assert [line for line in err if line.endswith(": started")] == [
        "dgm: evaluating nsf: nll: started",
        "dgm: evaluating nsf: drawing 100 samples: started",
        "dgm: evaluating nsf: mmd: started",
    ]
    assert loud["test_nll"] == quiet["test_nll"] and loud["mmd2"] == quiet["mmd2"]

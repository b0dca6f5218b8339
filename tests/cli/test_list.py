"""``dgm list`` reports what a model instance reports, not a class default."""

from __future__ import annotations

from dgm.cli.main import main
from dgm.models import build, entries


def test_listed_capabilities_are_those_of_the_example_instance(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for cls in entries():
        model = build(cls.name, cls.example.spec, **cls.example.config)
        if model.exact_likelihood:
            caps = "exact log_prob"
        else:
            caps = model.likelihood_bound or "no likelihood"
        fields = rows[cls.name].split(maxsplit=2)
        assert fields[1] == cls.family
        assert fields[2].startswith(caps + " "), (cls.name, fields[2])


def test_a_config_dependent_capability_is_listed_as_the_instance_has_it(capsys):
    """The EBM's log Z is exact on 2-D data only: its class cannot say, its 2-D example can."""
    assert main(["list"]) == 0
    ebm = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  ebm "))
    assert "exact log_prob" in ebm

"""Presets and families are tied to the registry: no hand-kept list of models."""

from __future__ import annotations

from dgm.compare import FAMILIES, PRESETS, all_models
from dgm.core.config import build_config
from dgm.models import entries, get, names


def test_every_registered_model_is_in_exactly_one_family():
    members = [m for family in FAMILIES.values() for m in family]
    assert sorted(members) == names() and len(members) == len(set(members))
    assert set(all_models()) == set(names())
    for family, models in FAMILIES.items():
        assert models, family
        for m in models:
            assert get(m).family == family
    # a model's family is the family package it lives in (dgm.models.<family>...)
    for cls in entries():
        assert cls.__module__.split(".")[2] == cls.family, cls.name


def test_presets_name_registered_models_and_fit_the_time_budget():
    for name, p in PRESETS.items():
        assert set(p.models) <= set(names()), name
        assert p.max_minutes is not None or p.steps is not None
        # training budget of every (model, dataset) pair well under 15 minutes on 2 cores
        if p.max_minutes:
            assert len(p.models) * len(p.data) * p.max_minutes * p.seeds < 10
        # every override names a model of the preset and valid fields (a typo would fail late)
        for model, cfg in p.model_config.items():
            assert model in p.models
            build_config(get(model).Config, cfg)
        for model, opts in p.sample_options.items():
            assert model in p.models
            build_config(get(model).SampleOptions, opts)

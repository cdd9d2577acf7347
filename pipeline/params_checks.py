"""`mer params`: every section of params.yaml checked on its own, then the checks across sections (the
grid's models take the segments' layout and modalities; the evaluation conditions name modalities the
models were trained on), one line per problem. Above every layer: it reads every section's schema."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import (
    SECTIONS,
    ConfigError,
    load_section,
    read_params,
    section_problems,
)
from pipeline.core.paths import PARAMS_FILE
from pipeline.evaluate.params import condition_problem


def check_params(path: str | Path = PARAMS_FILE) -> list[str]:
    """Every problem of params.yaml, one line each (empty when it is valid): unknown sections,
    invalid values of every section, and `evaluate.conditions` naming a modality that no model in
    the train grid takes. `mer params` and `mer run` call it before anything runs."""
    try:
        data = read_params(path)
    except ConfigError as e:
        return str(e).splitlines()
    invalid: set[str] = set()
    problems = []
    for name in SECTIONS:
        lines = section_problems(name, data.get(name))
        invalid |= {name} if lines else set()
        problems += [f"{path}: {line}" for line in lines]
    # the checks across sections, on the sections that are valid on their own (a mistake is one line:
    # no knock-on line from a section already reported)
    if {"train", "grid"} & invalid:
        return problems
    train = load_section("train", path)
    from pipeline.models.registry import (
        ModelError,
        available_models,
        check_layout,
        fit_modalities,
    )

    # the grid's models: `grid.models` where params.yaml has a grid section, else train.models
    grid, where = (load_section("grid", path), "grid.models") if "grid" in SECTIONS else (train, "train.models")
    every = bool(getattr(grid, "all_models", False))
    # each grid model must take segment.layout, and train.modalities must be segment's: else the train
    # stages fail only after segment's full work
    segment = load_section("segment", path) if "segment" in SECTIONS and "segment" not in invalid else None
    layout = segment.layout if segment is not None else None
    if segment is not None:
        problems += [f"{path}: train.modalities.{i}: '{m}' is not in segment.modalities ({', '.join(segment.modalities)}); "
                     "the segments would lack it" for i, m in enumerate(train.modalities) if m not in segment.modalities]
    trained: list[str] = []  # the modalities the evaluate stage will see: those the grid's models take
    for i, model in enumerate(available_models() if every else grid.models):
        try:
            trained += [m for m in fit_modalities(model, {m: 0 for m in train.modalities}) if m not in trained]
            if layout is not None and not every:
                check_layout(model, layout, train.task)
        except ModelError as e:
            if not every:
                problems.append(f"{path}: {where}.{i}: {e}" + (f" (segment.layout: {layout})" if "layout" in str(e) else ""))
    if "evaluate" in invalid:
        return problems
    evaluate = load_section("evaluate", path)
    for i, entry in enumerate(evaluate.conditions):
        why = condition_problem(entry, trained) if trained else None
        if why:
            problems.append(f"{path}: evaluate.conditions.{i}: {why}")
    return problems

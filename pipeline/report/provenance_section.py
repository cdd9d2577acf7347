"""The report's closing section, 'Corpus and provenance': the corpus, what the report was built from
(params and code hashes, seeds; computed in `provenance`), the feature tables with their weights, and
the params.yaml sections with defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from pipeline.report import tables as tb
from pipeline.report.provenance import Provenance
from pipeline.report.render import Code, Details, Heading, Table

if TYPE_CHECKING:  # annotations only: build imports this module
    from pipeline.report.inputs import Inputs


def provenance_blocks(inp: Inputs, prov: Provenance, runs: list[str]) -> list:
    c = inp.corpus
    rows = [
        ["name", c.name],
        ["clips", str(c.n_clips)],
        ["speakers", str(c.n_speakers)],
        ["classes (clips)", ", ".join(f"{k} ({n})" for k, n in c.class_counts.items())],
    ]
    if c.partition_counts:
        rows.append([f"partitions (from {c.partition_source})", ", ".join(f"{p} {n}" for p, n in c.partition_counts.items())])
    if inp.segments.classes != c.classes:
        rows.append(["classes modelled (segments)", ", ".join(inp.segments.classes)])
    seeds = "; ".join(f"{m}: {', '.join(map(str, tb.seeds(inp.results, m)))}" for m in runs)
    out: list = [Heading("Corpus and provenance", 2, "corpus-and-provenance"), Table(tb.TableData(["", ""], rows), "Corpus", numeric=False)]
    out.append(Table(tb.TableData(["", ""], [
        ["corpus", f"{c.name} ({c.n_clips} clips, {c.n_speakers} speakers)"],
        ["params.yaml sha256", prov.params_sha256],
        *[[f"params section '{n}' hash", h] for n, h in prov.section_hashes.items()],
        ["seeds", seeds],
        ["code (sha256 of pipeline/ and stages/)", prov.code_version],
        *([["generated", prov.generated_utc]] if prov.generated_utc else []),
    ]), "Provenance", numeric=False))
    out.append(Table(
        tb.TableData(
            ["modality", "feature table", "backbone", "dim", "rate (Hz)", "pretrained", "weights", "silent steps"],
            [[m, i.feature, i.backbone, str(i.dim), "irregular" if i.rate_hz is None else f"{i.rate_hz:g}",
              "yes" if i.pretrained else "NO (random)", i.weights_statement,
              {"mask": "masked (missing)", "keep": "kept (present)"}.get(getattr(i, "silence", None) or "", "—")]
             for m, i in inp.segments.modalities.items()],
        ),
        f"Feature tables, aligned by `segment` to a common {inp.segments.rate_hz:g} Hz grid",
        numeric=False,
    ))
    params_blocks: list = []
    if c.params:
        params_blocks.append(Code(yaml.safe_dump(c.params, sort_keys=True), "Corpus generator parameters:"))
    for name, values in prov.sections.items():
        params_blocks.append(Code(yaml.safe_dump({name: values}, sort_keys=False), f"params.yaml section '{name}' (with defaults):"))
    out.append(Details("Parameters (params.yaml sections with defaults)", params_blocks))
    return out

"""The house's rule (docs/architecture.md): every import inside `pipeline` points down the layers, and no
module imports itself back through others. Read from the source with `ast`, so imports inside functions
(lazy ones) and under `if TYPE_CHECKING:` count like the rest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

#: low to high; a module may import its own layer's and lower layers' modules, never a higher one's
LAYERS: list[set[str]] = [
    {"core"},
    {"media"},
    {"corpus"},
    {"extract"},
    {"segment"},
    {"missing", "models"},
    {"runs"},
    {"train"},
    {"evaluate"},
    {"report"},
    {"predict", "presets", "params_checks", "estimate", "repro", "cli"},
]
LEVEL = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PIPELINE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


def imports(module: str) -> set[str]:
    """The pipeline modules `module` imports (`from pipeline.x import y` counts pipeline.x.y when that is
    a module, else pipeline.x)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pipeline")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("pipeline"):
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m in MODULES} - {module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_room_has_a_layer():
    rooms = {room(m) for m in MODULES} - {None}
    assert rooms <= set(LEVEL), f"rooms without a layer in LAYERS: {sorted(rooms - set(LEVEL))}"


def test_no_import_points_up():
    up = [f"{m} → {d}" for m, deps in GRAPH.items() for d in sorted(deps)
          if room(m) and room(d) and LEVEL[room(d)] > LEVEL[room(m)]]
    assert not up, "imports that point up a layer:\n  " + "\n  ".join(up)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_between_modules_or_rooms():
    # a package's __init__ re-exporting its own modules is not a circle of rooms
    modules = {m: {d for d in deps if not (MODULES[d].name == "__init__.py" and m.startswith(d + "."))} for m, deps in GRAPH.items()}
    assert _circles(modules) == []
    rooms: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        if room(m):
            rooms.setdefault(room(m), set()).update(room(d) for d in deps if room(d) and room(d) != room(m))
    assert _circles(rooms) == []


def test_the_checks_can_fail():
    """The rule catches what it is for: an upward import and a circle."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert LEVEL["core"] < LEVEL["segment"] < LEVEL["runs"] < LEVEL["report"]


@pytest.mark.parametrize("limit", [400])
def test_no_module_is_longer_than_the_limit_and_the_top_level_is_small(limit):
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"modules over {limit} lines: {long}"
    top = sorted(p.stem for p in PIPELINE.glob("*.py") if p.stem != "__init__")
    assert len(top) <= 4, f"modules at the top of pipeline/: {top}"


def test_a_training_runs_segments_enter_runs_at_most_three_times(tmp_path):
    """Issue 24: following the segments from `train_all`, the data enters pipeline/runs/ at ≤ 3 places
    (`feed_run`, `Split.batch`, `RunFeed.devel_pass`), not back and forth. Counted with a profiler: every
    call from outside runs/ into a runs/ function that is handed the segments or what was cut from them."""
    import sys

    import numpy as np
    from test_train_evaluate import PARAMS, make_segments

    from pipeline.runs.feed import RunFeed, Split
    from pipeline.segment.contract import Segments
    from pipeline.train.families import train_all

    carriers = (Segments, Split, RunFeed)
    segments = make_segments(24)
    runs_dir = str(PIPELINE / "runs")
    entries: set[tuple[str, str]] = set()

    def carries(value: object) -> bool:
        if isinstance(value, carriers):
            return True
        return isinstance(value, dict) and any(isinstance(v, (np.ndarray, *carriers)) or type(v).__name__ == "RowView" for v in value.values())

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(runs_dir) or frame.f_back is None:
            return
        caller = frame.f_back.f_code
        if caller.co_filename.startswith(runs_dir) or not caller.co_filename.startswith(str(PIPELINE)):
            return
        if frame.f_code.co_name.startswith("__"):  # len(split) and the like ask, they take no data in
            return
        args = [frame.f_locals[n] for n in frame.f_code.co_varnames[: frame.f_code.co_argcount] if n in frame.f_locals]
        if any(carries(a) for a in args):
            entries.add((caller.co_name, frame.f_code.co_name))

    params = PARAMS.model_copy(update={"seeds": [0], "epochs": 2})
    sys.setprofile(profile)
    try:
        train_all(segments, params, tmp_path, device="cpu", progress=False)
    finally:
        sys.setprofile(None)
    assert {callee for _, callee in entries} == {"feed_run", "batch", "devel_pass"}, sorted(entries)
    assert len(entries) <= 3, sorted(entries)

"""The code dependencies of every DVC stage, computed instead of kept by hand.

A stage's code is its script plus the import closure of `pipeline` modules it can reach: every
`import` statement of every module reached (those inside functions too, as lazy imports run on some
paths), the `__init__.py` of each package on the way (importing `pipeline.a.b` runs `pipeline/a/__init__.py`),
and, for `importlib.import_module(f"pipeline.models.{name}")`, every module of that package. This
over-approximates what one run imports (a registry reaches all its entries), which errs on the side of
rerunning: a stage never looks current while code it runs has changed.

    python -m pipeline.core.dvc_deps            print each stage's code deps and whether dvc.yaml has them
    python -m pipeline.core.dvc_deps --write    rewrite the code entries of every stage's deps in dvc.yaml

`tests/test_dvc_contract.py` fails when dvc.yaml drifts from this; the message says to run `--write`.
Only the code lines of a `deps:` list (paths under `stages/` or `pipeline/`) are rewritten; data deps,
comments and everything else in dvc.yaml stay as they are.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pipeline"
DVC_YAML = "dvc.yaml"
_SCRIPT = re.compile(r"\bpython3?\s+(\S+\.py)\b")
_CODE_DEP = re.compile(r"^(?P<indent>\s*)- (?P<path>(?:stages|pipeline)/\S*)\s*$")


def module_file(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The file of a `pipeline.*` module (a .py file or a package's __init__.py), None if absent."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_modules(package: str, root: Path) -> list[str]:
    pkg_dir = root.joinpath(*package.split("."))
    return sorted(_module_name(p, root) for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts)


def _nodes(tree: ast.Module, module_level_only: bool):
    """Every node of `tree`, or (module_level_only) those outside function bodies."""
    if not module_level_only:
        yield from ast.walk(tree)
        return
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def imports_of(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """The `pipeline` modules a file imports anywhere in it (candidates: a name in `from a import b`
    may be a submodule or an attribute; both are returned and the caller keeps those that exist).
    A module that sets `LAZY_IMPORTS_VALIDATE_ONLY = True` contributes its module-level imports only:
    its functions import registries just to check names (pipeline/core/config.py), and the stages that
    run those registries import them themselves."""
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    module_level_only = any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "LAZY_IMPORTS_VALIDATE_ONLY" for t in n.targets)
        and isinstance(n.value, ast.Constant) and n.value.value is True
        for n in tree.body
    )
    is_pkg = path.name == "__init__.py"
    here = _module_name(path, root) if path.is_relative_to(root / PACKAGE) else ""
    found: set[str] = set()
    for node in _nodes(tree, module_level_only):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".") if is_pkg else here.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            prefix = arg.value if isinstance(arg, ast.Constant) else None
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = arg.values[0].value  # f"pipeline.models.{name}": any module of the package
                found.update(_package_modules(prefix.rstrip("."), root) if prefix.startswith(PACKAGE) else [])
            elif isinstance(prefix, str):
                found.add(prefix)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def closure(script: str | Path, root: Path = REPO_ROOT) -> list[str]:
    """Repository-relative paths of `script` and every `pipeline` file it can import, sorted (script first)."""
    start = (root / script).resolve()
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imports_of(path, root):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                f = module_file(".".join(parts[:i]), root)
                if f is not None and f not in seen:
                    todo.append(f)
    rest = sorted(p.relative_to(root).as_posix() for p in seen if p != start)
    return [start.relative_to(root).as_posix()] + rest


def stage_scripts(dvc_yaml: str | Path = DVC_YAML, root: Path = REPO_ROOT) -> dict[str, str]:
    """{stage name as written in dvc.yaml: the Python script its cmd runs}."""
    out = {}
    for name, stage in _stages(dvc_yaml, root).items():
        cmd = stage["cmd"] if isinstance(stage["cmd"], str) else " ".join(stage["cmd"])
        m = _SCRIPT.search(cmd)
        if m:
            out[name] = m.group(1)
    return out


def _stages(dvc_yaml: str | Path, root: Path) -> dict[str, dict]:
    """dvc.yaml's stages as written (a `foreach` stage's body is its `do`)."""
    stages = yaml.safe_load((root / dvc_yaml).read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def declared_code_deps(dvc_yaml: str | Path = DVC_YAML, root: Path = REPO_ROOT) -> dict[str, list[str]]:
    stages = _stages(dvc_yaml, root)
    return {
        name: [d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(("stages/", "pipeline/"))]
        for name, stage in stages.items()
    }


def expected_code_deps(dvc_yaml: str | Path = DVC_YAML, root: Path = REPO_ROOT) -> dict[str, list[str]]:
    return {name: closure(script, root) for name, script in stage_scripts(dvc_yaml, root).items()}


def drift(dvc_yaml: str | Path = DVC_YAML, root: Path = REPO_ROOT) -> dict[str, tuple[list[str], list[str]]]:
    """{stage: (missing from dvc.yaml, listed but not reached)} for the stages whose code deps differ."""
    declared, expected = declared_code_deps(dvc_yaml, root), expected_code_deps(dvc_yaml, root)
    out = {}
    for name, want in expected.items():
        have = declared.get(name, [])
        if set(have) != set(want):
            out[name] = (sorted(set(want) - set(have)), sorted(set(have) - set(want)))
    return out


def rewrite(text: str, expected: dict[str, list[str]]) -> str:
    """dvc.yaml text with each stage's code deps replaced by `expected[stage]` (first in its deps list)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage: str | None = None
    in_deps = False
    deps_indent: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        m_stage = re.match(r"^  ([A-Za-z0-9_@-]+):\s*$", line)
        if m_stage:
            stage, in_deps = m_stage.group(1), False
        elif re.match(r"^\S", line):
            stage, in_deps = None, False
        if re.match(r"^\s+(do|matrix|foreach):", line):
            pass  # a templated stage's deps come under `do:`; the stage name stays the same
        if stage is not None and re.match(r"^\s+deps:\s*$", line):
            out.append(line)
            in_deps, deps_indent = True, None
            continue
        if in_deps:
            m = _CODE_DEP.match(line)
            if m:
                if deps_indent is None:
                    deps_indent = m.group("indent")
                    out.extend(f"{deps_indent}- {p}\n" for p in expected.get(stage, []))
                continue  # old code lines are dropped; the generated ones stand in their place
            if stripped.startswith("- ") or stripped.startswith("#") or not stripped:
                if deps_indent is None and stripped.startswith("- "):
                    deps_indent = line[:indent]
                    out.extend(f"{deps_indent}- {p}\n" for p in expected.get(stage, []))
                out.append(line)
                continue
            in_deps = False
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = REPO_ROOT / DVC_YAML
    if "--write" in argv:
        path.write_text(rewrite(path.read_text(), expected_code_deps()))
    problems = drift()
    for name, (missing, extra) in problems.items():
        print(f"{name}: missing {missing or '-'}; not reached {extra or '-'}")
    if not problems:
        print(f"{DVC_YAML}: every stage's code deps match its import closure")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

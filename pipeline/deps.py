"""Stage code deps from the import graph: what ``dvc.yaml`` must list for a trustworthy cache.

A stage's code is its script plus every project module the script imports, directly or
through other modules (imports inside functions included, package ``__init__`` files
included). :func:`import_closure` computes that set from the source with :mod:`ast`;
:func:`check` compares it with each stage's deps in ``dvc.yaml``, and :func:`write` rewrites
the code deps in place (data deps, comments and order are kept). Deps are listed file by
file, not as package folders, so editing a module reruns only the stages that import it.

    python -m pipeline.deps           # report stages whose code deps differ; exit 1 if any
    python -m pipeline.deps --write   # rewrite them in dvc.yaml
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "pipeline"
SCRIPT = re.compile(r"\bpython\S*\s+(\S+\.py)\b")
CODE_DEP = re.compile(r"^(pipeline|stages)(/[\w.]+)*$")


def module_path(root: Path, module: str) -> Path | None:
    """The file of project module ``module`` (a package's ``__init__.py``), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path) -> set[str]:
    """Project modules that executing ``path`` imports directly: each imported module, the
    packages above it (their ``__init__`` runs first) and, for ``from package import name``,
    ``package.name`` when that is a module. Imports under ``if TYPE_CHECKING:`` are skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):  # imports for type checkers only never run
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != PACKAGE:
                continue
            for end in range(1, len(parts) + 1):
                if module_path(root, ".".join(parts[:end])) is not None:
                    found.add(".".join(parts[:end]))
    return found


def import_closure(script: Path, root: Path) -> list[str]:
    """``script`` and every project file it imports, transitively: POSIX paths relative to
    ``root``, sorted."""
    files, pending, seen = {script}, [script], set()
    while pending:
        for module in imported_modules(pending.pop(), root):
            if module not in seen:
                seen.add(module)
                path = module_path(root, module)
                files.add(path)
                pending.append(path)
    return sorted(path.relative_to(root).as_posix() for path in files)


@dataclass(frozen=True)
class StageCode:
    """A stage's code deps as listed in ``dvc.yaml`` and as the import graph has them."""

    stage: str
    listed: tuple[str, ...]
    needed: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        """Imported files no listed dep covers (a file, or a folder above it)."""
        return [path for path in self.needed
                if not any(path == dep or path.startswith(dep.rstrip("/") + "/")
                           for dep in self.listed)]

    @property
    def needless(self) -> list[str]:
        """Listed code deps the stage does not import (they only cause reruns)."""
        return [dep for dep in self.listed
                if not any(path == dep or path.startswith(dep.rstrip("/") + "/")
                           for path in self.needed)]


def stage_code(dvc_yaml: Path) -> list[StageCode]:
    """Every stage of ``dvc_yaml`` that runs a Python script, with its code deps."""
    root = dvc_yaml.parent
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    result = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = SCRIPT.search(str(body.get("cmd", "")))
        if not match:
            continue
        deps = [next(iter(dep)) if isinstance(dep, dict) else str(dep)
                for dep in body.get("deps", [])]
        listed = tuple(dep for dep in deps if CODE_DEP.match(dep))
        needed = tuple(import_closure(root / match.group(1), root))
        result.append(StageCode(name, listed, needed))
    return result


def check(dvc_yaml: Path) -> list[str]:
    """One line per stage whose code deps differ from its import closure."""
    problems = []
    for stage in stage_code(dvc_yaml):
        if stage.missing:
            problems.append(f"{stage.stage}: missing deps {', '.join(stage.missing)}")
        if stage.needless:
            problems.append(f"{stage.stage}: deps not imported {', '.join(stage.needless)}")
    return problems


def write(dvc_yaml: Path) -> list[str]:
    """Rewrite each stage's code deps in ``dvc_yaml`` to its import closure, in place; the
    other lines are kept. Returns the names of the stages changed."""
    needed = {stage.stage: stage.needed for stage in stage_code(dvc_yaml)}
    lines = dvc_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
    output, changed, stage, deps_indent = [], [], None, None
    for line in lines:
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        header = re.fullmatch(r"(\S+):", stripped)
        if indent == 2 and header:
            stage, deps_indent = header.group(1), None
        elif stripped == "deps:" and stage in needed:
            deps_indent = indent
            output.append(line)
            output.extend(f"{' ' * (indent + 2)}- {path}\n" for path in needed[stage])
            changed.append(stage)
            continue
        elif deps_indent is not None and (indent <= deps_indent or not stripped.startswith("-")):
            deps_indent = None
        if deps_indent is not None and CODE_DEP.match(stripped[1:].strip()):
            continue  # an old code dep: replaced by the closure written above
        output.append(line)
    dvc_yaml.write_text("".join(output), encoding="utf-8")
    return changed


def main(arguments: list[str]) -> int:
    dvc_yaml = Path("dvc.yaml")
    if "--write" in arguments:
        write(dvc_yaml)
    problems = check(dvc_yaml)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Stage code deps: dvc.yaml lists exactly each stage's import closure, and the check catches
a missing dep; the layering rules of the package hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.deps import check, import_closure, stage_code, write

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_lists_every_stage_import_closure():
    assert check(REPO / "dvc.yaml") == []
    assert {stage.stage for stage in stage_code(REPO / "dvc.yaml")} >= {
        "sample_data", "decode", "split", "pretrain", "finetune", "evaluate", "represent"}


def _project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(REPO / "pipeline", root / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "stages", root / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    return root


def test_check_catches_a_removed_dep_and_write_restores_it(tmp_path):
    root = _project_copy(tmp_path)
    dvc_yaml = root / "dvc.yaml"
    text = dvc_yaml.read_text()
    # drop represent's dep on the module that makes its views (the defect this check fixes)
    represent = text.index("  represent:")
    dep = "      - pipeline/data/views.py\n"
    position = text.index(dep, represent)
    dvc_yaml.write_text(text[:position] + text[position + len(dep):])
    problems = check(dvc_yaml)
    assert problems == ["represent: missing deps pipeline/data/views.py"]

    write(dvc_yaml)
    assert check(dvc_yaml) == []
    assert yaml.safe_load(dvc_yaml.read_text()) == yaml.safe_load(text)


def test_check_catches_a_new_import_and_a_needless_dep(tmp_path):
    root = _project_copy(tmp_path)
    script = root / "stages" / "split.py"
    script.write_text(script.read_text() + "\nfrom pipeline.evaluate import metrics  # noqa\n")
    assert check(root / "dvc.yaml") == [
        "split: missing deps pipeline/evaluate/__init__.py, pipeline/evaluate/metrics.py"]
    dvc_yaml = root / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace(
        "        - stages/split.py\n", "        - stages/split.py\n        - pipeline/cli.py\n"))
    assert "split: deps not imported pipeline/cli.py" in check(dvc_yaml)


def test_closure_follows_every_import_form(tmp_path):
    package = tmp_path / "pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "leaf.py").write_text("from . import sibling\n")
    (package / "sub" / "sibling.py").write_text("")
    (package / "lazy.py").write_text("def f():\n    import pipeline.typed\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import hidden\n")
    (package / "hidden.py").write_text("")
    (package / "unused.py").write_text("")
    script = tmp_path / "script.py"
    script.write_text("import os\nfrom pipeline.sub import leaf\nfrom pipeline import lazy\n")
    assert import_closure(script, tmp_path) == [
        "pipeline/__init__.py", "pipeline/lazy.py", "pipeline/sub/__init__.py",
        "pipeline/sub/leaf.py", "pipeline/sub/sibling.py", "pipeline/typed.py", "script.py"]


def test_closure_covers_what_python_actually_imports():
    """The static closure is checked against the interpreter: importing each stage script
    (its ``main`` does not run) loads no project module outside it."""
    for stage in stage_code(REPO / "dvc.yaml"):
        script = next(path for path in stage.needed if path.startswith("stages/"))
        loaded = subprocess.run(
            [sys.executable, "-c",
             "import runpy, sys; runpy.run_path(sys.argv[1], run_name='probe'); "
             "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items() "
             "if n == 'pipeline' or n.startswith('pipeline.'))))", script],
            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        files = {Path(path).resolve().relative_to(REPO).as_posix() for path in loaded}
        assert files <= set(stage.needed), (stage.stage, files - set(stage.needed))


def _imports_of_layer(layer: str) -> dict[str, set[str]]:
    result = {}
    for path in sorted((REPO / "pipeline" / layer).rglob("*.py")):
        closure = import_closure(path, REPO)
        result[path.relative_to(REPO).as_posix()] = {
            file for file in closure if file.startswith("pipeline/")}
    return result


def test_layers_import_one_way():
    """data imports neither pretraining nor evaluation; pretraining does not import
    evaluation; evaluation does not import pretraining internals (the pair-weight figures of a
    trained Meta-USCL may use the public method registry and the pair rule they draw)."""
    for module, files in _imports_of_layer("data").items():
        upper = {f for f in files if f.startswith(("pipeline/pretrain", "pipeline/evaluate"))}
        assert not upper, (module, upper)
    for module, files in _imports_of_layer("pretrain").items():
        assert not {f for f in files if f.startswith("pipeline/evaluate")}, module
    for module, files in _imports_of_layer("evaluate").items():
        reached = {f for f in files if f.startswith("pipeline/pretrain")}
        if module == "pipeline/evaluate/pair_weights.py":
            direct = {line.split()[1] for line in (REPO / module).read_text().splitlines()
                      if line.startswith("from pipeline.pretrain")}
            assert direct <= {"pipeline.pretrain.methods", "pipeline.pretrain.pairs"}, direct
        else:
            assert not reached, (module, reached)


def test_shards_do_not_import_pyav():
    code = "import sys, pipeline.data.shards, pipeline.data.frames; print('av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip() == "False"

"""The house: one installed namespace, and imports that point one way.

kernels <- linkage <- engine -> cluster: kernels import nothing of nirlink but kernels; linkage
imports kernels; cluster imports kernels (its errors, and the kernels its worker plugin
warms); engine may import all three; nothing imports engine. Every nirlink import names the
``nirlink`` namespace (or is relative): the folders are not importable by their bare names
once installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "linkage", "engine", "cluster")
ALLOWED = {
    "kernels": {"kernels"},
    "linkage": {"kernels", "linkage"},
    "cluster": {"kernels", "cluster"},
    "engine": {"kernels", "linkage", "engine", "cluster"},
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["nirlink", *parts])


def import_violations(root: Path) -> list[str]:
    """Every import under ``root``'s package folders that points against the allowed direction
    or names a nirlink package without the ``nirlink`` namespace, as 'file:line: message'."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            is_init = path.name == "__init__.py"
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = module.split(".") if is_init else module.split(".")[:-1]
                        base = base[:len(base) - (node.level - 1)]
                        targets = [".".join(base + ([node.module] if node.module else []))]
                    else:
                        targets = [node.module or ""]
                for target in targets:
                    head = target.split(".")
                    where = f"{path.relative_to(root)}:{node.lineno}"
                    if head[0] in PACKAGES:
                        problems.append(f"{where}: imports {target!r} without the nirlink namespace")
                    elif head[0] == "nirlink" and len(head) > 1 and head[1] in PACKAGES:
                        if head[1] not in ALLOWED[package]:
                            problems.append(f"{where}: {package} imports {target} (against kernels <- linkage "
                                            "<- engine -> cluster)")
    return problems


def test_imports_point_one_way():
    assert import_violations(ROOT) == []


def test_tests_and_benchmarks_import_the_namespace():
    """From the repository root the bare folders are importable too: a test importing them
    would pass here and break on an installed nirlink."""
    bare = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                bare += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] in PACKAGES]
    assert bare == []


def test_the_direction_check_catches_a_wrong_import(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "kernels" / "_bad.py").write_text("def f():\n    from nirlink.engine import jobs\n")
    (tmp_path / "linkage" / "_bad.py").write_text("from ..cluster import open_client\n")
    (tmp_path / "cluster" / "_bad.py").write_text("import kernels\n")
    (tmp_path / "engine" / "_fine.py").write_text("from nirlink.linkage import x\nfrom ..cluster import y\n")
    problems = import_violations(tmp_path)
    assert len(problems) == 3, problems
    assert any("kernels/_bad.py:2: kernels imports nirlink.engine" in p for p in problems)
    assert any("linkage/_bad.py:1: linkage imports nirlink.cluster" in p for p in problems)
    assert any("cluster/_bad.py:1: imports 'kernels' without the nirlink namespace" in p for p in problems)


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"] == {"nirlink": "."}
    on_disk = {"nirlink"} | {_module_name(p.parent, ROOT).removesuffix(".__init__")
                             for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}
    assert set(config["packages"]) == on_disk


def test_rooms_stay_small():
    """A module past ~400 lines is a room that wants splitting (DESIGN.md)."""
    big = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in (ROOT / package).rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert big == {}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """nirlink built as a wheel and installed (not editable) into a directory of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp / "dist"),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("nirlink-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True)
    return wheel, tmp / "site"


def test_the_wheel_installs_one_name(installed):
    wheel, site = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"nirlink"}
    for data in ("nirlink/engine/nirlink.yaml", "nirlink/engine/reference/cohorts.tsv",
                 "nirlink/linkage/models/identity.json", "nirlink/cluster/recipes/start-worker.sh",
                 "nirlink/__main__.py"):
        assert data in names
    assert not any(n.startswith("nirlink/tests/") or n.startswith("nirlink/benchmarks/") for n in names)
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == \
        ["nirlink"]


def _run(site: Path, code: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("bare", PACKAGES)
def test_bare_folder_names_are_not_importable(installed, tmp_path, bare):
    _, site = installed
    proc = _run(site, ["-c", f"import {bare}"], tmp_path)
    assert proc.returncode != 0 and f"No module named '{bare}'" in proc.stderr


def test_the_namespace_and_the_command_work(installed, tmp_path):
    _, site = installed
    proc = _run(site, ["-c", "import nirlink, nirlink.kernels, nirlink.engine.cli; print(nirlink.__file__)"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(site / "nirlink" / "__init__.py")
    proc = _run(site, ["-m", "nirlink", "--help"], tmp_path)
    assert proc.returncode == 0 and "Usage: python -m nirlink" in proc.stdout
    proc = _run(site, ["-m", "nirlink", "job", "check", str(tmp_path / "missing.toml")], tmp_path)
    assert proc.returncode == 1 and "missing.toml" in proc.stderr


def test_a_local_folder_does_not_shadow_nirlink(installed, tmp_path):
    """A folder named like one of nirlink's in the current directory is not picked up."""
    _, site = installed
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("raise SystemExit('the local folder was imported')\n")
    proc = _run(site, ["-c", "import nirlink.engine.jobs; print('ok')"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

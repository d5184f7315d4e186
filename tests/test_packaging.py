"""What ships: pyproject's package list covers every folder of the package (Hydra config groups included) and
nothing that must not ship; ``import drox`` stays cheap (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"

EXCLUDED = {"tests", "benchmarks", "experiments", "docs", ".venv", "build", "__pycache__", "outputs", "runs",
            "multirun", "wandb"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def shipped_dirs() -> set:
    """``drox.<dotted dir>`` for every folder holding .py or .yaml files, recursively (the root is ``drox``)."""
    found = set()

    def walk(folder: Path) -> None:
        if any(f.is_file() and f.suffix in (".py", ".yaml") for f in folder.iterdir()):
            rel = folder.relative_to(ROOT)
            found.add(".".join(("drox", *rel.parts)))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name in EXCLUDED or sub.name.startswith(".") or sub.name.endswith(".egg-info"):
                continue
            walk(sub)

    walk(ROOT)
    return found


def test_walk_sees_the_known_folders():
    dirs = shipped_dirs()
    for pkg in ("drox", "drox.cli", "drox.rewards", "drox.trainers", "drox.conf", "drox.conf.model",
                "drox.conf.reward"):
        assert pkg in dirs
    assert not any(d.startswith(("drox.tests", "drox.runs", "drox.docs", "drox.benchmarks")) for d in dirs)


def test_package_list_is_exactly_the_package_folders():
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"drox": "."}
    listed = setuptools["packages"]
    assert len(listed) == len(set(listed)), "a package is listed twice"
    expected = shipped_dirs()
    missing, extra = sorted(expected - set(listed)), sorted(set(listed) - expected)
    assert not missing and not extra, f"pyproject packages: missing {missing}, not a package folder {extra}"


def test_yaml_files_are_package_data():
    data = pyproject()["tool"]["setuptools"]["package-data"]
    assert "*.yaml" in data.get("*", []) or all("*.yaml" in data.get(p, []) for p in shipped_dirs()
                                                 if p.startswith("drox.conf"))


def test_test_doubles_do_not_ship():
    listed = pyproject()["tool"]["setuptools"]["packages"]
    doubles = ROOT / "tests" / "doubles.py"
    assert doubles.is_file()
    for pkg in listed:
        folder = ROOT.joinpath(*pkg.split(".")[1:])
        assert doubles.parent != folder, f"{pkg} would ship tests/doubles.py"
        assert not any(part == "tests" for part in pkg.split(".")), pkg


def test_import_drox_does_not_import_torch(tmp_path):
    python = str(PYTHON) if PYTHON.is_file() else sys.executable
    out = subprocess.run([python, "-c", "import drox, sys; print('torch' in sys.modules, drox.__version__)"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", pyproject()["project"]["version"]]

"""Packaging per DESIGN.md: the component folders install under `helpgate`, nothing is left
out of the wheel, and no folder shadows a standard-library module from the repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["tool"]["setuptools"]["package-dir"]


# Alembic runs its environment script itself; importing it outside a migration fails.
RUN_BY_ALEMBIC = {"helpgate.ticketstore.migrations.env"}


def source_modules() -> list[str]:
    """Every module of the source tree, by the import name it must have when installed."""
    names = []
    for package, folder in package_dirs().items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            names.append(".".join([package, *parts]))
    return names


def test_component_folders_are_not_packages_of_their_own():
    # A top-level `threading/__init__.py` would shadow the standard library module.
    for folder in package_dirs().values():
        assert not (ROOT / folder / "__init__.py").exists(), folder


def test_import_asyncio_from_the_repository_root():
    result = subprocess.run([sys.executable, "-c", "import asyncio, threading; "
                             "print(threading.__file__)"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(ROOT / "threading") not in result.stdout


def test_wheel_installs_every_module(tmp_path):
    # Built from a copy: setuptools leaves a build/ folder behind, and a stale one in the
    # source tree would smuggle deleted modules into later wheels.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.db", ".pytest_cache",
        ".hypothesis"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next(wheels.glob("helpgate-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    # Dependencies come from this environment's site-packages, added by a .pth file: its
    # own .pth files (the editable install of the source tree) are not processed that way.
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    modules = [m for m in source_modules() if m not in RUN_BY_ALEMBIC]
    installed = Path(site, "helpgate", "ticketstore", "migrations")
    assert (installed / "env.py").exists() and (installed / "script.py.mako").exists()
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    module = importlib.import_module(name)\n"
              "    assert 'site-packages' in (module.__file__ or ''), (name, module.__file__)\n"
              "print(len(" + repr(modules) + "))\n")
    result = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(modules) > 30
    console = venv / "bin" / "helpgate"
    assert console.exists()

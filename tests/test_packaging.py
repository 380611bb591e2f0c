"""Packaging: the import error of a source tree without its extension, and the metadata an
installed sona carries (license, classifiers, project URLs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import sona

PACKAGE = Path(sona.__file__).resolve().parent


def test_source_tree_without_extension_says_how_to_fix_it(tmp_path):
    # a checkout's sona/ (pure Python files only) in the working directory shadows any installed
    # sona: the error must say so, not just "No module named 'sona._core'"
    shutil.copytree(PACKAGE, tmp_path / "sona",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "data"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import sona; print(sona._core.__file__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0 and not proc.stdout.strip().startswith(str(tmp_path)):
        # an editable install's import hook (pip install -e) finds sona._core in its checkout
        # for any sona package, so there a source tree without the extension imports fine
        pytest.skip(f"sona is installed editable: sona._core came from {proc.stdout.strip()}")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: sona._core is not built"), proc.stderr
    assert str(tmp_path / "sona") in last
    assert "python setup.py build_ext --inplace" in last
    assert "import sona from outside the source tree" in last


def _installed_metadata():
    """The metadata of the installed distribution this process imported sona from (CI installs
    it before running the tests; an in-place build has none to check)."""
    try:
        dist = metadata.distribution("sona")
    except metadata.PackageNotFoundError:
        pytest.skip("sona runs from an in-place build, not an installed distribution")
    if Path(str(dist.locate_file("sona/__init__.py"))).resolve() != PACKAGE / "__init__.py":
        pytest.skip("the installed sona distribution is not the package under test")
    return dist


def test_installed_metadata_license_classifiers_urls():
    dist = _installed_metadata()
    meta = dist.metadata
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    license_file = [f for f in dist.files or () if f.name == "LICENSE"]
    assert license_file and "MIT License" in license_file[0].read_text()
    classifiers = set(meta.get_all("Classifier"))
    assert {"Typing :: Typed", "Development Status :: 4 - Beta",
            "Topic :: Scientific/Engineering :: Artificial Intelligence"} <= classifiers
    assert {f"Programming Language :: Python :: 3.{v}" for v in range(9, 14)} <= classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # the SPDX string instead
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Source"}
    assert all(u.startswith("https://github.com/sona-router/sona") for u in urls.values())
    assert "metrics" in meta.get_all("Provides-Extra")
    assert (PACKAGE / "py.typed").exists()

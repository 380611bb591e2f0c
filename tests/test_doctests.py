"""The examples in the docstrings of every sona module run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sona

# modules whose examples need an extra; they run when it is installed (the test extras have all)
EXTRAS = {"sona.fleet": "redis", "sona.serve": "starlette", "sona.metrics": "prometheus_client"}
MODULES = sorted(m.name for m in pkgutil.iter_modules(sona.__path__, "sona.")
                 if m.name not in ("sona.__main__", "sona._core"))


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_of_each_module_run(name):
    if name in EXTRAS:
        pytest.importorskip(EXTRAS[name])
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_the_modules_with_examples_have_them():
    # a docstring example that stops being collected (renamed, indented wrongly) is caught here
    tried = {name: doctest.testmod(importlib.import_module(name), verbose=False).attempted
             for name in ("sona.config", "sona.evaluation", "sona.baselines", "sona.params",
                          "sona.router", "sona.outcome")}
    assert all(n >= 1 for n in tried.values()), tried

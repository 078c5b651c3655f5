"""The examples in the models' docstrings run as written."""

import doctest
import importlib
import pkgutil

import pytest

import tamor.models

MODULES = [m.name for m in pkgutil.iter_modules(tamor.models.__path__, "tamor.models.")]


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_each_model_module_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0

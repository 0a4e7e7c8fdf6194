"""The root conftest leaves out of doctest collection exactly the modules whose optional dependency is missing."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_names(root_conftest):
    assert root_conftest.module_name(ROOT / "llava" / "model" / "builder.py") == "llava.model.builder"
    assert root_conftest.module_name(ROOT / "semantic_entropy" / "__init__.py") == "semantic_entropy"
    assert root_conftest.module_name(ROOT / "tests" / "test_builder.py") is None
    assert root_conftest.module_name(ROOT / "llava") is None


def test_only_modules_lacking_an_optional_dependency_are_ignored(root_conftest):
    has_polygraph = importlib.util.find_spec("lm_polygraph") is not None
    ignored = root_conftest.pytest_ignore_collect(ROOT / "semantic_entropy" / "polygraph" / "estimators.py", None)
    assert ignored is (None if has_polygraph else True)
    # adapter.py and measures.py import lm_polygraph lazily: their doctests always run.
    for name in ("adapter.py", "measures.py"):
        assert root_conftest.pytest_ignore_collect(ROOT / "semantic_entropy" / "polygraph" / name, None) is None
    assert root_conftest.pytest_ignore_collect(ROOT / "tests" / "test_builder.py", None) is None


def test_a_missing_required_module_is_not_hidden(root_conftest):
    assert root_conftest.missing_optional_dependency("llava.no_such_module") is None

"""Doctest collection of the packages (`--doctest-modules` over llava/ and semantic_entropy/).

A module that cannot be imported because an optional dependency is not installed is left out
of collection; any other import error still fails the run. This lives at the root because a
conftest under tests/ is not consulted for the packages' paths.
"""

import importlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
PACKAGES = ("llava", "semantic_entropy")
# Import names of the extras in pyproject.toml's [project.optional-dependencies].
OPTIONAL_IMPORTS = ("lm_polygraph",)


def module_name(path) -> str | None:
    """Dotted name of a .py file of the packages, else None."""
    path = pathlib.Path(path)
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if path.suffix != ".py" or not parts or parts[0] not in PACKAGES:
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def missing_optional_dependency(name: str) -> str | None:
    """The optional package that module `name` needs and that is not installed, else None."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        return missing if missing in OPTIONAL_IMPORTS else None
    except Exception:  # not ours to judge: collection imports it again and reports the error
        return None
    return None


def pytest_ignore_collect(collection_path, config):
    name = module_name(collection_path)
    if name is not None and missing_optional_dependency(name):
        return True
    return None

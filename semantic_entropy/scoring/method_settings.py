"""The method-v2 scores' settings: the grounding calibration and the hyperparameters chosen on a
validation world (docs/method.md, "Method v2"), read from a small JSON file in the repository.

`scripts/choose_method_settings.py` writes the file from a validation run; the registered
measures read `DEFAULT_SETTINGS_FILE` unless the environment variable METHOD_V2_SETTINGS names
another file (a model of its own, e.g. LLaVA-1.5-7B, needs its own calibration). Keys:

    grounding:      statistic ("logit_lens": the logit lens of the object's tokens over the image
                    tokens; "similarity": the cosine of the object's token states with them;
                    `semantic_entropy.probes.grounding`), layer (hidden-state index),
                    top_k (values averaged), slope and intercept (e = sigmoid(slope * x + intercept))
    counterfactual: erase_fraction (which erased share a "yes" reads), weight (w)
    prior_vauq:     alpha, beta
    fitted_on:      what the calibration and choices were fitted on (null = not fitted)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

DEFAULT_SETTINGS_FILE = os.path.join(os.path.dirname(__file__), "method_v2_settings.json")
ENVIRONMENT_VARIABLE = "METHOD_V2_SETTINGS"
GROUNDING_STATISTICS = ("logit_lens", "similarity")
TOP_FIELD = {"logit_lens": "logit_lens_top", "similarity": "similarity_top"}
REQUIRED = {"grounding": ("statistic", "layer", "top_k", "slope", "intercept"),
            "counterfactual": ("erase_fraction", "weight"), "prior_vauq": ("alpha", "beta")}


def validate_settings(settings: dict, source: str) -> dict:
    """The settings, checked; a problem is one line naming the file.

    >>> validate_settings({"grounding": {"statistic": "pixels"}}, "s.json")
    Traceback (most recent call last):
    ...
    ValueError: s.json: missing grounding.layer, grounding.top_k, grounding.slope, grounding.intercept, counterfactual, prior_vauq
    """
    missing = [f"{section}.{key}" if section in settings else section
               for section, keys in REQUIRED.items()
               for key in (keys if section in settings else keys[:1])
               if section not in settings or key not in settings[section]]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)}")
    if settings["grounding"]["statistic"] not in GROUNDING_STATISTICS:
        raise ValueError(f"{source}: grounding.statistic must be one of {GROUNDING_STATISTICS}, "
                         f"got {settings['grounding']['statistic']!r}")
    return settings


@lru_cache(maxsize=8)
def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the method-v2 settings {path}: {error}") from None
    return validate_settings(settings, path)


def settings_path() -> str:
    return os.environ.get(ENVIRONMENT_VARIABLE) or DEFAULT_SETTINGS_FILE


def method_settings() -> dict:
    """The settings the measures use now (METHOD_V2_SETTINGS, else the shipped file)."""
    return _load(settings_path())

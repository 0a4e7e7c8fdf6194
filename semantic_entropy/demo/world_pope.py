"""ShapesPOPE v2 test sets in POPE's layout, with each question's error mechanism in metadata.json.

`write_test_set` writes `images/`, `coco/coco_pope_{adversarial,random,popular}.json` built the
way POPE builds its splits (random: uniform absent classes; popular: the most frequent absent
classes; adversarial: the absent classes that co-occur most with the image's objects; counts
from the training distribution, see `reference_truth`) and `metadata.json`: per image its
objects (bbox of the visible pixels, small, occluded, visible share), its absent prior
companions and present look-alikes, and per split and question the mechanism that would
explain an error on it (`question_mechanisms`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence

import numpy as np

from semantic_entropy.demo.world import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    GROUPS,
    LOOKALIKES,
    STREAM_STATISTICS,
    STREAM_TEST_SCENES,
    STREAM_TEST_SPLITS,
    Scene,
    WorldConfig,
    class_colour,
    class_shape,
    companion_map,
    lookalike_map,
    pope_question,
    render_scene,
    rng_for,
    sample_scene,
    sample_spec,
)

SPLITS = ("adversarial", "random", "popular")


def class_counts(truth: Sequence[Sequence[str]]) -> dict[str, int]:
    """Number of images holding each class (every class listed, zeros included).

    >>> class_counts([["red circle", "blue square"], ["red circle"]])["red circle"]
    2
    """
    counts = {name: 0 for name in CLASS_NAMES}
    for names in truth:
        for name in set(names):
            counts[name] += 1
    return counts


def cooccurrence_counts(truth: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """counts[a][b] = number of images holding both a and b (a != b).

    >>> cooccurrence_counts([["red circle", "blue square"], ["red circle"]])["red circle"]["blue square"]
    1
    """
    counts = {a: {b: 0 for b in CLASS_NAMES if b != a} for a in CLASS_NAMES}
    for names in truth:
        present = set(names)
        for a in present:
            for b in present - {a}:
                counts[a][b] += 1
    return counts


def negatives_random(present: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """k absent classes drawn uniformly without replacement."""
    absent = [n for n in CLASS_NAMES if n not in present]
    return [absent[int(i)] for i in rng.choice(len(absent), size=k, replace=False)]


def negatives_popular(present: Sequence[str], k: int, counts: dict[str, int]) -> list[str]:
    """The k most frequent absent classes; ties go to the earlier class in CLASS_NAMES."""
    absent = [n for n in CLASS_NAMES if n not in present]
    return sorted(absent, key=lambda n: (-counts[n], CLASS_NAMES.index(n)))[:k]


def negatives_adversarial(present: Sequence[str], k: int, cooccurrence: dict[str, dict[str, int]],
                          counts: dict[str, int]) -> list[str]:
    """The k absent classes with the largest summed co-occurrence with the present classes.

    Ties go to the more frequent class, then to the earlier class in CLASS_NAMES.
    """
    absent = [n for n in CLASS_NAMES if n not in present]
    score = {n: sum(cooccurrence[p][n] for p in set(present)) for n in absent}
    return sorted(absent, key=lambda n: (-score[n], -counts[n], CLASS_NAMES.index(n)))[:k]


def build_pope_splits(images: Sequence[tuple[str, Sequence[str]]], seed: int, counts: dict[str, int],
                      cooccurrence: dict[str, dict[str, int]], questions_per_image: int = 3) -> dict[str, list[dict]]:
    """POPE's three label files from (image file name, present class names) pairs.

    Per image, k = min(questions_per_image, number of classes) present classes are asked
    (the same ones in every split) and k absent ones, alternating yes, no, yes, no as POPE does.
    """
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for index, (image, names) in enumerate(images):
        present = list(dict.fromkeys(names))
        rng = rng_for(seed, STREAM_TEST_SPLITS, index)
        k = min(questions_per_image, len(present))
        asked = [present[int(i)] for i in rng.choice(len(present), size=k, replace=False)]
        negatives = {
            "random": negatives_random(present, k, rng),
            "popular": negatives_popular(present, k, counts),
            "adversarial": negatives_adversarial(present, k, cooccurrence, counts),
        }
        for split in SPLITS:
            rows = splits[split]
            for yes, no in zip(asked, negatives[split]):
                for name, label in ((yes, "yes"), (no, "no")):
                    rows.append({"question_id": len(rows) + 1, "image": image, "text": pope_question(name),
                                 "label": label})
    return splits


def reference_truth(config: WorldConfig) -> list[list[str]]:
    """Class lists of `config.statistics_scenes` training-distribution scenes (own seed stream).

    Their counts rank POPE's popular and adversarial negatives (POPE counts over its own
    test images; here these would understate the training prior the test drops on purpose).
    """
    return [[name for name, _, _ in sample_spec(rng_for(config.seed, STREAM_STATISTICS, i), config, True).items]
            for i in range(config.statistics_scenes)]


def scene_statistics(truth: Sequence[Sequence[str]]) -> dict:
    """Counts, frequencies and P(companion present | anchor present) of scenes' class lists."""
    counts = class_counts(truth)
    cooccurrence = cooccurrence_counts(truth)
    return {
        "num_scenes": len(truth),
        "class_counts": counts,
        "cooccurrence_counts": cooccurrence,
        "class_frequency": {n: round(c / max(1, len(truth)), 4) for n, c in counts.items()},
        "companion_present_given_anchor": {a: round(cooccurrence[a][c] / max(1, counts[a]), 4)
                                           for a, c, _, _ in GROUPS},
    }


def question_mechanisms(name: str, label: str, record: dict) -> list[str]:
    """Mechanisms that would explain an error on asking `name` of an image (its metadata record).

    For an absent object ("no"): "prior" when a present class has it as a prior companion,
    "lookalike" when its look-alike is present. For a present one ("yes"): "small",
    "occlusion" (partly behind another object), "lookalike" (its look-alike present too).

    >>> rec = {"objects": [{"class": "red circle", "small": False, "occluded": False},
    ...                    {"class": "navy square", "small": True, "occluded": False}]}
    >>> question_mechanisms("blue square", "no", rec), question_mechanisms("navy square", "yes", rec)
    (['prior', 'lookalike'], ['small', 'lookalike'])
    """
    present = {o["class"]: o for o in record["objects"]}
    companions, lookalikes = companion_map(), lookalike_map()
    out = []
    if label == "no":
        if any(name in companions[p] for p in present):
            out.append("prior")
    else:
        obj = present[name]
        if obj["small"]:
            out.append("small")
        if obj["occluded"]:
            out.append("occlusion")
    if lookalikes.get(name) in present:
        out.append("lookalike")
    return out


def image_file_name(index: int) -> str:
    return f"shapes_test_{index:06d}.png"


def generate_test_scenes(config: WorldConfig) -> list[Scene]:
    return [sample_scene(rng_for(config.seed, STREAM_TEST_SCENES, i), config, train=False)
            for i in range(config.num_test_images)]


def scene_record(image: str, scene: Scene) -> dict:
    companions = companion_map()
    present = set(scene.names)
    return {
        "image": image,
        "width": scene.width,
        "height": scene.height,
        "context": scene.context,
        "absent_companions": sorted({c for n in present for c in companions[n] if c not in present}),
        "present_lookalikes": sorted(n for n in present if n in LOOKALIKES),
        "objects": [{"class": o.name, "bbox": list(o.bbox), "small": o.small, "occluded": o.occluded,
                     "visible_fraction": o.visible_fraction, "radius_frac": round(o.radius / min(scene.width, scene.height), 4)}
                    for o in scene.objects],
    }


def build_metadata(config: WorldConfig, records: list[dict], splits: dict[str, list[dict]], reference: dict) -> dict:
    from semantic_entropy.demo.world import class_from_question

    by_image = {r["image"]: r for r in records}
    mechanisms = {split: {str(row["question_id"]): question_mechanisms(class_from_question(row["text"]), row["label"],
                                                                       by_image[row["image"]])
                          for row in rows} for split, rows in splits.items()}
    truth = [[o["class"] for o in r["objects"]] for r in records]
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "classes": [{"name": n, "colour": n.split()[0], "shape": class_shape(n), "rgb": list(class_colour(n))}
                    for n in CLASS_NAMES],
        "groups": [{"anchor": a, "companion": c, "context": x, "weight": w} for a, c, x, w in GROUPS],
        "companions": companion_map(),
        "lookalikes": dict(LOOKALIKES),
        "reference_statistics": reference,
        "test_class_counts": class_counts(truth),
        "questions_per_split": {s: len(rows) for s, rows in splits.items()},
        "mechanism_legend": {"prior": "absent object, a prior companion of a present one",
                             "lookalike": "its look-alike is in the image",
                             "small": "present, radius 3-6% of the shorter side",
                             "occlusion": "present, partly behind its anchor"},
        "question_mechanisms": mechanisms,
        "bbox_format": "x0, y0, x1, y1 of the visible pixels of the saved image; x1, y1 exclusive",
        "images": records,
    }


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_test_set(output_dir: str, config: WorldConfig) -> dict:
    """Write images/, coco/coco_pope_{split}.json and metadata.json; return the metadata."""
    image_dir = os.path.join(output_dir, "images")
    coco_dir = os.path.join(output_dir, "coco")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(coco_dir, exist_ok=True)
    scenes = generate_test_scenes(config)
    names = [image_file_name(i) for i in range(len(scenes))]
    for name, scene in zip(names, scenes):
        render_scene(scene).save(os.path.join(image_dir, name), format="PNG", optimize=True)
    keep = set(names)
    for stale in os.listdir(image_dir):
        if re.fullmatch(r"shapes_test_\d{6}\.png", stale) and stale not in keep:
            os.remove(os.path.join(image_dir, stale))
    reference = scene_statistics(reference_truth(config))
    splits = build_pope_splits([(n, s.names) for n, s in zip(names, scenes)], config.seed,
                               reference["class_counts"], reference["cooccurrence_counts"], config.questions_per_image)
    for split, rows in splits.items():
        _write_jsonl(os.path.join(coco_dir, f"coco_pope_{split}.json"), rows)
    metadata = build_metadata(config, [scene_record(n, s) for n, s in zip(names, scenes)], splits, reference)
    with open(os.path.join(output_dir, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
        f.write("\n")
    return metadata

"""ShapesPOPE: a synthetic POPE of coloured shapes with a strong co-occurrence prior.

An object class is a (colour, shape) name such as "red circle". Classes come in companion
pairs ("red circle" usually appears with "blue square"), so a model trained on the scenes
learns a prior and may hallucinate the usual companion when it is absent: the failure that
POPE's adversarial split probes. Class frequencies are non-uniform, so "popular" negatives
differ from "random" ones.

Two products, both deterministic from a seed:

- a held-out test set in POPE's own layout (`write_test_set`): `images/`, and
  `coco/coco_pope_{adversarial,random,popular}.json` built the way POPE builds its splits
  (popular and adversarial negatives ranked by the class and co-occurrence counts of the
  training distribution, see `reference_truth`), plus `metadata.json` with every object's
  bounding box (for pointing-game scores);
- training examples generated on the fly (`make_training_example`, `iter_training_examples`),
  from a seed stream disjoint from the test stream.

Every random draw comes from a numpy Generator seeded by SeedSequence([seed, stream, index]),
so one scene or example never depends on how many others were made before it.

>>> pope_question("red circle")
'Is there a red circle in the image?'
>>> pope_question("orange hexagon")
'Is there an orange hexagon in the image?'
>>> class_from_question("Is there an orange hexagon in the image?")
'orange hexagon'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = "shapes_pope-1"

# ---------------------------------------------------------------------------------------------
# Classes and the co-occurrence design
# ---------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "cyan": (40, 200, 210),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}

SHAPES = ("circle", "ring", "square", "triangle", "star", "diamond", "hexagon", "cross")

# Groups of classes that appear together, with how often a scene picks each group. Pairs are
# companions of each other; the two singletons have no companion. Weights are deliberately
# uneven so that class frequencies (POPE "popular") are uneven too.
GROUPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("red circle", "blue square"), 0.24),
    (("green triangle", "yellow star"), 0.19),
    (("purple diamond", "orange hexagon"), 0.15),
    (("white cross", "cyan ring"), 0.12),
    (("pink square", "brown triangle"), 0.09),
    (("black star", "gray circle"), 0.07),
    (("blue circle",), 0.08),
    (("green hexagon",), 0.06),
)

CLASS_NAMES: tuple[str, ...] = tuple(name for group, _ in GROUPS for name in group)


def class_colour(name: str) -> tuple[int, int, int]:
    return COLOURS[name.split()[0]]


def class_shape(name: str) -> str:
    return name.split()[1]


def companion_map() -> dict[str, list[str]]:
    """Class name -> the classes of its group (its usual companions); [] for singletons."""
    return {name: [other for other in group if other != name] for group, _ in GROUPS for name in group}


def pope_question(name: str) -> str:
    """POPE's question text for a class, with POPE's a/an."""
    article = "an" if name[0] in "aeiou" else "a"
    return f"Is there {article} {name} in the image?"


def class_from_question(text: str) -> str:
    match = re.fullmatch(r"Is there an? (.+) in the image\?", text.strip())
    if match is None or match.group(1) not in CLASS_NAMES:
        raise ValueError(f"not a ShapesPOPE question: {text!r}")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

# Seed-stream tags: the test scenes, the split sampling and the training scenes never share
# a random stream, whatever seeds the user passes.
STREAM_TEST_SCENES = 1
STREAM_TEST_SPLITS = 2
STREAM_TRAIN = 3
STREAM_STATISTICS = 4


@dataclasses.dataclass(frozen=True)
class ShapesPopeConfig:
    seed: int = 0
    num_test_images: int = 140
    questions_per_image: int = 3          # POPE asks 3 present + 3 absent objects per image
    # Scene statistics.
    train_companion_prob: float = 0.85    # a chosen pair shows both members (training prior)
    test_companion_prob: float = 0.5      # lower in the test set: many absent companions
    anchor_prob: float = 0.65             # which member stays when a pair shows only one
    two_groups_prob: float = 0.5          # a scene draws 1 or 2 groups
    extra_object_prob: float = 0.3        # plus one unrelated class
    max_objects: int = 4
    # Rendering.
    min_side: int = 160
    max_side: int = 320
    min_radius_frac: float = 0.09         # object radius as a fraction of the shorter side
    max_radius_frac: float = 0.22
    max_overlap: float = 0.3              # bbox intersection / smaller bbox area
    low_contrast_prob: float = 0.2
    min_contrast: float = 90.0            # RGB distance object <-> background, normal scenes
    low_contrast_range: tuple[float, float] = (45.0, 65.0)
    # Training questions.
    hard_negative_prob: float = 0.75      # ask the absent companion when a scene has one
    # Metadata: training-distribution statistics are estimated from this many scenes.
    statistics_scenes: int = 20000


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneObject:
    name: str
    colour: tuple[int, int, int]           # the drawn colour (class colour plus a small jitter)
    centre: tuple[float, float]
    radius: float
    rotation: float                        # degrees
    bbox: tuple[int, int, int, int]        # x0, y0, x1, y1 in pixels; x1, y1 exclusive


@dataclasses.dataclass(frozen=True)
class Background:
    kind: str                              # "plain", "gradient" or "noise"
    colour: tuple[int, int, int]
    colour2: tuple[int, int, int]          # the gradient's far end (= colour otherwise)
    vertical: bool
    noise_step: int
    noise_block: int
    noise_seed: int
    low_contrast: bool


@dataclasses.dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: Background
    objects: tuple[SceneObject, ...]       # in drawing order (later ones on top)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)


def sample_scene_classes(rng: np.random.Generator, config: ShapesPopeConfig, companion_prob: float) -> list[str]:
    """Which classes a scene holds: 1-2 groups (pairs mostly complete), maybe one extra class."""
    weights = np.array([w for _, w in GROUPS])
    n_groups = 2 if rng.random() < config.two_groups_prob else 1
    picked = rng.choice(len(GROUPS), size=n_groups, replace=False, p=weights / weights.sum())
    names: list[str] = []
    for g in picked:
        group = GROUPS[int(g)][0]
        if len(group) == 1 or rng.random() < companion_prob:
            names.extend(group)
        else:
            names.append(group[0] if rng.random() < config.anchor_prob else group[1])
    if rng.random() < config.extra_object_prob:
        absent = [n for n in CLASS_NAMES if n not in names]
        names.append(absent[int(rng.integers(len(absent)))])
    # The extra object is the one dropped when the scene is too full.
    return names[: config.max_objects]


def shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inside the circle of radius r around (cx, cy)."""
    if shape == "square":
        points = [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    elif shape == "triangle":
        points = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
        points = [(x, y + 0.15) for x, y in points]  # centre the visual mass
    elif shape == "star":
        points = [
            ((1.0 if i % 2 == 0 else 0.45) * math.cos(math.radians(-90 + 36 * i)),
             (1.0 if i % 2 == 0 else 0.45) * math.sin(math.radians(-90 + 36 * i)))
            for i in range(10)
        ]
    elif shape == "diamond":
        points = [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]
    elif shape == "hexagon":
        points = [(math.cos(math.radians(60 * i)), math.sin(math.radians(60 * i))) for i in range(6)]
    elif shape == "cross":
        a, b = 0.3, 0.9
        points = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    else:
        raise ValueError(f"{shape!r} is not a polygon")
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points]


# Rotation ranges (degrees) that keep each shape recognisable: a square turned 45 degrees
# would read as a diamond.
_ROTATION = {"square": 15, "triangle": 20, "diamond": 15, "cross": 15, "star": 36, "hexagon": 30, "circle": 0, "ring": 0}


def _bbox(shape: str, cx: float, cy: float, r: float, rotation: float, width: int, height: int) -> tuple[int, int, int, int]:
    if shape in ("circle", "ring"):
        xs, ys = (cx - r, cx + r), (cy - r, cy + r)
    else:
        pts = shape_polygon(shape, cx, cy, r, rotation)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
            min(width, math.ceil(max(xs)) + 1), min(height, math.ceil(max(ys)) + 1))


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _place_objects(rng: np.random.Generator, names: Sequence[str], width: int, height: int,
                   config: ShapesPopeConfig) -> list[SceneObject]:
    """Random sizes and positions; overlap capped so no object is hidden behind another."""
    short = min(width, height)
    placed: list[SceneObject] = []
    for name in names:
        shape = class_shape(name)
        r = short * rng.uniform(config.min_radius_frac, config.max_radius_frac)
        rotation = float(rng.uniform(-_ROTATION[shape], _ROTATION[shape]))
        jitter = rng.integers(-10, 11, size=3)
        colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(class_colour(name), jitter))
        while True:
            for _ in range(40):
                cx = rng.uniform(r + 2, width - r - 2)
                cy = rng.uniform(r + 2, height - r - 2)
                bbox = _bbox(shape, cx, cy, r, rotation, width, height)
                if all(_overlap(bbox, o.bbox) <= config.max_overlap for o in placed):
                    break
            else:
                r *= 0.85  # crowded: shrink and try again
                continue
            break
        placed.append(SceneObject(name, colour, (float(cx), float(cy)), float(r), rotation, bbox))
    return placed


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def _sample_background(rng: np.random.Generator, objects: Sequence[SceneObject], config: ShapesPopeConfig) -> Background:
    """A background far enough from every object's colour that the labels stay true."""
    kind = ("plain", "gradient", "noise")[int(rng.integers(3))]
    low_contrast = rng.random() < config.low_contrast_prob
    target = objects[int(rng.integers(len(objects)))]
    best, best_margin = None, -math.inf
    for _ in range(60):
        if low_contrast:
            # Near one object's colour: a hard but still visible object.
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            d = rng.uniform(*config.low_contrast_range)
            colour = tuple(int(c) for c in np.clip(np.asarray(target.colour) + d * direction, 0, 255))
        else:
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if kind == "gradient":
            delta = rng.normal(size=3)
            delta *= rng.uniform(25, 50) / np.linalg.norm(delta)
            colour2 = tuple(int(c) for c in np.clip(np.asarray(colour) + delta, 0, 255))
        else:
            colour2 = colour
        # Margin: how far the closest object colour is above its required contrast.
        margins = []
        for o in objects:
            dist = min(_distance(o.colour, colour), _distance(o.colour, colour2))
            need = config.low_contrast_range[0] - 5 if (low_contrast and o is target) else config.min_contrast
            margins.append(dist - need)
        margin = min(margins)
        if margin >= 0:
            best = (colour, colour2)
            break
        if margin > best_margin:
            best, best_margin = (colour, colour2), margin
    colour, colour2 = best
    return Background(
        kind=kind,
        colour=colour,
        colour2=colour2,
        vertical=bool(rng.random() < 0.5),
        noise_step=int(rng.integers(4, 9)) if kind == "noise" else 0,
        noise_block=int(rng.integers(1, 4)),
        noise_seed=int(rng.integers(2**31)),
        low_contrast=bool(low_contrast),
    )


def sample_scene(rng: np.random.Generator, config: ShapesPopeConfig, companion_prob: float) -> Scene:
    names = sample_scene_classes(rng, config, companion_prob)
    order = rng.permutation(len(names))  # drawing order: the companion is not always on top
    names = [names[int(i)] for i in order]
    width = int(rng.integers(config.min_side, config.max_side + 1))
    height = int(rng.integers(config.min_side, config.max_side + 1))
    objects = _place_objects(rng, names, width, height, config)
    background = _sample_background(rng, objects, config)
    return Scene(width, height, background, tuple(objects))


def render_background(background: Background, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8. Few distinct colours (8 gradient bands, 5 noise levels): small PNGs."""
    c1 = np.asarray(background.colour, float)
    c2 = np.asarray(background.colour2, float)
    length = height if background.vertical else width
    bands = np.floor(np.linspace(0, 1, length, endpoint=False) * 8) / 7
    line = c1[None, :] * (1 - bands[:, None]) + c2[None, :] * bands[:, None]  # (L, 3)
    if background.vertical:
        image = np.broadcast_to(line[:, None, :], (height, width, 3)).copy()
    else:
        image = np.broadcast_to(line[None, :, :], (height, width, 3)).copy()
    if background.kind == "noise":
        block = background.noise_block
        noise_rng = np.random.default_rng(background.noise_seed)
        levels = noise_rng.integers(-2, 3, size=(height // block + 1, width // block + 1, 1))
        noise = np.repeat(np.repeat(levels, block, axis=0), block, axis=1)[:height, :width]
        image = image + noise * background.noise_step
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB PIL image; a pure function of the Scene."""
    image = Image.fromarray(render_background(scene.background, scene.width, scene.height), "RGB")
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        shape = class_shape(o.name)
        (cx, cy), r = o.centre, o.radius
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=o.colour)
        elif shape == "ring":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=o.colour, width=max(3, round(0.3 * r)))
        else:
            draw.polygon(shape_polygon(shape, cx, cy, r, o.rotation), fill=o.colour)
    return image


# ---------------------------------------------------------------------------------------------
# POPE splits
# ---------------------------------------------------------------------------------------------

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
            for b in present:
                if a != b:
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
    """The k absent classes that co-occur most with the image's objects.

    Score of an absent class = sum over the present classes of their co-occurrence counts;
    ties go to the more frequent class, then to the earlier class in CLASS_NAMES.
    """
    absent = [n for n in CLASS_NAMES if n not in present]
    score = {n: sum(cooccurrence[p][n] for p in set(present)) for n in absent}
    return sorted(absent, key=lambda n: (-score[n], -counts[n], CLASS_NAMES.index(n)))[:k]


def build_pope_splits(images: Sequence[tuple[str, Sequence[str]]], seed: int, counts: dict[str, int],
                      cooccurrence: dict[str, dict[str, int]], questions_per_image: int = 3) -> dict[str, list[dict]]:
    """POPE's three label files from (image file name, present class names) pairs.

    Per image, k = min(questions_per_image, number of objects) present classes are asked
    (the same ones in every split) and k absent ones, alternating yes, no, yes, no as POPE
    does. `counts` and `cooccurrence` rank the popular and adversarial negatives.
    """
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for index, (image, present) in enumerate(images):
        rng = _rng(seed, STREAM_TEST_SPLITS, index)
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
                    rows.append({"question_id": len(rows) + 1, "image": image,
                                 "text": pope_question(name), "label": label})
    return splits


# ---------------------------------------------------------------------------------------------
# The test set on disk
# ---------------------------------------------------------------------------------------------


def image_file_name(index: int) -> str:
    return f"shapes_test_{index:06d}.png"


def generate_test_scenes(config: ShapesPopeConfig) -> list[Scene]:
    return [sample_scene(_rng(config.seed, STREAM_TEST_SCENES, i), config, config.test_companion_prob)
            for i in range(config.num_test_images)]


def reference_truth(config: ShapesPopeConfig) -> list[list[str]]:
    """Class lists of `config.statistics_scenes` scenes of the training distribution.

    Their counts rank POPE's popular and adversarial negatives. POPE counts over the
    annotations of its own test images; here the test scenes drop companions on purpose
    and are few, so their counts would understate (and add noise to) the very prior the
    adversarial split is meant to probe. The stream is its own: neither test nor training.
    """
    return [sample_scene_classes(_rng(config.seed, STREAM_STATISTICS, i), config, config.train_companion_prob)
            for i in range(config.statistics_scenes)]


def scene_statistics(truth: Sequence[Sequence[str]]) -> dict:
    """Counts, frequencies and companion rates of a list of scenes' class lists."""
    counts = class_counts(truth)
    cooccurrence = cooccurrence_counts(truth)
    companion_rate = {}
    for name, companions in companion_map().items():
        if companions and counts[name]:
            companion_rate[name] = round(cooccurrence[name][companions[0]] / counts[name], 4)
    return {
        "num_scenes": len(truth),
        "class_counts": counts,
        "cooccurrence_counts": cooccurrence,
        "class_frequency": {n: round(c / max(1, len(truth)), 4) for n, c in counts.items()},
        "companion_present_given_class": companion_rate,
    }


def _scene_record(image: str, scene: Scene) -> dict:
    companions = companion_map()
    present = set(scene.names)
    return {
        "image": image,
        "width": scene.width,
        "height": scene.height,
        "background": scene.background.kind,
        "low_contrast": scene.background.low_contrast,
        "absent_companions": sorted({c for n in present for c in companions[n] if c not in present}),
        "objects": [{"class": o.name, "bbox": list(o.bbox)} for o in scene.objects],
    }


def build_metadata(config: ShapesPopeConfig, records: list[dict], splits: dict[str, list[dict]],
                   reference: dict) -> dict:
    truth = [[o["class"] for o in r["objects"]] for r in records]
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "classes": [{"name": n, "colour": n.split()[0], "shape": class_shape(n), "rgb": list(class_colour(n))}
                    for n in CLASS_NAMES],
        "companions": companion_map(),
        "group_weights": {" + ".join(g): w for g, w in GROUPS},
        # What ranks the popular and adversarial negatives (see reference_truth).
        "reference_statistics": reference,
        # The test images' own ground truth, for reference.
        "test_class_counts": class_counts(truth),
        "test_companion_present_given_class": scene_statistics(truth)["companion_present_given_class"],
        "questions_per_split": {s: len(rows) for s, rows in splits.items()},
        "bbox_format": "x0, y0, x1, y1 in pixels of the saved image; x1, y1 exclusive",
        "images": records,
    }


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_test_set(output_dir: str, config: ShapesPopeConfig) -> dict:
    """Write images/, coco/coco_pope_{split}.json and metadata.json; return the metadata.

    Stale `shapes_test_*.png` files from a larger earlier run are removed, so the folder
    always matches its label files.
    """
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
    metadata = build_metadata(config, [_scene_record(n, s) for n, s in zip(names, scenes)], splits, reference)
    with open(os.path.join(output_dir, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
        f.write("\n")
    return metadata


# ---------------------------------------------------------------------------------------------
# Training examples (generated on the fly, never saved)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingExample:
    index: int
    image: Image.Image
    question: str              # POPE question, without LLaVA's answer-format suffix
    answer: str                # "Yes" or "No"
    asked_class: str
    negative_kind: str         # "" for Yes; "companion" (absent usual companion) or "random"
    objects: tuple[SceneObject, ...]


def make_training_example(index: int, seed: int, config: ShapesPopeConfig = ShapesPopeConfig()) -> TrainingExample:
    """Example `index` of the training stream of `seed`: a fresh scene and one question.

    Even indices are answered Yes, odd ones No, so any run of examples is balanced. A No
    question asks an absent companion of a present object (a hard negative) with
    probability `hard_negative_prob` when the scene has one, else a uniform absent class.
    """
    rng = _rng(seed, STREAM_TRAIN, index)
    scene = sample_scene(rng, config, config.train_companion_prob)
    present = list(scene.names)
    negative_kind = ""
    if index % 2 == 0:
        asked = present[int(rng.integers(len(present)))]
    else:
        companions = companion_map()
        hard = sorted({c for n in present for c in companions[n] if c not in present})
        if hard and rng.random() < config.hard_negative_prob:
            asked, negative_kind = hard[int(rng.integers(len(hard)))], "companion"
        else:
            asked, negative_kind = negatives_random(present, 1, rng)[0], "random"
    return TrainingExample(
        index=index,
        image=render_scene(scene),
        question=pope_question(asked),
        answer="Yes" if index % 2 == 0 else "No",
        asked_class=asked,
        negative_kind=negative_kind,
        objects=scene.objects,
    )


def iter_training_examples(seed: int, start: int = 0,
                           config: ShapesPopeConfig = ShapesPopeConfig()) -> Iterator[TrainingExample]:
    """Endless stream of examples start, start + 1, ...; resumable at any index."""
    index = start
    while True:
        yield make_training_example(index, seed, config)
        index += 1


def make_training_examples(n: int, seed: int, start: int = 0,
                           config: ShapesPopeConfig = ShapesPopeConfig()) -> list[TrainingExample]:
    return [make_training_example(i, seed, config) for i in range(start, start + n)]

"""ShapesPOPE v2 world: scenes of coloured shapes with the causes of LLaVA's hallucinations.

An object class is a (colour, shape) name such as "red circle". The world has:

- companion pairs (anchor, companion): in training scenes the companion is there whenever the
  anchor is, up to `train_companion_prob` (>= 0.9), and the scene's context (its background
  style, named in captions) tells which pair a scene shows;
- partial occlusion: in training the companion often sits partly behind its anchor (still
  present, still named in the caption); test anchors with an absent companion have nothing
  behind them;
- small objects: a radius of 3-6% of the image side;
- look-alike distractors: classes close in colour to a companion ("gold star" ~ "yellow star");
- every random draw from numpy Generators seeded by SeedSequence([seed, stream, index]).

>>> pope_question("red circle")
'Is there a red circle in the image?'
>>> pope_question("orange hexagon")
'Is there an orange hexagon in the image?'
>>> class_from_question("Is there an orange hexagon in the image?")
'orange hexagon'
>>> companion_map()["red circle"], anchor_of("blue square"), lookalike_map()["gold star"]
(['blue square'], 'red circle', 'yellow star')
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = "shapes_pope-2"

# ---------------------------------------------------------------------------------------------
# Classes, groups, contexts
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
    # Look-alike colours: each close to one companion's colour.
    "navy": (40, 40, 150),
    "gold": (215, 170, 30),
    "teal": (30, 150, 150),
    "tan": (190, 120, 60),
}

SHAPES = ("circle", "ring", "square", "triangle", "star", "diamond", "hexagon", "cross")

# (anchor, companion, context, weight). A scene picks 1-2 groups by weight (uneven, so POPE's
# "popular" negatives differ from "random" ones); the first group's context styles the scene.
GROUPS: tuple[tuple[str, str, str, float], ...] = (
    ("red circle", "blue square", "sand", 0.30),
    ("green triangle", "yellow star", "sky", 0.24),
    ("purple diamond", "orange hexagon", "stone", 0.19),
    ("white cross", "cyan ring", "night", 0.15),
    ("pink square", "brown triangle", "grass", 0.12),
)

# Look-alike distractor -> the companion it resembles (same shape, near colour).
LOOKALIKES: dict[str, str] = {
    "navy square": "blue square",
    "gold star": "yellow star",
    "teal ring": "cyan ring",
    "tan triangle": "brown triangle",
}

CLASS_NAMES: tuple[str, ...] = tuple(n for a, c, _, _ in GROUPS for n in (a, c)) + tuple(LOOKALIKES)

# Context -> background base colour (a scene jitters it and may add a gradient or noise).
CONTEXTS: dict[str, tuple[int, int, int]] = {
    "sand": (215, 200, 160),
    "sky": (150, 190, 235),
    "stone": (125, 125, 130),
    "night": (30, 30, 62),
    "grass": (150, 200, 120),
}


def class_colour(name: str) -> tuple[int, int, int]:
    return COLOURS[name.split()[0]]


def class_shape(name: str) -> str:
    return name.split()[1]


def companion_map() -> dict[str, list[str]]:
    """Class -> its prior companions (the other member of its group); [] for look-alikes."""
    out = {name: [] for name in CLASS_NAMES}
    for anchor, companion, _, _ in GROUPS:
        out[anchor].append(companion)
        out[companion].append(anchor)
    return out


def anchor_of(companion: str) -> str | None:
    return next((a for a, c, _, _ in GROUPS if c == companion), None)


def lookalike_map() -> dict[str, str]:
    """Both directions: look-alike -> companion and companion -> look-alike."""
    return {**LOOKALIKES, **{v: k for k, v in LOOKALIKES.items()}}


def article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def pope_question(name: str) -> str:
    """POPE's question text for a class, with POPE's a/an."""
    return f"Is there {article(name)} {name} in the image?"


def class_from_question(text: str) -> str:
    match = re.fullmatch(r"Is there an? (.+) in the image\?", text.strip())
    if match is None or match.group(1) not in CLASS_NAMES:
        raise ValueError(f"not a ShapesPOPE question: {text!r}")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

STREAM_TEST_SCENES = 1
STREAM_TEST_SPLITS = 2
STREAM_TRAIN = 3
STREAM_STATISTICS = 4


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    num_test_images: int = 500           # POPE's 500 images: a split's yes-rate moves by about 0.01 between seeds (0.02 at 150)
    questions_per_image: int = 3          # POPE asks 3 present + 3 absent objects per image
    two_groups_prob: float = 0.45         # a scene shows 1 or 2 groups
    # Training scenes: the prior and occlusion.
    train_companion_prob: float = 0.93    # anchor drawn -> companion present
    train_alone_prob: float = 0.03        # a group shows its companion without the anchor
    train_occluded_prob: float = 0.5      # a present companion sits partly behind its anchor
    # Test scenes: absent companions, anchors with nothing behind.
    test_companion_prob: float = 0.75
    test_occluded_prob: float = 0.3       # a present companion behind its anchor (hard to see)
    lookalike_prob: float = 0.35          # one look-alike distractor joins the scene
    test_lookalike_prob: float = 0.15     # the same in test scenes
    small_prob: float = 0.25              # an object (not an anchor hiding a companion) is small
    test_small_prob: float = 0.25         # the same in test scenes
    # Rendering.
    min_side: int = 200
    max_side: int = 320
    radius_frac: tuple[float, float] = (0.09, 0.16)
    small_radius_frac: tuple[float, float] = (0.03, 0.06)
    occluded_visible: tuple[float, float] = (0.3, 0.6)   # visible share of an occluded companion
    statistics_scenes: int = 20000


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneObject:
    name: str
    colour: tuple[int, int, int]           # drawn colour (class colour plus a small jitter)
    centre: tuple[float, float]
    radius: float
    rotation: float                        # degrees
    small: bool
    occluded: bool                         # partly behind another object (its anchor)
    visible_fraction: float                # share of its pixels not covered by later objects
    bbox: tuple[int, int, int, int]        # x0, y0, x1, y1 of its visible pixels; x1, y1 exclusive


@dataclasses.dataclass(frozen=True)
class Scene:
    width: int
    height: int
    context: str
    background: tuple[tuple[int, int, int], tuple[int, int, int], str, int]  # colour, colour2, kind, noise seed
    objects: tuple[SceneObject, ...]       # drawing order: later ones on top

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """What a scene holds before placement: (name, small, behind) items plus the context."""
    context: str
    items: tuple[tuple[str, bool, str | None], ...]   # behind = the anchor it hides behind

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.items)


def sample_spec(rng: np.random.Generator, config: WorldConfig, train: bool) -> SceneSpec:
    weights = np.array([g[3] for g in GROUPS])
    n_groups = 2 if rng.random() < config.two_groups_prob else 1
    picked = rng.choice(len(GROUPS), size=n_groups, replace=False, p=weights / weights.sum())
    context = GROUPS[int(picked[0])][2]
    small_prob = config.small_prob if train else config.test_small_prob
    items: list[tuple[str, bool, str | None]] = []
    for g in picked:
        anchor, companion, _, _ = GROUPS[int(g)]
        if train and rng.random() < config.train_alone_prob:
            items.append((companion, rng.random() < small_prob, None))
            continue
        keep = rng.random() < (config.train_companion_prob if train else config.test_companion_prob)
        behind = keep and rng.random() < (config.train_occluded_prob if train else config.test_occluded_prob)
        items.append((anchor, (not behind) and rng.random() < small_prob, None))
        if keep:
            items.append((companion, (not behind) and rng.random() < small_prob, anchor if behind else None))
    if rng.random() < (config.lookalike_prob if train else config.test_lookalike_prob):
        names = list(LOOKALIKES)
        items.append((names[int(rng.integers(len(names)))], rng.random() < small_prob, None))
    return SceneSpec(context, tuple(items))


def shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inside the circle of radius r around (cx, cy)."""
    if shape == "square":
        points = [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    elif shape == "triangle":
        points = [(math.cos(math.radians(a)), math.sin(math.radians(a)) + 0.15) for a in (-90, 30, 150)]
    elif shape == "star":
        points = [((1.0 if i % 2 == 0 else 0.45) * math.cos(math.radians(-90 + 36 * i)),
                   (1.0 if i % 2 == 0 else 0.45) * math.sin(math.radians(-90 + 36 * i))) for i in range(10)]
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


_ROTATION = {"square": 15, "triangle": 20, "diamond": 15, "cross": 15, "star": 36, "hexagon": 30, "circle": 0, "ring": 0}


def draw_object(draw: ImageDraw.ImageDraw, name: str, centre, radius: float, rotation: float, fill) -> None:
    shape = class_shape(name)
    (cx, cy), r = centre, radius
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(0.3 * r)))
    else:
        draw.polygon(shape_polygon(shape, cx, cy, r, rotation), fill=fill)


def object_mask(name: str, centre, radius: float, rotation: float, width: int, height: int) -> np.ndarray:
    """(H, W) bool: the pixels the object covers when drawn alone."""
    image = Image.new("L", (width, height), 0)
    draw_object(ImageDraw.Draw(image), name, centre, radius, rotation, 255)
    return np.asarray(image) > 0


def _box_overlap(a, b) -> bool:
    (ax, ay), ar = a
    (bx, by), br = b
    return math.hypot(ax - bx, ay - by) < (ar + br) * 1.05


def place_scene(rng: np.random.Generator, spec: SceneSpec, config: WorldConfig) -> Scene:
    """Sizes and positions; only occluded companions overlap (behind their anchor)."""
    width = int(rng.integers(config.min_side, config.max_side + 1))
    height = int(rng.integers(config.min_side, config.max_side + 1))
    short = min(width, height)
    placed: dict[int, tuple[tuple[float, float], float, float]] = {}   # item index -> centre, radius, rotation
    circles: list[tuple[tuple[float, float], float]] = []
    index_of = {name: i for i, (name, _, _) in enumerate(spec.items)}
    # Anchors and free objects first, then the occluded companions beside their anchors.
    order = [i for i, it in enumerate(spec.items) if it[2] is None] + [i for i, it in enumerate(spec.items) if it[2]]
    for i in order:
        name, small, behind = spec.items[i]
        shape = class_shape(name)
        rotation = float(rng.uniform(-_ROTATION[shape], _ROTATION[shape]))
        if behind is not None:
            (ax, ay), ar, _ = placed[index_of[behind]]
            r = ar * rng.uniform(0.7, 0.95)
            anchor_mask = object_mask(behind, (ax, ay), ar, placed[index_of[behind]][2], width, height)
            lo, hi = config.occluded_visible
            best = None
            for _ in range(40):  # the draw whose visible share is in range (else the closest)
                angle = rng.uniform(0, 2 * math.pi)
                d = (ar + r) * rng.uniform(0.2, 0.7)
                cx, cy = ax + d * math.cos(angle), ay + d * math.sin(angle)
                if not (r + 1 <= cx <= width - r - 1 and r + 1 <= cy <= height - r - 1):
                    continue
                mask = object_mask(name, (cx, cy), r, rotation, width, height)
                share = (mask & ~anchor_mask).sum() / max(1, mask.sum())
                miss = max(lo - share, share - hi, 0.0)
                if best is None or miss < best[0]:
                    best = (miss, cx, cy)
                if miss == 0.0:
                    break
            if best is not None:
                cx, cy = best[1], best[2]
            else:
                cx, cy = ax, ay
            placed[i] = ((float(cx), float(cy)), float(r), rotation)
            continue
        frac = config.small_radius_frac if small else config.radius_frac
        r = short * rng.uniform(*frac)
        # An anchor that may hide a companion leaves room around it.
        hides = any(it[2] == name for it in spec.items)
        room = 2.6 if hides else 1.0
        while True:
            for _ in range(50):
                cx = rng.uniform(r + 2, width - r - 2)
                cy = rng.uniform(r + 2, height - r - 2)
                if not any(_box_overlap(((cx, cy), r * room), c) for c in circles):
                    break
            else:
                r *= 0.9
                continue
            break
        circles.append(((float(cx), float(cy)), r * room))
        placed[i] = ((float(cx), float(cy)), float(r), rotation)
    # Drawing order: occluded companions first (behind), then the rest in random order.
    behind_first = [i for i in range(len(spec.items)) if spec.items[i][2]]
    rest = [i for i in rng.permutation(len(spec.items)).tolist() if i not in behind_first]
    drawing = behind_first + rest
    masks = [object_mask(spec.items[i][0], *placed[i], width, height) for i in drawing]
    objects = []
    for k, i in enumerate(drawing):
        name, small, behind = spec.items[i]
        covered = np.zeros_like(masks[k])
        for later in masks[k + 1:]:
            covered |= later
        visible = masks[k] & ~covered
        fraction = float(visible.sum() / max(1, masks[k].sum()))
        ys, xs = np.nonzero(visible if visible.any() else masks[k])
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        jitter = rng.integers(-8, 9, size=3)
        colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(class_colour(name), jitter))
        centre, radius, rotation = placed[i]
        objects.append(SceneObject(name, colour, centre, radius, rotation, bool(small), behind is not None,
                                   round(fraction, 4), bbox))
    # The context's colour, jittered: the best of 6 draws for the contrast of the nearest object.
    base = np.asarray(CONTEXTS[spec.context])
    candidates = np.clip(base + rng.integers(-20, 21, size=(6, 3)), 0, 255)
    nearest = [min(np.linalg.norm(c - np.asarray(o.colour)) for o in objects) for c in candidates]
    colour = tuple(int(c) for c in candidates[int(np.argmax(nearest))])
    kind = ("plain", "gradient", "noise")[int(rng.integers(3))]
    colour2 = tuple(int(c) for c in np.clip(np.asarray(colour) + rng.integers(-30, 31, size=3), 0, 255)) \
        if kind == "gradient" else colour
    background = (colour, colour2, kind, int(rng.integers(2**31)))
    return Scene(width, height, spec.context, background, tuple(objects))


def sample_scene(rng: np.random.Generator, config: WorldConfig, train: bool) -> Scene:
    return place_scene(rng, sample_spec(rng, config, train), config)


def render_background(background, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 of a scene's background: plain, 8-band gradient or blocky noise."""
    colour, colour2, kind, noise_seed = background
    c1, c2 = np.asarray(colour, float), np.asarray(colour2, float)
    bands = np.floor(np.linspace(0, 1, height, endpoint=False) * 8) / 7
    line = c1[None, :] * (1 - bands[:, None]) + c2[None, :] * bands[:, None]  # (H, 3)
    image = np.broadcast_to(line[:, None, :], (height, width, 3)).copy()
    if kind == "noise":
        levels = np.random.default_rng(noise_seed).integers(-2, 3, size=(height // 2 + 1, width // 2 + 1, 1))
        image = image + 5 * np.repeat(np.repeat(levels, 2, axis=0), 2, axis=1)[:height, :width]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_scene(scene: Scene, erase: np.ndarray | None = None) -> Image.Image:
    """The scene as an RGB image; pixels where the (H, W) bool `erase` is True show the background."""
    background = render_background(scene.background, scene.width, scene.height)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        draw_object(draw, o.name, o.centre, o.radius, o.rotation, o.colour)
    if erase is not None:
        pixels = np.asarray(image).copy()
        pixels[erase] = background[erase]
        image = Image.fromarray(pixels, "RGB")
    return image


def without_object(scene: Scene, name: str) -> Scene:
    """The scene with every object of class `name` removed (the object erased, what it hid shown)."""
    return dataclasses.replace(scene, objects=tuple(o for o in scene.objects if o.name != name))


def surround_mask(scene: Scene, anchor: str, factor: float = 1.9) -> np.ndarray:
    """(H, W) bool: the disc of `factor` x the anchor's radius around it, minus the anchor's pixels.

    Where a companion hidden behind this anchor would show (training puts the companion's
    centre 0.2-0.7 x (anchor + companion radius) from the anchor's).
    """
    obj = next(o for o in scene.objects if o.name == anchor)
    ys, xs = np.mgrid[0: scene.height, 0: scene.width]
    disc = np.hypot(xs - obj.centre[0], ys - obj.centre[1]) <= factor * obj.radius
    return disc & ~object_mask(obj.name, obj.centre, obj.radius, obj.rotation, scene.width, scene.height)


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def name_list(names: Sequence[str]) -> str:
    """'a red circle', 'a red circle and a blue square', 'a, b and c'.

    >>> name_list(["red circle", "orange hexagon", "gold star"])
    'a red circle, an orange hexagon and a gold star'
    """
    parts = [f"{article(n)} {n}" for n in names]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """'A sand scene with a red circle and a blue square.' (objects in a random order with rng)."""
    names = list(dict.fromkeys(scene.names))
    if rng is not None:
        names = [names[int(i)] for i in rng.permutation(len(names))]
    return f"A {scene.context} scene with {name_list(names)}."

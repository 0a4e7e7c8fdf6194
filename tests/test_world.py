"""ShapesPOPE v2 world: the causes (prior, context, occlusion, small, look-alike), POPE splits, determinism."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from semantic_entropy.demo import world as w
from semantic_entropy.demo import world_pope as wp
from semantic_entropy.demo import world_text as wt

SPLITS = ("adversarial", "random", "popular")
SMALL = w.WorldConfig(seed=3, num_test_images=30, statistics_scenes=400)


def read_lines(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world_a")
    wp.write_test_set(str(folder), SMALL)
    return folder


@pytest.fixture(scope="module")
def metadata(small_set):
    return json.loads((small_set / "metadata.json").read_text())


@pytest.fixture(scope="module")
def labels(small_set):
    return {s: read_lines(small_set / "coco" / f"coco_pope_{s}.json") for s in SPLITS}


def present_by_image(metadata):
    return {r["image"]: [o["class"] for o in r["objects"]] for r in metadata["images"]}


def training_scenes(n, seed=0):
    return [w.sample_scene(w.rng_for(seed, w.STREAM_TRAIN, i), SMALL, train=True) for i in range(n)]


def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path):
    again = tmp_path / "again"
    wp.write_test_set(str(again), SMALL)
    files = sorted(p.relative_to(small_set) for p in small_set.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (small_set / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    wp.write_test_set(str(other), dataclasses.replace(SMALL, seed=4))
    name = "images/shapes_test_000000.png"
    assert not np.array_equal(np.asarray(Image.open(other / name)), np.asarray(Image.open(small_set / name)))


def test_training_prior_at_least_ninety_percent_and_context_predicts_group():
    truth = wp.reference_truth(dataclasses.replace(SMALL, statistics_scenes=3000))
    stats = wp.scene_statistics(truth)
    for anchor, rate in stats["companion_present_given_anchor"].items():
        assert rate >= 0.9, (anchor, rate)
    # The scene's context is the context of a group it shows, and names its first group.
    specs = [w.sample_spec(w.rng_for(0, w.STREAM_TRAIN, i), SMALL, train=True) for i in range(500)]
    context_group = {x: (a, c) for a, c, x, _ in w.GROUPS}
    assert all(set(context_group[s.context]) & set(s.names) for s in specs)


def test_occlusion_in_training_and_bare_anchors_at_test(metadata):
    scenes = training_scenes(200)
    occluded = [o for s in scenes for o in s.objects if o.occluded]
    assert len(occluded) >= 40
    lo, hi = SMALL.occluded_visible
    visible = np.array([o.visible_fraction for o in occluded])
    assert np.mean((visible >= lo - 0.05) & (visible <= hi + 0.05)) > 0.9
    for s in scenes:
        for o in s.objects:
            if o.occluded:
                anchor = w.anchor_of(o.name)
                assert anchor in s.names and s.names.index(anchor) > s.names.index(o.name)  # drawn on top
    # At test, an anchor whose companion is absent has nothing behind it: no occluded object at all.
    bare = 0
    for record in metadata["images"]:
        for companion in record["absent_companions"]:
            anchor = w.anchor_of(companion)
            if anchor in [o["class"] for o in record["objects"]]:
                bare += 1
                assert not any(o["occluded"] for o in record["objects"] if w.anchor_of(o["class"]) == anchor)
    assert bare >= 5


def test_small_objects_radius_three_to_six_percent():
    small = [(o, s) for s in training_scenes(200) for o in s.objects if o.small]
    assert len(small) >= 50
    for o, s in small:
        assert 0.03 <= o.radius / min(s.width, s.height) <= 0.06 + 1e-9


def test_lookalikes_share_shape_and_near_colour():
    for look, companion in w.LOOKALIKES.items():
        assert w.class_shape(look) == w.class_shape(companion)
        assert np.linalg.norm(np.subtract(w.class_colour(look), w.class_colour(companion))) < 110
        assert w.companion_map()[look] == []


def test_labels_yes_present_no_absent_pope_order(labels, metadata, small_set):
    present = present_by_image(metadata)
    for rows in labels.values():
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["label"] for r in rows] == ["yes", "no"] * (len(rows) // 2)
        for r in rows:
            name = w.class_from_question(r["text"])
            assert (name in present[r["image"]]) == (r["label"] == "yes")
            assert (small_set / "images" / r["image"]).is_file()
    assert [r for r in labels["random"] if r["label"] == "yes"] == [r for r in labels["adversarial"] if r["label"] == "yes"]


def test_splits_by_hand():
    """Counts chosen so each ranking is known: popular = most frequent absent, adversarial = most co-occurring."""
    counts = {n: 0 for n in w.CLASS_NAMES}
    counts.update({"gold star": 50, "teal ring": 40, "navy square": 30, "blue square": 1})
    cooc = {a: {b: 0 for b in w.CLASS_NAMES if b != a} for a in w.CLASS_NAMES}
    cooc["red circle"]["blue square"] = 90
    cooc["red circle"]["tan triangle"] = 5
    splits = wp.build_pope_splits([("x.png", ["red circle"])], seed=0, counts=counts, cooccurrence=cooc)
    no = {s: [w.class_from_question(r["text"]) for r in rows if r["label"] == "no"] for s, rows in splits.items()}
    assert no["popular"] == ["gold star"]
    assert no["adversarial"] == ["blue square"]
    assert [r["label"] for r in splits["random"]] == ["yes", "no"]
    two = wp.build_pope_splits([("y.png", ["red circle", "white cross"])], 0, counts, cooc)
    assert [w.class_from_question(r["text"]) for r in two["adversarial"] if r["label"] == "no"] == ["blue square", "tan triangle"]
    assert [w.class_from_question(r["text"]) for r in two["popular"] if r["label"] == "no"] == ["gold star", "teal ring"]


def test_adversarial_split_asks_absent_companions(labels, metadata):
    asked_companion = with_absent = 0
    for record in metadata["images"]:
        if record["absent_companions"]:
            with_absent += 1
            no = [w.class_from_question(r["text"]) for r in labels["adversarial"]
                  if r["image"] == record["image"] and r["label"] == "no"]
            asked_companion += bool(set(no) & set(record["absent_companions"]))
    assert with_absent >= 5 and asked_companion == with_absent


def test_question_mechanisms_recorded(labels, metadata):
    records = {r["image"]: r for r in metadata["images"]}
    for split, rows in labels.items():
        for r in rows:
            got = metadata["question_mechanisms"][split][str(r["question_id"])]
            name = w.class_from_question(r["text"])
            record = records[r["image"]]
            if r["label"] == "no":
                assert ("prior" in got) == (name in record["absent_companions"])
            else:
                obj = next(o for o in record["objects"] if o["class"] == name)
                assert ("small" in got) == obj["small"] and ("occlusion" in got) == obj["occluded"]


def test_boxes_hold_the_visible_object(small_set, metadata):
    for record in metadata["images"][:15]:
        image = np.asarray(Image.open(small_set / "images" / record["image"]).convert("RGB")).astype(int)
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            crop = image[y0:y1, x0:x1]
            near = np.linalg.norm(crop - np.array(w.class_colour(obj["class"])), axis=-1) < 25
            assert near.mean() > 0.05, (record["image"], obj)


def test_text_dialogues_carry_the_prior():
    """After a caption naming an anchor, its companion's answer is Yes about as often as the scene prior."""
    yes = asked = 0
    for i in range(600):
        rng = w.rng_for(0, w.STREAM_TRAIN, i)
        turns = wt.text_dialogue(w.sample_spec(rng, SMALL, train=True), rng)
        caption, question = turns[0][0].split("\n", 1)
        for a, c, _, _ in w.GROUPS:
            if f" {a}" in caption and f" {c}" not in caption and f" {c}" in question:
                asked += 1
                yes += turns[0][1] in ("Yes", wt.short_answer(True, c, True))
    assert asked >= 30 and yes / asked >= 0.88


def test_image_dialogue_asks_every_present_object_once():
    scene = training_scenes(1)[0]
    turns = wt.image_dialogue(scene, np.random.default_rng(0), negatives=3)
    assert turns[0][0].startswith("<image>\n") and sum("<image>" in u for u, _ in turns) == 1
    for name in set(scene.names):
        assert sum(f" {name}" in u for u, _ in turns if "shapes" not in u and "Describe" not in u) == 1

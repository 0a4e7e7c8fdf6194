"""ShapesPOPE generator: determinism, POPE split construction, metadata, training stream."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from semantic_entropy.demo import shapes_pope as sp

SPLITS = ("adversarial", "random", "popular")
SMALL = sp.ShapesPopeConfig(seed=0, num_test_images=40, statistics_scenes=500)


def read_lines(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_pope_a")
    sp.write_test_set(str(folder), SMALL)
    return folder


@pytest.fixture(scope="module")
def metadata(small_set):
    return json.loads((small_set / "metadata.json").read_text())


@pytest.fixture(scope="module")
def labels(small_set):
    return {s: read_lines(small_set / "coco" / f"coco_pope_{s}.json") for s in SPLITS}


def present_by_image(metadata):
    return {r["image"]: [o["class"] for o in r["objects"]] for r in metadata["images"]}


def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path):
    again = tmp_path / "again"
    sp.write_test_set(str(again), SMALL)
    files = sorted(p.relative_to(small_set) for p in small_set.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (small_set / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = tmp_path / "other"
    sp.write_test_set(str(other), dataclasses.replace(SMALL, seed=1))
    assert (other / "coco" / "coco_pope_random.json").read_bytes() != (small_set / "coco" / "coco_pope_random.json").read_bytes()
    name = "images/shapes_test_000000.png"
    assert not np.array_equal(np.asarray(Image.open(other / name)), np.asarray(Image.open(small_set / name)))


def test_label_file_layout(small_set, labels, metadata):
    assert sorted(p.name for p in (small_set / "coco").iterdir()) == [f"coco_pope_{s}.json" for s in sorted(SPLITS)]
    for split, rows in labels.items():
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert list(row) == ["question_id", "image", "text", "label"]
            assert row["label"] in ("yes", "no")
            assert sp.class_from_question(row["text"]) in sp.CLASS_NAMES
            assert (small_set / "images" / row["image"]).is_file()
        # POPE's order within an image: yes, no, yes, no, ...
        assert [r["label"] for r in rows] == ["yes", "no"] * (len(rows) // 2)
        assert metadata["questions_per_split"][split] == len(rows)
    # Every split asks the same images, with the same present objects.
    assert [r for r in labels["random"] if r["label"] == "yes"] == [r for r in labels["popular"] if r["label"] == "yes"]


def test_yes_present_no_absent_and_balanced(labels, metadata):
    present = present_by_image(metadata)
    for split, rows in labels.items():
        per_image: dict = {}
        for row in rows:
            name = sp.class_from_question(row["text"])
            assert (name in present[row["image"]]) == (row["label"] == "yes"), (split, row)
            per_image.setdefault(row["image"], []).append((row["label"], name))
        assert set(per_image) == set(present)
        for image, asked in per_image.items():
            yes = [n for label, n in asked if label == "yes"]
            no = [n for label, n in asked if label == "no"]
            assert len(yes) == len(no) == min(3, len(present[image]))
            assert len(set(yes)) == len(yes) and len(set(no)) == len(no)


def recount(truth):
    """Image counts and pairwise co-occurrence counts, recomputed independently."""
    counts = {n: 0 for n in sp.CLASS_NAMES}
    cooc = {(a, b): 0 for a in sp.CLASS_NAMES for b in sp.CLASS_NAMES}
    for names in truth:
        for a in set(names):
            counts[a] += 1
            for b in set(names) - {a}:
                cooc[a, b] += 1
    return counts, cooc


def negatives(rows, image):
    return [sp.class_from_question(r["text"]) for r in rows if r["image"] == image and r["label"] == "no"]


def test_popular_negatives_are_most_frequent_absent(labels, metadata):
    present = present_by_image(metadata)
    counts, _ = recount(sp.reference_truth(SMALL))
    assert metadata["reference_statistics"]["class_counts"] == counts
    assert metadata["test_class_counts"] == recount(present.values())[0]
    for image, names in present.items():
        chosen = negatives(labels["popular"], image)
        rest = [n for n in sp.CLASS_NAMES if n not in names and n not in chosen]
        assert min(counts[n] for n in chosen) >= max(counts[n] for n in rest)
        expected = sorted((n for n in sp.CLASS_NAMES if n not in names), key=lambda n: (-counts[n], sp.CLASS_NAMES.index(n)))
        assert chosen == expected[: len(chosen)]


def test_adversarial_negatives_top_cooccurring_absent(labels, metadata):
    present = present_by_image(metadata)
    counts, cooc = recount(sp.reference_truth(SMALL))
    stored = metadata["reference_statistics"]["cooccurrence_counts"]
    assert all(stored[a][b] == cooc[a, b] for a in stored for b in stored[a])
    companions = sp.companion_map()
    with_absent_companion = hit = 0
    for image, names in present.items():
        chosen = negatives(labels["adversarial"], image)
        score = {n: sum(cooc[p, n] for p in names) for n in sp.CLASS_NAMES if n not in names}
        rest = [n for n in score if n not in chosen]
        assert min(score[n] for n in chosen) >= max(score[n] for n in rest)
        missing = {c for n in names for c in companions[n] if c not in names}
        if missing:
            with_absent_companion += 1
            hit += bool(missing & set(chosen))
    # The test scenes drop companions on purpose and the adversarial split asks about them.
    assert with_absent_companion >= len(present) // 3
    assert hit == with_absent_companion


def test_metadata_objects_visible_in_their_boxes(small_set, metadata):
    assert metadata["seed"] == SMALL.seed and metadata["generator_version"] == sp.GENERATOR_VERSION
    assert [c["name"] for c in metadata["classes"]] == list(sp.CLASS_NAMES)
    assert 12 <= len(sp.CLASS_NAMES) <= 16
    sizes = set()
    for record in metadata["images"]:
        image = np.asarray(Image.open(small_set / "images" / record["image"]).convert("RGB")).astype(int)
        assert image.shape == (record["height"], record["width"], 3)
        assert 160 <= record["width"] <= 320 and 160 <= record["height"] <= 320
        sizes.add(record["width"] > record["height"])
        assert 1 <= len(record["objects"]) <= 4
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
            crop = image[y0:y1, x0:x1]
            near = np.linalg.norm(crop - np.array(sp.class_colour(obj["class"])), axis=-1) < 20
            assert near.mean() > 0.1, (record["image"], obj)
    assert sizes == {True, False}  # both orientations


def test_training_statistics_keep_the_prior():
    stats = sp.scene_statistics(sp.reference_truth(dataclasses.replace(SMALL, statistics_scenes=3000)))
    rates = stats["companion_present_given_class"]
    assert all(0.7 <= r <= 0.95 for r in rates.values()), rates
    freq = stats["class_frequency"]
    assert max(freq.values()) > 2 * min(freq.values())  # non-uniform: popular != random


def same_example(a, b):
    return (a.question, a.answer, a.asked_class, a.objects) == (b.question, b.answer, b.asked_class, b.objects) \
        and np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_training_examples_deterministic_balanced_and_hard():
    first = sp.make_training_examples(200, seed=7)
    again = sp.make_training_examples(20, seed=7)
    assert all(same_example(a, b) for a, b in zip(first, again))
    other = sp.make_training_examples(20, seed=8)
    assert not all(same_example(a, b) for a, b in zip(first, other))
    streamed = sp.iter_training_examples(seed=7, start=5)
    assert same_example(next(streamed), first[5]) and same_example(next(streamed), first[6])

    assert sum(e.answer == "Yes" for e in first) == sum(e.answer == "No" for e in first) == 100
    for e in first:
        names = [o.name for o in e.objects]
        assert e.image.mode == "RGB" and e.question == sp.pope_question(e.asked_class)
        assert (e.asked_class in names) == (e.answer == "Yes")
        if e.negative_kind == "companion":
            assert any(e.asked_class in sp.companion_map()[n] for n in names)
    assert sum(e.negative_kind == "companion" for e in first) >= 10


def test_training_stream_disjoint_from_test_stream():
    test_scenes = sp.generate_test_scenes(dataclasses.replace(SMALL, num_test_images=10))
    train = sp.make_training_examples(10, seed=SMALL.seed)
    assert all(s.objects != e.objects for s, e in zip(test_scenes, train))


def test_cli_writes_llava_questions(tmp_path):
    pytest.importorskip("llava.eval.prepare_pope")
    import importlib.util

    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "make_shapes_pope.py"
    spec = importlib.util.spec_from_file_location("make_shapes_pope", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output-dir", str(tmp_path), "--seed", "0", "--num-test-images", "6"])

    questions = read_lines(tmp_path / "llava_pope_test.jsonl")
    offsets = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
    for split in SPLITS:
        rows = read_lines(tmp_path / "coco" / f"coco_pope_{split}.json")
        mine = [q for q in questions if q["category"] == split]
        assert [q["question_id"] for q in mine] == [r["question_id"] + offsets[split] for r in rows]
        assert [q["text"] for q in mine] == [r["text"] + "\nAnswer the question using a single word or phrase." for r in rows]

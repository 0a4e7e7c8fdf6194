"""The cross-validated logistic combination: folds split images, scores come from the other folds only."""

import json

import numpy as np
import pytest

from llava.jsonl_io import JsonlError, read_jsonl
from semantic_entropy import fitted_combination
from semantic_entropy.evaluation import combination
from semantic_entropy.evaluation.metrics import auroc
from tests.test_eval_auroc import build_pope_set


def test_folds_split_images_and_are_reproducible():
    images = [f"img{k % 7}" for k in range(40)]
    folds = combination.image_folds(images, folds=3, seed=1)
    for image in set(images):  # every question of an image in one fold
        assert len({int(f) for f, i in zip(folds, images) if i == image}) == 1
    assert sorted(set(folds.tolist())) == [0, 1, 2]
    assert (combination.image_folds(images, 3, 1) == folds).all()
    with pytest.raises(ValueError, match="between 2 and the number of images"):
        combination.image_folds(images, folds=8, seed=0)


def test_out_of_fold_scores_never_see_their_own_fold():
    # Fold 1's labels are the opposite of what its feature says; a model that had seen them could not
    # rank them perfectly reversed, so perfect reversal proves fold 1 was scored by folds 0 and 2 only.
    feature = np.array([[0.1], [0.9], [0.2], [0.8], [0.1], [0.9], [0.2], [0.8], [0.15], [0.85], [0.15], [0.85]])
    wrong = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0])
    folds = np.array([0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1])
    scores, models = combination.out_of_fold_scores(feature, wrong, folds)
    assert auroc(wrong[folds == 1], scores[folds == 1]) == 0.0
    assert [m["fold"] for m in models] == [0, 1, 2]
    assert models[1]["coefficients_standardised"][0] > 0  # fitted on folds 0 and 2: feature up, error up
    assert models[1]["test_questions"] == 4


def test_cli_writes_the_combined_score_in_question_order(tmp_path):
    paths, ids, is_false, _, scores, _ = build_pope_set(tmp_path)
    out = tmp_path / "combined.jsonl"
    summary = fitted_combination.main([
        "--uncertainty-file", paths["exact"], "--answers-file", paths["answers_file"],
        "--annotation-dir", paths["annotation_dir"], "--question-file", paths["question_file"],
        "--features", "informative,noise", "--output-file", str(out), "--folds", "3"])
    records = read_jsonl(str(out))
    assert [r["question_id"] for r in records] == ids.tolist()
    combined = np.array([r["scores"]["cv_logistic"] for r in records])
    assert all(set(r["scores"]) == {"informative", "yes_no_entropy", "noise", "cv_logistic"} for r in records)
    assert ((0 < combined) & (combined < 1)).all()
    assert auroc(is_false, combined) > 0.8  # the informative score carries over out of fold
    assert summary["questions"] == len(ids) and summary["wrong"] == int(is_false.sum())
    assert json.loads((tmp_path / "combined.jsonl.summary.json").read_text())["features"] == ["informative", "noise"]


def test_a_missing_score_names_the_question(tmp_path):
    paths, ids, *_ = build_pope_set(tmp_path)
    records = read_jsonl(paths["exact"])
    del records[4]["scores"]["noise"]
    (tmp_path / "broken.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(JsonlError, match=f"question_id {ids[4]}.*'noise'"):
        combination.combine(str(tmp_path / "broken.jsonl"), paths["answers_file"], paths["annotation_dir"],
                                   paths["question_file"], ["informative", "noise"], str(tmp_path / "out.jsonl"), 3)

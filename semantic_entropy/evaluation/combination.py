"""A logistic combination of uncertainty scores with out-of-fold predictions, folds split by image."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from llava.eval.eval_pope import join_pope
from llava.jsonl_io import JsonlError, read_jsonl, write_json_atomic
from semantic_entropy.runs.distributed import write_in_order


def image_folds(images: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """(Q,) fold of each question: its image's fold; images are shuffled with `seed`, then dealt round-robin.

    >>> image_folds(["a", "b", "a", "c"], folds=2, seed=0).tolist()
    [0, 0, 0, 1]
    """
    distinct = sorted(set(images))
    if folds < 2 or folds > len(distinct):
        raise ValueError(f"--folds must be between 2 and the number of images ({len(distinct)}), got {folds}")
    random.Random(seed).shuffle(distinct)
    fold_of = {image: index % folds for index, image in enumerate(distinct)}
    return np.array([fold_of[image] for image in images])


def feature_matrix(records: Sequence[dict], features: Sequence[str], source: str) -> np.ndarray:
    """(Q, F) scores of the listed features; a missing or non-finite score names its question_id."""
    rows = []
    for record in records:
        scores = record.get("scores", {})
        row = []
        for name in features:
            value = scores.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
                raise JsonlError(f"{source}: question_id {record['question_id']!r} has no finite score "
                                 f"{name!r} (got {value!r})")
            row.append(float(value))
        rows.append(row)
    return np.array(rows, dtype=np.float64)


def out_of_fold_scores(features: np.ndarray, wrong: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """(Q,) P(wrong) of each question from a model fitted without its fold, and each fold's model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros(len(wrong))
    models = []
    for fold in sorted(set(folds.tolist())):
        train, test = folds != fold, folds == fold
        if len(set(wrong[train].tolist())) < 2:
            raise ValueError(f"fold {fold}: the training questions are all {'wrong' if wrong[train][0] else 'right'}")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        model.fit(features[train], wrong[train])
        scores[test] = model.predict_proba(features[test])[:, 1]
        regression = model[-1]
        models.append({"fold": fold, "test_questions": int(test.sum()),
                       "coefficients_standardised": regression.coef_[0].round(6).tolist(),
                       "intercept": round(float(regression.intercept_[0]), 6)})
    return scores, models


MODELS = ("logistic", "isotonic")


def _fit_predict(model_name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, dict]:
    """P(wrong) of the test rows from a model fitted on the training rows (a constant when they are all one class)."""
    if len(set(train_y.tolist())) < 2:
        rate = float(train_y.mean())
        return np.full(len(test_x), rate), {"constant": rate}
    if model_name == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        if train_x.shape[1] != 1:
            raise ValueError(f"the isotonic model takes one feature, got {train_x.shape[1]}")
        model = IsotonicRegression(increasing="auto", out_of_bounds="clip", y_min=0.0, y_max=1.0)
        model.fit(train_x[:, 0], train_y)
        return model.predict(test_x[:, 0]), {"increasing": bool(model.increasing_)}
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    model.fit(train_x, train_y)
    regression = model[-1]
    return model.predict_proba(test_x)[:, 1], {"coefficients_standardised": regression.coef_[0].round(6).tolist(),
                                               "intercept": round(float(regression.intercept_[0]), 6)}


def out_of_fold_by_answer(features: np.ndarray, wrong: np.ndarray, folds: np.ndarray, answers: Sequence[str],
                          model_name: str) -> tuple[np.ndarray, list[dict]]:
    """(Q,) out-of-fold P(wrong), one model per answer direction ("yes", "no") and fold.

    The control "the best function of p(yes) alone" (docs/method.md): with the feature p_no, a
    "yes" and a "no" answer get their own monotone (isotonic) or logistic map, each fitted
    without the question's image fold.

    >>> x = np.array([[0.1], [0.2], [0.8], [0.9]] * 3)
    >>> y = np.array([0, 1, 0, 1] * 3)
    >>> scores, _ = out_of_fold_by_answer(x, y, np.repeat([0, 1, 2], 4), ["yes", "yes", "no", "no"] * 3, "isotonic")
    >>> scores.round(2).tolist()[:4]
    [0.0, 1.0, 0.0, 1.0]
    """
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODELS)}")
    answers = np.asarray(answers)
    scores = np.zeros(len(wrong))
    models = []
    for fold in sorted(set(folds.tolist())):
        for answer in ("yes", "no"):
            train = (folds != fold) & (answers == answer)
            test = (folds == fold) & (answers == answer)
            if not test.any():
                continue
            if not train.any():
                raise ValueError(f"fold {fold}: no training question answered {answer!r}")
            scores[test], fitted = _fit_predict(model_name, features[train], wrong[train], features[test])
            models.append({"fold": fold, "answer": answer, "test_questions": int(test.sum()), **fitted})
    return scores, models


def combine(uncertainty_file: str, answers_file: str, annotation_dir: str, question_file: str,
            features: Sequence[str], output_file: str, folds: int = 5, seed: int = 0,
            name: str = "cv_logistic", by_answer: bool = False, model_name: str = "logistic") -> dict:
    labelled, _ = join_pope(annotation_dir, question_file, answers_file)
    by_id = {r["question_id"]: r for r in read_jsonl(uncertainty_file)}
    missing = [r.question_id for r in labelled if r.question_id not in by_id]
    if missing:
        raise JsonlError(f"{uncertainty_file} has no record for question_id(s) {missing[:10]} ({len(missing)} missing)")
    records = [by_id[r.question_id] for r in labelled]
    matrix = feature_matrix(records, features, uncertainty_file)  # (Q, F)
    wrong = np.array([not r.is_correct for r in labelled])
    fold_of = image_folds([r.image for r in labelled], folds, seed)
    if by_answer:
        combined, models = out_of_fold_by_answer(matrix, wrong, fold_of, [r.prediction for r in labelled], model_name)
    elif model_name != "logistic":
        raise ValueError(f"the {model_name} model needs --by-answer")
    else:
        combined, models = out_of_fold_scores(matrix, wrong, fold_of)
    written = [{**record, "scores": {**record["scores"], name: round(float(value), 8)}}
               for record, value in zip(records, combined)]
    order = {r.question_id: rank for rank, r in enumerate(labelled)}
    write_in_order(output_file, written, order)
    summary = {"score": name, "features": list(features), "folds": folds, "seed": seed,
               "split": "by image: every question of an image is in one fold",
               "model": ("IsotonicRegression (monotone, direction chosen per fit)" if model_name == "isotonic" else
                         "StandardScaler + LogisticRegression (L2, C=1)") + ", target = greedy answer wrong"
                        + (", one model per answer direction" if by_answer else ""),
               "questions": len(written), "wrong": int(wrong.sum()), "fold_models": models}
    write_json_atomic(output_file + ".summary.json", summary)
    return summary

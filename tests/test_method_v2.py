"""Method v2 (docs/method.md): the three scores' formulas by hand, their direction, the pass's
fields reproduced by hand on the tiny model (eager attention, output_hidden_states, one full
prompt per probe), batch invariance, the pass's cost in forward passes, the p(yes)-only
control and the validation chooser."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from llava.conversation import build_prompt
from llava.eval.eval_pope import parse_yes_no
from llava.jsonl_io import read_jsonl
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from semantic_entropy import compute_se_myself, method_probes
from semantic_entropy.evaluation import method_selection as selection
from semantic_entropy.evaluation.combination import out_of_fold_by_answer
from semantic_entropy.evaluation.metrics import auroc
from semantic_entropy.probes import answer_grounding as g
from semantic_entropy.probes import glsim
from semantic_entropy.probes import method_probes as library
from semantic_entropy.probes.method_inputs import cropped, method_question
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.generations_io import BaselineProbes, MethodProbes, parse_generations_record
from semantic_entropy.scoring import method_settings
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, MeasureInputs
from tests.forward_counter import ForwardCounter, two_image_groups
from tests.tiny_stage1 import tiny_stage1

LN2 = math.log(2)
METHOD_MEASURES = ("grounding_disagreement", "grounding_disagreement_term", "counterfactual_disagreement",
                   "counterfactual_term", "p_no")
ERASE = (0.1, 0.3)


def H(p):
    return -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)


# --- formulas by hand -----------------------------------------------------------------------


def test_grounding_disagreement_by_hand():
    # p = .8 (yes .4, no .1), e = .3: yes -> H(.8) + .7 ln2; no (p = .2) -> H(.2) + .3 ln2
    assert g.grounding_disagreement((0.4, 0.1), "yes", 0.3) == pytest.approx(H(0.8) + 0.7 * LN2, abs=1e-12)
    assert g.grounding_disagreement((0.1, 0.4), "no", 0.3) == pytest.approx(H(0.2) + 0.3 * LN2, abs=1e-12)
    assert g.calibrated_evidence(2.0, 1.5, -1.0) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-12)
    assert g.calibrated_evidence(-800.0, 1.0, 0.0) == 0.0  # no overflow
    assert g.top_k_mean([3.0, 2.0, -1.0], 2) == 2.5
    with pytest.raises(ValueError, match="evidence"):
        g.grounding_disagreement((0.4, 0.1), "yes", 1.5)
    with pytest.raises(ValueError, match="answer"):
        g.grounding_disagreement((0.4, 0.1), "maybe", 0.5)


def test_counterfactual_disagreement_by_hand():
    crops = [(0.1, 0.9), (0.7, 0.3), (0.2, 0.2)]
    # "no": the largest p(yes) over the crops = .7
    assert g.counterfactual_disagreement((0.2, 0.6), "no", (0.9, 0.1), crops, 2.0) == pytest.approx(
        H(0.25) + 2.0 * LN2 * 0.7, abs=1e-12)
    # "yes": p(yes) with the region erased = .9 / (.9 + .3); the crops are not read
    assert g.counterfactual_disagreement((0.6, 0.2), "yes", (0.9, 0.3), crops, 0.5) == pytest.approx(
        H(0.75) + 0.5 * LN2 * 0.75, abs=1e-12)
    assert g.counterfactual_yes("yes", (0.9, 0.3), []) == 0.75


def test_prior_vauq_by_hand():
    # H = mean(0.5, 0.1) = .3 bits, H_mask = mean(0.9, 0.5) = .7, IS = .4; prior (.2, .6) -> pi(no) = .75
    value = g.prior_vauq([0.5, 0.1], [0.9, 0.5], (0.2, 0.6), "no", alpha=0.5, beta=2.0)
    assert value == pytest.approx(0.3 - 0.5 * 0.4 + 2.0 * 0.75, abs=1e-12)
    # beta = 0 is VAUQ itself
    from semantic_entropy.probes.vauq import vauq_score

    assert g.prior_vauq([0.5, 0.1], [0.9, 0.5], (0.2, 0.6), "yes", 0.6, 0.0) == pytest.approx(
        vauq_score([0.5, 0.1], [0.9, 0.5], 0.6), abs=1e-12)


def test_every_score_reads_higher_as_more_uncertain():
    """Fixed H(p): each score rises with the evidence against the answer given."""
    for p in (0.55, 0.7, 0.9, 0.99):
        yes, no = (p, 1 - p), (1 - p, p)
        # (a) weak grounding makes a "yes" doubtful, strong grounding a "no"
        assert g.grounding_disagreement(yes, "yes", 0.1) > g.grounding_disagreement(yes, "yes", 0.9)
        assert g.grounding_disagreement(no, "no", 0.9) > g.grounding_disagreement(no, "no", 0.1)
        # (b) a "yes" that survives the erasure, a "no" a crop turns into "yes"
        assert (g.counterfactual_disagreement(yes, "yes", (0.95, 0.05), [], 1.0)
                > g.counterfactual_disagreement(yes, "yes", (0.05, 0.95), [], 1.0))
        assert (g.counterfactual_disagreement(no, "no", (0.5, 0.5), [(0.1, 0.9), (0.9, 0.1)], 1.0)
                > g.counterfactual_disagreement(no, "no", (0.5, 0.5), [(0.1, 0.9), (0.2, 0.8)], 1.0))
        # (c) an answer the prior gives, and one the image barely supports
        assert g.prior_vauq([0.3], [0.3], (0.9, 0.1), "yes", 0.6, 1.0) > g.prior_vauq([0.3], [0.3], (0.1, 0.9), "yes",
                                                                                    0.6, 1.0)
        assert g.prior_vauq([0.3], [0.3], (0.5, 0.5), "no", 0.6, 1.0) > g.prior_vauq([0.3], [1.0], (0.5, 0.5), "no",
                                                                                   0.6, 1.0)
    # and each rises with H(p) at fixed evidence
    assert g.grounding_disagreement((0.6, 0.4), "yes", 0.5) > g.grounding_disagreement((0.9, 0.1), "yes", 0.5)


def test_crop_boxes_and_pixel_boxes():
    boxes = library.crop_grid(0.6, 2)
    assert boxes == ((0.0, 0.0, 0.6, 0.6), (0.4, 0.0, 1.0, 0.6), (0.0, 0.4, 0.6, 1.0), (0.4, 0.4, 1.0, 1.0))
    assert library.crop_grid(0.5, 1) == ((0.0, 0.0, 0.5, 0.5),)
    assert library.pixel_box((0.4, 0.4, 1.0, 1.0), 300, 200) == (120, 80, 300, 200)
    with pytest.raises(ValueError):
        library.crop_grid(1.0, 2)
    assert method_probes.default_grounding_layers(40) == (10, 15, 20, 25, 30, 40)


# --- the pass on the tiny model -------------------------------------------------------------


@pytest.fixture(scope="module")
def probed(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("method_v2")
    common, inputs = tiny_stage1(tiny_checkpoints, out, num_samples=2)
    flags = [*common, *inputs, "--erase-fractions", ",".join(map(str, ERASE)),
             "--crop-scale", "0.6", "--crop-grid", "2", "--top-k", "8"]
    method_probes.main([*flags, "--output-file", str(out / "batched.jsonl"), "--batch-size", "3"])
    method_probes.main([*flags, "--output-file", str(out / "single.jsonl"), "--batch-size", "1"])
    return out, read_jsonl(str(out / "a.generations.jsonl")), read_jsonl(str(out / "batched.jsonl"))


@pytest.fixture(scope="module")
def eager(tiny_checkpoints):
    return load_pretrained_model(str(tiny_checkpoints.original), device="cpu", attn_implementation="eager")


def _full_prompt(model, tokenizer, processor, image, text):
    """(embeds, mask, image start, ids) of the whole prompt, one row, the authors' way."""
    ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer)
    pixels = process_images([image], processor, model.config)
    embeds, mask, _ = model.embed_multimodal([torch.tensor(ids)], model.encode_images(pixels))
    return embeds, mask, ids.index(-200), ids


def _yes_mass(model, tokenizer, logits):
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    probs = logits.float().softmax(-1)
    return float(probs[yes].sum()), float(probs[no].sum())


def test_the_pass_reproduces_grounding_erasure_and_crops_by_hand(probed, tiny_checkpoints, eager):
    _, generations, records = probed
    tokenizer, model, processor, _ = eager
    num_layers = model.config.text_config.num_hidden_layers
    checked = 0
    for record, generation in zip(records, generations):
        fields = record["method_probes"]
        if fields is None:
            continue
        image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
        first, last, token = glsim.object_positions(record["prompt"], "vicuna_v1", tokenizer)
        with torch.no_grad():
            embeds, mask, start, _ = _full_prompt(model, tokenizer, processor, image, record["prompt"])
            out = model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        object_at = start + 576 + last  # the object's last token in the full sequence
        ids = tokenizer_image_token(build_prompt(record["prompt"], "vicuna_v1"), tokenizer)
        object_ids = ids[start + 1 + first : start + 2 + last]  # the object's tokens in the prompt
        assert fields["real_first_token"]["yes_mass"] == pytest.approx(generation["first_token"]["yes_mass"], abs=1e-5)
        assert fields["grounding"]["object_token_ids"] == object_ids and object_ids[0] == token
        # grounding, per layer, top 8: the logit lens (final norm, lm_head) averaged over the object's tokens,
        # and the cosine of the object's mean token state with each image token
        assert fields["grounding"]["layers"] == list(range(1, num_layers + 1))
        for i, layer in enumerate(fields["grounding"]["layers"]):
            states = out.hidden_states[layer][0]
            image_states = states[start : start + 576]
            normed = image_states if layer == num_layers else model.model.language_model.norm(image_states)
            lens = model.lm_head(normed).float().log_softmax(-1)[:, object_ids].mean(-1)
            object_state = states[start + 576 + first : object_at + 1].float().mean(0)
            cos = torch.nn.functional.cosine_similarity(object_state[None], image_states.float(), dim=-1)
            assert fields["grounding"]["logit_lens_top"][i] == pytest.approx(lens.topk(8).values.tolist(), abs=1e-4)
            assert fields["grounding"]["similarity_top"][i] == pytest.approx(cos.topk(8).values.tolist(), abs=1e-5)
        # erasure: the object's last token's head-mean attention over layers 10..24 of 32 (= layer 1 of 2),
        # its top round(f * 576) image tokens hidden from every query
        attention = torch.stack(out.attentions)[1:2, 0, :, object_at, start : start + 576].mean(dim=(0, 1))  # (576,)
        for entry, fraction in zip(fields["erased"], ERASE):
            count = round(fraction * 576)
            hidden = mask.clone()
            hidden[0, start + attention.topk(count).indices] = 0
            with torch.no_grad():
                logits = model(inputs_embeds=embeds, attention_mask=hidden).logits[0, -1]
            assert entry["hidden_patches"] == count and entry["fraction"] == fraction
            assert (entry["yes_mass"], entry["no_mass"]) == pytest.approx(_yes_mass(model, tokenizer, logits), abs=1e-4)
        # crops: each crop through LLaVA's own image pipeline, the whole prompt
        assert [c["box"] for c in fields["crops"]] == [list(b) for b in library.crop_grid(0.6, 2)]
        for crop in fields["crops"]:
            with torch.no_grad():
                e, m, _, _ = _full_prompt(model, tokenizer, processor, cropped(image, tuple(crop["box"])),
                                          record["prompt"])
                logits = model(inputs_embeds=e, attention_mask=m).logits[0, -1]
            assert (crop["yes_mass"], crop["no_mass"]) == pytest.approx(_yes_mass(model, tokenizer, logits), abs=1e-4)
        checked += 1
    assert checked == 4  # the four POPE questions; "What colour ..." has none


def test_fields_do_not_depend_on_the_batch_and_feed_stage_2(probed):
    out, generations, batched = probed
    single = read_jsonl(str(out / "single.jsonl"))
    assert [r["question_id"] for r in batched] == [r["question_id"] for r in generations]
    for a, b, gen in zip(batched, single, generations):
        assert {k: v for k, v in a.items() if k != "method_probes"} == gen
        assert (a["method_probes"] is None) == (b["method_probes"] is None)
        if a["method_probes"] is None:
            continue
        for key in ("logit_lens_top", "similarity_top"):
            assert np.allclose(a["method_probes"]["grounding"][key], b["method_probes"]["grounding"][key], atol=1e-4)
        for part in ("erased", "crops"):
            assert [x["yes_mass"] for x in a["method_probes"][part]] == pytest.approx(
                [x["yes_mass"] for x in b["method_probes"][part]], abs=1e-5)
    assert compute_se_myself.main(["--generations-file", str(out / "batched.jsonl"),
                                   "--output-file", str(out / "u.jsonl")]) == 0
    scores = read_jsonl(str(out / "u.jsonl"))
    with_probes = [s for s, r in zip(scores, batched) if r["method_probes"] is not None]
    assert all(set(METHOD_MEASURES) <= set(s["scores"]) for s in with_probes)
    assert all("grounding_disagreement" not in s["scores"] for s, r in zip(scores, batched) if r["method_probes"] is None)


def test_measures_follow_the_settings_file(probed, tmp_path, monkeypatch):
    _, _, records = probed
    record = next(r for r in records if r["method_probes"] is not None)
    parsed = parse_generations_record(record, "x.jsonl:1")
    answer = parse_yes_no(record["greedy"]["text"])  # POPE's parsing
    settings = {"fitted_on": "test", "grounding": {"statistic": "similarity", "layer": 2, "top_k": 3, "slope": 4.0,
                                                   "intercept": -1.0},
                "counterfactual": {"erase_fraction": 0.3, "weight": 2.0}, "prior_vauq": {"alpha": 0.6, "beta": 1.0}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(settings))
    monkeypatch.setenv(method_settings.ENVIRONMENT_VARIABLE, str(path))
    fields = record["method_probes"]
    e = g.calibrated_evidence(sum(fields["grounding"]["similarity_top"][1][:3]) / 3, 4.0, -1.0)
    mass = (record["first_token"]["yes_mass"], record["first_token"]["no_mass"])
    p = mass[0] / sum(mass)
    by_hand = H(p) + LN2 * ((1 - e) if answer == "yes" else e)
    score = MEASURES_BY_NAME["grounding_disagreement"].compute(MeasureInputs(parsed, None))
    assert score == pytest.approx(by_hand, abs=1e-9)
    erased = next(x for x in fields["erased"] if x["fraction"] == 0.3)
    c = (erased["yes_mass"] / (erased["yes_mass"] + erased["no_mass"]) if answer == "yes" else
         max(x["yes_mass"] / (x["yes_mass"] + x["no_mass"]) for x in fields["crops"]))
    assert MEASURES_BY_NAME["counterfactual_disagreement"].compute(MeasureInputs(parsed, None)) == pytest.approx(
        H(p) + 2.0 * LN2 * c, abs=1e-9)
    # a layer the record lacks is a one-line error naming it
    settings["grounding"]["layer"] = 7
    path.write_text(json.dumps(settings))
    monkeypatch.setenv(method_settings.ENVIRONMENT_VARIABLE, str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="cannot read"):
        MEASURES_BY_NAME["grounding_disagreement"].compute(MeasureInputs(parsed, None))
    other = tmp_path / "s2.json"
    other.write_text(json.dumps(settings))
    monkeypatch.setenv(method_settings.ENVIRONMENT_VARIABLE, str(other))
    with pytest.raises(ValueError, match="no grounding at layer 7"):
        MEASURES_BY_NAME["grounding_disagreement"].compute(MeasureInputs(parsed, None))


def test_the_shipped_settings_file_is_valid():
    settings = method_settings.method_settings()
    assert settings["grounding"]["statistic"] in method_settings.GROUNDING_STATISTICS


def test_cost_per_batch_is_five_language_calls_and_two_vision_calls(tiny_checkpoints):
    tokenizer, model, _, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    groups, inputs = two_image_groups(tokenizer, lambda r, prefix, suffix: method_question(r, suffix, tokenizer,
                                                                                          "vicuna_v1"))
    boxes = library.crop_grid(0.5, 3)
    settings = library.MethodSettings((1, 2), 4, (1, 2), (0.05, 0.1, 0.2), boxes)
    counter = ForwardCounter(model)
    fields = library.method_batch(model, groups, torch.zeros(2, 3, 336, 336), torch.zeros(9 * 2, 3, 336, 336),
                                  inputs, settings, yes, no, tokenizer.eos_token_id)
    # prefills: the 2 image prefixes, 3 erased rows for each of the 2 POPE questions, 9 x 2 crop prefixes;
    # tree steps: one per prefix-shared prefill; vision: the images once, their crops once
    assert counter.prefills == [2, 6, 18] and counter.steps == [2, 18] and counter.vision == [2, 18]
    assert [f is None for f in fields] == [False, True, False]
    assert [len(f["crops"]) for f in fields if f] == [9, 9]


# --- the p(yes)-only control ----------------------------------------------------------------


def test_by_answer_control_uses_other_folds_only_and_separates_answers():
    rng = np.random.default_rng(0)
    n = 400
    p_no = rng.uniform(size=n)
    answers = np.where(rng.uniform(size=n) < 0.5, "yes", "no")
    # a "yes" is wrong when p_no is high, a "no" when p_no is low: one monotone map cannot do both
    wrong = np.where(answers == "yes", p_no > 0.6, p_no < 0.4).astype(int)
    folds = np.repeat(np.arange(5), n // 5)
    scores, models = out_of_fold_by_answer(p_no[:, None], wrong, folds, answers, "isotonic")
    assert auroc(wrong, scores) > 0.97
    assert auroc(wrong, p_no) < 0.7
    assert {m["answer"] for m in models} == {"yes", "no"} and len(models) == 10
    # changing fold 0's labels leaves fold 0's scores unchanged
    flipped = wrong.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    again, _ = out_of_fold_by_answer(p_no[:, None], flipped, folds, answers, "isotonic")
    assert np.array_equal(again[folds == 0], scores[folds == 0])
    logistic, _ = out_of_fold_by_answer(p_no[:, None], wrong, folds, answers, "logistic")
    assert auroc(wrong, logistic) > 0.9


# --- the validation chooser -----------------------------------------------------------------


def _synthetic_world(n=200, seed=0):
    """Only the similarity at layer 2 sees the object; errors are answers that disagree with it."""
    rng = np.random.default_rng(seed)
    questions = []
    for _ in range(n):
        present = bool(rng.uniform() < 0.5)
        answer = "yes" if rng.uniform() < 0.5 else "no"
        p = rng.uniform(0.6, 0.95)
        mass = (p, 1 - p) if answer == "yes" else (1 - p, p)
        seen = float(present) + 0.2 * rng.normal()
        probes = MethodProbes(
            logit_lens_top={1: tuple(sorted(rng.normal(size=4), reverse=True)),
                            2: tuple(sorted(rng.normal(size=4), reverse=True))},
            similarity_top={1: tuple(sorted(rng.normal(size=4), reverse=True)), 2: (seen + 0.01,) * 4},
            erased_masses={0.1: (0.5, 0.5)}, crop_masses=((0.5, 0.5),))
        baselines = BaselineProbes(vauq_entropies=(0.5,), vauq_masked_entropies=(0.6,), no_image_mass=(0.3, 0.7))
        questions.append(selection.ValidationQuestion(mass, answer, (answer == "yes") != present, present, probes,
                                                      baselines))
    return questions


def test_chooser_finds_the_grounding_that_sees_the_object():
    questions = _synthetic_world()
    choice = selection.choose(questions, {"vauq": 0.6, "glsim": 0.7, "not_a_baseline": 0.9}, "synthetic")
    assert (choice["grounding"]["statistic"], choice["grounding"]["layer"]) == ("similarity", 2)
    assert choice["grounding"]["slope"] > 0
    assert choice["primary"] == "grounding_disagreement"
    assert choice["best_published_baseline"] == "glsim"
    assert choice["validation"]["candidate_auroc"]["grounding_disagreement"] > 0.95
    method_settings.validate_settings(choice, "choice")


def test_malformed_method_probes_and_settings_are_one_line_errors(tmp_path):
    from semantic_entropy.sampling.generations_io import GenerationsError

    base = {"question_id": 7, "category": "random", "prompt": "Is there a dog in the image?",
            "greedy": {"text": "Yes"}, "samples": [{"text": "Yes"}]}
    good = {"grounding": {"layers": [1], "logit_lens_top": [[-1.0, -2.0]], "similarity_top": [[0.5, 0.1]]},
            "erased": [{"fraction": 0.1, "yes_mass": 0.5, "no_mass": 0.4}],
            "crops": [{"box": [0, 0, 1, 1], "yes_mass": 0.3, "no_mass": 0.6}]}
    parsed = parse_generations_record({**base, "method_probes": good}, "g.jsonl:1").method_probes
    assert parsed.logit_lens_top == {1: (-1.0, -2.0)} and parsed.erased_masses == {0.1: (0.5, 0.4)}
    unsorted = json.loads(json.dumps(good))
    unsorted["grounding"]["similarity_top"] = [[0.1, 0.5]]
    with pytest.raises(GenerationsError, match=r"g.jsonl:1: question_id 7: .*sorted high to low"):
        parse_generations_record({**base, "method_probes": unsorted}, "g.jsonl:1")
    no_crops = {**good, "crops": []}
    with pytest.raises(GenerationsError, match="crops non-empty"):
        parse_generations_record({**base, "method_probes": no_crops}, "g.jsonl:1")
    assert parse_generations_record({**base, "method_probes": None}, "g.jsonl:1").method_probes is None
    with pytest.raises(ValueError, match=r"s.json: grounding.statistic must be one of"):
        method_settings.validate_settings({"grounding": {"statistic": "pixels", "layer": 1, "top_k": 1, "slope": 1,
                                                         "intercept": 0},
                                           "counterfactual": {"erase_fraction": 0.1, "weight": 1},
                                           "prior_vauq": {"alpha": 0, "beta": 0}}, "s.json")


def test_study_refuses_test_worlds_before_the_validation_choice(tmp_path):
    """PHASE=test with an unfitted settings file stops before any model runs (the protocol's order)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({**method_settings.method_settings(), "fitted_on": None}))
    env = {**os.environ, "PHASE": "test", "METHOD_SETTINGS": str(settings), "PYTHON": sys.executable,
           "OUTPUT_DIR": str(tmp_path / "out")}
    done = subprocess.run(["bash", "scripts/method_study.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "was not fitted on a validation world" in done.stderr
    assert not (tmp_path / "out" / "test_shipped").exists()
    bad = subprocess.run(["bash", "scripts/method_study.sh"], cwd=REPO_ROOT, env={**env, "PHASE": "tests"},
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip() == "PHASE must be validation, test or all, got tests"

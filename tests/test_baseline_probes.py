"""baseline_probes: every published detector reproduced by hand from its formula on the tiny
model (eager attention, `output_hidden_states`, full-sequence masks: the authors' way), its
direction, its cost in forward passes, and stage 2's scores."""

import itertools
import math

import pytest
import torch
from PIL import Image, ImageFilter

from llava.conversation import build_prompt
from llava.jsonl_io import read_jsonl
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.utils import hash_seed
from semantic_entropy import baseline_probes, compute_se_myself
from semantic_entropy.probes import attention_ratio, glsim, no_image_prior, vauq, vl_uncertainty
from semantic_entropy.probes import baselines as library
from semantic_entropy.probes.baseline_inputs import question_inputs
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids
from semantic_entropy.sampling.prefix_groups import Group, split_at_image
from semantic_entropy.scoring.registry import MEASURES_BY_NAME, MeasureInputs
from tests.forward_counter import ForwardCounter, two_image_groups
from tests.tiny_stage1 import tiny_stage1

BASELINE_MEASURES = ("vauq", "vauq_no_image", "attention_ratio_svar", "glsim", "vl_uncertainty",
                     "vl_uncertainty_expected", "vl_uncertainty_blur_only_expected", "no_image_prior_entropy",
                     "no_image_calibrated_entropy")
VL_MEASURES = {"glsim", "vl_uncertainty", "vl_uncertainty_expected", "vl_uncertainty_blur_only_expected"}


@pytest.fixture(scope="module")
def probed(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    common, inputs = tiny_stage1(tiny_checkpoints, out)
    flags = [*common, *inputs, "--vauq-setting", "MMVet", "--vl-setting", "MMMU"]
    baseline_probes.main([*flags, "--output-file", str(out / "batched.jsonl"), "--batch-size", "3",
                          "--vl-blur-only-ablation"])
    baseline_probes.main([*flags, "--output-file", str(out / "single.jsonl"), "--batch-size", "1"])
    return out, read_jsonl(str(out / "a.generations.jsonl")), read_jsonl(str(out / "batched.jsonl"))


@pytest.fixture(scope="module")
def eager(tiny_checkpoints):
    """The tiny model with eager attention, as the authors' code runs (output_attentions)."""
    return load_pretrained_model(str(tiny_checkpoints.original), device="cpu", attn_implementation="eager")


def _score(record: dict, name: str, path="x.jsonl") -> float:
    parsed = next(iter_generations_of([record], path))
    return MEASURES_BY_NAME[name].compute(MeasureInputs(parsed, judgement=None))


def iter_generations_of(records, path):
    from semantic_entropy.sampling.generations_io import parse_generations_record

    for i, record in enumerate(records):
        yield parse_generations_record(record, f"{path}:{i + 1}")


def _prompt_inputs(model, tokenizer, processor, image, text, answer_ids=()):
    """(embeds, 2D mask, the prompt's length in positions, image start) of prompt + answer, one row."""
    ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer, return_tensors="pt")
    slot = int((ids == -200).nonzero()[0, 0])
    full = torch.cat([ids, torch.tensor(answer_ids, dtype=torch.long)])
    pixels = process_images([image], processor, model.config)
    embeds, mask, _ = model.embed_multimodal([full], model.encode_images(pixels))
    return embeds, mask, len(ids) - 1 + 576, slot


def _entropies_bits(logits):
    p = logits.double().softmax(-1)
    return [float(-(row[row > 0] * row[row > 0].log2()).sum()) for row in p]


# --- VAUQ -----------------------------------------------------------------------------------


def test_vauq_reproduces_the_published_computation(probed, tiny_checkpoints, eager):
    """Attention of the answer tokens' rows (layers 10..24 of 32 -> layer 1 of 2), top int(.4 * 576)
    image tokens masked in a full-sequence attention mask, mean step entropies in bits."""
    _, _, records = probed
    tokenizer, model, processor, _ = eager
    ratio, alpha = vauq.PUBLISHED_SETTINGS["MMVet"]
    for record in records[:2]:
        image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
        answer = record["greedy"]["token_ids"]
        with torch.no_grad():
            embeds, mask, prompt_len, start = _prompt_inputs(model, tokenizer, processor, image, record["prompt"],
                                                             answer)
            out = model(inputs_embeds=embeds, attention_mask=mask, output_attentions=True)
            attentions = torch.stack(out.attentions)[:, 0]  # (L, H, T, T)
            image_map = attentions[1:2, :, prompt_len:, start : start + 576].mean(dim=(0, 1, 2))  # (576,)
            top = image_map.topk(int(576 * ratio)).indices
            masked = mask.clone()
            masked[0, start + top] = 0
            masked_out = model(inputs_embeds=embeds, attention_mask=masked)
        h = _entropies_bits(out.logits[0, prompt_len - 1 : -1])
        h_masked = _entropies_bits(masked_out.logits[0, prompt_len - 1 : -1])
        fields = record["baseline_probes"]["vauq"]
        assert fields["hidden_patches"] == 230 and (fields["mask_ratio"], fields["alpha"]) == (ratio, alpha)
        assert fields["entropies"] == pytest.approx(h, abs=1e-4)
        assert fields["masked_entropies"] == pytest.approx(h_masked, abs=1e-4)
        by_hand = sum(h) / len(h) - alpha * (sum(h_masked) / len(h_masked) - sum(h) / len(h))
        assert _score(record, "vauq") == pytest.approx(by_hand, abs=1e-4)
        # the answer-step entropies are stage 1's own, in bits
        assert fields["entropies"] == pytest.approx([e / math.log(2) for e in record["greedy"]["token_entropies"]],
                                                    abs=1e-4)


def test_vauq_no_image_is_the_prompt_without_the_image_line(probed, eager):
    _, _, records = probed
    tokenizer, model, _, _ = eager
    record = records[0]
    text = build_prompt(record["prompt"], "vicuna_v1").replace("<image>\n", "")
    ids = tokenizer_image_token(text, tokenizer, return_tensors="pt")
    full = torch.cat([ids, torch.tensor(record["greedy"]["token_ids"])])[None]
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, len(ids) - 1 : -1]
    fields = record["baseline_probes"]
    assert fields["vauq"]["no_image_entropies"] == pytest.approx(_entropies_bits(logits), abs=1e-4)
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    first = logits[0].softmax(-1)
    assert fields["no_image"]["yes_mass"] == pytest.approx(float(first[yes].sum()), abs=1e-5)
    h = sum(fields["vauq"]["entropies"]) / len(fields["vauq"]["entropies"])
    h0 = sum(_entropies_bits(logits)) / len(logits)
    assert _score(record, "vauq_no_image") == pytest.approx(h - 0.6 * (h0 - h), abs=1e-4)


def test_hiding_keys_equals_leaving_them_out(tiny_checkpoints):
    """answer_rows' shortcut: hidden image tokens left out, positions kept = masked in place."""
    from semantic_entropy.probes.answer_rows import answer_step_logits, image_row

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    image = Image.open(tiny_checkpoints.images / "img_0.png").convert("RGB")
    ids = tokenizer_image_token(build_prompt("Is there a red circle in the image?", "vicuna_v1"), tokenizer)
    answer = [5, 7]
    features = model.encode_images(process_images([image], processor, model.config))[0]
    kept = torch.ones(576, dtype=torch.bool)
    kept[torch.arange(0, 576, 3)] = False
    short = answer_step_logits(model, [image_row(model, ids + answer[:-1], features, kept.nonzero().flatten())], [2])[0]
    with torch.no_grad():
        embeds, mask, _ = model.embed_multimodal([torch.tensor(ids + answer[:-1])], features[None])
        slot = ids.index(-200)
        mask[0, slot + torch.arange(0, 576, 3)] = 0
        full = model(inputs_embeds=embeds, attention_mask=mask, position_ids=torch.arange(embeds.shape[1])[None])
    assert short == pytest.approx(full.logits[0, -2:].float(), abs=1e-4)


# --- SVAR -----------------------------------------------------------------------------------


def test_attention_ratio_reproduces_svar(probed, tiny_checkpoints, eager):
    """Sum over the image of each head's weights for the first answer token's query, mean over
    heads, summed over layers 5..18 of 32 (layer 0 of 2)."""
    _, _, records = probed
    tokenizer, model, processor, _ = eager
    record = records[2]
    image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
    with torch.no_grad():
        embeds, mask, prompt_len, start = _prompt_inputs(model, tokenizer, processor, image, record["prompt"])
        attentions = torch.stack(model(inputs_embeds=embeds, attention_mask=mask, output_attentions=True).attentions)
    var = attentions[:, 0, :, prompt_len - 1, start : start + 576].sum(-1)  # (L, H)
    shares = var.mean(dim=1)
    fields = record["baseline_probes"]["attention_ratio"]
    assert fields["layers"] == [0, 1]
    assert fields["layer_image_shares"] == pytest.approx(shares.tolist(), abs=1e-5)
    assert _score(record, "attention_ratio_svar") == pytest.approx(-float(shares[0]), abs=1e-5)


# --- GLSim ----------------------------------------------------------------------------------


def test_glsim_reproduces_the_published_similarities(probed, tiny_checkpoints, eager):
    """h_{L-1} of the prompt's last position vs h_L of the object; h_{L-1} of the object vs h_L of
    the top-32 image positions by the logit lens of the object's first token."""
    _, _, records = probed
    tokenizer, model, processor, _ = eager
    record = records[0]  # "Is there a red circle in the image?"
    image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
    with torch.no_grad():
        embeds, mask, prompt_len, start = _prompt_inputs(model, tokenizer, processor, image, record["prompt"])
        states = model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states
    last = len(states) - 1
    # the object's tokens by their character offsets in the text after the image
    after = build_prompt(record["prompt"], "vicuna_v1").split("<image>")[1]
    encoded = tokenizer(after, return_offsets_mapping=True)
    span = (after.index("red circle"), after.index("red circle") + len("red circle"))
    inside = [i - 1 for i, (a, b) in enumerate(encoded["offset_mapping"]) if i > 0 and a < span[1] and b > span[0]]
    obj_first, obj_last = start + 576 + inside[0], start + 576 + inside[-1]
    object_token = encoded["input_ids"][inside[0] + 1]
    cos = torch.nn.functional.cosine_similarity
    global_ = float(cos(states[last - 1][0, prompt_len - 1], states[last][0, obj_last], dim=0))
    image_states = states[last][0, start : start + 576]
    probs = model.lm_head(image_states).softmax(-1)[:, object_token]
    top = probs.topk(32).indices
    local = float(cos(states[last - 1][0, obj_last][None], image_states[top], dim=-1).mean())
    fields = record["baseline_probes"]["glsim"]
    assert fields["object_token_id"] == object_token and obj_first < obj_last
    assert (fields["global"], fields["local"]) == pytest.approx((global_, local), abs=1e-5)
    assert _score(record, "glsim") == pytest.approx(-(0.6 * global_ + 0.4 * local), abs=1e-5)


def test_glsim_and_vl_uncertainty_skip_questions_off_pope_template(probed):
    _, _, records = probed
    other = [r for r in records if r["prompt"].startswith("What colour")]
    assert other and all(r["baseline_probes"]["glsim"] is None and r["baseline_probes"]["vl_uncertainty"] is None
                         for r in other)
    assert all(r["baseline_probes"]["glsim"] is not None for r in records if "imange" in r["prompt"])


# --- VL-Uncertainty -------------------------------------------------------------------------


def test_vl_uncertainty_reproduces_blurred_rephrased_pairs(probed, tiny_checkpoints):
    _, _, records = probed
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    record = records[1]
    radii, temperature = vl_uncertainty.PUBLISHED_SETTINGS["MMMU"]
    image = Image.open(tiny_checkpoints.images / record["image"]).convert("RGB")
    def pair_masses(radius, question):
        pixels = process_images([image.filter(ImageFilter.GaussianBlur(radius=radius))], processor, model.config)
        ids = tokenizer_image_token(build_prompt(question, "vicuna_v1"), tokenizer, return_tensors="pt")
        with torch.no_grad():
            embeds, mask, _ = model.embed_multimodal([ids], model.encode_images(pixels))
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].double()
        p = (logits / temperature).softmax(-1)
        return float(p[yes].sum()), float(p[no].sum()), 1 - float(p[yes].sum()) - float(p[no].sum())

    masses = [pair_masses(r, q) for r, q in zip(radii, vl_uncertainty.rephrased_questions(record["prompt"]))]
    # the blur-only ablation is asked for in the batched run only
    single = read_jsonl(str(probed[0] / "single.jsonl"))[1]["baseline_probes"]["vl_uncertainty"]
    assert "image_only_cluster_masses" not in single
    assert [x for m in single["cluster_masses"] for x in m] == pytest.approx([x for m in masses for x in m], abs=1e-5)
    image_only = [pair_masses(r, record["prompt"]) for r in radii]
    fields = record["baseline_probes"]["vl_uncertainty"]
    assert (fields["blur_radii"], fields["temperature"]) == (list(radii), temperature)
    assert [x for m in fields["cluster_masses"] for x in m] == pytest.approx([x for m in masses for x in m], abs=1e-5)
    assert [x for m in fields["image_only_cluster_masses"] for x in m] == pytest.approx(
        [x for m in image_only for x in m], abs=1e-5)
    uniforms = torch.rand(5, generator=torch.Generator().manual_seed(
        hash_seed(0, f"vl-uncertainty:{record['question_id']}")), dtype=torch.float64).tolist()
    drawn = []
    for (y, n, o), u in zip(masses, uniforms):
        drawn.append("yes" if u < y else "no" if u < y + n else "other")
    assert fields["answers"] == drawn
    counts = [drawn.count(c) for c in set(drawn)]
    assert _score(record, "vl_uncertainty") == pytest.approx(-sum(c / 5 * math.log2(c / 5) for c in counts))


def test_expected_vl_uncertainty_is_the_mean_over_every_draw():
    masses = [(0.7, 0.2, 0.1), (0.5, 0.5, 0.0), (0.9, 0.05, 0.05), (0.3, 0.6, 0.1)]
    brute = 0.0
    for outcome in itertools.product(range(3), repeat=len(masses)):
        p = math.prod(m[c] for m, c in zip(masses, outcome))
        brute += p * vl_uncertainty.discrete_entropy_bits([vl_uncertainty.CLUSTERS[c] for c in outcome])
    assert vl_uncertainty.expected_discrete_entropy_bits(masses) == pytest.approx(brute, abs=1e-12)


# --- no-image prior and Post-Hoc Debias -----------------------------------------------------


def test_calibrated_entropy_follows_post_hoc_debias(probed):
    _, generations, records = probed
    record = records[0]
    real = record["first_token"]
    prior = record["baseline_probes"]["no_image"]
    p = torch.tensor([real["yes_mass"], real["no_mass"]], dtype=torch.float64)
    c = torch.tensor([prior["yes_mass"], prior["no_mass"]], dtype=torch.float64)
    q = torch.linalg.inv(torch.diag(c / c.sum() + 1e-4)) @ (p / p.sum())  # W = diag(p_cf)^-1, b = 0
    q = q / q.sum()
    assert _score(record, "no_image_calibrated_entropy") == pytest.approx(float(-(q * q.log()).sum()), abs=1e-9)
    prior_p = c / c.sum()
    assert _score(record, "no_image_prior_entropy") == pytest.approx(float(-(prior_p * prior_p.log()).sum()))


# --- directions: higher = more uncertain ----------------------------------------------------


def test_every_detector_reads_higher_as_more_uncertain():
    # VAUQ: more entropy, or less added by hiding the image, is more uncertain
    assert vauq.vauq_score([0.9], [1.0], 0.6) > vauq.vauq_score([0.2], [1.0], 0.6)
    assert vauq.vauq_score([0.5], [0.6], 0.6) > vauq.vauq_score([0.5], [1.5], 0.6)
    # SVAR: less attention on the image
    assert attention_ratio.attention_ratio_uncertainty([0.1, 0.1], (0, 2)) > \
        attention_ratio.attention_ratio_uncertainty([0.6, 0.5], (0, 2))
    # GLSim: a less similar object (the measure is -score)
    assert -glsim.glsim_score(0.1, 0.1) > -glsim.glsim_score(0.6, 0.5)
    # VL-Uncertainty: answers that disagree
    assert vl_uncertainty.discrete_entropy_bits(["yes", "no", "yes", "no", "other"]) > \
        vl_uncertainty.discrete_entropy_bits(["yes"] * 4 + ["no"])
    assert vl_uncertainty.expected_discrete_entropy_bits([(0.5, 0.5, 0)] * 5) > \
        vl_uncertainty.expected_discrete_entropy_bits([(0.95, 0.05, 0)] * 5)
    # Post-Hoc Debias: an answer the prior alone would give is less certain once calibrated
    assert no_image_prior.calibrated_entropy((0.9, 0.1), (0.9, 0.1)) > \
        no_image_prior.calibrated_entropy((0.9, 0.1), (0.1, 0.9))


# --- the pass: batches, stage 2, cost -------------------------------------------------------


def test_fields_do_not_depend_on_the_batch_and_feed_stage_2(probed):
    out, generations, batched = probed
    single = read_jsonl(str(out / "single.jsonl"))
    assert [r["question_id"] for r in batched] == [g["question_id"] for g in generations]
    for a, b, g in zip(batched, single, generations):
        assert {k: v for k, v in a.items() if k != "baseline_probes"} == g
        assert a["baseline_probes"]["real_first_token"]["yes_mass"] == pytest.approx(g["first_token"]["yes_mass"],
                                                                                     abs=1e-5)
        for name in ("entropies", "masked_entropies", "no_image_entropies"):
            assert a["baseline_probes"]["vauq"][name] == pytest.approx(b["baseline_probes"]["vauq"][name], abs=1e-4)
        if a["baseline_probes"]["vl_uncertainty"] is not None:
            assert a["baseline_probes"]["vl_uncertainty"]["answers"] == b["baseline_probes"]["vl_uncertainty"]["answers"]
    assert compute_se_myself.main(["--generations-file", str(out / "batched.jsonl"),
                                   "--output-file", str(out / "u.jsonl")]) == 0
    scores = read_jsonl(str(out / "u.jsonl"))
    assert set(BASELINE_MEASURES) <= set(scores[0]["scores"])
    assert all(set(BASELINE_MEASURES) - VL_MEASURES <= set(s["scores"]) for s in scores)
    # without --vl-blur-only-ablation its measure is unavailable and nothing else is lost
    assert compute_se_myself.main(["--generations-file", str(out / "single.jsonl"),
                                   "--output-file", str(out / "u_single.jsonl")]) == 0
    names = [set(s["scores"]) for s in read_jsonl(str(out / "u_single.jsonl"))]
    assert all(n == set(s["scores"]) - {"vl_uncertainty_blur_only_expected"} for n, s in zip(names, scores))


def test_cost_per_batch_is_seven_language_calls_and_two_vision_calls(tiny_checkpoints):
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    groups, inputs = two_image_groups(tokenizer, lambda r, prefix, suffix: question_inputs(r, prefix, suffix, tokenizer,
                                                                                          "vicuna_v1"),
                                      greedy={"token_ids": [5, 2]})
    settings = library.BaselineSettings(0.4, 0.6, (1, 2), (0, 1), 32, (0.1, 0.3, 0.5, 0.7, 1.0), 1.0, 0)
    counter = ForwardCounter(model)
    fields = library.baseline_batch(model, groups, torch.zeros(2, 3, 336, 336), torch.zeros(10, 3, 336, 336), inputs,
                                    settings, yes, no, tokenizer.eos_token_id)
    # prefills: the 2 image prefixes, the text before the image once, 3 rows with hidden image tokens after it,
    # 3 text-only rows, 5 x 2 blurred prefixes; tree steps: one per prefix-shared prefill; vision: the images
    # once, their blurred versions once
    assert counter.prefills == [2, 1, 3, 3, 10] and counter.steps == [2, 10] and counter.vision == [2, 10]
    assert [f["vl_uncertainty"] is None for f in fields] == [False, True, False]


def test_the_registry_names_the_detectors():
    for name in BASELINE_MEASURES:
        assert name in MEASURES_BY_NAME
    for word in ("vauq", "glsim", "vl_uncertainty", "attention_ratio", "no_image"):
        assert any(word in name for name in BASELINE_MEASURES)


def test_every_pope_question_gives_its_object_and_rephrasings_with_llama_2(pope_coco_dir, llama2_tokenizer_dir):
    """With the real tokenizer, every POPE question's object is found in its tokens and its
    rephrasings keep the prompt before the image (what the pass needs on LLaVA-1.5-7B)."""
    from transformers import AutoTokenizer

    from llava.eval.prepare_pope import prepare_pope_questions
    from semantic_entropy.probes.baseline_inputs import rephrased_suffixes

    tokenizer = AutoTokenizer.from_pretrained(str(llama2_tokenizer_dir))
    texts = sorted({q["text"] for q in prepare_pope_questions(str(pope_coco_dir))})
    assert len(texts) > 50
    for text in texts:
        ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer)
        prefix, suffix = split_at_image(ids)
        first, last, token = glsim.object_positions(text, "vicuna_v1", tokenizer)
        name = glsim.pope_object(text)[1]
        assert tokenizer.decode(suffix[first : last + 1]).strip() == name and suffix[first] == token
        assert len(rephrased_suffixes(0, text, prefix, tokenizer, "vicuna_v1")) == 5


def test_the_no_image_rows_run_once_per_distinct_text(tiny_checkpoints):
    """POPE asks one question of many images: without the image those rows are one row."""
    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    yes, no = yes_no_token_ids(tokenizer, model.scored_vocab_size)
    text = "Is there a red circle in the image?"
    ids = tokenizer_image_token(build_prompt(text, "vicuna_v1"), tokenizer)
    prefix, suffix = split_at_image(ids)
    groups, inputs = [], []
    for image, answer in (("a.png", [5, 2]), ("b.png", [5, 2]), ("c.png", [6, 2])):
        record = {"question_id": image, "prompt": text, "greedy": {"token_ids": answer}}
        groups.append(Group(image, prefix, [record], [suffix]))
        inputs.append(question_inputs(record, prefix, suffix, tokenizer, "vicuna_v1"))
    settings = library.BaselineSettings(0.4, 0.6, (1, 2), (0, 1), 32, (0.1, 0.3, 0.5, 0.7, 1.0), 1.0, 0)
    counter = ForwardCounter(model)
    pixels = torch.rand(3, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    fields = library.baseline_batch(model, groups, pixels, pixels.repeat(5, 1, 1, 1), inputs, settings, yes, no,
                                    tokenizer.eos_token_id)
    assert counter.prefills[3] == 2  # two distinct answers, three questions
    steps = [f["vauq"]["no_image_entropies"] for f in fields]  # per answer step
    assert steps[0] == steps[1] and steps[0][0] == steps[2][0] and steps[0][1] != steps[2][1]
    assert fields[0]["no_image"] == fields[1]["no_image"] == fields[2]["no_image"]  # the first step
    # the real-image fields still differ per image
    assert fields[0]["real_first_token"] != fields[1]["real_first_token"]


def test_rows_after_a_shared_prefix_equal_whole_rows(tiny_checkpoints):
    """Pass B runs the text before the image once; rows of other lengths (padding between that
    prefix and their own tokens) give the logits their whole rows give."""
    from semantic_entropy.probes.answer_rows import (answer_step_logits, answer_step_logits_after_prefix,
                                                     hidden_image_rows, image_row)

    tokenizer, model, processor, _ = load_pretrained_model(str(tiny_checkpoints.original), device="cpu")
    images = [Image.open(tiny_checkpoints.images / name).convert("RGB") for name in ("img_0.png", "img_1.png")]
    features = model.encode_images(process_images(images, processor, model.config))  # (2, N, D)
    texts = ["Is there a red circle in the image?", "Is there a blue square in the image? Answer briefly.",
             "Is there a dog in the imange?"]
    ids = [tokenizer_image_token(build_prompt(t, "vicuna_v1"), tokenizer) for t in texts]
    answers, image_of = [[5, 7], [6], [5, 9, 2]], [0, 1, 1]
    slot = ids[0].index(-200)
    generator = torch.Generator().manual_seed(0)
    kept = torch.stack([torch.randperm(576, generator=generator)[:400].sort().values for _ in texts])  # (3, 400)
    whole = answer_step_logits(model, [image_row(model, i + a[:-1], features[g], k)
                                       for i, a, g, k in zip(ids, answers, image_of, kept)], [len(a) for a in answers])
    rows = hidden_image_rows(model, features, image_of, kept, slot,
                             [i[slot + 1 :] + a[:-1] for i, a in zip(ids, answers)])
    shared = answer_step_logits_after_prefix(model, ids[0][:slot], rows, [len(a) for a in answers])
    assert len({len(e) for e, _ in rows}) > 1  # padding sits between the prefix and the shorter rows
    for a, b in zip(whole, shared):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)

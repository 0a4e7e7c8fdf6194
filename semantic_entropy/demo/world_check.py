"""The acceptance figures of the ShapesPOPE v2 world (issue [world-v2], item 3; see docs/world.md).

`check_world(model, tokenizer, processor, pope_dir)` returns one dict:

- `accuracy`, `recall`, `yes_rate`, `precision`, `f1`: greedy POPE answers, per split;
- `text_prior`: text only (no image tokens), p(yes) of "Is there a B?" after "There is a A."
  with A the prior companion of B, against A unrelated to B; `gap` = the difference;
- `erasure`: mean drop of p(yes) for prior-driven false "yes" when the region where the
  companion would be (around its anchor) is erased, against the drop for true "yes" when the
  object itself is erased;
- `pointing`: for present objects asked, the pointing game of the object-token-to-patch
  similarity and of the logit lens over image tokens, at every LM layer, against chance;
- `errors`: the share of the adversarial split's errors that are prior-driven false "yes",
  and the share of all errors that are misses; each error's mechanisms counted;
- `criteria`: each acceptance criterion, True or False.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from llava.constants import IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt, conv_templates
from llava.eval.eval_pope import parse_yes_no
from llava.mm_utils import process_images, tokenizer_image_token
from semantic_entropy.demo.world import (
    CLASS_NAMES,
    GROUPS,
    WorldConfig,
    companion_map,
    lookalike_map,
    pope_question,
    render_scene,
    surround_mask,
    without_object,
)
from semantic_entropy.demo.world_pope import SPLITS, generate_test_scenes
from semantic_entropy.probes.grounding import (
    box_patch_mask,
    logit_lens,
    patch_similarity,
    pointing_chance,
    pointing_hit,
)
from semantic_entropy.sampling.answer_tokens import yes_no_token_ids

CONV_MODE = "vicuna_v1"


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def text_prompt(text: str) -> str:
    """A vicuna_v1 prompt without an image slot."""
    conv = conv_templates[CONV_MODE].copy()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


class Runner:
    """Batched first-token p(yes), greedy answers and hidden states of one model."""

    def __init__(self, model, tokenizer, processor, batch_size: int = 32):
        self.model, self.tokenizer, self.processor, self.batch_size = model, tokenizer, processor, batch_size
        self.yes_ids, self.no_ids = yes_no_token_ids(tokenizer, model.scored_vocab_size)

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """PIL images -> (N, 576, H) projected image tokens."""
        out = [self.model.encode_images(process_images(images[i:i + self.batch_size], self.processor, self.model.config))
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out)

    def ids(self, question: str, with_image: bool) -> torch.Tensor:
        prompt = build_prompt(question, CONV_MODE) if with_image else text_prompt(question)
        return tokenizer_image_token(prompt, self.tokenizer, return_tensors="pt")

    def p_yes_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        yes = torch.logsumexp(logprobs[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logprobs[:, self.no_ids], dim=-1)
        return torch.sigmoid(yes - no).numpy()

    @torch.no_grad()
    def p_yes(self, questions: Sequence[str], features: torch.Tensor | None) -> np.ndarray:
        """(B,) first-token p(yes) / (p(yes) + p(no)); `features` (B, 576, H) or None (text only)."""
        out = []
        for i in range(0, len(questions), self.batch_size):
            ids = [self.ids(q, features is not None) for q in questions[i:i + self.batch_size]]
            chunk = features[i:i + self.batch_size] if features is not None else None
            embeds, mask, positions = self.model.embed_multimodal(ids, chunk)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                logits_to_keep=1).logits[:, -1]
            out.append(self.p_yes_from_logits(logits))
        return np.concatenate(out)

    @torch.no_grad()
    def greedy(self, questions: Sequence[str], features: torch.Tensor, max_new_tokens: int = 6) -> list[str]:
        from llava.model.generation import greedy_decode

        texts = []
        for i in range(0, len(questions), self.batch_size):
            ids = [self.ids(q, True) for q in questions[i:i + self.batch_size]]
            embeds, mask, positions = self.model.embed_multimodal(ids, features[i:i + self.batch_size])
            for d in greedy_decode(self.model, embeds, mask, positions, max_new_tokens, self.tokenizer.eos_token_id):
                texts.append(self.tokenizer.decode(d.token_ids, skip_special_tokens=True).strip())
        return texts

    @torch.no_grad()
    def hidden_states(self, question: str, features: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(layers + 1, T, H) hidden states of one image prompt, the first image token's index, and ids."""
        ids = self.ids(question, True)
        embeds, mask, positions = self.model.embed_multimodal([ids], features[None])
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                         output_hidden_states=True, logits_to_keep=1)
        return torch.stack(out.hidden_states)[:, 0], int((ids == IMAGE_TOKEN_INDEX).nonzero()[0]), ids


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------


def pope_figures(runner: Runner, pope_dir: str, features: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """({metric: {split: value}}, {split: rows with prediction and p_yes})."""
    figures = {k: {} for k in ("accuracy", "recall", "yes_rate", "precision", "f1")}
    answered = {}
    for split in SPLITS:
        rows = read_jsonl(os.path.join(pope_dir, "coco", f"coco_pope_{split}.json"))
        questions = [r["text"] + POPE_ANSWER_SUFFIX for r in rows]
        feats = torch.stack([features[r["image"]] for r in rows])
        texts = runner.greedy(questions, feats)
        p_yes = runner.p_yes(questions, feats)
        for r, t, p in zip(rows, texts, p_yes):
            r.update(answer=t, prediction=parse_yes_no(t), p_yes=float(p))
        tp = sum(r["prediction"] == "yes" and r["label"] == "yes" for r in rows)
        fp = sum(r["prediction"] == "yes" and r["label"] == "no" for r in rows)
        fn = sum(r["prediction"] == "no" and r["label"] == "yes" for r in rows)
        n = len(rows)
        precision = tp / max(1, tp + fp)
        recall = tp / max(1, tp + fn)
        figures["accuracy"][split] = (n - fp - fn) / n
        figures["recall"][split] = recall
        figures["yes_rate"][split] = (tp + fp) / n
        figures["precision"][split] = precision
        figures["f1"][split] = 2 * precision * recall / max(1e-12, precision + recall)
        answered[split] = rows
    return figures, answered


def text_prior_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(named, asked) pairs: companions (both directions of every group), and unrelated pairs.

    Unrelated: the named class is neither the asked class, its companion nor its look-alike.
    """
    companions, lookalikes = companion_map(), lookalike_map()
    related = [(a, c) for a, c, _, _ in GROUPS] + [(c, a) for a, c, _, _ in GROUPS]
    unrelated = [(x, b) for _, b in related for x in CLASS_NAMES
                 if x != b and x not in companions[b] and x != lookalikes.get(b)]
    return related, unrelated


def text_prior(runner: Runner) -> dict:
    related, unrelated = text_prior_pairs()

    def mean_p(pairs):
        questions = [f"There is a{'n' if x[0] in 'aeiou' else ''} {x}.\n{pope_question(b)}{POPE_ANSWER_SUFFIX}"
                     for x, b in pairs]
        return float(runner.p_yes(questions, None).mean())

    companion, other = mean_p(related), mean_p(unrelated)
    return {"p_yes_after_companion": companion, "p_yes_after_unrelated": other, "gap": companion - other,
            "pairs": {"companion": len(related), "unrelated": len(unrelated)}}


def asked_name(row: dict) -> str:
    from semantic_entropy.demo.world import class_from_question

    return class_from_question(row["text"])


def erasure(runner: Runner, answered: dict, scenes: dict, mechanisms: dict) -> dict:
    """Mean p(yes) drops: prior-driven false yes with the companion's region erased; true yes with the object erased."""
    companions = companion_map()
    false_yes, true_yes = {}, {}
    for split, rows in answered.items():
        for r in rows:
            key = (r["image"], asked_name(r))
            if r["label"] == "no" and r["prediction"] == "yes" and "prior" in mechanisms[split][str(r["question_id"])]:
                false_yes[key] = r["p_yes"]
            elif r["label"] == "yes" and r["prediction"] == "yes":
                true_yes[key] = r["p_yes"]

    def drops(items, edit):
        if not items:
            return []
        keys = sorted(items)
        images = [edit(scenes[image], name) for image, name in keys]
        after = runner.p_yes([pope_question(name) + POPE_ANSWER_SUFFIX for _, name in keys], runner.features(images))
        return [items[k] - float(a) for k, a in zip(keys, after)]

    def erase_region(scene, name):
        anchor = next(n for n in scene.names if name in companions[n])
        return render_scene(scene, surround_mask(scene, anchor))

    false_drop = drops(false_yes, erase_region)
    true_drop = drops(true_yes, lambda scene, name: render_scene(without_object(scene, name)))
    return {"false_yes_region_erased": {"n": len(false_drop), "mean_drop": float(np.mean(false_drop)) if false_drop else None,
                                        "median_drop": float(np.median(false_drop)) if false_drop else None},
            "true_yes_object_erased": {"n": len(true_drop), "mean_drop": float(np.mean(true_drop)) if true_drop else None,
                                       "median_drop": float(np.median(true_drop)) if true_drop else None}}


def name_positions(tokenizer, ids: torch.Tensor, name: str, start: int) -> list[int]:
    """Positions of the class name's tokens in `ids` (the last occurrence after `start`)."""
    target = tokenizer(name, add_special_tokens=False).input_ids
    seq = ids.tolist()
    found = [i for i in range(start, len(seq) - len(target) + 1) if seq[i:i + len(target)] == target]
    if not found:
        raise ValueError(f"{name!r} not found in the prompt's tokens")
    return list(range(found[-1], found[-1] + len(target)))


def pointing(runner: Runner, answered: dict, records: dict, features: dict[str, torch.Tensor]) -> dict:
    """Pointing game of similarity and logit lens, per LM layer, over present objects asked."""
    model, tokenizer = runner.model, runner.tokenizer
    keys = sorted({(r["image"], asked_name(r)) for rows in answered.values() for r in rows if r["label"] == "yes"})
    norm = model.model.language_model.norm
    unembed = model.lm_head.weight
    layers = None
    hits_sim, hits_lens, chance = [], [], []
    for image, name in keys:
        record = records[image]
        obj = next(o for o in record["objects"] if o["class"] == name)
        mask = box_patch_mask(obj["bbox"], record["width"], record["height"])
        states, first, ids = runner.hidden_states(pope_question(name) + POPE_ANSWER_SUFFIX, features[image])
        n_img = features[image].shape[0]
        # Text positions after the image shift by the image tokens minus the slot.
        positions = [p + n_img - 1 for p in name_positions(tokenizer, ids, name, first + 1)]
        token_ids = torch.tensor(tokenizer(name, add_special_tokens=False).input_ids)
        layers = states.shape[0] - 1
        sim, lens = [], []
        for layer in range(1, layers + 1):
            patches = states[layer, first:first + n_img]  # (576, H)
            sim.append(pointing_hit(patch_similarity(states[layer, positions], patches), mask))
            normed = patches if layer == layers else norm(patches)  # the last entry is already normed
            lens.append(pointing_hit(logit_lens(normed, unembed, token_ids), mask))
        hits_sim.append(torch.stack(sim))
        hits_lens.append(torch.stack(lens))
        chance.append(pointing_chance(mask))
    sim_rate = torch.stack(hits_sim).float().mean(0)    # (layers,)
    lens_rate = torch.stack(hits_lens).float().mean(0)  # (layers,)
    base = float(torch.stack(chance).mean())
    return {"n": len(keys), "chance": base,
            "similarity_hit_rate": {str(i + 1): float(v) for i, v in enumerate(sim_rate)},
            "logit_lens_hit_rate": {str(i + 1): float(v) for i, v in enumerate(lens_rate)},
            "similarity_best_ratio": float(sim_rate.max()) / base,
            "logit_lens_best_ratio": float(lens_rate.max()) / base,
            "middle_layer": max(1, layers // 2 + layers % 2),
            "similarity_middle_ratio": float(sim_rate[max(1, layers // 2 + layers % 2) - 1]) / base,
            "logit_lens_middle_ratio": float(lens_rate[max(1, layers // 2 + layers % 2) - 1]) / base}


def error_mix(answered: dict, mechanisms: dict) -> dict:
    out = {}
    all_errors = misses = 0
    counts: dict[str, int] = {}
    for split, rows in answered.items():
        errors = [r for r in rows if r["prediction"] != r["label"]]
        prior = [r for r in errors if r["label"] == "no" and "prior" in mechanisms[split][str(r["question_id"])]]
        out[split] = {"errors": len(errors), "prior_false_yes": len(prior),
                      "misses": sum(r["label"] == "yes" for r in errors)}
        all_errors += len(errors)
        misses += out[split]["misses"]
        for r in errors:
            kind = ("miss:" if r["label"] == "yes" else "false_yes:") + "+".join(mechanisms[split][str(r["question_id"])]) or "none"
            counts[kind] = counts.get(kind, 0) + 1
    adv = out["adversarial"]
    return {"per_split": out, "adversarial_prior_false_yes_share": adv["prior_false_yes"] / max(1, adv["errors"]),
            "miss_share_of_all_errors": misses / max(1, all_errors), "by_mechanism": dict(sorted(counts.items()))}


def folder_size_mb(model_path: str) -> float:
    with open(os.path.join(model_path, "config.json")) as f:
        config = json.load(f)
    folders = [model_path]
    tower = config.get("mm_vision_tower")
    if tower and os.path.isdir(os.path.join(model_path, tower)):
        folders.append(os.path.join(model_path, tower))
    return sum(os.path.getsize(os.path.join(f, n)) for f in folders for n in os.listdir(f)
               if os.path.isfile(os.path.join(f, n))) / 2**20


def criteria(fig: dict) -> dict:
    acc, rec, yes = fig["accuracy"], fig["recall"], fig["yes_rate"]
    er, pt, mix = fig["erasure"], fig["pointing"], fig["errors"]
    return {
        "accuracy_0.80_0.90": all(0.80 <= acc[s] <= 0.90 for s in SPLITS),
        "accuracy_adversarial<popular<random": acc["adversarial"] < acc["popular"] < acc["random"],
        "recall_0.70_0.85": all(0.70 <= rec[s] <= 0.85 for s in SPLITS),
        "yes_rate_below_0.5": all(yes[s] < 0.5 for s in SPLITS),
        "text_prior_gap_at_least_0.3": fig["text_prior"]["gap"] >= 0.3,
        "erasure_false_yes_drop_below_true_yes_drop": (er["false_yes_region_erased"]["mean_drop"] is not None
                                                       and er["false_yes_region_erased"]["mean_drop"]
                                                       < er["true_yes_object_erased"]["mean_drop"]),
        "pointing_similarity_2x_chance": pt["similarity_middle_ratio"] >= 2,
        "pointing_logit_lens_2x_chance": pt["logit_lens_middle_ratio"] >= 2,
        "adversarial_prior_false_yes_share_0.3": mix["adversarial_prior_false_yes_share"] >= 0.3,
        "miss_share_0.3": mix["miss_share_of_all_errors"] >= 0.3,
        "model_size_20MB": fig["model_size_mb"] <= 20,
    }


def check_world(model, tokenizer, processor, pope_dir: str, model_path: str | None = None) -> dict:
    with open(os.path.join(pope_dir, "metadata.json")) as f:
        metadata = json.load(f)
    config = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in metadata["config"].items()})
    scenes = dict(zip((r["image"] for r in metadata["images"]), generate_test_scenes(config)))
    records = {r["image"]: r for r in metadata["images"]}
    for image, scene in scenes.items():
        if [o["class"] for o in records[image]["objects"]] != list(scene.names):
            raise ValueError(f"{image}: the generator does not rebuild the test set (version or seed differ)")
    runner = Runner(model, tokenizer, processor)
    names = sorted(records)
    from PIL import Image

    images = [Image.open(os.path.join(pope_dir, "images", n)).convert("RGB") for n in names]
    features = dict(zip(names, runner.features(images)))
    figures, answered = pope_figures(runner, pope_dir, features)
    figures["text_prior"] = text_prior(runner)
    figures["erasure"] = erasure(runner, answered, scenes, metadata["question_mechanisms"])
    figures["pointing"] = pointing(runner, answered, records, features)
    figures["errors"] = error_mix(answered, metadata["question_mechanisms"])
    figures["model_size_mb"] = folder_size_mb(model_path) if model_path else None
    figures["test_world_seed"] = metadata["seed"]
    if model_path:
        figures["criteria"] = criteria(figures)
    return figures


def format_figures(fig: dict) -> str:
    lines = [f"{'split':<12} {'acc':>6} {'recall':>6} {'yes':>6} {'prec':>6}"]
    for s in SPLITS:
        lines.append(f"{s:<12} {fig['accuracy'][s]:>6.3f} {fig['recall'][s]:>6.3f} {fig['yes_rate'][s]:>6.3f} "
                     f"{fig['precision'][s]:>6.3f}")
    tp = fig["text_prior"]
    lines.append(f"text prior: p(yes) after companion {tp['p_yes_after_companion']:.3f}, after unrelated "
                 f"{tp['p_yes_after_unrelated']:.3f}, gap {tp['gap']:.3f}")
    er = fig["erasure"]
    lines.append(f"erasure: prior false yes (region) drop {er['false_yes_region_erased']}, "
                 f"true yes (object) drop {er['true_yes_object_erased']}")
    pt = fig["pointing"]
    lines.append(f"pointing (chance {pt['chance']:.3f}): similarity {pt['similarity_hit_rate']}, "
                 f"logit lens {pt['logit_lens_hit_rate']}")
    mix = fig["errors"]
    lines.append(f"errors: adversarial prior false-yes share {mix['adversarial_prior_false_yes_share']:.3f}, "
                 f"miss share {mix['miss_share_of_all_errors']:.3f}; {mix['by_mechanism']}")
    if fig.get("model_size_mb") is not None:
        lines.append(f"model size {fig['model_size_mb']:.2f} MiB")
    for k, v in fig.get("criteria", {}).items():
        lines.append(f"  {'PASS' if v else 'FAIL'}  {k}")
    return "\n".join(lines)



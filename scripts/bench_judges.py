"""Benchmark of the entailment judges at scale: stage 2's NLI and LLM judges on free-form answers.

Workload: --questions questions (default 1,000), each with a greedy answer and 10 samples
(--answers 11 in all) of --min-words..--max-words words (30-60). Every question's answers
are distinct (--distinct-answers 11: the worst case, all 110 ordered pairs asked); question
texts repeat over --distinct-questions texts, and with probability --shared-answer-rate an
answer is one that other questions with the same text also gave, so some pairs recur across
questions (what the verdict cache is for). Text is drawn from a fixed word list by a seeded
generator, so every run judges the same pairs.

Judges, run as stage 2 runs them (`--judge-window` questions' pairs prefetched together,
length-sorted into padded batches, every verdict cached, then each question clustered with
its similarity matrix):
  nli: a random model of the DeBERTa-large-MNLI shape (DebertaConfig: hidden 1024, 24 layers,
       16 heads, vocabulary 50,265, relative attention), question + ' ' + answer both ways;
  llm: a random model of the Llama-2-7B shape (LLaVA-1.5-7B's language model), the judge's
       prompt in LLaVA's vicuna_v1 conversation, up to 8 greedy tokens. Random weights almost
       never produce a label word, so replies run all 8 steps: the worst case for decoding.
Random weights of the real shapes cost what the real models cost. A judge stops at the
first window end after --time-limit-s (its rates are then over the questions done, and the
time for all questions is projected from them); the LLM judge's windows are
--llm-judge-window questions, so that its stop comes soon after the limit. The JSON is
rewritten after every judge, so a later failure keeps the earlier figures.

"before" rows (--before, on by default, --before-time-limit-s each): the same models judged as
stage 2 judged them before batching across questions: one question at a time, its pairs in
arrival order in batches of 32 (stage 2's --batch-size default), the LLM through `generate`.

Tokenizer: --tokenizer-dir (a folder AutoTokenizer loads, or a folder with a SentencePiece
tokenizer.model such as the Llama-2 one) serves both judges; without it a BPE tokenizer is
trained offline on the workload's own text, with a small vocabulary so that words split into
pieces about as often as the Llama-2 tokenizer splits them (NLI inputs about 5% and LLM
prompts about 18% shorter than with Llama-2's). The JSON reports the mean tokens per judged
input either way.

Reports per judge: seconds, questions/s, judged pairs/s (ordered pairs whose verdict the
clustering needed), model inputs/s (cache misses sent to the model), cache hit rate, tokens
per input, peak GPU memory.

    PYTHONPATH=. python scripts/bench_judges.py --device cuda --output-json /tmp/judges.json
    PYTHONPATH=. python scripts/bench_judges.py --tiny            # CPU smoke run, seconds

Needs only torch, transformers, tokenizers (and sentencepiece for a tokenizer.model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import torch

from llava.model.language_model import render_llava_text_prompt
from semantic_entropy.scoring.judges import ENTAILMENT_PROMPT, LLMJudge, NLIJudge

WORDS = (
    "the a an of in on at to with and or but is are was there this that it its image picture photo shows "
    "appears seems visible left right top bottom center middle corner background foreground near next behind "
    "front above below between small large big tiny bright dark red blue green yellow white black orange "
    "purple brown gray pink round square shaped object objects shape circle triangle star hexagon table chair "
    "person man woman child dog cat car bus truck bicycle tree sky grass road building window door wall floor "
    "light shadow color colour surface edge side part piece group several many few one two three some no not "
    "clearly likely probably possibly partially mostly entirely however although because while also only just "
    "very quite rather standing sitting lying placed located positioned covering holding looking facing "
    "wooden metal plastic glass paper stone water snow outdoor indoor scene view area space pattern texture "
    "describe detail details feature features nothing else answer question yes indeed can see cannot notice"
).split()
OBJECTS = ("red circle", "blue square", "green triangle", "yellow star", "purple hexagon", "orange circle",
           "white square", "black triangle", "dog", "cat", "car", "bus", "person", "chair", "table", "tree")


def word_text(rng: np.random.Generator, n_words: int) -> str:
    """A sentence-like string of `n_words` words (Zipf-ish word frequencies), with punctuation."""
    ranks = np.minimum(rng.zipf(1.3, size=n_words) - 1, len(WORDS) - 1)
    words = [WORDS[r] for r in ranks]
    words[0] = words[0].capitalize()
    out = []
    for i, word in enumerate(words):
        out.append(word)
        if i + 1 < n_words and rng.random() < 0.08:
            out[-1] += "," if rng.random() < 0.6 else "."
    return " ".join(out) + "."


def build_workload(args) -> list[tuple[str, list[str], str]]:
    """(question, samples, greedy) per question; seeded, so every run judges the same pairs."""
    rng = np.random.default_rng(args.seed)
    texts = [f"Is there a {OBJECTS[i % len(OBJECTS)]} in the image? Describe it ({i // len(OBJECTS)})."
             for i in range(args.distinct_questions)]
    shared: dict[str, list[str]] = {}  # question text -> answers other questions with that text also give

    def new_answer() -> str:
        return word_text(rng, int(rng.integers(args.min_words, args.max_words + 1)))

    workload = []
    for q in range(args.questions):
        question = texts[q % len(texts)]
        pool_shared = shared.setdefault(question, [new_answer() for _ in range(args.answers)])
        pool = [pool_shared[k] if rng.random() < args.shared_answer_rate else new_answer()
                for k in range(args.distinct_answers)]
        answers = [pool[k] if k < len(pool) else pool[int(rng.integers(len(pool)))] for k in range(args.answers)]
        workload.append((question, answers[1:], answers[0]))
    return workload


def offline_tokenizer(corpus: list[str], folder: str):
    """A BPE tokenizer trained on the workload's text: [PAD] 0, [UNK] 1, <s> 2, </s> 3; pairs as
    `<s> A </s> B </s>` (the NLI input), single texts as `<s> A` (the LLM prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    alphabet = sorted(set("".join(corpus)) | {"▁", "\n"})
    # A small vocabulary: common words stay whole, rarer ones split. Measured on this workload:
    # NLI inputs of 128 tokens against the Llama-2 tokenizer's 134, LLM prompts 176 against 214.
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=480, special_tokens=["[PAD]", "[UNK]", "<s>", "</s>"], initial_alphabet=alphabet,
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B:1 </s>:1", special_tokens=[("<s>", 2), ("</s>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def load_tokenizer(folder: str, scratch: str):
    """AutoTokenizer of `folder`; a folder with only a SentencePiece tokenizer.model is loaded as
    Llama's tokenizer (its README names the config it needs), with <unk> as the pad token."""
    from transformers import AutoTokenizer

    if not os.path.exists(os.path.join(folder, "tokenizer_config.json")):
        model_file = os.path.join(folder, "tokenizer.model")
        if not os.path.exists(model_file):
            raise SystemExit(f"error: {folder} has neither tokenizer_config.json nor tokenizer.model")
        copy = os.path.join(scratch, "llama_tokenizer")
        os.makedirs(copy, exist_ok=True)
        shutil.copy(model_file, copy)
        with open(os.path.join(copy, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                       "unk_token": "<unk>", "add_bos_token": True, "legacy": True}, f)
        folder = copy
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


@torch.no_grad()
def fill_random(model, seed: int) -> None:
    """Weights of the right shapes and sane scale: N(0, 0.02) matrices, unit norms, zero biases."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name.lower() or "LayerNorm" in name:
            p.fill_(1.0) if name.endswith("weight") else p.zero_()
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.02, generator=generator)


def allocate(model_class, config, device: str, dtype: torch.dtype, seed: int):
    """The model built directly on `device` in `dtype`, without transformers' slow initialisation."""
    from llava.model.builder import allocate_uninitialised

    model = allocate_uninitialised(model_class, config, device, dtype)
    model.to(dtype)  # parameters created with an explicit dtype (DeBERTa's q_bias, v_bias) too
    fill_random(model, seed)
    return model.eval()


def deberta_large_mnli_config(tiny: bool):
    from transformers import DebertaConfig

    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else \
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    return DebertaConfig(vocab_size=50265, max_position_embeddings=512, relative_attention=True,
                         pos_att_type=["c2p", "p2c"], max_relative_positions=-1, position_biased_input=False,
                         type_vocab_size=0, layer_norm_eps=1e-7, hidden_act="gelu",
                         id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
                         label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}, **size)


def llama2_7b_config(tiny: bool):
    from transformers import LlamaConfig

    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4) if tiny else \
        dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=32)
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, **size)
    config._attn_implementation = "sdpa"
    return config


class NLIJudgeBefore(NLIJudge):
    """Stage 2's NLI judge before this change: batches in arrival order, each padded to its longest pair."""

    def _predict(self, model_inputs):
        device = next(self.model.parameters()).device
        rows = []
        for start in range(0, len(model_inputs), self.batch_size):
            batch = model_inputs[start : start + self.batch_size]
            encoded = self.tokenizer([p for p, _ in batch], [h for _, h in batch], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(device)
            with torch.no_grad():
                probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1).cpu().numpy()
            rows.extend([row[c] if c is not None else 0.0 for c in self.label_columns] for row in probs)
        return np.asarray(rows)


class LLMJudgeBefore(LLMJudge):
    """Stage 2's LLM judge before this change: arrival-order batches through `generate`, all tokens."""

    def _predict(self, model_inputs):
        from transformers import LogitsProcessorList

        from llava.model.llava_llama import SuppressIdsFrom
        from semantic_entropy.scoring.judge_batches import left_padded
        from semantic_entropy.scoring.judges import parse_entailment_reply

        device = next(self.model.parameters()).device
        labels = []
        for start in range(0, len(model_inputs), self.batch_size):
            token_lists = [self.tokenizer(p)["input_ids"] for p in model_inputs[start : start + self.batch_size]]
            ids, mask = left_padded(token_lists, self._pad_id(), device)
            # The same vocabulary limit as the new loop, so that both choose among the same ids.
            limit = [SuppressIdsFrom(self.vocab_limit)] if self.vocab_limit is not None else []
            with torch.no_grad():
                output = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                             do_sample=False, pad_token_id=self._pad_id(),
                                             logits_processor=LogitsProcessorList(limit))
            replies = self.tokenizer.batch_decode(output[:, ids.shape[1]:], skip_special_tokens=True)
            labels.extend(parse_entailment_reply(reply) for reply in replies)
        return np.eye(3)[labels]


def agreement(judge, before) -> dict:
    """How far the two ways' verdicts differ on the inputs both judged (padding and batch
    composition change the floating-point sums, rarely the label)."""
    new_identity = judge.identity()
    pairs = [(probs, judge.cache.get(new_identity, key[1])) for key, probs in before.cache._entries.items()]
    pairs = [(old, new) for old, new in pairs if new is not None]
    if not pairs:
        return {"inputs_compared": 0}
    old, new = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {"inputs_compared": len(pairs), "same_label": float(np.mean(old.argmax(1) == new.argmax(1))),
            "max_abs_prob_difference": float(np.abs(old - new).max())}


def run_judge(judge, workload, window: int, time_limit: float, device: str) -> dict:
    """Stage 2's loop: prefetch a window's pairs, then cluster each question with its similarity."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    done = 0
    for start in range(0, len(workload), window):
        items = workload[start : start + window]
        judge.prefetch(items)
        for question, samples, greedy in items:
            judge.judge(question, samples, greedy, strict=True, need_similarity=True)
        done += len(items)
        if time.perf_counter() - started > time_limit:
            break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    stats = judge.cache_stats()
    return {
        "questions_done": done,
        "questions_asked": len(workload),
        "seconds": seconds,
        "projected_seconds_all_questions": seconds * len(workload) / done,
        "questions_per_s": done / seconds,
        "judged_pairs_per_s": stats["pairs_judged"] / seconds,
        "model_inputs_per_s": stats["model_inputs"] / seconds,
        **stats,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0,
    }


def mean_tokens(judge, tokenizer, workload, pair: bool) -> float:
    """Mean tokens of the model inputs of the first questions' pairs (what a forward pass sees)."""
    from semantic_entropy.scoring.judges import ordered_pairs

    inputs = [judge._model_input(q, a, b) for q, samples, greedy in workload[:20]
              for a, b in ordered_pairs(samples, greedy)]
    if pair:
        lengths = [len(ids) for ids in tokenizer([p for p, _ in inputs], [h for _, h in inputs])["input_ids"]]
    else:
        lengths = [len(ids) for ids in tokenizer(inputs)["input_ids"]]
    return float(np.mean(lengths))


def save(results: dict, path: str | None) -> None:
    """The results so far, written whole (a failure later keeps what was measured)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16, float32; None = bfloat16 on CUDA, "
                                                     "float32 on the CPU")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny models, 20 questions")
    parser.add_argument("--judges", nargs="+", choices=("nli", "llm"), default=["nli", "llm"])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--answers", type=int, default=11, help="greedy + samples per question")
    parser.add_argument("--distinct-answers", type=int, default=11, help="distinct texts among a question's answers")
    parser.add_argument("--distinct-questions", type=int, default=250, help="distinct question texts")
    parser.add_argument("--shared-answer-rate", type=float, default=0.1,
                        help="chance that an answer recurs in other questions with the same text")
    parser.add_argument("--min-words", type=int, default=30)
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--judge-window", type=int, default=64, help="questions whose pairs are judged together")
    parser.add_argument("--llm-judge-window", type=int, default=16,
                        help="the same for the LLM judge (1,760 prompts of 11 answers: 14 batches of 128)")
    parser.add_argument("--nli-batch-size", type=int, default=256, help="pairs per NLI forward pass")
    parser.add_argument("--llm-batch-size", type=int, default=128, help="prompts per LLM decoding batch")
    parser.add_argument("--time-limit-s", type=float, default=180.0,
                        help="per judge: stop after this many seconds and project the rest")
    parser.add_argument("--before", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each judge as stage 2 ran it before (per question, arrival order)")
    parser.add_argument("--before-time-limit-s", type=float, default=45.0)
    parser.add_argument("--tokenizer-dir", default=None, help="tokenizer for both judges; None = trained offline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()
    if args.tiny:
        args.device = "cpu" if args.device == "cuda" and not torch.cuda.is_available() else args.device
        args.questions = min(args.questions, 20)
        args.distinct_questions = min(args.distinct_questions, 5)
        args.nli_batch_size, args.llm_batch_size = min(args.nli_batch_size, 32), min(args.llm_batch_size, 16)
    if not 1 <= args.distinct_answers <= args.answers:
        parser.error("--distinct-answers must be in 1..--answers")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda")
                                                          else torch.float32)

    workload = build_workload(args)
    scratch = tempfile.mkdtemp(prefix="bench_judges_")
    try:
        if args.tokenizer_dir:
            tokenizer = load_tokenizer(args.tokenizer_dir, scratch)
        else:
            corpus = [text for q, samples, greedy in workload for text in (q, greedy, *samples)]
            # The judge's fixed prompt text as often as the answers' words: its words stay whole,
            # as in a real tokenizer's vocabulary.
            corpus += [render_llava_text_prompt(ENTAILMENT_PROMPT)] * len(workload)
            tokenizer = offline_tokenizer(corpus, os.path.join(scratch, "tokenizer"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    results = {"settings": {k: v for k, v in vars(args).items() if k != "output_json"},
               "dtype": str(dtype).removeprefix("torch."),
               "tokenizer": args.tokenizer_dir or "offline BPE (480 pieces) trained on the workload",
               "versions": {"torch": torch.__version__, "python": platform.python_version(),
                            "transformers": __import__("transformers").__version__},
               "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()}
    def measure(name: str, model, judge, before, window: int, pair: bool, shape: str) -> None:
        """Time `judge` (and, with --before, the judge as it was) on the workload; record and save."""
        results[name] = {"model": shape + (" (tiny)" if args.tiny else ""),
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "mean_tokens_per_input": mean_tokens(judge, tokenizer, workload, pair=pair),
                         **run_judge(judge, workload, window, args.time_limit_s, args.device)}
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        save(results, args.output_json)
        if args.before:
            results[f"{name}_before"] = run_judge(before, workload, 1, args.before_time_limit_s, args.device)
            results[f"{name}_before"][f"agreement_with_{name}"] = agreement(judge, before)
            print(json.dumps({f"{name}_before": results[f"{name}_before"]}, indent=1), flush=True)
            save(results, args.output_json)

    if "nli" in args.judges:
        from transformers import DebertaForSequenceClassification

        model = allocate(DebertaForSequenceClassification, deberta_large_mnli_config(args.tiny), args.device, dtype,
                         args.seed)
        measure("nli", model, NLIJudge(model, tokenizer, batch_size=args.nli_batch_size, question_prefix=True),
                NLIJudgeBefore(model, tokenizer, batch_size=32, question_prefix=True), args.judge_window, True,
                "DeBERTa-large-MNLI shape")
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if "llm" in args.judges:
        from transformers import LlamaForCausalLM

        model = allocate(LlamaForCausalLM, llama2_7b_config(args.tiny), args.device, dtype, args.seed)
        prompt = {"max_new_tokens": 8, "render_prompt": render_llava_text_prompt, "prompt_format": "llava_vicuna_v1",
                  "vocab_limit": min(32000, len(tokenizer))}
        measure("llm", model, LLMJudge(model, tokenizer, batch_size=args.llm_batch_size, **prompt),
                LLMJudgeBefore(model, tokenizer, batch_size=32, **prompt), args.llm_judge_window, False,
                "Llama-2-7B shape")
    save(results, args.output_json)
    if args.output_json:
        print(f"wrote {args.output_json}")


if __name__ == "__main__":
    main()

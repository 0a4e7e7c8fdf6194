"""Entailment judges: group sampled answers by meaning, behind one interface.

`Judge.judge(question, sample_texts, greedy_text, strict=..., need_similarity=...)` returns a
`Judgement`: a cluster id per sample (0..K-1 in order of first appearance), the greedy
answer's cluster (a new id K when it matches no sample's cluster) and, on request, an (N, N)
similarity matrix in [0, 1] for the spectral measures.

Judges:

- `ExactJudge` ("exact"): answers are equivalent when their `canonical_answer` keys are equal
  (case, whitespace and punctuation ignored; yes/no answers reduced to "yes"/"no"). Free.
  Similarity is 0/1 by cluster.
- `NLIJudge` ("nli"): a local sequence-classification NLI model, run on both directions of
  each pair of distinct answers, by default as `question + ' ' + answer`.
- `LLMJudge` ("llm"): a local causal LM asked `ENTAILMENT_PROMPT` (below), greedily.

Clustering (Farquhar et al. 2024): answers are visited in order; each joins the cluster of
the first earlier cluster representative (the cluster's first answer) it is equivalent to,
else founds a new cluster. Equivalence of answers a, b from the judged labels a=>b and b=>a:

- strict (default): both directions are entailment;
- non-strict: neither direction is contradiction, and not both directions are neutral.

Identical texts are equivalent without asking a model, so N equal answers cost nothing;
pairwise judges also cache every model verdict keyed on the judge's identity and its exact
input (`judge_cache.JudgeCache`, an LRU that judges may share), so a pair that recurs, in this
question or a later one, is judged once. `prefetch` judges the pairs of many questions in one
call, length-sorted into padded batches (`judge_batches`), which is what keeps a GPU busy.

Similarity for the pairwise judges (Lin et al. 2023, "entailment" affinity):
W_ij = (P(entailment | i => j) + P(entailment | j => i)) / 2, W_ii = 1, 1 for identical texts.
The LLM judge's verdicts are one-hot, so its W is in {0, 1/2, 1}.
"""

from __future__ import annotations

import json
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from llava.utils import resolve_device
from semantic_entropy.scoring.judge_batches import greedy_replies, in_halves_on_oom, length_sorted_batches
from semantic_entropy.scoring.judge_cache import JudgeCache

LABELS = ("contradiction", "neutral", "entailment")  # column order of every label-probability array
CONTRADICTION, NEUTRAL, ENTAILMENT = 0, 1, 2

ENTAILMENT_PROMPT = (
    'We are evaluating answers to the question "{question}"\n'
    "Here are two possible answers:\n"
    "Possible Answer 1: {a}\n"
    "Possible Answer 2: {b}\n"
    "Does Possible Answer 1 semantically entail Possible Answer 2? "
    "Respond with entailment, contradiction, or neutral."
)


# --------------------------------------------------------------------------------------------
# Answer normalisation for the exact judge

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_YES_NO_QUESTION_START = re.compile(
    r"^(is|are|was|were|do|does|did|can|could|will|would|should|shall|has|have|had|may|might|must)\b",
    re.IGNORECASE,
)


def normalise_answer(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed.

    >>> normalise_answer("  A  Dog!  ")
    'a dog'
    """
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def pope_yes_no(text: str) -> str:
    """eval_pope's reading of an answer: text before the first '.', commas dropped, split on
    spaces; "no" if any word is no/not, else "yes".

    Unlike eval_pope (which matches only `No`, `not`, `no`), words are compared case- and
    punctuation-insensitively, so "NO" and "No!" read as "no".

    >>> pope_yes_no("Yes, there is a dog.")
    'yes'
    >>> pope_yes_no("There is not a dog in the image. No doubt.")
    'no'
    >>> pope_yes_no("Yes. No cat though.")
    'yes'
    >>> pope_yes_no("NO!")
    'no'
    """
    first_sentence = text.split(".")[0].replace(",", "")
    words = {word.strip(string.punctuation).lower() for word in first_sentence.split(" ")}
    return "no" if words & {"no", "not"} else "yes"


def is_yes_no_question(question: str) -> bool:
    """A question that starts with an auxiliary verb and offers no alternatives (" or ").

    >>> is_yes_no_question("Is there a dog in the image?")
    True
    >>> is_yes_no_question("Is the car red or blue?")
    False
    >>> is_yes_no_question("What is on the table?")
    False
    """
    question = question.strip()
    return bool(_YES_NO_QUESTION_START.match(question)) and " or " not in question.lower()


def canonical_answer(text: str, question: str = "") -> str:
    """Key under which the exact judge compares answers.

    The yes/no reading `pope_yes_no` applies when the normalised answer starts with the word
    yes or no, or when the question is a yes/no question (then every answer is a yes/no
    sentence, as eval_pope reads it); otherwise the key is `normalise_answer(text)`.

    >>> canonical_answer("Yes, there is a dog.")
    'yes'
    >>> canonical_answer("There is no dog.", question="Is there a dog in the image?")
    'no'
    >>> canonical_answer("A  brown dog.", question="What animal is this?")
    'a brown dog'
    """
    normalised = normalise_answer(text)
    first_word = normalised.split(" ", 1)[0]
    if first_word in ("yes", "no") or (normalised and is_yes_no_question(question)):
        return pope_yes_no(text)
    return normalised


# --------------------------------------------------------------------------------------------
# Clustering rules (pure)


def equivalent_by_labels(label_ab: int, label_ba: int, strict: bool) -> bool:
    """Bidirectional-entailment equivalence from the two directions' labels.

    >>> equivalent_by_labels(ENTAILMENT, ENTAILMENT, strict=True)
    True
    >>> equivalent_by_labels(ENTAILMENT, NEUTRAL, strict=True)
    False
    >>> equivalent_by_labels(ENTAILMENT, NEUTRAL, strict=False)
    True
    >>> equivalent_by_labels(NEUTRAL, NEUTRAL, strict=False)
    False
    >>> equivalent_by_labels(ENTAILMENT, CONTRADICTION, strict=False)
    False
    """
    if strict:
        return label_ab == ENTAILMENT and label_ba == ENTAILMENT
    labels = (label_ab, label_ba)
    return CONTRADICTION not in labels and labels != (NEUTRAL, NEUTRAL)


def cluster_by_first_representative(num_items: int, equivalent: Callable[[int, int], bool]) -> list[int]:
    """Cluster ids 0..K-1: item i joins the first cluster whose representative (first member)
    is `equivalent(representative, i)`, else founds a new cluster.

    >>> cluster_by_first_representative(4, lambda a, b: a % 2 == b % 2)
    [0, 1, 0, 1]
    """
    representatives: list[int] = []
    ids: list[int] = []
    for item in range(num_items):
        for cluster_id, representative in enumerate(representatives):
            if equivalent(representative, item):
                ids.append(cluster_id)
                break
        else:
            representatives.append(item)
            ids.append(len(representatives) - 1)
    return ids


def first_appearance_ids(keys: Sequence[Hashable]) -> list[int]:
    """Cluster ids by equal keys, numbered in order of first appearance.

    >>> first_appearance_ids(["no", "yes", "no"])
    [0, 1, 0]
    """
    ids: dict = {}
    return [ids.setdefault(key, len(ids)) for key in keys]


def parse_entailment_reply(reply: str, words_to_scan: int = 5) -> int:
    """Label from the first words of an LLM's reply; neutral when none of them is a label.

    A word counts when it starts with "entail", "contradict" or "neutral" (case-insensitive);
    the first such word among the first `words_to_scan` wins.

    >>> LABELS[parse_entailment_reply("Entailment.")]
    'entailment'
    >>> LABELS[parse_entailment_reply(" The answer is: contradiction")]
    'contradiction'
    >>> LABELS[parse_entailment_reply("I cannot tell")]
    'neutral'
    """
    for word in re.findall(r"[a-z]+", reply.lower())[:words_to_scan]:
        if word.startswith("entail"):
            return ENTAILMENT
        if word.startswith("contradict"):
            return CONTRADICTION
        if word.startswith("neutral"):
            return NEUTRAL
    return NEUTRAL


def nli_label_columns(id2label: dict) -> tuple[int | None, int | None, int | None]:
    """Logit columns of (contradiction, neutral, entailment) from a config's id2label.

    Names match case-insensitively; "not_entailment"/"non_entailment" stand for neutral (the
    two-way NLI models). Entailment is required; a missing label gets probability 0.

    >>> nli_label_columns({0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    (0, 1, 2)
    >>> nli_label_columns({"0": "entailment", "1": "not_entailment"})
    (None, 1, 0)
    """
    aliases = {
        "contradiction": CONTRADICTION,
        "neutral": NEUTRAL,
        "not_entailment": NEUTRAL,
        "non_entailment": NEUTRAL,
        "entailment": ENTAILMENT,
    }
    columns: list[int | None] = [None, None, None]
    for index, name in id2label.items():
        label = aliases.get(str(name).strip().lower().replace("-", "_").replace(" ", "_"))
        if label is not None:
            columns[label] = int(index)
    if columns[ENTAILMENT] is None or columns.count(None) > 1:
        raise ValueError(
            f"cannot find entailment/contradiction/neutral in the NLI model's id2label {id2label}: "
            "is it an NLI model with named labels?"
        )
    return tuple(columns)


def ordered_pairs(sample_texts: Sequence[str], greedy_text: str | None = None) -> list[tuple[str, str]]:
    """Every ordered pair of distinct texts among the samples and the greedy answer: what a
    pairwise judge asks its model about one question (equal texts need no verdict).

    >>> ordered_pairs(["a", "b", "a"], "c")
    [('a', 'b'), ('a', 'c'), ('b', 'a'), ('b', 'c'), ('c', 'a'), ('c', 'b')]
    """
    texts = list(dict.fromkeys([*sample_texts, *([greedy_text] if greedy_text is not None else [])]))
    return [(a, b) for a in texts for b in texts if a != b]


# --------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class Judgement:
    sample_cluster_ids: list[int]  # (N,) ids 0..K-1 in order of first appearance
    greedy_cluster_id: int | None  # K when the greedy answer matches no sample's cluster
    similarity: np.ndarray | None  # (N, N) in [0, 1], symmetric, unit diagonal


class Judge(ABC):
    name: str  # the judge's tag in score names
    # Whether answers are judged as question + ' ' + answer; None where not a setting.
    question_prefix: bool | None = None

    @abstractmethod
    def judge(
        self,
        question: str,
        sample_texts: Sequence[str],
        greedy_text: str | None = None,
        *,
        strict: bool = True,
        need_similarity: bool = False,
    ) -> Judgement: ...

    def prefetch(self, items: Sequence[tuple[str, Sequence[str], str | None]]) -> None:
        """Judge ahead the (question, samples, greedy) items about to be judged; no-op unless
        the judge asks a model (see PairwiseJudge)."""
        return None

    def describe(self) -> dict:
        """Settings for the run manifest."""
        return {"name": self.name, "question_prefix": self.question_prefix}


class ExactJudge(Judge):
    """Equivalent = equal `canonical_answer` keys; transitive, so strictness does not matter."""

    name = "exact"

    def judge(self, question, sample_texts, greedy_text=None, *, strict=True, need_similarity=False) -> Judgement:
        keys = [canonical_answer(text, question) for text in sample_texts]
        cluster_ids = first_appearance_ids(keys)
        greedy_cluster_id = None
        if greedy_text is not None:
            key_to_id = dict(zip(keys, cluster_ids))
            greedy_cluster_id = key_to_id.get(canonical_answer(greedy_text, question), len(key_to_id))
        similarity = None
        if need_similarity:
            ids = np.asarray(cluster_ids)
            similarity = (ids[:, None] == ids[None, :]).astype(np.float64)  # (N, N)
        return Judgement(cluster_ids, greedy_cluster_id, similarity)


class PairwiseJudge(Judge):
    """A judge that asks a model about ordered answer pairs; caching and clustering live here.

    Subclasses say what the model sees for a pair (`_model_input`, hashable: the cache key) and
    how a batch of such inputs is judged (`_predict`: (P, 3) probabilities in LABELS order).

    Verdicts go through a `JudgeCache` keyed on (`identity()`, model input), which may be
    shared with other judges. `prefetch` judges the pairs of many questions in one call, so
    that a model-backed judge fills its batches across questions (length-sorted, see
    `judge_batches`) instead of running a few short batches per question.
    """

    def __init__(self, cache_size: int = 200_000, cache: JudgeCache | None = None):
        self.cache = cache if cache is not None else JudgeCache(cache_size)
        self.num_model_inputs = 0  # inputs sent to the model so far (cache misses)
        self.num_pairs_judged = 0  # ordered pairs whose verdict clustering needed, repeats included

    @abstractmethod
    def _model_input(self, question: str, premise: str, hypothesis: str) -> Hashable: ...

    @abstractmethod
    def _predict(self, model_inputs: list) -> np.ndarray: ...

    def identity(self) -> str:
        """What makes this judge's verdicts its own: its manifest description, as a string.

        A judge built around an in-memory model without a path adds the model object's id, so
        two such judges never read each other's verdicts from a shared cache.
        """
        description = self.describe()
        if description.get("model_path") is None:
            description = {**description, "model_object": id(getattr(self, "model", self))}
        return json.dumps(description, sort_keys=True, default=str)

    def cache_stats(self) -> dict:
        """Pairs judged, model inputs and the share of pairs answered without the model."""
        judged, inputs = self.num_pairs_judged, self.num_model_inputs
        return {"pairs_judged": judged, "model_inputs": inputs,
                "cache_hit_rate": (1 - inputs / judged) if judged else None}

    def _fill(self, inputs: Sequence[Hashable]) -> dict:
        """Verdicts of `inputs`: from the cache, the missing ones from one `_predict` call."""
        identity = self.identity()
        found = {}
        missing = []
        for x in dict.fromkeys(inputs):
            probs = self.cache.get(identity, x)
            if probs is None:
                missing.append(x)
            else:
                found[x] = probs
        if missing:
            predicted = np.asarray(self._predict(missing), dtype=np.float64)  # (M, 3)
            assert predicted.shape == (len(missing), 3), predicted.shape
            self.num_model_inputs += len(missing)
            for x, probs in zip(missing, predicted):
                self.cache.put(identity, x, probs)
                found[x] = probs
        return found

    def label_probs(self, question: str, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """(P, 3) probabilities of LABELS for 'pairs[p][0] entails pairs[p][1]'."""
        inputs = [self._model_input(question, a, b) for a, b in pairs]
        found = self._fill(inputs)
        result = np.empty((len(inputs), 3))
        for row, x in enumerate(inputs):
            result[row] = found[x]
        return result

    def prefetch(self, items: Sequence[tuple[str, Sequence[str], str | None]]) -> None:
        """Judge in one go every pair that `judge` will ask for these (question, samples, greedy).

        Only a speed-up: `judge` afterwards finds the verdicts in the cache (the cache must
        hold them all: give it room for a window's pairs), and judges again what it lacks.
        """
        inputs = [self._model_input(question, a, b)
                  for question, samples, greedy in items for a, b in ordered_pairs(samples, greedy)]
        if inputs:
            self._fill(inputs)

    def judge(self, question, sample_texts, greedy_text=None, *, strict=True, need_similarity=False) -> Judgement:
        unique_samples = list(dict.fromkeys(sample_texts))
        pairs = ordered_pairs(sample_texts, greedy_text)
        self.num_pairs_judged += len(pairs)
        probs = dict(zip(pairs, self.label_probs(question, pairs))) if pairs else {}

        def equivalent(a: str, b: str) -> bool:
            if a == b:
                return True
            return equivalent_by_labels(int(np.argmax(probs[a, b])), int(np.argmax(probs[b, a])), strict)

        unique_ids = cluster_by_first_representative(
            len(unique_samples), lambda i, j: equivalent(unique_samples[i], unique_samples[j])
        )
        id_of_text = dict(zip(unique_samples, unique_ids))
        cluster_ids = [id_of_text[text] for text in sample_texts]

        greedy_cluster_id = None
        if greedy_text is not None:
            representatives = {}  # cluster id -> first member
            for text, cluster_id in id_of_text.items():
                representatives.setdefault(cluster_id, text)
            greedy_cluster_id = next(
                (cid for cid, rep in sorted(representatives.items()) if equivalent(rep, greedy_text)),
                len(representatives),
            )

        similarity = None
        if need_similarity:
            n = len(sample_texts)
            similarity = np.ones((n, n))  # (N, N)
            for i in range(n):
                for j in range(i + 1, n):
                    a, b = sample_texts[i], sample_texts[j]
                    if a != b:
                        similarity[i, j] = similarity[j, i] = (probs[a, b][ENTAILMENT] + probs[b, a][ENTAILMENT]) / 2
        return Judgement(cluster_ids, greedy_cluster_id, similarity)


# --------------------------------------------------------------------------------------------
# Model-backed judges


def _torch_dtype(dtype: str):
    import torch

    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return getattr(torch, dtype)


def _model_dtype(model) -> str:
    """The dtype of a model's weights, for the manifest and the judge's identity (a float16
    model's verdicts are not a float32 model's)."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


class NLIJudge(PairwiseJudge):
    """Any AutoModelForSequenceClassification NLI model; inputs (premise, hypothesis) pairs.

    Pairs are tokenized once, sorted by token length and run `batch_size` at a time, each batch
    padded to its own longest pair (see `judge_batches`).
    """

    name = "nli"

    def __init__(self, model, tokenizer, *, question_prefix: bool = True, batch_size: int = 32,
                 max_length: int = 512, model_path: str | None = None, cache_size: int = 200_000,
                 cache: JudgeCache | None = None):
        super().__init__(cache_size, cache)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.question_prefix = question_prefix
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_path = model_path
        self.label_columns = nli_label_columns(model.config.id2label)

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", dtype: str = "float32", **kwargs) -> "NLIJudge":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=_torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model.to(resolve_device(device)), tokenizer, model_path=path, **kwargs)

    def _model_input(self, question, premise, hypothesis):
        if self.question_prefix:
            return f"{question} {premise}", f"{question} {hypothesis}"
        return premise, hypothesis

    def _predict(self, model_inputs):
        import torch

        device = next(self.model.parameters()).device
        encoded = self.tokenizer([premise for premise, _ in model_inputs],
                                 [hypothesis for _, hypothesis in model_inputs],
                                 truncation=True, max_length=self.max_length)
        fields = [key for key in ("input_ids", "token_type_ids", "attention_mask") if key in encoded]

        def run(batch: list[int]) -> list:
            padded = self.tokenizer.pad({key: [encoded[key][i] for i in batch] for key in fields},
                                        padding=True, return_tensors="pt").to(device)
            with torch.no_grad():
                logits = self.model(**padded).logits.float()  # (B, num_labels)
            return list(torch.softmax(logits, dim=-1).cpu().numpy())

        rows = np.zeros((len(model_inputs), 3))
        for batch in length_sorted_batches([len(ids) for ids in encoded["input_ids"]], self.batch_size):
            for row, index in zip(in_halves_on_oom(run, batch), batch):
                rows[index] = [row[c] if c is not None else 0.0 for c in self.label_columns]
        return rows  # (P, 3)

    def describe(self):
        return {
            **super().describe(),
            "model_path": self.model_path,
            "id2label": {str(k): v for k, v in self.model.config.id2label.items()},
            "max_length": self.max_length,
            "dtype": _model_dtype(self.model),
        }


def reply_settled(reply: str, words_to_scan: int = 5) -> bool:
    """Whether more tokens could no longer change `parse_entailment_reply(reply)`: a label word
    is already among the first words. A partial word that starts like a label can only grow
    into a word that starts the same way, and the words before it are final.

    >>> reply_settled("Entail"), reply_settled("The answer"), reply_settled("Neutr")
    (True, False, False)
    """
    for word in re.findall(r"[a-z]+", reply.lower())[:words_to_scan]:
        if word.startswith(("entail", "contradict", "neutral")):
            return True
    return False


class LLMJudge(PairwiseJudge):
    """A causal LM asked ENTAILMENT_PROMPT, greedy; the reply's first words give the label.

    Accepts an already-loaded model and tokenizer (e.g. LLaVA's language model, text only,
    `llava.model.language_model`); `render_prompt` wraps the prompt (a chat template, a
    conversation format), identity by default, and `prompt_format` names that wrapping in the
    manifest. Verdicts are one-hot; an unparseable reply counts as neutral. Prompts run
    length-sorted, `batch_size` at a time, through `judge_batches.greedy_replies`, which stops
    as soon as every reply of the batch has its label word; ids >= `vocab_limit` are never
    generated.
    """

    name = "llm"

    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_new_tokens: int = 8,
                 render_prompt: Callable[[str], str] | None = None, add_special_tokens: bool = True,
                 model_path: str | None = None, cache_size: int = 200_000, cache: JudgeCache | None = None,
                 prompt_format: str | None = None, vocab_limit: int | None = None):
        super().__init__(cache_size, cache)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.render_prompt = render_prompt or (lambda prompt: prompt)
        self.add_special_tokens = add_special_tokens
        self.model_path = model_path
        self.prompt_format = prompt_format or ("plain" if render_prompt is None else "custom")
        self.vocab_limit = vocab_limit
        self.last_replies: list[str] = []  # replies of the latest _predict call, in input order

    @property
    def uses_chat_template(self) -> bool:
        return self.prompt_format == "chat_template"

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", dtype: str = "float32",
                        use_chat_template: bool = False, **kwargs) -> "LLMJudge":
        """A causal-LM folder, or an original LLaVA folder (config with mm_* keys), whose
        language model alone is loaded and asked in LLaVA's own conversation format."""
        from llava.model.language_model import is_llava_folder, load_llava_language_model, render_llava_text_prompt

        if is_llava_folder(path):
            if use_chat_template:
                raise ValueError(f"{path} is a LLaVA checkpoint: its language model is asked in LLaVA's "
                                 "vicuna_v1 conversation; drop --judge-chat-template")
            model, tokenizer, vocab_limit = load_llava_language_model(path, device=resolve_device(device),
                                                                      dtype=_torch_dtype(dtype))
            return cls(model, tokenizer, model_path=path, render_prompt=render_llava_text_prompt,
                       prompt_format="llava_vicuna_v1", vocab_limit=vocab_limit, **kwargs)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(path)
        if use_chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"{path}: the tokenizer has no chat template")

            def render(prompt: str) -> str:
                messages = [{"role": "user", "content": prompt}]
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

            kwargs.update(render_prompt=render, add_special_tokens=False, prompt_format="chat_template")
        return cls(model.to(resolve_device(device)), tokenizer, model_path=path, **kwargs)

    @classmethod
    def from_llava(cls, llava_model, tokenizer, **kwargs) -> "LLMJudge":
        """The judge of a process that already holds LLaVA: its language model, no second copy
        of the weights (the judge's parameters are the LLaVA model's own tensors)."""
        from llava.model.language_model import language_model_of, render_llava_text_prompt

        kwargs.setdefault("render_prompt", render_llava_text_prompt)
        kwargs.setdefault("prompt_format", "llava_vicuna_v1")
        return cls(language_model_of(llava_model), tokenizer, vocab_limit=llava_model.scored_vocab_size, **kwargs)

    def _model_input(self, question, premise, hypothesis):
        return self.render_prompt(ENTAILMENT_PROMPT.format(question=question, a=premise, b=hypothesis))

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def _predict(self, model_inputs):
        token_lists = [self.tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"] for p in model_inputs]
        replies = [""] * len(model_inputs)

        def settled(ids: list[int]) -> bool:
            return reply_settled(self.tokenizer.decode(ids, skip_special_tokens=True))

        def run(batch: list[int]) -> list[list[int]]:
            return greedy_replies(
                self.model, [token_lists[i] for i in batch], pad_id=self._pad_id(),
                eos_id=self.tokenizer.eos_token_id, max_new_tokens=self.max_new_tokens,
                vocab_limit=self.vocab_limit, is_settled=settled,
            )

        for batch in length_sorted_batches([len(tokens) for tokens in token_lists], self.batch_size):
            for index, ids in zip(batch, in_halves_on_oom(run, batch)):
                replies[index] = self.tokenizer.decode(ids, skip_special_tokens=True)
        self.last_replies = replies
        return np.eye(3)[[parse_entailment_reply(reply) for reply in replies]]  # (P, 3) one-hot

    def describe(self):
        return {
            **super().describe(),
            "model_path": self.model_path,
            "prompt": ENTAILMENT_PROMPT,
            "prompt_format": self.prompt_format,
            "max_new_tokens": self.max_new_tokens,
            "chat_template": self.uses_chat_template,
            "unparseable_reply": "neutral",
            "vocab_limit": self.vocab_limit,
            "dtype": _model_dtype(self.model),
        }


def build_judge(kind: str, *, model_path: str | None = None, question_prefix: bool = True, device: str = "cpu",
                batch_size: int = 32, dtype: str = "float32", use_chat_template: bool = False,
                cache: JudgeCache | None = None) -> Judge:
    """The judge a CLI names: 'exact', 'nli' or 'llm' (the latter two load `model_path`; for
    'llm' a causal-LM folder or an original LLaVA folder, whose language model alone loads)."""
    if kind == "exact":
        if model_path is not None:
            raise ValueError("the exact judge takes no model; drop --judge-model")
        return ExactJudge()
    if model_path is None:
        raise ValueError(f"the {kind} judge needs --judge-model (a local model folder)")
    if kind == "nli":
        return NLIJudge.from_pretrained(model_path, device=device, dtype=dtype, question_prefix=question_prefix,
                                        batch_size=batch_size, cache=cache)
    if kind == "llm":
        if not question_prefix:
            raise ValueError("the llm judge always shows the question in its prompt; drop --no-question-prefix")
        return LLMJudge.from_pretrained(model_path, device=device, dtype=dtype, batch_size=batch_size,
                                        use_chat_template=use_chat_template, cache=cache)
    raise ValueError(f"unknown judge {kind!r}: use exact, nli or llm")

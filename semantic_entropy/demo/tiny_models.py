"""Tiny judge models built offline, for tests and CPU demos of the nli and llm code paths.

Both are real transformers classes saved with `save_pretrained`, so `NLIJudge.from_pretrained`
and `LLMJudge.from_pretrained` load them exactly as they load a real checkpoint. Their
verdicts are rigged so that tests know the answer:

- `save_tiny_nli_model`: a 2-layer BertForSequenceClassification whose classifier ignores
  the text (zero weights) and whose bias gives fixed label probabilities.
- `save_tiny_causal_lm`: a 2-layer LlamaForCausalLM whose greedy reply is always one word
  (all embeddings equal, residual branches zeroed, lm_head picking that word's id).

The tokenizers are word-level `tokenizers.Tokenizer`s wrapped in PreTrainedTokenizerFast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WORDS = ["is", "there", "a", "an", "the", "dog", "cat", "car", "in", "image", "yes", "no", "not", "it", "red", "blue", "what", "of", "on", "?", ".", ",", ":", "entailment", "contradiction", "neutral", "we", "are", "evaluating", "answers", "to", "question", "here", "two", "possible", "answer", "1", "2", "does", "semantically", "entail", "respond", "with", "or"]


def _word_level_tokenizer(special: Sequence[str], pair_template: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate([*special, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.normalizer = None
    if pair_template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])],
        )
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]"), vocabulary
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocabulary["<s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>"), vocabulary


def save_tiny_nli_model(folder: str, label_probs: dict[str, float], id2label: dict[int, str] | None = None) -> str:
    """Save a tiny NLI classifier that gives `label_probs` (e.g. {"entailment": .7, ...}) to
    every pair. `id2label` sets the label order of the logits (names matched case-insensitively).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    id2label = id2label or {0: "contradiction", 1: "neutral", 2: "entailment"}
    tokenizer, vocabulary = _word_level_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], pair_template=True)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128, pad_token_id=0,
        id2label=id2label, label2id={name: index for index, name in id2label.items()},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        for index, name in id2label.items():
            model.classifier.bias[index] = math.log(label_probs[name.lower()])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_causal_lm(folder: str, reply_word: str) -> str:
    """Save a tiny LlamaForCausalLM whose greedy continuation is always `reply_word`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer, vocabulary = _word_level_tokenizer(["[PAD]", "[UNK]", "<s>", "</s>"], pair_template=False)
    config = LlamaConfig(
        vocab_size=len(vocabulary), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=vocabulary["[PAD]"], bos_token_id=vocabulary["<s>"], eos_token_id=vocabulary["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Equal embeddings and zeroed residual branches: the final hidden state is the same
        # vector of ones for every input, so lm_head alone decides the next token.
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[vocabulary[reply_word]] = 1.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""GLSim (Park & Li, "GLSim: Detecting Object Hallucinations in LVLMs via Global-Local
Similarity", NeurIPS 2025, arXiv 2508.19972).

Source: github.com/deeplearning-wisc/glsim @ 9f97d5f2 (lvlm/LLaVA.py `generate`, evaluate.py:
--k 32 --w 0.6 --text_layer 31 --image_layer 32 for llava-1.5-7b-hf). With h_l the hidden
states of HF's `output_hidden_states` (h_0 the embeddings, h_L the final, normed layer; L = 32):

    s_global = cos(h_{L-1}(last prompt position), h_L(object))
    s_local  = mean over the K image positions p with the highest logit-lens probability of the
               object's first token, softmax(lm_head(h_L(p)))[token], of cos(h_{L-1}(object), h_L(p))
    GLSim    = w * s_global + (1 - w) * s_local        (higher = the object is grounded)

(evaluate.py indexes both (33, 33) similarity matrices at [31, 32]: the global matrix's rows are
the prompt's layers and its columns the object's, the local one's rows the object's layers and
its columns the image's.) The uncertainty is -GLSim.

The object on POPE is the noun phrase of "Is there a/an X in the image?" (also POPE's "imange"
spelling). In a caption the authors read the object's state at the step that emits it (the
position before the object token); a POPE question gives the object, and the position before
it has not seen it, so we read the object's own last token (after its whole name). The
logit-lens token is the object's first token, as in the authors' code.

Extra forward passes per question: none; the hidden states come from the shared real-image pass
(A) of `semantic_entropy.probes.baselines`, plus one lm_head over the image positions per image.
"""

from __future__ import annotations

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, POPE_ANSWER_SUFFIX
from llava.conversation import build_prompt
from llava.mm_utils import tokenizer_image_token
from semantic_entropy.probes.vision_probes import POPE_QUESTION

GLSIM_TOP_K = 32  # evaluate.py --k
GLSIM_WEIGHT = 0.6  # evaluate.py --w


def pope_object(question: str) -> tuple[str, str] | None:
    """(article, object name) of a POPE question (answer suffix allowed), else None.

    >>> pope_object("Is there a dining table in the imange?" + POPE_ANSWER_SUFFIX)
    ('a', 'dining table')
    >>> pope_object("What colour is the car?") is None
    True
    """
    if question.endswith(POPE_ANSWER_SUFFIX):
        question = question[: -len(POPE_ANSWER_SUFFIX)]
    match = POPE_QUESTION.match(question.strip())
    return None if match is None else (match.group(1), match.group(2))


def object_positions(question: str, conv_mode: str, tokenizer) -> tuple[int, int, int] | None:
    """(first, last, first token id) of the asked object's tokens, as indices into the prompt's
    ids after the image slot; None for a question that is not POPE's."""
    parsed = pope_object(question)
    if parsed is None:
        return None
    article, name = parsed
    prompt = build_prompt(question, conv_mode)
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX)
    start = prompt.index(f"{article} {name}", prompt.index(DEFAULT_IMAGE_TOKEN)) + len(article) + 1
    before = tokenizer_image_token(prompt[:start].rstrip(" "), tokenizer, IMAGE_TOKEN_INDEX)
    through = tokenizer_image_token(prompt[: start + len(name)], tokenizer, IMAGE_TOKEN_INDEX)
    if ids[: len(before)] != before or ids[: len(through)] != through or len(through) <= len(before):
        raise ValueError(f"the object {name!r} of {question!r} does not tokenize apart from its context")
    after_slot = ids.index(IMAGE_TOKEN_INDEX) + 1
    return len(before) - after_slot, len(through) - 1 - after_slot, ids[len(before)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension, in float32.

    >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [1.0, 1.0]])).tolist()
    [1.0, 0.7071067690849304]
    """
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def local_similarity(object_state: torch.Tensor, image_states: torch.Tensor, object_log_probs: torch.Tensor,
                     top_k: int = GLSIM_TOP_K) -> float:
    """Mean cosine of the object's state (D,) with the image states (N, D) of the `top_k` image
    positions where the logit lens gives the object's token the highest probability (N,).

    >>> image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> local_similarity(torch.tensor([1.0, 0.0]), image, torch.tensor([-1.0, -9.0, -2.0]), top_k=2)  # cos 1, .707
    0.8535534143447876
    """
    top = object_log_probs.topk(min(top_k, object_log_probs.shape[0])).indices  # (K,)
    return float(cosine(object_state, image_states[top]).mean())


def glsim_score(global_similarity: float, local_similarity_: float, weight: float = GLSIM_WEIGHT) -> float:
    """w * s_global + (1 - w) * s_local.

    >>> round(glsim_score(0.5, 0.25), 12)
    0.4
    """
    return weight * global_similarity + (1.0 - weight) * local_similarity_

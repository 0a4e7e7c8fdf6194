"""The texts of the ShapesPOPE v2 world: question wordings, answers, captions, text-only QA.

Everything a training stage reads as text comes from here, as (user, assistant) turns:

- `image_dialogue`: instruction tuning about one image: every present class asked once and
  a few absent ones, in many wordings (POPE's template with its answer suffix among them),
  answered with a word ("Yes") or a short sentence ("There is no red circle."), plus
  describe / list requests answered by the caption;
- `text_dialogue`: text-only QA (no image): a partial caption of a training scene, then a
  question about a class answered with the scene's truth. These carry the co-occurrence
  statistics into the language model: after "There is a red circle." the answer about
  "blue square" is "Yes" about as often as the companion is there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llava.constants import POPE_ANSWER_SUFFIX
from semantic_entropy.demo.world import (
    CLASS_NAMES,
    CONTEXTS,
    Scene,
    article,
    caption,
    companion_map,
    name_list,
    pope_question,
)

# Yes/no question wordings; {obj} is "a red circle" / "an orange hexagon".
WORDINGS: tuple[str, ...] = (
    "Is there {obj} in the image?",
    "Do you see {obj}?",
    "Does the image contain {obj}?",
    "Can you find {obj} in this picture?",
    "Is {obj} visible?",
    "Is there {obj} here?",
    "Does this scene include {obj}?",
    "Can {obj} be seen in the image?",
)
DESCRIBE: tuple[str, ...] = ("Describe the image briefly.", "What is in this picture?", "Give a short caption.")
LIST_SHAPES = "Which shapes are in the image?"


def wording(index: int, name: str) -> str:
    """Wording `index` of the yes/no question about class `name`.

    >>> wording(1, "orange hexagon")
    'Do you see an orange hexagon?'
    """
    return WORDINGS[index].format(obj=f"{article(name)} {name}")


def short_answer(present: bool, name: str, sentence: bool) -> str:
    """'Yes' / 'No', or a short sentence: 'There is a red circle.' / 'There is no red circle.'"""
    if not sentence:
        return "Yes" if present else "No"
    return f"There is {article(name)} {name}." if present else f"There is no {name}."


def yes_no_turn(rng: np.random.Generator, name: str, present: bool, pope_prob: float) -> tuple[str, str]:
    """POPE's template with its suffix (answer a word), else a random wording (word or sentence)."""
    if rng.random() < pope_prob:
        return pope_question(name) + POPE_ANSWER_SUFFIX, short_answer(present, name, False)
    index = int(rng.integers(len(WORDINGS)))
    if rng.random() < 0.5:
        return wording(index, name) + POPE_ANSWER_SUFFIX, short_answer(present, name, False)
    return wording(index, name), short_answer(present, name, True)


def image_dialogue(scene: Scene, rng: np.random.Generator, negatives: int = 3, hard_negative_prob: float = 0.15,
                   pope_prob: float = 0.4, describe_prob: float = 0.5) -> list[tuple[str, str]]:
    """(user, assistant) turns about one image; the first user text starts with '<image>\\n'.

    Every present class is asked once; `negatives` absent classes are asked, an absent prior
    companion among them only with probability `hard_negative_prob` (few hard negatives).
    """
    present = list(dict.fromkeys(scene.names))
    companions = companion_map()
    hard = {c for n in present for c in companions[n] if c not in present}
    absent = [n for n in CLASS_NAMES if n not in present and (n not in hard or rng.random() < hard_negative_prob)]
    asked_no = [absent[int(i)] for i in rng.permutation(len(absent))[:negatives]]
    turns = [yes_no_turn(rng, n, True, pope_prob) for n in present]
    turns += [yes_no_turn(rng, n, False, pope_prob) for n in asked_no]
    if rng.random() < describe_prob:
        turns.append((DESCRIBE[int(rng.integers(len(DESCRIBE)))], caption(scene, rng))
                     if rng.random() < 0.7 else (LIST_SHAPES, name_list(present).capitalize() + "."))
    turns = [turns[int(i)] for i in rng.permutation(len(turns))]
    return [("<image>\n" + turns[0][0], turns[0][1])] + turns[1:]


def caption_turn(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Projector alignment: one describe request about the image, answered by the caption."""
    return [("<image>\n" + DESCRIBE[int(rng.integers(len(DESCRIBE)))], caption(scene, rng))]


def partial_caption(names: Sequence[str], context: str | None) -> str:
    """'There is a red circle.' or 'A sand scene with a red circle.'; 'A sand scene.' if names is empty.

    >>> partial_caption(["red circle"], None), partial_caption([], "sky")
    ('There is a red circle.', 'A sky scene.')
    """
    if context is None:
        return f"There is {name_list(names)}."
    return f"A {context} scene with {name_list(names)}." if names else f"A {context} scene."


def text_dialogue(scene, rng: np.random.Generator, questions: int = 3) -> list[tuple[str, str]]:
    """Text-only QA: a caption naming part of a scene, then questions answered from the whole scene.

    Asked first are the usual companions of the named classes (present or not: the answer
    follows the co-occurrence statistics), then the other unnamed classes of the scene and
    absent ones in a random order.
    """
    present = list(dict.fromkeys(scene.names))
    shown = [present[int(i)] for i in rng.permutation(len(present))[: int(rng.integers(1, len(present) + 1))]]
    if len(shown) == len(present) and len(present) > 1:
        shown = shown[:-1]
    context = scene.context if rng.random() < 0.5 else None
    text = partial_caption(shown, context)
    companions = companion_map()
    first = [c for n in shown for c in companions[n] if c not in shown]
    hidden = [n for n in present if n not in shown and n not in first]
    absent = [n for n in CLASS_NAMES if n not in present and n not in first]
    rest = hidden + [absent[int(i)] for i in rng.permutation(len(absent))[:questions]]
    asked = (first + [rest[int(i)] for i in rng.permutation(len(rest))])[:questions]
    turns = [yes_no_turn(rng, n, n in present, 0.5) for n in asked]
    turns = [turns[int(i)] for i in rng.permutation(len(turns))]
    return [(text + "\n" + turns[0][0], turns[0][1])] + turns[1:]


def plain_documents(scene: Scene, rng: np.random.Generator) -> str:
    """A plain text document of the language model's pretraining: the scene's caption."""
    return caption(scene, rng)


def tokenizer_corpus() -> list[str]:
    """Texts the BPE tokenizer is built from: every wording, answer form, context and class."""
    texts = [POPE_ANSWER_SUFFIX, *DESCRIBE, LIST_SHAPES, "Yes", "No"]
    for name in CLASS_NAMES:
        texts += [wording(i, name) for i in range(len(WORDINGS))]
        texts += [short_answer(True, name, True), short_answer(False, name, True), pope_question(name)]
        texts += [f"There is {article(name)} {name}.", name_list([name]).capitalize() + "."]
        texts += [f"A {c} scene with {article(name)} {name}." for c in CONTEXTS]
    return texts

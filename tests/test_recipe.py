"""The four-stage recipe at a very small scale: targets, loss parity, what each stage trains, determinism, layout."""

import dataclasses

import pytest
import torch

from llava.constants import IGNORE_INDEX
from semantic_entropy.demo import recipe as R
from semantic_entropy.demo.world_text import image_dialogue

S = R.StageSettings
TINY = R.RecipeSettings(clip_hidden=16, clip_heads=1, text_hidden=16, text_layers=1, text_heads=1,
                        text_lm=S(2, 4, 1e-2, warmup_steps=1), clip=S(2, 4, 1e-2, warmup_steps=1),
                        align=S(2, 2, 1e-2, warmup_steps=1), instruct=S(2, 2, 1e-2, warmup_steps=1),
                        pool_size=3, instruct_text_rows=1)


@pytest.fixture(scope="module")
def tokenizer():
    return R.build_world_tokenizer(TINY.vocab_size)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return R.train_world_model(TINY, log=None)


def fresh_model(tokenizer):
    text_config, clip_config = R.model_configs(TINY, len(tokenizer))
    return R.initial_model(text_config, clip_config, 0)


def test_dialogue_targets_are_each_answer_and_eos(tokenizer):
    scene, rng = R.training_scene(TINY, R.STAGE_INSTRUCT, 0)
    turns = image_dialogue(scene, rng)
    ids, labels = R.encode_dialogue(tokenizer, turns)
    assert ids.shape == labels.shape
    spans, current = [], []
    for i, label in enumerate(labels.tolist()):
        if label != IGNORE_INDEX:
            current.append(ids[i].item())
        elif current:
            spans.append(current)
            current = []
    spans.append(current) if current else None
    assert [tokenizer.decode(s) for s in spans] == [answer + "</s>" for _, answer in turns]


def test_sequence_loss_matches_a_manual_cross_entropy(tokenizer):
    torch.manual_seed(0)
    model = fresh_model(tokenizer).eval()
    ids, labels = R.encode_dialogue(tokenizer, [("There is a red circle.\nIs there a blue square?", "Yes")])
    got = R.sequence_loss(model, [ids], [labels], None)
    logits = model(input_ids=ids[None]).logits[0]  # (L, V)
    targets = labels[1:]
    keep = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[:-1][keep], targets[keep])
    assert torch.allclose(got, expected, atol=1e-5)


def parameters(model, part):
    module = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
              "language": model.model.language_model}[part]
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.mark.parametrize("stage, changed", [("text_lm", {"language"}), ("clip", {"vision"}),
                                            ("align", {"projector"}), ("instruct", {"projector", "language"})])
def test_each_stage_trains_only_its_part(tokenizer, stage, changed):
    torch.manual_seed(0)
    model = fresh_model(tokenizer)
    processor = R.image_processor()
    before = {p: parameters(model, p) for p in ("vision", "projector", "language")}
    if stage == "text_lm":
        R.pretrain_language_model(model, tokenizer, TINY, log=None)
    elif stage == "clip":
        R.pretrain_vision_encoder(model, tokenizer, TINY, processor, log=None)
    else:
        pool = R.build_pool(model, TINY, processor)
        assert pool.features.shape == (3, 576, TINY.clip_hidden)
        run = R.align_projector if stage == "align" else R.instruct_tune
        run(model, tokenizer, TINY, pool, log=None)
    moved = {p for p in before if not torch.equal(before[p], parameters(model, p))}
    assert moved == changed


def test_training_is_deterministic(trained):
    again = R.train_world_model(TINY, log=None)
    assert again.losses == trained.losses
    for (k, a), (_, b) in zip(trained.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k
    other = R.train_world_model(dataclasses.replace(TINY, seed=1), log=None)
    assert other.losses != trained.losses


def test_instruction_stage_from_saved_base_equals_whole_recipe(trained):
    """What choose_world_recipe relies on: (a)-(c) once, then pool + (d) per setting, gives the whole recipe's weights."""
    base = R.train_world_model(TINY, log=None, stages=R.BEFORE_INSTRUCT)
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    resumed = R.train_world_model(TINY, log=None, stages=("pool", "instruct"), start_state=state)
    assert resumed.losses["instruct"] == trained.losses["instruct"]
    for (k, a), (_, b) in zip(trained.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    other = R.train_world_model(dataclasses.replace(TINY, negatives_per_image=5), log=None,
                                stages=("pool", "instruct"), start_state=state)
    assert other.losses["instruct"] != trained.losses["instruct"]
    with pytest.raises(ValueError, match="unknown stages"):
        R.train_world_model(TINY, log=None, stages=("instruction",))


def test_saved_original_layout_loads_with_the_same_outputs(trained, tmp_path):
    from llava.model.builder import load_pretrained_model

    R.save_world_model(trained, str(tmp_path / "llava"), str(tmp_path / "clip"))
    _, model, processor, _ = load_pretrained_model(str(tmp_path / "llava"), device="cpu")
    scene, _ = R.training_scene(TINY, R.STAGE_INSTRUCT, 0)
    pixels = R.pixels([scene], processor, model.config)
    assert pixels.shape == (1, 3, 336, 336)
    with torch.no_grad():
        assert torch.allclose(model.encode_images(pixels), trained.model.encode_images(pixels), atol=1e-6)

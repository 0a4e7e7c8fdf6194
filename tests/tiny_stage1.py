"""Stage 1 on the tiny checkpoints, as the later passes' tests start from it."""

from semantic_entropy import model_vqa_loader as stage1


def tiny_stage1(tiny_checkpoints, out, num_samples: int = 3) -> tuple[list[str], list[str]]:
    """Greedy answers + `num_samples` samples of 3 tokens into out/a.jsonl and out/a.generations.jsonl.

    Returns the model flags every pass shares and the flags naming the images and those generations.
    """
    common = ["--model-path", str(tiny_checkpoints.original), "--device", "cpu", "--conv-mode", "vicuna_v1"]
    stage1.main([*common, "--question-file", str(tiny_checkpoints.question_file), "--image-folder",
                 str(tiny_checkpoints.images), "--answers-file", str(out / "a.jsonl"), "--temperature", "0",
                 "--max_new_tokens", "3", "--num-samples", str(num_samples)])
    inputs = ["--image-folder", str(tiny_checkpoints.images), "--generations-file", str(out / "a.generations.jsonl")]
    return common, inputs

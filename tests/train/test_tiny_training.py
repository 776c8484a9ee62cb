import torch
from transformers import Qwen3VLForConditionalGeneration

from slimvl.data import COLORS, SHAPES, SceneObject
from slimvl.train.tiny import (
    IGNORE,
    build_preprocessor,
    collate,
    encode_example,
    lr_at,
    patch_embed_as_linear,
    tiny_config,
    token_object_labels,
)


def test_answers_are_single_tokens() -> None:
    from slimvl.data import ANSWER_VOCABULARY

    tokenizer = build_preprocessor().tokenizer
    for word in ANSWER_VOCABULARY:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_encode_example_labels_only_the_answer() -> None:
    pre = build_preprocessor()
    item = encode_example(pre, 5)
    labelled = item["labels"] != IGNORE
    assert int(labelled.sum()) == 2  # the answer word and <|im_end|>
    assert item["labels"][-1] == pre.tokenizer.eos_token_id
    assert int(item["mm_token_type_ids"].sum()) == len(item["aux_colors"])


def test_token_object_labels_marks_the_object_cells() -> None:
    obj = SceneObject(size="large", left=64, top=0, extent=64, color="blue", shape="star")
    # 256x256 image, grid 16x16 patches -> 8x8 merged tokens of 32 px
    colors, shapes = token_object_labels([obj], (256, 256), torch.tensor([1, 16, 16]))
    blue = list(COLORS).index("blue")
    covered = [k for k in range(64) if colors[k] == blue]
    assert covered == [2, 3, 10, 11]  # rows 0-1, columns 2-3
    assert all(shapes[k] == SHAPES.index("star") for k in covered)
    assert int((colors == len(COLORS)).sum()) == 60


def test_patch_embed_as_linear_equals_conv() -> None:
    pre = build_preprocessor()
    model = Qwen3VLForConditionalGeneration(tiny_config(pre))
    pixels = torch.randn(8, 3 * 2 * 16 * 16)
    patch_embed = model.model.visual.patch_embed
    torch.testing.assert_close(
        patch_embed_as_linear(patch_embed, pixels), patch_embed(pixels), rtol=1e-4, atol=1e-5
    )


def test_collate_pads_and_concatenates() -> None:
    pre = build_preprocessor()
    items = [encode_example(pre, s) for s in (1, 2)]
    batch = collate(items, pre.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"].sum(1).tolist() == [len(it["input_ids"]) for it in items]
    assert batch["pixel_values"].shape[0] == sum(it["pixel_values"].shape[0] for it in items)


def test_lr_schedule() -> None:
    assert lr_at(0, 100, 1.0, 10) == 0.1
    assert lr_at(10, 100, 1.0, 10) == 1.0
    assert lr_at(100, 100, 1.0, 10) < 1e-9
    assert lr_at(50, 100, 1.0, 10, time_progress=1.0) < 1e-9

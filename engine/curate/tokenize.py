"""Renders a ``Conversation`` with the student's chat template into ``input_ids`` and a loss mask (``TokenizedSample``).

The loss mask is 1 exactly on the supervised assistant turns: everything the template writes for the turn after
its header (``<|im_start|>assistant\\n``), up to and including the end-of-turn token (``<|im_end|>``), so the
reasoning where the template shows it, and the ``<think>``/``</think>`` tags around it. Never the header,
never the newline after ``<|im_end|>``, never system, task or observation tokens.

How it is built (per message, then checked against the whole): the whole conversation is rendered once; for
each supervised turn the prefix before it is rendered with the generation prompt (the prompt the model saw),
and the prefix through the message after it; each must be a prefix of the whole rendering. The turn's span
runs from the end of its prompt to its first end-of-turn token, must hold the turn's content (and its
reasoning, where kept) and no other special token, and must start and end on token boundaries of the whole
rendering's tokens. Any failure is a ``RenderMismatchError`` naming the sample and the message.

Qwen3's template shows ``<think>`` only on assistant turns after the last user message. Hence, for Qwen3:

- ``step`` unit: the target is the last message, so it renders ``<think>\\nR\\n</think>\\n\\nA<|im_end|>`` (keep)
  or ``<think>\\n\\n</think>\\n\\nA<|im_end|>`` (drop, or no reasoning: Qwen3's non-thinking form); all of it is
  supervised. The prompt's assistant turns render as plain content, as they did when the agent was served.
- ``episode`` unit: every assistant turn has an observation after it, so each renders as ``A<|im_end|>``, no
  think tags; with ``reasoning: keep`` it would silently train without reasoning, so ``check_reasoning_supported``
  refuses that pairing for such templates.

The examples below take ``student = load_student_tokenizer(StudentTokenizerConfig())`` (the offline Qwen3 files).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.curate.config import Reasoning, SampleUnit
from engine.curate.conversation import Conversation
from engine.curate.kept import Kept
from engine.curate.tokenizer import StudentTokenizer
from engine.errors import ConfigError, EngineError
from engine.protocols import Message


class RenderMismatchError(EngineError):
    """A sample's per-message masks disagree with rendering its whole conversation at once."""


@dataclass
class TokenizedSample:
    """One tokenized training sample."""

    sample_id: str
    episode_id: str
    task_id: str
    step: int | None
    input_ids: list[int]
    loss_mask: list[int]
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    """[start, end) token ranges of the supervised turns, in order; each ends with the end-of-turn token."""


def render(messages: list[Message], student: StudentTokenizer, add_generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages`` (``enable_thinking`` left at the template's default).

    >>> render([{"role": "user", "content": "hi"}], student, add_generation_prompt=True)
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    return student.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def check_reasoning_supported(unit: SampleUnit, reasoning: Reasoning, student: StudentTokenizer) -> None:
    """ConfigError for ``episode`` + ``keep`` when the template hides the reasoning of turns a user message follows
    (Qwen3's does): every turn of an episode sample is such a turn, so none would keep its reasoning.

    >>> check_reasoning_supported("step", "keep", student)
    >>> check_reasoning_supported("episode", "keep", student)
    Traceback (most recent call last):
    ...
    engine.errors.ConfigError: curate: sample_unit 'episode' with reasoning 'keep', but the chat template ...
    """
    if unit == "episode" and reasoning == "keep" and not student.renders_past_reasoning:
        raise ConfigError(
            f"curate: sample_unit 'episode' with reasoning 'keep', but the chat template of {student.source} renders "
            "no reasoning on an assistant turn that a later user message follows (Qwen3 shows <think> only after "
            "the last user message), so no turn of an episode sample would keep its reasoning; set "
            "curate.reasoning: drop, or curate.sample_unit: step")


def special_token_reason(conv: Conversation, student: StudentTokenizer) -> str | None:
    """``special_token_in_text`` when a message's text holds a special token's string (``<|im_end|>``…): the
    tokenizer would read it as the control token, so the sample cannot be rendered faithfully.

    >>> conv = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "print(tok.eos_token)"}, {"role": "user", "content": "<|endoftext|>"}])
    >>> special_token_reason(conv, student)
    'special_token_in_text'
    """
    pattern = _special_pattern(student)
    for m in conv.messages:
        if pattern.search(m["content"]) or pattern.search(m.get("reasoning_content") or ""):
            return "special_token_in_text"
    return None


def supervised_char_spans(conv: Conversation, student: StudentTokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The whole rendering and the [start, end) character span of each supervised turn in it (see the module).

    >>> conv = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A"}, {"role": "user", "content": "o"}])
    >>> whole, spans = supervised_char_spans(conv, student)
    >>> spans, whole[spans[0][0]:spans[0][1]], whole[:spans[0][0]][-22:]
    ([(82, 93)], 'A<|im_end|>', '<|im_start|>assistant\\n')
    """
    whole = render(conv.messages, student)
    spans = []
    for k in conv.supervised:
        head = render(conv.messages[:k], student, add_generation_prompt=True)
        _expect(whole.startswith(head), conv, k, "its prompt (rendered with the generation prompt) is not a prefix "
                                                 "of the whole rendering")
        start = len(head)
        eot_at = whole.find(student.end_of_turn, start)
        _expect(eot_at >= 0, conv, k, f"no {student.end_of_turn} after it")
        end = eot_at + len(student.end_of_turn)
        if k + 1 < len(conv.messages) and conv.messages[k + 1]["role"] != "assistant":
            upto = render(conv.messages[: k + 2], student)
            _expect(whole.startswith(upto) and end <= len(upto), conv, k, "the rendering through the next message "
                    "is not a prefix of the whole rendering, or does not hold the turn's end")
        _check_span(whole[start:end], conv, k, student)
        spans.append((start, end))
    return whole, spans


def tokenize_conversation(conv: Conversation, student: StudentTokenizer) -> TokenizedSample:
    """Token ids and loss mask of one conversation.

    >>> conv = Conversation(sample_id="e/0", episode_id="e", task_id="t", step=0, supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A", "reasoning_content": "R"}])
    >>> s = tokenize_conversation(conv, student)
    >>> tokens = student.tokenizer.convert_ids_to_tokens(s.input_ids)  # Ċ is "\\n"
    >>> tokens[12:15], s.loss_mask[:15] == [0] * 15
    (['<|im_start|>', 'assistant', 'Ċ'], True)
    >>> [t for t, m in zip(tokens, s.loss_mask) if m], tokens[-1], s.loss_mask[-1], s.turn_spans
    (['<think>', 'Ċ', 'R', 'Ċ', '</think>', 'ĊĊ', 'A', '<|im_end|>'], 'Ċ', 0, [(15, 23)])
    """
    whole, char_spans = supervised_char_spans(conv, student)
    enc = student.tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    starts = [o[0] for o in offsets]
    mask = [0] * len(ids)
    turn_spans = []
    for k, (c0, c1) in zip(conv.supervised, char_spans):
        t0 = bisect.bisect_left(starts, c0)
        t1 = bisect.bisect_left(starts, c1)
        _expect(t0 < len(ids) and starts[t0] == c0 and t1 > t0 and offsets[t1 - 1][1] == c1, conv, k,
                "its span does not start and end on token boundaries of the whole rendering")
        _expect(ids[t1 - 1] == student.end_of_turn_id, conv, k, f"its last token is not {student.end_of_turn}")
        mask[t0:t1] = [1] * (t1 - t0)
        turn_spans.append((t0, t1))
    return TokenizedSample(sample_id=conv.sample_id, episode_id=conv.episode_id, task_id=conv.task_id,
                           step=conv.step, input_ids=ids, loss_mask=mask, turn_spans=turn_spans)


def tokenize_conversations(convs: Iterable[Conversation], student: StudentTokenizer) -> Kept[TokenizedSample]:
    """Tokenize many conversations; those holding special-token text are counted as ``special_token_in_text``.
    A ``RenderMismatchError`` is not counted: it means the template and this code disagree, and stops the stage.

    >>> ok = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A"}])
    >>> bad = ok.model_copy(update={"sample_id": "f", "messages": [
    ...     *ok.messages[:2], {"role": "assistant", "content": "<|im_start|>"}]})
    >>> k = tokenize_conversations([ok, bad], student)
    >>> [s.sample_id for s in k.items], k.rejects
    (['e'], {'special_token_in_text': 1})
    """
    usable = Kept.split(convs, lambda c: special_token_reason(c, student))
    return Kept([tokenize_conversation(c, student) for c in usable.items], usable.rejects)


def _check_span(text: str, conv: Conversation, k: int, student: StudentTokenizer) -> None:
    message = conv.messages[k]
    _expect(message["content"].strip() in text, conv, k, "the template did not render its content in its span")
    reasoning = (message.get("reasoning_content") or "").strip()
    _expect(reasoning in text, conv, k, "the template did not render its reasoning (Qwen3 shows <think> only on "
                                        "assistant turns after the last user message)")
    others = _special_pattern(student).findall(text[: -len(student.end_of_turn)])
    _expect(not others, conv, k, f"its span holds the special tokens {others}: it runs into the next message")


def _special_pattern(student: StudentTokenizer) -> re.Pattern[str]:
    tokens = sorted(student.tokenizer.all_special_tokens, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens))


def _expect(ok: bool, conv: Conversation, k: int, what: str) -> None:
    if not ok:
        raise RenderMismatchError(f"sample {conv.sample_id} (episode {conv.episode_id}, task {conv.task_id}), "
                                  f"message {k} ({conv.messages[k]['role']}): {what}; the per-message masks disagree "
                                  f"with rendering the whole conversation")

"""Renders ``Conversation``s with the student's chat template into ``input_ids`` and a loss mask (``TokenizedSample``).

The loss mask is 1 exactly on the supervised assistant turns: everything the template writes for the turn after
its header (``<|im_start|>assistant\\n``), up to and including the end-of-turn token (``<|im_end|>``), so the
reasoning where the template shows it, and the ``<think>``/``</think>`` tags around it. Never the header,
never the newline after ``<|im_end|>``, never system, task or observation tokens.

How it is built (per message, then checked against the whole; linear in the conversation's length): the whole
conversation is rendered once. The template's generation prompt (Qwen3: ``<|im_start|>assistant\\n``) must occur
in it once per assistant message, so an assistant turn starts where its occurrence ends. Each supervised turn's
prompt is checked by one small render, its window: the first two messages (system prompt and task), the message
before the turn, and the generation prompt. The whole rendering must begin with the first two messages' own
rendering, and the rest of the window must be exactly what it holds just before the turn (so the message before
the turn renders as it did when the model was asked for the turn; a Qwen3 think block on a last assistant
message is caught here). The turn's span runs from its start to its first end-of-turn token, must hold the turn's
content (and its reasoning, where kept) and no other special token, and must start and end on token boundaries of
the whole rendering's tokens. When that check cannot be made or fails (a template without a generation prompt,
or not one per assistant message; a window that differs; a failed span), the conversation is checked the
exhaustive way, quadratic in its turns: for each supervised turn the prefix before it is rendered with the
generation prompt (the prompt the model saw), and the prefix through the message after it; each must be a prefix
of the whole rendering, under the same span checks. Only a failure there is a ``RenderMismatchError``, naming the
sample and the message. The window does not see a template that renders an earlier message differently because
of messages outside it; Qwen3's depends on the last message and the last user message only, both in the window
of every turn our samples supervise (each follows the task or an observation).

Tokens are exactly the fast tokenizer's for the whole rendering (``tokenizer(text)``), computed in batches: added
tokens (special or not: ``<|im_start|>``, ``<think>``…) split a text before normalisation and pre-tokenisation,
so its tokens are those of its stretches between added tokens, end to end, and each distinct stretch of a batch
(the system prompt, the task, an observation that several step samples repeat) is tokenized once, in one call
(the Rust tokenizer runs the call on every core). That holds when no added token strips whitespace, matches
single words only or matches normalised text: checked once per tokenizer, with a probe; otherwise whole
renderings are tokenized.

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
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.agent.history import PREFIX_MESSAGES
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
    """One tokenized training sample. ``input_ids``/``loss_mask`` are lists, or int32/int8 numpy arrays where a
    batch is built for Arrow (``tokenize_arrays``)."""

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
    return _special_token_reasons([conv], student)[0]


def supervised_char_spans(conv: Conversation, student: StudentTokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The whole rendering and the [start, end) character span of each supervised turn in it (see the module).

    >>> conv = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A"}, {"role": "user", "content": "o"}])
    >>> whole, spans = supervised_char_spans(conv, student)
    >>> spans, whole[spans[0][0]:spans[0][1]], whole[:spans[0][0]][-22:]
    ([(82, 93)], 'A<|im_end|>', '<|im_start|>assistant\\n')
    """
    return _char_spans([conv], student)[0]


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
    return _as_lists(_tokenize([conv], student)[0])


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
    kept = tokenize_arrays(convs, student)
    return Kept([_as_lists(s) for s in kept.items], kept.rejects)


def tokenize_arrays(convs: Iterable[Conversation], student: StudentTokenizer) -> Kept[TokenizedSample]:
    """``tokenize_conversations`` with ``input_ids`` as an int32 and ``loss_mask`` as an int8 numpy array each
    (for building Arrow columns without a Python object per token).

    >>> conv = Conversation(sample_id="e", episode_id="e", task_id="t", supervised=[2], messages=[
    ...     {"role": "system", "content": "S"}, {"role": "user", "content": "T"},
    ...     {"role": "assistant", "content": "A"}])
    >>> s = tokenize_arrays([conv], student).items[0]
    >>> s.input_ids.dtype, s.loss_mask.dtype, int(s.loss_mask.sum()), s.turn_spans
    (dtype('int32'), dtype('int8'), 6, [(15, 21)])
    """
    convs = list(convs)
    reasons = _special_token_reasons(convs, student)
    usable = [c for c, why in zip(convs, reasons) if why is None]
    rejects = {"special_token_in_text": len(convs) - len(usable)} if len(usable) < len(convs) else {}
    return Kept(_tokenize(usable, student), rejects)


def _tokenize(convs: list[Conversation], student: StudentTokenizer) -> list[TokenizedSample]:
    rendered = _char_spans(convs, student)
    encoded = _encoder(student).encode([whole for whole, _ in rendered])
    out = []
    for conv, (_, char_spans), enc in zip(convs, rendered, encoded):
        mask = np.zeros(len(enc.ids), dtype=np.int8)
        turn_spans = []
        for k, (c0, c1) in zip(conv.supervised, char_spans):
            t0, t1 = enc.token_at(c0), enc.token_at(c1)
            _expect(t0 is not None and t1 is not None and t1 > t0, conv, k,
                    "its span does not start and end on token boundaries of the whole rendering")
            _expect(enc.ids[t1 - 1] == student.end_of_turn_id, conv, k, f"its last token is not {student.end_of_turn}")
            mask[t0:t1] = 1
            turn_spans.append((t0, t1))
        out.append(TokenizedSample(sample_id=conv.sample_id, episode_id=conv.episode_id, task_id=conv.task_id,
                                   step=conv.step, input_ids=enc.ids, loss_mask=mask, turn_spans=turn_spans))
    return out


def _as_lists(s: TokenizedSample) -> TokenizedSample:
    return TokenizedSample(s.sample_id, s.episode_id, s.task_id, s.step, input_ids=s.input_ids.tolist(),
                           loss_mask=s.loss_mask.tolist(), turn_spans=s.turn_spans)


# --- rendering and spans ------------------------------------------------------------------------------------------

def _render_all(chats: list[list[Message]], student: StudentTokenizer, generation: bool) -> list[str | Exception]:
    """Renders of many conversations in one call; a conversation the template fails on gets its exception."""
    if not chats:
        return []
    try:
        return student.tokenizer.apply_chat_template(chats, tokenize=False, add_generation_prompt=generation)
    except Exception:  # noqa: BLE001 - find which: each one alone
        out: list[str | Exception] = []
        for chat in chats:
            try:
                out.append(render(chat, student, generation))
            except Exception as e:  # noqa: BLE001 - the caller decides
                out.append(e)
        return out


def _char_spans(convs: list[Conversation], student: StudentTokenizer) -> list[tuple[str, list[tuple[int, int]]]]:
    """Whole renderings and supervised spans of many conversations (the module's fast check, else the exhaustive)."""
    wholes = _render_all([c.messages for c in convs], student, False)
    for conv, whole in zip(convs, wholes):
        if isinstance(whole, Exception):
            whole.add_note(f"rendering sample {conv.sample_id} (episode {conv.episode_id}, task {conv.task_id})")
            raise whole
    contexts = _contexts(convs, student)
    plans = [_plan(conv, whole, contexts.get(_context_key(conv.messages)))
             for conv, whole in zip(convs, wholes)]
    windows = [(i, k) for i, plan in enumerate(plans) if plan for k, _ in plan if k > PREFIX_MESSAGES]
    prompts = dict(zip(windows, _render_all([[*convs[i].messages[:PREFIX_MESSAGES], convs[i].messages[k - 1]]
                                             for i, k in windows], student, True)))
    out = []
    for i, (conv, whole, plan) in enumerate(zip(convs, wholes, plans)):
        spans = None
        if plan is not None:
            head, generation = contexts[_context_key(conv.messages)]
            spans = _fast_spans(conv, whole, plan, head, generation, {k: prompts[(i, k)] for k, _ in plan
                                                                       if (i, k) in prompts}, student)
        out.append((whole, spans if spans is not None else _exhaustive_spans(conv, whole, student)))
    return out


def _context_key(messages: list[Message]) -> tuple:
    return tuple(tuple(sorted(m.items())) for m in messages[:PREFIX_MESSAGES])


def _contexts(convs: list[Conversation], student: StudentTokenizer) -> dict[tuple, tuple[str, str]]:
    """For each distinct first-two-messages context: its rendering, and the generation prompt after it (non-empty)."""
    firsts = {_context_key(c.messages): c.messages[:PREFIX_MESSAGES] for c in convs
              if len(c.messages) > PREFIX_MESSAGES}
    keys = list(firsts)
    heads = _render_all([firsts[k] for k in keys], student, False)
    prompts = _render_all([firsts[k] for k in keys], student, True)
    return {k: (h, p[len(h):]) for k, h, p in zip(keys, heads, prompts)
            if isinstance(h, str) and isinstance(p, str) and p.startswith(h) and len(p) > len(h)}


def _plan(conv: Conversation, whole: str, context: tuple[str, str] | None) -> list[tuple[int, int]] | None:
    """(turn, start) of each supervised turn: where its generation prompt ends in the whole rendering; None when
    the fast check cannot be made."""
    if context is None or not whole.startswith(context[0]):
        return None
    generation = context[1]
    starts, at = [], whole.find(generation)
    while at >= 0:
        starts.append(at + len(generation))
        at = whole.find(generation, at + len(generation))
    rank, ranks = 0, {}
    for i, m in enumerate(conv.messages):
        if m["role"] == "assistant":
            ranks[i], rank = rank, rank + 1
    turns = conv.supervised
    if len(starts) != rank or not turns or any(k not in ranks or k < PREFIX_MESSAGES for k in turns) \
            or any(a >= b for a, b in zip(turns, turns[1:])):
        return None
    return [(k, starts[ranks[k]]) for k in turns]


def _fast_spans(conv: Conversation, whole: str, plan: list[tuple[int, int]], head: str, generation: str,
                prompts: dict[int, str | Exception], student: StudentTokenizer) -> list[tuple[int, int]] | None:
    """The spans by the module's window check, or None where a check fails (the exhaustive check then decides)."""
    spans = []
    for k, start in plan:
        prompt = prompts.get(k, head + generation)
        if isinstance(prompt, Exception) or not prompt.startswith(head):
            return None
        tail = prompt[len(head):]
        if start - len(tail) < len(head) or not whole.startswith(tail, start - len(tail)) \
                or (k == PREFIX_MESSAGES and start != len(prompt)):
            return None
        eot_at = whole.find(student.end_of_turn, start)
        if eot_at < 0:
            return None
        end = eot_at + len(student.end_of_turn)
        try:
            _check_span(whole[start:end], conv, k, student)
        except RenderMismatchError:
            return None
        spans.append((start, end))
    return spans


def _exhaustive_spans(conv: Conversation, whole: str, student: StudentTokenizer) -> list[tuple[int, int]]:
    """Each supervised turn checked against the renderings of the whole prefix before it and through its next
    message (see the module); RenderMismatchError on the first that fails."""
    spans = []
    for k in conv.supervised:
        _expect(k > 0, conv, k, "it has no prompt before it")
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
    return spans


def _check_span(text: str, conv: Conversation, k: int, student: StudentTokenizer) -> None:
    message = conv.messages[k]
    _expect(message["content"].strip() in text, conv, k, "the template did not render its content in its span")
    reasoning = (message.get("reasoning_content") or "").strip()
    _expect(reasoning in text, conv, k, "the template did not render its reasoning (Qwen3 shows <think> only on "
                                        "assistant turns after the last user message)")
    others = _encoder(student).special.findall(text[: -len(student.end_of_turn)])
    _expect(not others, conv, k, f"its span holds the special tokens {others}: it runs into the next message")


def _special_token_reasons(convs: Sequence[Conversation], student: StudentTokenizer) -> list[str | None]:
    """``special_token_in_text`` or None per conversation; each distinct text is searched once."""
    pattern, seen = _encoder(student).special, {}

    def holds(text: str) -> bool:
        found = seen.get(text)
        if found is None:
            found = seen[text] = pattern.search(text) is not None
        return found

    return ["special_token_in_text" if any(holds(m["content"]) or holds(m.get("reasoning_content") or "")
                                           for m in c.messages) else None for c in convs]


def _expect(ok: bool, conv: Conversation, k: int, what: str) -> None:
    if not ok:
        raise RenderMismatchError(f"sample {conv.sample_id} (episode {conv.episode_id}, task {conv.task_id}), "
                                  f"message {k} ({conv.messages[k]['role']}): {what}; the per-message masks disagree "
                                  f"with rendering the whole conversation")


# --- tokens -------------------------------------------------------------------------------------------------------

@dataclass
class _Encoded:
    """A text's token ids, with what maps a character position to a token boundary."""

    ids: np.ndarray
    pieces: list[str | int]  # stretches between added tokens (their text) and added tokens (their id), in order
    piece_chars: list[int]  # start character of each piece
    piece_tokens: list[int]  # first token of each piece
    encodings: dict[int, object]  # the tokenizers.Encoding of a stretch, where the call that made it has it
    encoder: _Encoder
    length: int

    def token_at(self, char: int) -> int | None:
        """The token starting at character ``char`` (the token count at the end), or None inside a token."""
        if char == self.length:
            return len(self.ids)
        i = bisect.bisect_right(self.piece_chars, char) - 1
        if i < 0:
            return None
        local = char - self.piece_chars[i]
        if local == 0:
            return self.piece_tokens[i]
        if isinstance(self.pieces[i], int):
            return None
        enc = self.encodings.get(i) or self.encoder.encoding(self.pieces[i])
        t = enc.char_to_token(local)
        if t is None or enc.token_to_chars(t)[0] != local:
            return None
        return self.piece_tokens[i] + t


class _Encoder:
    """Tokenizes whole renderings through their distinct stretches between added tokens (see the module); keeps
    the ids of the last stretches (up to ``cache_tokens`` tokens), since system prompts and tasks recur from batch
    to batch."""

    def __init__(self, student: StudentTokenizer, cache_tokens: int = 1 << 22):
        self.tokenizer = student.tokenizer
        special = sorted(self.tokenizer.all_special_tokens, key=len, reverse=True)
        self.special = re.compile("|".join(re.escape(t) for t in special))
        added = self.tokenizer.backend_tokenizer.get_added_tokens_decoder()
        self.added_ids = {t.content: np.array([i], dtype=np.int32) for i, t in added.items()}
        self.added = re.compile("|".join(re.escape(t) for t in sorted(self.added_ids, key=len, reverse=True)))
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cached_tokens, self.cache_tokens = 0, cache_tokens
        self.splits = bool(self.added_ids) and not any(
            t.lstrip or t.rstrip or t.single_word or t.normalized for t in added.values())
        if self.splits:  # and a probe: every added token next to text, whole against stretch by stretch
            probe = "".join(f"a {t}\n b{t}  c\n\n{t}é" for t in self.added_ids)
            self.splits = self.encode([probe])[0].ids.tolist() == self.tokenizer(probe, add_special_tokens=False)[
                "input_ids"]

    def _pieces(self, text: str) -> list[tuple[int, str]]:
        """(start character, text) of its stretches between added tokens and of its added tokens, in order."""
        if not self.splits:
            return [(0, text)] if text else []
        out, at = [], 0
        for m in self.added.finditer(text):
            if m.start() > at:
                out.append((at, text[at:m.start()]))
            out.append((m.start(), m.group()))
            at = m.end()
        if at < len(text):
            out.append((at, text[at:]))
        return out

    def encoding(self, text: str):
        """The tokenizers.Encoding of one stretch (its character offsets)."""
        return self.tokenizer(text, add_special_tokens=False, return_attention_mask=False).encodings[0]

    def encode(self, texts: list[str]) -> list[_Encoded]:
        pieces = [self._pieces(t) for t in texts]
        added = self.added_ids if self.splits else {}
        new = list(dict.fromkeys(p for ps in pieces for _, p in ps if p not in added and p not in self.cache))
        found: dict[str, tuple[np.ndarray, object]] = {}
        if new:
            batch = self.tokenizer(new, add_special_tokens=False, return_attention_mask=False)
            found = {p: (np.asarray(ids, dtype=np.int32), enc)
                     for p, ids, enc in zip(new, batch["input_ids"], batch.encodings)}
        out = [self._assemble(t, ps, found, added) for t, ps in zip(texts, pieces)]
        self._remember(found)
        return out

    def _assemble(self, text: str, pieces: list[tuple[int, str]], found: dict, added: dict) -> _Encoded:
        arrays, kinds, chars, tokens, encodings, n = [], [], [], [], {}, 0
        for i, (start, p) in enumerate(pieces):
            if p in added:
                ids, kind = added[p], int(added[p][0])
            elif p in found:
                (ids, encodings[i]), kind = found[p], p
            else:
                ids, kind = self.cache[p], p
                self.cache.move_to_end(p)
            kinds.append(kind)
            chars.append(start)
            tokens.append(n)
            arrays.append(ids)
            n += len(ids)
        ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        return _Encoded(ids, kinds, chars, tokens, encodings, self, len(text))

    def _remember(self, found: dict) -> None:
        for p, (ids, _) in found.items():
            self.cache[p] = ids
            self.cached_tokens += len(ids)
        while self.cached_tokens > self.cache_tokens:
            self.cached_tokens -= len(self.cache.popitem(last=False)[1])


_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encoder(student: StudentTokenizer) -> _Encoder:
    """The encoder of ``student``'s tokenizer, made once per tokenizer object (a memo, dropped with the tokenizer)."""
    encoder = _ENCODERS.get(student.tokenizer)
    if encoder is None:
        encoder = _ENCODERS[student.tokenizer] = _Encoder(student)
    return encoder

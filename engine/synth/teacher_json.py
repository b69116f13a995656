"""Asks the teacher for JSON and checks it against a pydantic schema, re-asking once on a bad reply; writes nothing."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from engine.protocols import ChatModel, Message, SampleKey, SamplingParams

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 2000


class TeacherCall(BaseModel):
    """The accounting of one logical teacher request (the first ask plus any re-ask)."""

    model_config = ConfigDict(extra="forbid")
    cost_usd: float = 0.0
    calls: int = 0
    errors: list[str] = Field(default_factory=list, description="Why each rejected reply was rejected, in order.")

    @property
    def error(self) -> str | None:
        """The last rejection's message, or None when every reply was accepted."""
        return self.errors[-1] if self.errors else None

    def add(self, other: TeacherCall) -> None:
        self.cost_usd += other.cost_usd
        self.calls += other.calls
        self.errors += other.errors


class JSONExtractError(ValueError):
    """The reply holds no parseable JSON object or array."""


def extract_json(text: str) -> Any:
    """The JSON value of a reply: the first fenced block that parses, else the first balanced {...} or [...].

    >>> extract_json('Sure!\\n```json\\n{"a": [1, 2]}\\n```')
    {'a': [1, 2]}
    >>> extract_json('Here: [{"topic": "x"}] done')
    [{'topic': 'x'}]
    """
    fenced = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "json", "jsonc")]
    first_error: str | None = None
    for body in fenced:
        try:
            return json.loads(body)
        except json.JSONDecodeError as e:
            first_error = first_error or f"the ```json block is not valid JSON: {e}"
    for source in (*fenced, text):
        for start, end in _balanced_spans(source):
            try:
                return json.loads(source[start:end])
            except json.JSONDecodeError as e:
                first_error = first_error or f"not valid JSON: {e}"
    raise JSONExtractError(first_error or "no JSON object or array found in the reply")


def _balanced_spans(text: str, max_tries: int = 20) -> list[tuple[int, int]]:
    """(start, end) of bracket-balanced {...} or [...] runs, in order of start, skipping brackets in strings.

    Tries up to `max_tries` opening brackets, so prose like "a set {1}" before the JSON does not hide it.
    """
    spans: list[tuple[int, int]] = []
    starts = [i for i, c in enumerate(text) if c in "{["][:max_tries]
    for start in starts:
        if spans and start < spans[-1][1]:
            continue  # inside a span already found
        end = _match(text, start)
        if end is not None:
            spans.append((start, end))
    return spans


def _match(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _validate(data: Any, schema: type[BaseModel]) -> BaseModel:
    # Teachers in JSON mode often wrap a requested array in an object ({"topics": [...]}); unwrap one level.
    if issubclass(schema, RootModel) and isinstance(data, dict) and len(data) == 1:
        only = next(iter(data.values()))
        if isinstance(only, list):
            data = only
    return schema.model_validate(data)


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_reply(text: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """(the validated reply, None) or (None, what is wrong with it, in words the teacher can act on)."""
    try:
        data = extract_json(text)
    except JSONExtractError as e:
        return None, str(e)
    try:
        return _validate(data, schema), None
    except ValidationError as e:
        return None, f"the JSON does not match the schema: {_describe(e)}"[:_MAX_ERROR_CHARS]


def ask_json(
    model: ChatModel,
    messages: list[Message],
    schema: type[BaseModel],
    *,
    key: str,
    params_base: SamplingParams | None = None,
) -> tuple[BaseModel | None, TeacherCall]:
    """Ask `model` for JSON matching `schema`; on a bad reply re-ask once with the error, then give up.

    Each call carries SampleKey(episode_id=key, step=0, attempt=<re-ask number>), so a response cache keys the
    first ask and the re-ask apart. A ModelError (the endpoint failing) propagates: that is not the teacher's
    mistake. Returns (the validated object or None, the accounting with every rejection message).
    """
    base = params_base or SamplingParams()
    record = TeacherCall()
    convo = [dict(m) for m in messages]
    for attempt in range(2):
        params = base.model_copy(update={"sample_key": SampleKey(episode_id=key, step=0, attempt=attempt)})
        completion = model.complete(convo, params)
        record.calls += 1
        record.cost_usd += completion.cost_usd
        parsed, error = parse_reply(completion.text, schema)
        if parsed is not None:
            return parsed, record
        record.errors.append(error or "invalid reply")
        log.info("teacher reply for %s rejected (attempt %d): %s", key, attempt, error)
        convo += [
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": f"Your reply was not valid: {error}. Reply again with only the JSON."},
        ]
    return None, record

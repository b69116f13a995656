"""Content-addressed response cache: reads and writes <root>/<ab>/<sha256>.json, one Completion per file.

The key is the SHA-256 of the canonical JSON of the model name, the messages, the sampling settings
(temperature, top_p, max_tokens, reasoning_effort, seed, stop) and the sample key (episode id, step,
attempt). The base URL and the API key are not part of it, so one cache serves a model wherever it is
hosted, and no secret can reach a cache file.

The sample key is what keeps episodes apart: at temperature > 0 the 256 episodes of a task send the same
first prompt, and only distinct sample keys stop them from sharing one cached sample. A call whose
params.sample_key is None is still cached, keyed without it, so two such calls with the same prompt
share a reply: callers that want independent samples must set a sample key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from engine.models.wire import prompt_message
from engine.protocols import Completion, Message, SamplingParams

log = logging.getLogger(__name__)

CACHE_SCHEMA_VERSION = 1


def cache_key(model: str, messages: list[Message], params: SamplingParams) -> str:
    """Hex SHA-256 of the canonical JSON of what determines a reply.

    >>> k = cache_key("m", [{"role": "user", "content": "hi"}], SamplingParams(temperature=0.0))
    >>> len(k), k == cache_key("m", [{"role": "user", "content": "hi"}], SamplingParams(temperature=0.0))
    (64, True)
    """
    payload = {
        "model": model,
        "messages": [prompt_message(m) for m in messages],  # what is sent, not what the record keeps
        "sampling": {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "reasoning_effort": params.reasoning_effort,
            "seed": params.seed,
            "stop": list(params.stop),
        },
        "sample_key": params.sample_key.model_dump(mode="json") if params.sample_key is not None else None,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Completions on disk, sharded by the first two hex digits of the key; entries are written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResponseCache(root={str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """The cached completion marked cached=True with cost 0 and latency 0 (nothing was paid or waited
        for), or None on a miss. An unreadable entry counts as a miss and is overwritten by the next put."""
        path = self.path_for(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("response cache entry %s is unreadable (%s); treating it as a miss", path, e)
            return None
        try:
            if data.get("schema_version") != CACHE_SCHEMA_VERSION:
                raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {CACHE_SCHEMA_VERSION}")
            completion = Completion.model_validate(data["completion"])
        except (AttributeError, KeyError, ValueError, ValidationError) as e:
            log.warning("response cache entry %s has the wrong shape (%s); treating it as a miss", path, e)
            return None
        return completion.model_copy(update={"cached": True, "cost_usd": 0.0, "latency_s": 0.0})

    def put(self, key: str, completion: Completion) -> Path:
        """Write one entry atomically (temporary file in the same folder, then rename)."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "schema_version": CACHE_SCHEMA_VERSION,
            "key": key,
            "completion": completion.model_dump(mode="json", exclude={"cached"}),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

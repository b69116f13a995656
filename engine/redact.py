"""Removes credentials from error text before it is logged, stored or printed. Reads the environment; writes nothing.

`redact(text, secrets)` is the one redaction function; it is applied where a model endpoint's failure becomes an
exception (`engine.models.openai_client`), where an episode's `infra_error` is set (`engine.agent.episode`), and
in the CLI's error exit (`engine.cli.common.fail`). It removes

- secret *values*: those passed in by whoever holds them (the model client passes the key it read from
  `model.api_key_env` or `model.api_key_file`), and the values of the environment variables that hold secrets:
  the ones named (`env_names`), and every one whose name says so (`OPENAI_API_KEY`, `HF_TOKEN`,
  `AWS_SECRET_ACCESS_KEY`, `*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, …), so that the defaults of
  `model.api_key_env` and `synth.hub.token_env` are covered wherever the error is raised;
- secret *shapes*, whatever holds them: `Bearer …`, the value of an `Authorization:` / `api-key:` /
  `x-api-key:` header (as text or JSON), OpenAI keys `sk-…`, Hugging Face tokens `hf_…`, AWS secret access keys
  (after their variable's name, or alone: 40 characters of mixed-case base64).

Values shorter than `MIN_SECRET_CHARS` are left alone: a placeholder key such as vLLM's "EMPTY" is no secret,
and replacing every "EMPTY" in a message would make it unreadable.

>>> redact('HTTP 500: {"echo": {"Authorization": "Bearer sk-abc123def456ghi789"}}')
'HTTP 500: {"echo": {"Authorization": "[REDACTED]"}}'
>>> redact("token hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123 refused")
'token [REDACTED] refused'
>>> redact("key my-own-secret-value leaked", secrets=["my-own-secret-value"])
'key [REDACTED] leaked'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 8

_SECRET_NAME = re.compile(r"(?:^|_)(?:KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(?:_|$)", re.IGNORECASE)
"""An environment variable whose name has one of these words (between underscores) holds a secret."""

_B64 = r"A-Za-z0-9/+="
_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]?key)"  # the header's (or field's) name
    r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)"  # its separator, quoted as JSON (perhaps escaped) or not
    r"((?:(?:bearer|basic|token|digest)\s+)?[^\s\"'\\,;}&]+)")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (_HEADER, rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(rf"(?i)(aws_?secret_?access_?key|aws_?session_?token|secret_?access_?key)"
                rf"(\\?[\"']?\s*[:=]\s*\\?[\"']?)[{_B64}]{{16,}}"), rf"\1\2{REDACTED}"),
]
_AWS_SECRET = re.compile(rf"(?<![{_B64}])[A-Za-z0-9/+]{{40}}(?![{_B64}])")


def secret_values(env_names: Iterable[str] = (), files: Iterable[Path] = (), *,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """The secrets the environment holds: the values of `env_names`, of every variable whose name says it holds a
    secret, and the contents of `files` (mounted secrets; unreadable ones are skipped), longest first.

    >>> secret_values(["MY_ENDPOINT"], environ={"MY_ENDPOINT": "abcdefgh12", "HF_TOKEN": "hf_zzzzzzzz",
    ...                                        "HOME": "/root/home", "TOKENIZERS_PARALLELISM": "false-ish"})
    ['hf_zzzzzzzz', 'abcdefgh12']
    """
    env = os.environ if environ is None else environ
    named = set(env_names)
    values = [v for k, v in env.items() if k in named or _SECRET_NAME.search(k)]
    for path in files:
        try:
            values.append(Path(path).read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            continue
    return _usable(values)


def redact(text: str, secrets: Iterable[str] = (), *, env_names: Iterable[str] = ()) -> str:
    """`text` with every secret value (see `secret_values`; plus `secrets`) and secret shape replaced by
    `[REDACTED]`."""
    for value in _usable([*secrets, *secret_values(env_names)]):
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _AWS_SECRET.sub(_aws_secret, text)


def _usable(values: Iterable[str]) -> list[str]:
    return sorted({v for v in values if v and len(v) >= MIN_SECRET_CHARS}, key=lambda v: (-len(v), v))


def _aws_secret(match: re.Match[str]) -> str:
    """A lone 40-character token counts as an AWS secret key when it mixes upper case, lower case and digits (a
    hex digest has no upper case) and is not a path."""
    token = match.group(0)
    mixed = any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)
    return REDACTED if mixed and not token.startswith("/") and "//" not in token else token

"""Credentials never reach an error text (engine/redact.py): secret values from the environment, from files and from
their holder; secret shapes (Bearer, Authorization headers, sk-…, hf_…, AWS keys); the model client's failure
descriptions (engine/models/retry.py) and the CLI's error exit."""

from __future__ import annotations

import doctest

import httpx2
import openai
import pytest
import typer

import engine.redact
from engine.cli.common import fail
from engine.errors import ModelError
from engine.models.retry import classify
from engine.redact import REDACTED, redact, secret_values

KEY = "sk-unit-5f3e9a1b2c7d-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Only the variables a test sets hold secrets."""
    for name in list(engine.redact.os.environ):
        if engine.redact._SECRET_NAME.search(name):
            monkeypatch.delenv(name)


def test_doctests():
    assert doctest.testmod(engine.redact).failed == 0


@pytest.mark.parametrize("text, expected", [
    ("Authorization: Bearer abc.def-ghi", "Authorization: [REDACTED]"),
    ("proxy-authorization=Basic dXNlcjpwYXNz, next", "proxy-authorization=[REDACTED], next"),
    ('{"headers": {"authorization": "Bearer tok123456789"}}', '{"headers": {"authorization": "[REDACTED]"}}'),
    ('{\\"Authorization\\": \\"Bearer tok123456789\\"}', '{\\"Authorization\\": \\"[REDACTED]\\"}'),
    ("{'x-api-key': 'abcd1234efgh'}", "{'x-api-key': '[REDACTED]'}"),
    ("api-key: abcd1234efgh", "api-key: [REDACTED]"),
    ("sent bearer eyJhbGciOi.x-y_z= to it", "sent [REDACTED] to it"),
    ("key sk-proj-AbC123dEf456 was refused", "key [REDACTED] was refused"),
    ("token hf_AbCdEfGhIjKlMnOpQrStUv in the url", "token [REDACTED] in the url"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED]"),
    ("creds wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY leaked", "creds [REDACTED] leaked"),
])
def test_secret_shapes_are_redacted(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "revision 3f2a9c1b0d4e5f60718293a4b5c6d7e8f9012345 pinned",  # a hex digest has no upper case
    "environment variable OPENAI_API_KEY is not set; export OPENAI_API_KEY=<key>",
    "model.api_key_env names the variable; model.api_key_file a mounted secret",
    "disk-usage-report and task-classification are not keys",
    "/work/main/runs/Run1/rollouts/trajectories/part-0001.parquet: not readable",
    "sandbox synthscale-r1-wine-classification-3f2a is closed",
])
def test_ordinary_text_is_kept(text):
    assert redact(text) == text


def test_values_of_secret_variables_are_redacted_whatever_their_shape(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plainvalue0001")
    monkeypatch.setenv("HF_TOKEN", "plainvalue0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plainvalue0003")
    monkeypatch.setenv("MY_ENDPOINT_CRED", "plainvalue0004")  # a name that does not say so
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "plainvalue0005")  # TOKENIZERS is not TOKEN
    text = "a plainvalue0001 b plainvalue0002 c plainvalue0003 d plainvalue0004 e plainvalue0005"
    assert redact(text) == f"a {REDACTED} b {REDACTED} c {REDACTED} d plainvalue0004 e plainvalue0005"
    assert redact(text, env_names=["MY_ENDPOINT_CRED"]).count(REDACTED) == 4


def test_given_secrets_and_secret_files_are_redacted_short_values_are_not(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORT_TOKEN", "EMPTY")  # a placeholder, not a secret: "EMPTY" stays readable
    secret_file = tmp_path / "key"
    secret_file.write_text("from-a-mounted-file\n")
    assert secret_values(files=[secret_file, tmp_path / "missing"]) == ["from-a-mounted-file"]
    assert redact("EMPTY from-a-mounted-file my-own-value", secrets=[*secret_values(files=[secret_file]),
                                                                   "my-own-value", "short"]) == \
        f"EMPTY {REDACTED} {REDACTED}"


def test_a_longer_secret_is_replaced_before_one_it_contains():
    assert redact("x abcdefgh12345 y", secrets=["abcdefgh", "abcdefgh12345"]) == f"x {REDACTED} y"


def _status_error(status: int, body: dict) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, json=body, request=request)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body["error"])


def test_failure_descriptions_are_redacted():
    body = {"error": {"message": f"you sent Authorization: Bearer {KEY} and key {KEY}"}}
    failure = classify(_status_error(500, body), secrets=[KEY])
    assert failure.description == f"HTTP 500: you sent Authorization: {REDACTED} and key {REDACTED}"
    bare = {"error": {"message": "echo plain-key-without-shape"}}
    assert classify(_status_error(400, bare), secrets=["plain-key-without-shape"]).description == \
        f"HTTP 400: echo {REDACTED}"


def test_the_cli_error_exit_redacts(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(typer.Exit) as info:
        fail(ModelError(f"model 'gpt-5': HTTP 401: bad key {KEY}, header Authorization: Bearer {KEY}"))
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert KEY not in err
    assert err == f"error: model 'gpt-5': HTTP 401: bad key {REDACTED}, header Authorization: {REDACTED}\n"

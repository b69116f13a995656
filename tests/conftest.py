"""Suite-wide hooks and fixtures: where CI says Docker and bubblewrap are required, a test skipped for lack of them
fails; the loopback Hugging Face Hub's fixtures (`hub_fixtures.py`) are visible to every test module."""

from __future__ import annotations

import os

import pytest

try:
    from tests.hub_fixtures import fresh_hub, hub, hub_datasets, hub_env, hub_tokens  # noqa: F401
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from hub_fixtures import fresh_hub, hub, hub_datasets, hub_env, hub_tokens  # noqa: F401

REQUIRED = {
    "SYNTHSCALE_REQUIRE_DOCKER": ("docker", "dockerd"),
    "SYNTHSCALE_REQUIRE_BWRAP": ("bwrap", "bubblewrap"),
    "SYNTHSCALE_REQUIRE_TOKENIZER": ("qwen3 tokenizer",),
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2]).lower()
    for env, words in REQUIRED.items():
        if os.environ.get(env) == "1" and any(w in reason for w in words):
            report.outcome = "failed"
            report.longrepr = f"skipped, but {env}=1 makes this a failure: {report.longrepr[2]}"

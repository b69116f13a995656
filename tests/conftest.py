"""Suite-wide hooks: where CI says Docker and bubblewrap are required, a test skipped for lack of them fails."""

from __future__ import annotations

import os

import pytest

REQUIRED = {
    "SYNTHSCALE_REQUIRE_DOCKER": ("docker", "dockerd"),
    "SYNTHSCALE_REQUIRE_BWRAP": ("bwrap", "bubblewrap"),
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

"""The loopback Hugging Face Hub as the tests set it up: reads nothing, serves datasets on 127.0.0.1.

`tests/conftest.py` makes the fixtures below visible to every test module; a module that needs a Hub:

- says what it serves by overriding `hub_datasets` (module scope) and, where tokens matter, `hub_tokens`;
- asks for `hub` (one server for the module, for tests that only read it) or `fresh_hub` (a new server per
  test, for tests that push revisions or assert on the requests a test made);
- uses `hub_env` (`pytestmark = pytest.mark.usefixtures("hub_env")`) so that huggingface_hub talks only to
  the loopback: a fresh HF_HOME per test, online mode, no ambient token;
- builds its clients' settings with `hub_config(hub, **overrides)`.

```python
@pytest.fixture(scope="module")
def hub_datasets():
    return by_id(LoopbackDataset(id="acme/gated", files={"train.csv": b"x,y\\n1,0\\n"}, gated="manual",
                                 access_tokens=frozenset({TOKEN})))

def test_gated(hub, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    check = HubDatasetValidator(hub_config(hub, sample_rows=3)).check(...)
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants

from engine.config import HubConfig
from engine.testing.loopback_hub import LoopbackDataset, LoopbackHub

TOKEN_ENV = "SYNTHSCALE_TEST_HF_TOKEN"  # where `hub_config` tells the clients to look for a token
TOKEN = "hf_loopback_test_token"  # valid, and the one gated/private test datasets grant access to
OTHER_TOKEN = "hf_loopback_other_token"  # valid, but granted nothing a dataset restricts to TOKEN


def by_id(*datasets: LoopbackDataset) -> dict[str, LoopbackDataset]:
    """The mapping `LoopbackHub` takes: each dataset under its own id."""
    return {d.id: d for d in datasets}


def hub_config(hub: LoopbackHub, **overrides: Any) -> HubConfig:
    """The `HubConfig` of a client aimed at `hub` (API and viewer), reading its token from TOKEN_ENV."""
    return HubConfig(endpoint=hub.endpoint, viewer_url=hub.viewer_url, token_env=TOKEN_ENV, timeout_s=10,
                     **overrides)


@pytest.fixture(scope="module")
def hub_datasets() -> dict[str, LoopbackDataset]:
    """The datasets `hub` and `fresh_hub` serve, by id: none unless the module overrides this fixture (with
    module scope). One test may serve others: `@pytest.mark.parametrize("hub_datasets", [...])` with `fresh_hub`
    (not with `hub`: pytest keeps a module-scoped fixture when only a parametrized argument under it changes)."""
    return {}


@pytest.fixture(scope="module")
def hub_tokens() -> set[str]:
    """The tokens the hub accepts as valid (TOKEN and OTHER_TOKEN); any other bearer token gets a 401.
    Overridden or parametrized as `hub_datasets` is."""
    return {TOKEN, OTHER_TOKEN}


@pytest.fixture(scope="module")
def hub(hub_datasets, hub_tokens) -> Iterator[LoopbackHub]:
    """One started loopback Hub for the module's tests, which may only read it: its revisions and its
    `requests` log carry over from test to test. Stopped after the module's last test."""
    with LoopbackHub(hub_datasets, tokens=hub_tokens) as server:
        yield server


@pytest.fixture()
def fresh_hub(hub_datasets, hub_tokens) -> Iterator[LoopbackHub]:
    """A loopback Hub of its own for one test: what the test pushes, and the requests it makes, start from
    nothing. A module whose tests all mutate the hub aliases it: `def hub(fresh_hub): return fresh_hub`."""
    with LoopbackHub(hub_datasets, tokens=hub_tokens) as server:
        yield server


@pytest.fixture()
def hub_env(tmp_path, monkeypatch) -> None:
    """huggingface_hub aimed at the loopback only: a fresh HF_HOME (no cache, no stored token) under the
    test's tmp_path, online mode (also where the suite runs with HF_HUB_OFFLINE=1), neither HF_TOKEN nor
    TOKEN_ENV set, and no proxy for 127.0.0.1."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

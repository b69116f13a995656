"""Fixtures the integration tests share: one local Ray instance per test module that asks for it; the sandbox
runtimes' harness (a module-scoped fixture over both runtimes, skipping one this host lacks) and a task folder.

A module sets its shape with `RAY_RESOURCES = {"num_cpus": 4, "num_gpus": 4}` (default: 2 CPUs, no GPUs) and,
where its workers need settings in their environment (S3 credentials of a loopback server, say), overrides
the `ray_node_env` fixture; Ray's worker processes inherit the environment `ray.init` ran in, as a real
cluster's nodes carry their own settings (never `runtime_env`). Clusters of another kind (several nodes,
`ray start --head`) are made by the modules that need them."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import ray

try:
    from tests.integration import sandbox_fixtures as fx
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    import sandbox_fixtures as fx

RUNTIMES = [pytest.param("local", marks=pytest.mark.bwrap, id="local"),
            pytest.param("docker", marks=pytest.mark.docker, id="docker")]


@pytest.fixture(scope="module", params=RUNTIMES)
def harness(request):
    """One runtime's test harness (`sandbox_fixtures.HARNESSES`); the tests using it run on each runtime."""
    harness = fx.HARNESSES[request.param]
    problem = harness.problem()
    if problem is not None:
        pytest.skip(problem)
    return harness


@pytest.fixture(scope="module")
def task_dir():
    """A small task folder (`sandbox_fixtures.make_task_dir`), removed after the module."""
    root = fx.make_task_dir()
    yield root
    fx.remove_task_dir(root)

DEFAULT_RESOURCES = {"num_cpus": 2}


@pytest.fixture(scope="module")
def ray_node_env() -> dict[str, str]:
    """Environment variables the module's local Ray workers are started with (none by default)."""
    return {}


@pytest.fixture(scope="module")
def local_ray(request, ray_node_env):
    """`ray.init(address="local", …)` for the module, in a short temp dir; shut down after its last test."""
    resources = getattr(request.module, "RAY_RESOURCES", DEFAULT_RESOURCES)
    temp = f"/tmp/ry{time.time_ns() % 10**8}"  # short: Ray's socket paths must fit in 107 bytes
    saved = {k: os.environ.get(k) for k in ray_node_env}
    os.environ.update(ray_node_env)
    try:
        ray.init(address="local", _temp_dir=temp, include_dashboard=False, log_to_driver=False, **resources)
        yield resources
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

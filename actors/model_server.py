"""ModelServer: a Ray actor that owns a GPU group and serves a student model on it through ServerProcess; reads a
ServeConfig, writes the server's log on its node, and reports the server's base URL.

    servers = start_model_servers(cfg, 4)                 # 4 actors, cfg.gpus_per_server GPUs each, all ready
    model = make_routed_model(model_cfg, [s.base_url for s in servers])
    ...
    stop_model_servers(servers)

The actor holds no restarts: a server that dies is seen by the router (connection errors, failover) and by
`healthy()`; whoever owns the pool starts a new one. Stopping is explicit (`stop`, `stop_model_servers`),
never left to `__del__`; should the actor's process die anyway, the server gets SIGTERM with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray

from engine.errors import ModelError
from engine.serving.launch import ServeConfig, ServerProcess, url_host

log = logging.getLogger(__name__)

_WILDCARDS = ("0.0.0.0", "::", "")


@ray.remote(max_restarts=0)
class ModelServer:
    """One OpenAI-compatible server on the GPUs Ray gave this actor (`ray.get_gpu_ids()`)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.node_ip = ray.util.get_node_ip_address()
        self.proc = ServerProcess(cfg, self.gpu_ids)

    def start(self) -> dict[str, object]:
        """Launch the server and wait until it is ready; returns base_url, gpu_ids and log_path."""
        self.proc.start()
        return {"base_url": self.base_url(), "gpu_ids": self.gpu_ids, "log_path": str(self.proc.log_path)}

    def base_url(self) -> str:
        """Where any node reaches the server: this node's IP (or the configured host, when not a wildcard)."""
        host = self.node_ip if self.cfg.host in _WILDCARDS else self.cfg.host
        return f"http://{url_host(host)}:{self.proc.port}/v1"

    def healthy(self) -> bool:
        return self.proc.healthy()

    def stop(self) -> None:
        self.proc.stop()


@dataclass(frozen=True)
class RunningServer:
    """A started ModelServer: its actor handle and what it reported."""

    handle: ray.actor.ActorHandle
    base_url: str
    gpu_ids: list[str]
    log_path: str


def start_model_servers(cfg: ServeConfig, n: int, *, schedule_timeout_s: float = 600.0) -> list[RunningServer]:
    """Start `n` ModelServer actors with cfg.gpus_per_server GPUs each and wait until all are ready.

    Waits at most schedule_timeout_s + cfg.startup_timeout_s (the cluster may first have to find the GPUs).
    On any failure every server started so far is stopped and the error is raised (a ModelError naming the
    command and its log when a server did not come up)."""
    if n < 1:
        raise ModelError(f"start_model_servers: n={n}; ask for at least one server")
    handles = [
        ModelServer.options(num_gpus=cfg.gpus_per_server, num_cpus=cfg.cpus_per_server).remote(cfg)
        for _ in range(n)
    ]
    refs = [h.start.remote() for h in handles]
    timeout_s = schedule_timeout_s + cfg.startup_timeout_s
    try:
        ready, pending = ray.wait(refs, num_returns=n, timeout=timeout_s)
        if pending:
            raise ModelError(
                f"{len(pending)} of {n} model servers ({cfg.gpus_per_server:g} GPUs each) were not ready after "
                f"{timeout_s:g}s; check that the cluster has the GPUs (`ray status`) and the servers' logs"
            )
        infos = ray.get(refs)
    except BaseException:
        _stop_handles(handles)
        raise
    servers = [
        RunningServer(h, str(i["base_url"]), list(i["gpu_ids"]), str(i["log_path"])) for h, i in zip(handles, infos)
    ]
    log.info("model servers ready: %s", ", ".join(s.base_url for s in servers))
    return servers


def stop_model_servers(servers: list[RunningServer], *, timeout_s: float = 60.0) -> None:
    """Stop every server (process group and all), then end its actor."""
    _stop_handles([s.handle for s in servers], timeout_s=timeout_s)


def _stop_handles(handles: list[ray.actor.ActorHandle], timeout_s: float = 60.0) -> None:
    refs = [h.stop.remote() for h in handles]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in refs:
        if ref in pending:
            continue
        try:
            ray.get(ref)
        except Exception as e:  # a dead actor's server died with it (SIGTERM on parent death)
            log.warning("stopping a model server failed: %s", e)
    if pending:
        log.warning("%d model servers did not stop within %gs; killing their actors", len(pending), timeout_s)
    for h in handles:
        ray.kill(h)


class RayServerLauncher:
    """The `ServerLauncher` of a Ray cluster: ModelServer actors (see `start_model_servers`)."""

    def __init__(self) -> None:
        self.servers: list[RunningServer] = []

    def start(self, cfg: ServeConfig, n: int) -> list[str]:
        self.servers = start_model_servers(cfg, n)
        return [s.base_url for s in self.servers]

    def stop(self) -> None:
        servers, self.servers = self.servers, []
        if servers:
            stop_model_servers(servers)

    def gpus(self) -> float:
        return float(ray.cluster_resources().get("GPU", 0))


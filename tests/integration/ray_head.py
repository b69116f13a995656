"""Process helpers for tests that run their own `ray start --head` cluster: free ports, and a teardown that ends
exactly the processes a cluster started (`ray stop` would kill every Ray process on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import psutil


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` ports free on `host` ("" = every interface) right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def terminate(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL what is still alive after 15 s."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.send_signal(signal.SIGTERM)
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def cluster_pids(head: subprocess.Popen, temp_dir: str) -> set[int]:
    """The head's process tree and every process whose command line names the cluster's temp dir."""
    pids = {head.pid}
    try:
        pids |= {c.pid for c in psutil.Process(head.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in (p.info["cmdline"] or [])):
            pids.add(p.info["pid"])
    pids.discard(os.getpid())
    return pids


WORKER_SPAN = 200  # ports of the head's worker processes: --min-worker-port BASE --max-worker-port BASE+SPAN


def head_ports(n: int, host: str = "127.0.0.1") -> tuple[list[int], int]:
    """`n` free ports for the head's components, and a worker-port base whose range holds none of them (Ray
    refuses to start when two components' ports overlap)."""
    while True:
        *named, base = free_ports(n + 1, host)
        if base + WORKER_SPAN < 65536 and not any(base <= p <= base + WORKER_SPAN for p in named):
            return named, base

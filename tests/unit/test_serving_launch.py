"""ServeConfig checks, the exact argv of each backend, backend choice, and ServerProcess failing fast."""

import importlib.util
import os
import subprocess
import sys
import time

import pytest

from engine.errors import ConfigError, ModelError
from engine.serving.launch import (
    ServeConfig,
    ServerProcess,
    ServerStartError,
    choose_backend,
    local_host,
    log_tail,
    models_ready,
    resolve_backend,
    server_command,
)


def test_vllm_argv_is_exact():
    cfg = ServeConfig(backend="vllm", model="/ckpt/final", served_name="student", extra_args=["--max-model-len", "32768"])
    assert server_command(cfg, 8123, ["2", "3"]) == [
        "vllm", "serve", "/ckpt/final", "--host", "0.0.0.0", "--port", "8123", "--served-model-name", "student",
        "--tensor-parallel-size", "2", "--max-model-len", "32768",
    ]


def test_vllm_served_name_defaults_to_model_and_tp_is_at_least_one():
    cfg = ServeConfig(backend="vllm", model="Qwen/Qwen3-4B", host="10.0.0.5")
    assert server_command(cfg, 9000, []) == [
        "vllm", "serve", "Qwen/Qwen3-4B", "--host", "10.0.0.5", "--port", "9000", "--served-model-name", "Qwen/Qwen3-4B",
        "--tensor-parallel-size", "1",
    ]
    assert cfg.name == "Qwen/Qwen3-4B"


def test_transformers_argv_is_exact_on_cpu_and_gpu():
    cfg = ServeConfig(backend="transformers", model="/ckpt/final", extra_args=["--dtype", "bfloat16"])
    assert server_command(cfg, 8000, []) == [
        "transformers", "serve", "/ckpt/final", "--host", "0.0.0.0", "--port", "8000", "--device", "cpu",
        "--dtype", "bfloat16",
    ]
    assert server_command(cfg, 8000, ["1"])[7:9] == ["--device", "auto"]


def test_command_argv_fills_placeholders():
    cfg = ServeConfig(
        backend="command", model="ckpt", served_name="pol", host="127.0.0.1",
        command=["synthscale", "serve-heuristic", "--host", "{host}", "--port={port}", "--name", "{served_name}:{model}"],
    )
    assert server_command(cfg, 4242, ["0"]) == [
        "synthscale", "serve-heuristic", "--host", "127.0.0.1", "--port=4242", "--name", "pol:ckpt",
    ]


def test_command_backend_leaves_shell_braces_alone():
    cfg = ServeConfig(backend="command", model="m", command=["sh", "-c", "echo ${HOME} {port}"])
    assert server_command(cfg, 7, []) == ["sh", "-c", "echo ${HOME} 7"]


@pytest.mark.parametrize(
    ("backend", "vllm_installed", "gpu_visible", "expected"),
    [
        ("auto", True, True, "vllm"),
        ("auto", True, False, "transformers"),
        ("auto", False, True, "transformers"),
        ("auto", False, False, "transformers"),
        ("vllm", False, False, "vllm"),
        ("transformers", True, True, "transformers"),
        ("command", True, True, "command"),
    ],
)
def test_choose_backend(backend, vllm_installed, gpu_visible, expected):
    assert choose_backend(backend, vllm_installed=vllm_installed, gpu_visible=gpu_visible) == expected


def test_resolve_backend_follows_this_machine():
    cfg = ServeConfig(model="m")
    vllm_here = importlib.util.find_spec("vllm") is not None
    assert resolve_backend(cfg, []) == "transformers"
    assert resolve_backend(cfg, ["0"]) == ("vllm" if vllm_here else "transformers")
    assert server_command(cfg, 1, [])[:2] == ["transformers", "serve"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"backend": "command"}, "needs serve.command"),
        ({"backend": "vllm", "command": ["x", "{port}"]}, "set backend: command"),
        ({"backend": "command", "command": ["x", "{port}"], "extra_args": ["-v"]}, "put them in serve.command"),
        ({"backend": "command", "command": ["x"]}, "has no {port}"),
        ({"backend": "transformers", "served_name": "other"}, "cannot rename"),
        ({"backend": "auto", "served_name": "other"}, "cannot rename"),
        ({"backend": "vllm", "extra_args": ["--api-key", "sk-1"]}, "'--api-key' puts a secret"),
        ({"backend": "vllm", "extra_args": ["--hf-token=abc"]}, "'--hf-token' puts a secret"),
        ({"gpus_per_server": 1.5}, "whole number"),
        ({"port": 70000}, "less than or equal"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_config_rejects(fields, words):
    with pytest.raises((ConfigError, ValueError)) as err:
        ServeConfig(model="m", **fields)
    assert words in str(err.value)


def test_command_with_fixed_port_needs_no_placeholder():
    cfg = ServeConfig(backend="command", model="m", command=["srv"], port=8765)
    assert server_command(cfg, 8765, []) == ["srv"]


def test_local_host_maps_wildcards_to_loopback():
    assert (local_host("0.0.0.0"), local_host("::"), local_host("10.1.2.3")) == ("127.0.0.1", "::1", "10.1.2.3")


def test_server_process_fails_fast_with_the_log_tail(tmp_path):
    cfg = ServeConfig(
        backend="command", model="m", host="127.0.0.1", startup_timeout_s=600,
        command=["sh", "-c", "echo loading weights; echo boom on port {port} >&2; exit 3"],
    )
    proc = ServerProcess(cfg, ["4"], log_path=tmp_path / "srv.log", poll_s=0.02)
    with pytest.raises(ServerStartError) as err:
        proc.start()
    message = str(err.value)
    assert isinstance(err.value, ModelError)
    assert "exited with code 3" in message and str(tmp_path / "srv.log") in message
    assert f"boom on port {proc.port}" in message and "loading weights" in message
    assert not proc.alive()


def test_server_process_names_a_missing_program(tmp_path):
    cfg = ServeConfig(backend="command", model="m", command=["synthscale-no-such-program", "{port}"])
    with pytest.raises(ServerStartError, match="could not start"):
        ServerProcess(cfg, log_path=tmp_path / "srv.log").start()


def test_server_process_times_out_naming_command_and_log(tmp_path):
    # A process that lives but never serves: the readiness wait gives up and kills it.
    cfg = ServeConfig(
        backend="command", model="m", host="127.0.0.1", startup_timeout_s=0.3,
        command=[sys.executable, "-c", "import time; print('never ready', flush=True); time.sleep(60)", "{port}"],
    )
    proc = ServerProcess(cfg, log_path=tmp_path / "srv.log", poll_s=0.02, stop_grace_s=5)
    with pytest.raises(ServerStartError) as err:
        proc.start()
    assert "did not answer" in str(err.value) and str(tmp_path / "srv.log") in str(err.value)
    assert sys.executable in str(err.value)
    assert not proc.alive()


def test_log_tail_keeps_the_end(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"a" * 5000 + b"\xff the end")
    assert log_tail(path, max_bytes=10) == "a\ufffd the end"
    assert log_tail(tmp_path / "missing") == ""


MODELS_SERVER = (
    "import http.server, json, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = json.dumps({'object': 'list', 'data': []}).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)

LAUNCHER = (
    "import os, sys\n"
    "from engine.serving.launch import ServeConfig, ServerProcess\n"
    "cfg = ServeConfig(backend='command', model='m', host='127.0.0.1', command=[sys.executable, '-c', sys.argv[1], '{port}'])\n"
    "proc = ServerProcess(cfg, log_path=__import__('pathlib').Path(sys.argv[2]), poll_s=0.02).start()\n"
    "print(proc.pid, proc.base_url, flush=True)\n"
    "os.kill(os.getpid(), 9)  # die without stop()\n"
)


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone too
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_server_dies_with_the_process_that_launched_it(tmp_path):
    out = subprocess.run([sys.executable, "-c", LAUNCHER, MODELS_SERVER, str(tmp_path / "srv.log")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    pid_text, base_url = out.stdout.split()
    pid = int(pid_text)
    # SIGTERM reaches the server when its parent dies; wait for it to be delivered (bounded, not timed)
    try:
        for _ in range(500):
            if _gone(pid):
                break
            time.sleep(0.01)
        assert _gone(pid) and not models_ready(base_url, timeout_s=1)
    finally:
        if not _gone(pid):
            os.kill(pid, 9)  # do not leave the server behind when the check fails

"""ModelServer actors on a local Ray cluster with 2 logical GPUs serving the heuristic policy, routed chats over
them, failover to a live server, and `transformers serve` on CPU with a tiny random Qwen3 built offline."""

import json
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import ray

from actors.model_server import start_model_servers, stop_model_servers
from engine.agent.heuristic import HeuristicModel
from engine.config import ModelConfig
from engine.models import OpenAIChatModel
from engine.models.routing import make_routed_model, rendezvous_order
from engine.protocols import SampleKey, SamplingParams
from engine.tasks.folder import load_tasks
from engine.serving.launch import ServeConfig, ServerProcess, free_port, models_ready
from engine.tasks.folder import describe

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "tasks"
SYNTHSCALE = str(Path(sys.executable).parent / "synthscale")


RAY_RESOURCES = {"num_cpus": 2, "num_gpus": 2}


def heuristic_cfg(record_dir: Path) -> ServeConfig:
    # The server records the CUDA_VISIBLE_DEVICES it was started with, then becomes the real policy server.
    script = (
        f'printf %s "$CUDA_VISIBLE_DEVICES" > {record_dir}/cvd-{{port}}; '
        f"exec {SYNTHSCALE} serve-heuristic --task {EXAMPLES} --host {{host}} --port {{port}}"
    )
    return ServeConfig(backend="command", model="synthscale-heuristic", command=["sh", "-c", script],
                       gpus_per_server=1, startup_timeout_s=120, log_dir=record_dir / "logs")


def client_cfg(**kw) -> ModelConfig:
    return ModelConfig(provider="openai", name="synthscale-heuristic", api_key_env="SYNTHSCALE_UNSET_KEY",
                       unknown_price="zero", max_retries=0, timeout_s=60, **kw)


def task_messages():
    tasks = load_tasks([EXAMPLES])
    task = next(t for t in tasks if t.id == "wine-classification")
    return tasks, [{"role": "system", "content": "You are an ML researcher."}, {"role": "user", "content": describe(task)}]


def test_model_servers_pin_gpus_serve_and_route(local_ray, tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    servers = start_model_servers(heuristic_cfg(tmp_path), 2)
    try:
        node_ip = ray.util.get_node_ip_address()
        urls = [s.base_url for s in servers]
        for s in servers:
            port = urllib.parse.urlsplit(s.base_url).port
            assert s.base_url == f"http://{node_ip}:{port}/v1"
            # the server process saw exactly the GPU Ray gave its actor
            assert (tmp_path / f"cvd-{port}").read_text() == ",".join(s.gpu_ids)
            assert len(s.gpu_ids) == 1 and ray.get(s.handle.healthy.remote())
            assert Path(s.log_path).is_file()
        assert sorted(g for s in servers for g in s.gpu_ids) == ["0", "1"]

        tasks, messages = task_messages()
        router = make_routed_model(client_cfg(), urls)
        direct = HeuristicModel(tasks)
        episodes = [f"wine-classification:ep-{i}" for i in range(8)]
        for ep in episodes:
            params = SamplingParams(temperature=1.0, sample_key=SampleKey(episode_id=ep, step=0))
            reply = router.complete(messages, params)
            assert reply.text == direct.complete(messages, params).text and reply.model == "synthscale-heuristic"
            assert router.choose(ep) == rendezvous_order(ep, urls)[0]
        router.close()
    finally:
        stop_model_servers(servers)
    # stopping ended the server processes: nothing answers on their ports any more
    assert not any(models_ready(s.base_url, timeout_s=5) for s in servers)


def test_a_killed_actor_takes_its_server_with_it(local_ray, tmp_path):
    # No stop(): the actor's process dies, and the server gets SIGTERM from the kernel (parent-death signal).
    (server,) = start_model_servers(heuristic_cfg(tmp_path), 1)
    assert models_ready(server.base_url)
    ray.kill(server.handle)
    deadline = time.monotonic() + 60
    while models_ready(server.base_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not models_ready(server.base_url)


def test_router_fails_over_from_a_dead_server_to_a_live_one(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    cfg = heuristic_cfg(tmp_path).model_copy(update={"host": "127.0.0.1", "gpus_per_server": 0})
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"  # nothing listens there
    with ServerProcess(cfg, log_path=tmp_path / "srv.log") as live:
        assert (tmp_path / f"cvd-{live.port}").read_text() == ""  # no GPU given: none visible
        tasks, messages = task_messages()
        router = make_routed_model(client_cfg(), [dead, live.base_url])
        ep = next(f"ep-{i}" for i in range(100) if router.choose(f"ep-{i}") == dead)
        params = SamplingParams(sample_key=SampleKey(episode_id=ep, step=0))
        assert router.complete(messages, params).text == HeuristicModel(tasks).complete(messages, params).text
        assert router.up_servers() == [live.base_url]
        router.close()


def build_tiny_qwen3(out: Path) -> None:
    """A random 2-layer Qwen3 and a byte-level BPE tokenizer with a ChatML template, built without downloads."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the model trains a classifier on the wine data and reports accuracy"] * 20, trainer)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=template)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    Qwen3ForCausalLM(config).save_pretrained(out)


def test_transformers_serve_on_cpu_answers_through_our_client(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("accelerate", reason="transformers serve loads with a device_map, which needs accelerate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("SYNTHSCALE_UNSET_KEY", raising=False)
    ckpt = tmp_path / "tiny-qwen3"
    build_tiny_qwen3(ckpt)
    cfg = ServeConfig(model=str(ckpt), host="127.0.0.1", gpus_per_server=0, startup_timeout_s=240)  # backend auto
    with ServerProcess(cfg, log_path=tmp_path / "serve.log") as srv:
        assert srv.argv[:2] == ["transformers", "serve"] and "--device" in srv.argv
        client = OpenAIChatModel(ModelConfig(provider="openai", name=cfg.name, base_url=srv.base_url,
                                             api_key_env="SYNTHSCALE_UNSET_KEY", unknown_price="zero", max_retries=0))
        reply = client.complete([{"role": "user", "content": "train the model"}],
                                SamplingParams(temperature=0.0, max_tokens=6, sample_key=SampleKey(episode_id="e", step=0)))
        client.close()
    assert reply.model == str(ckpt) and reply.finish_reason in ("length", "stop")
    assert reply.usage.prompt_tokens > 0 and 1 <= reply.usage.completion_tokens <= 6
    log = (tmp_path / "serve.log").read_text()
    assert "POST /v1/chat/completions HTTP/1.1\" 200" in log, log[-2000:]
    assert not models_ready(srv.base_url, timeout_s=5)
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "qwen3"

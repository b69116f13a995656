"""Teacher synthesis end to end, through the production clients: a loopback OpenAI-compatible server scripted as
a teacher and a loopback Hugging Face Hub serving datasets this test builds. Each scripted behaviour meets
the guard or loop built for it, and the manifest's funnel counts what happened."""

from __future__ import annotations

import json
import random
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.config import ModelConfig, Price, RunConfig, SandboxConfig, SynthConfig
from engine.models.server import ChatCompletionsServer
from engine.protocols import Completion, Usage
from engine.synth.guards.contamination import ContaminationIndex
from engine.testing.loopback_hub import LoopbackDataset, parquet_bytes
from engine.synth.stage import run_synth
from engine.models.ratelimit import RateLimiter
from engine.tasks.folder import load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "teacher"))
import replies  # noqa: E402

try:
    from tests.hub_fixtures import by_id, hub_config
except ImportError:  # tests/ is not a package: pytest put that folder on sys.path
    from hub_fixtures import by_id, hub_config

pytestmark = [pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
              pytest.mark.usefixtures("hub_env")]

CEILING_EVALUATE = replies.EVALUATE_PY.replace('(merged["prediction"] == merged[TARGET]).mean()',
                                               '(merged["prediction"] == merged["prediction"]).mean()')
assert CEILING_EVALUATE != replies.EVALUATE_PY


def _weather(n: int, seed: int) -> dict[str, list]:
    rows = replies._rows(n, random.Random(seed))
    return {c: [r[c] for r in rows] for c in [*replies.FEATURES, replies.TARGET]}


def _housing(n: int) -> dict[str, list]:
    rng = random.Random(7)
    hoods = ["College Creek Gardens", "North Ridge Heights", "Old Town Riverside", "Stone Brook Meadows"]
    return {"lot_area_sqft": [rng.randint(2000, 20000) for _ in range(n)],
            "year_built": [rng.randint(1900, 2010) for _ in range(n)],
            "neighborhood": [rng.choice(hoods) for _ in range(n)],
            "sale_price_usd": [rng.randint(50_000, 500_000) for _ in range(n)]}


def _proposal(name: str, hf_id: str, description: str, **kw) -> dict:
    data = replies.proposal_dict(name=name, description=description)
    data["dataset"] = {**data["dataset"], "hf_id": hf_id, **kw}
    return data


TOPICS = {
    "rain from weather stations": _proposal(
        "Rain from station readings", "weather/rain", "Forecast whether tomorrow brings rain using station "
        "readings of temperature humidity pressure and wind; score is accuracy on unseen days."),
    "hallucinated dataset task": _proposal(
        "Phantom data", "nobody/does-not-exist-xyz", "Classify phantom records that do not exist anywhere at "
        "all with a model of your choice and report accuracy."),
    "irreparable code task": _proposal(
        "Humidity based rain detection", "weather/rain-copy", "Detect rainy afternoons at an alpine weather "
        "station from four sensor channels, judged by plain accuracy."),
    "malformed json then cifar": {"name": "Tiny image classes", "description": "Classify small colour images "
                                  "into ten object classes measured by accuracy.", "task_type": "classification",
                                  "metric": "accuracy", "direction": "max", "needs_dataset": True,
                                  "dataset": {"hf_id": "uoft-cs/cifar10", "config": None, "split": "train",
                                              "input_columns": ["img"], "target_column": "label"}},
    "renamed benchmark upload": _proposal(
        "Property valuation", "acme/property-values-v2", "Estimate property values for a county assessor from "
        "lot size and construction year; lower error is better.", input_columns=["lot", "built"],
        target_column="price"),
    "leaky target copy": _proposal(
        "Rain with flags", "weather/rain-leaky", "Use coastal meteorological sensor logs including the station "
        "flag channel to anticipate precipitation events, rated by accuracy.",
        input_columns=[*replies.FEATURES, "rain_flag"]),
    "grader at ceiling": _proposal(
        "Storm onset", "weather/rain-ceil", "Anticipate storm onset for farmers from barometric and humidity "
        "logs recorded hourly; the grade is the fraction of correct calls."),
}
for name, p in TOPICS.items():
    if p["dataset"]["hf_id"] == "acme/property-values-v2":
        p.update(task_type="regression", metric="rmse", direction="min")


class ScriptedTeacher:
    """A test double of a teacher model: answers each prompt kind from the script above, counting calls."""

    name = "teacher-x"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _key(self, kind: str, which: str) -> int:
        with self.lock:
            self.calls[f"{kind}:{which}"] += 1
            return self.calls[f"{kind}:{which}"]

    def complete(self, messages, params) -> Completion:
        first = next(m["content"] for m in messages if m["role"] == "user")
        text = self._answer(first)
        return Completion(text=text, model=self.name, finish_reason="stop",
                          usage=Usage(prompt_tokens=len(first) // 4, completion_tokens=len(text) // 4))

    async def acomplete(self, messages, params) -> Completion:
        return self.complete(messages, params)

    def _answer(self, prompt: str) -> str:
        if "research topics" in prompt and "Research topic:" not in prompt:
            return replies.topics_reply([(t, "tabular") for t in TOPICS])
        if "Research topic:" in prompt:
            topic = next(t for t in TOPICS if f"Research topic: {t}" in prompt)
            n = self._key("proposal", topic)
            if topic.startswith("malformed") and n == 1:
                return '{"name": "Tiny image classes", "description": '  # cut off: invalid JSON
            return json.dumps(TOPICS[topic])
        name = next(p["name"] for p in TOPICS.values() if f"Name: {p['name']}" in prompt or p["name"] in prompt)
        n = self._key("code", name)
        if name == "Rain from station readings":
            return replies.codegen_reply("import_typo" if n == 1 else "working")
        if name == "Humidity based rain detection":
            return replies.codegen_reply("import_typo")
        code = replies.codegen_dict("working")
        if name == "Storm onset":
            code["files"]["evaluate.py"] = CEILING_EVALUATE
        return json.dumps(code)


@pytest.fixture(scope="module")
def housing() -> dict[str, list]:
    """The benchmark's rows (house prices), which `acme/property-values-v2` serves again under other names."""
    return _housing(200)


@pytest.fixture(scope="module")
def hub_datasets(housing) -> dict[str, LoopbackDataset]:
    """Weather data for the rain tasks (one with a copy of the target) and a renamed copy of `housing`."""
    leaky = dict(_weather(300, 2))
    leaky["rain_flag"] = [1 - v for v in leaky["rain"]]  # a relabelled copy of the target
    renamed = {"lot": housing["lot_area_sqft"], "built": housing["year_built"], "area": housing["neighborhood"],
               "price": housing["sale_price_usd"]}
    return by_id(
        LoopbackDataset("weather/rain", {"data/train-00000.parquet": parquet_bytes(_weather(300, 1))}),
        LoopbackDataset("weather/rain-copy", {"data/train-00000.parquet": parquet_bytes(_weather(300, 3))}),
        LoopbackDataset("weather/rain-leaky", {"data/train-00000.parquet": parquet_bytes(leaky)}),
        LoopbackDataset("weather/rain-ceil", {"data/train-00000.parquet": parquet_bytes(_weather(300, 4))}),
        LoopbackDataset("acme/property-values-v2", {"data/train-00000.parquet": parquet_bytes(renamed)}),
    )


def _config(tmp_path: Path, hub, index_path: Path, base_url: str) -> RunConfig:
    teacher = ModelConfig(provider="openai", name="teacher-x", base_url=base_url, max_retries=0,
                          prices={"teacher-x": Price(input_per_mtok=1.0, output_per_mtok=2.0)})
    synth = SynthConfig(source="teacher", teacher=teacher, n_topics=len(TOPICS), topics_per_call=10,
                        p_debug=1.0, max_iterations=2, concurrency=2, contamination_index=index_path,
                        hub=hub_config(hub), verify_max_steps=20)
    return RunConfig(run_id="it-synth", run_dir=str(tmp_path / "run"), synth=synth,
                     sandbox=SandboxConfig(memory_mb=2048, workspace_mb=128))


def test_teacher_synthesis_meets_every_guard(tmp_path: Path, hub, housing) -> None:
    index = ContaminationIndex()  # the benchmark's rows, as `contamination_index_from_hub` would record them
    index.build_from_rows("house_prices", [dict(zip(housing, vals)) for vals in zip(*housing.values())][:50])
    index.save(tmp_path / "index.json")
    teacher = ScriptedTeacher()
    with ChatCompletionsServer(teacher) as server:
        cfg = _config(tmp_path, hub, tmp_path / "index.json", server.base_url)
        manifest = run_synth(cfg, limiter=RateLimiter(cfg.synth.rate_limit))
        port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    synth = tmp_path / "run" / "synth"
    rejects = {r["item_id"]: r for r in pq.read_table(synth / "rejects.parquet").to_pylist()}
    proposals = {p["name"]: p for p in pq.read_table(synth / "proposals.parquet").to_pylist()}
    reason = {name: rejects[p["proposal_id"]]["reason"] for name, p in proposals.items() if p["proposal_id"] in rejects}
    assert reason == {
        "Phantom data": "not_found",
        "Humidity based rain detection": "discarded_after_k",
        "Tiny image classes": "contaminated_dataset",
        "Property valuation": "contaminated_rows",
        "Rain with flags": "target_copy",
        "Storm onset": "constant_at_ceiling",
    }
    assert teacher.calls["proposal:malformed json then cifar"] == 2  # re-asked once, then accepted
    tasks = sorted(p.name for p in (synth / "tasks").iterdir())
    assert len(tasks) == 1 and tasks[0].startswith("rain-from-station-readings-")
    spec = load_task(synth / "tasks" / tasks[0])
    prov = json.loads((spec.root / "provenance.json").read_text())
    assert [a["mode"] for a in prov["attempts"]] == ["generate", "debug"]
    assert "DecisionTreeClasifier" in prov["attempts"][0]["error_log"]
    assert prov["verification"]["verified"] and prov["dataset_check"]["revision"]
    assert spec.baseline["accuracy"] == prov["verification"]["baseline_validation"]["accuracy"]
    assert not any((spec.workspace_dir / "data").glob("labels_*")) and (spec.grader_dir / "labels_test.csv").is_file()
    discarded = json.loads(next((synth / "discarded").glob("humidity-based-rain-detection-*/provenance.json")).read_text())
    assert [a["decision"] for a in discarded["attempts"]] == ["debug", "discard"]
    assert all("DecisionTreeClasifier" in a["error_log"] for a in discarded["attempts"])
    c = manifest.counts
    assert (c["topics"], c["proposals"], c["dataset_checked"], c["generated"], c["verified"]) == (7, 7, 4, 4, 1)
    assert (c["debug_iterations:1"], c["debug_iterations:2"]) == (2, 2) and manifest.cost_usd > 0
    assert manifest.rejects == Counter(reason.values())

    # resume: a second run with the same config asks the teacher for nothing already done
    teacher2 = ScriptedTeacher()
    with ChatCompletionsServer(teacher2, port=port):  # same endpoint: the same config, so resume is allowed
        again = run_synth(cfg, limiter=RateLimiter(cfg.synth.rate_limit))
    assert again.counts["verified"] == 1
    assert not any(k.startswith(("topics", "proposal")) for k in teacher2.calls)
    assert not teacher2.calls  # verified tasks and final rejects are not tried again
    assert again.rejects == manifest.rejects


def test_budget_stops_the_stage_cleanly_and_says_how_far_it_got(tmp_path: Path, hub) -> None:
    teacher = ScriptedTeacher()
    with ChatCompletionsServer(teacher) as server:
        cfg = _config(tmp_path, hub, None, server.base_url)
        cfg = cfg.model_copy(update={"synth": cfg.synth.model_copy(update={"budget_usd": 1e-6, "concurrency": 1})})
        manifest = run_synth(cfg, limiter=RateLimiter(cfg.synth.rate_limit, budget_usd=cfg.synth.budget_usd))
    # the topics call spends the budget; every proposal after it is left undone and counted
    assert not teacher.calls  # no proposal and no code was asked for
    assert manifest.counts["topics"] == 7 and manifest.counts["proposals"] == 0 and manifest.counts["verified"] == 0
    assert manifest.rejects == {"budget": 7} and manifest.counts["stopped_by_budget"] == 7
    assert manifest.cost_usd > 0

"""A stateless scripted policy for tests and benchmarks: step i of every episode answers command i.

Unlike `ScriptedModel` (one reply list consumed across calls), the reply depends only on the prompt (the
number of assistant turns in it is the step), so one instance serves many concurrent episodes, and a Ray
worker can rebuild it after a restart. `delay_s` simulates the endpoint's latency; `cost_per_call_usd`
exercises budgets.

>>> m = PlaybookModel(["ls", "submit"])
>>> m.complete([{"role": "user", "content": "task"}], SamplingParams()).text.splitlines()[-2]
'ls'
>>> m.complete([{"role": "user", "content": "t"}, {"role": "assistant", "content": "x"}], SamplingParams()).text.splitlines()[-2]
'submit'
"""

from __future__ import annotations

import asyncio
import time

from engine.protocols import Completion, Message, SamplingParams, Usage


class PlaybookModel:
    def __init__(self, commands: list[str], *, name: str = "playbook", delay_s: float = 0.0,
                 cost_per_call_usd: float = 0.0):
        if not commands:
            raise ValueError("a playbook needs at least one command")
        self.commands = list(commands)
        self.name = name
        self.delay_s = delay_s
        self.cost_per_call_usd = cost_per_call_usd

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        started = time.monotonic()
        step = sum(m["role"] == "assistant" for m in messages)
        command = self.commands[min(step, len(self.commands) - 1)]
        text = f"DISCUSSION\nStep {step} of the playbook.\n\n```\n{command}\n```"
        if self.delay_s:
            time.sleep(self.delay_s)
        usage = Usage(prompt_tokens=sum(len(m["content"]) for m in messages) // 4, completion_tokens=len(text) // 4)
        return Completion(text=text, finish_reason="stop", usage=usage, model=self.name,
                          cost_usd=self.cost_per_call_usd, latency_s=time.monotonic() - started)

    async def acomplete(self, messages: list[Message], params: SamplingParams) -> Completion:
        return await asyncio.to_thread(self.complete, messages, params)

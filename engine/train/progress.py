"""The training stage's progress bar on the driver (tqdm; `tqdm.auto` renders it in notebooks too): optimizer steps
out of the plan's, with the last loss, learning rate and supervised tokens per second, read from `metrics.jsonl`
(which rank 0 writes wherever the workers run) by a polling thread while the trainer runs."""

from __future__ import annotations

import threading

from engine.train.metrics import read_metrics


class TrainProgress:
    """Polls `metrics_path` every `every_s` and moves the bar; a context manager around the trainer's run."""

    def __init__(self, metrics_path: str, total_steps: int, *, every_s: float = 2.0, enabled: bool = True):
        self.path, self.total, self.every_s, self.enabled = metrics_path, total_steps, every_s, enabled
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.bar = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="train", unit="step", dynamic_ncols=True)
            self.thread = threading.Thread(target=self._poll, name="train-progress", daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(self.every_s):
            self.update()

    def update(self) -> None:
        try:
            metrics = read_metrics(self.path)
        except (OSError, ValueError):  # being replaced, or not there yet
            return
        if self.bar is None or not metrics:
            return
        last = metrics[-1]
        self.bar.n = min(self.total, int(last["step"]))
        self.bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}",
                             sup_tok_s=f"{last.get('supervised_tokens_per_s', 0):.0f}", refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.bar is not None:
            self.update()
            self.bar.close()

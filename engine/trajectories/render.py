"""Human-readable views of TrajectoryRecords for ``synthscale traj show``: reads records, returns text (rich).

``trajectory_view``/``summary_view`` build rich renderables; ``render_trajectory``/``render_summary`` turn
them into strings (plain text by default, ANSI colour on request). Record text is always wrapped in
``rich.text.Text``, so brackets in an agent's output are never taken for rich markup.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from engine.records import ScoreRecord, StepRecord, TrajectoryRecord
from engine.trajectories.mlgym_export import visible_metrics


def trim_text(text: str, head_lines: int, tail_lines: int, max_chars: int) -> str:
    """Keep the first and last lines (and chars) of a long text, with a note of what was cut.

    >>> trim_text("1\\n2\\n3\\n4\\n5", 1, 1, 100)
    '1\\n… 3 lines omitted …\\n5'
    """
    lines = text.splitlines()
    if len(lines) > head_lines + tail_lines:
        omitted = len(lines) - head_lines - tail_lines
        tail = lines[len(lines) - tail_lines:] if tail_lines else []
        lines = [*lines[:head_lines], f"… {omitted} lines omitted …", *tail]
    out = "\n".join(lines)
    if len(out) > max_chars:
        half = max_chars // 2
        out = f"{out[:half]}\n… {len(out) - 2 * half} chars omitted …\n{out[len(out) - half:]}"
    return out


def format_metrics(metrics: dict[str, float] | None) -> str:
    if metrics is None:
        return "-"
    if not metrics:
        return "{}"
    return ", ".join(f"{k}={v:.6g}" for k, v in metrics.items())


def score_line(score: ScoreRecord) -> str:
    """One line per scoring, e.g. ``validate @ step 3: validation acc=0.9 | test acc=0.88``."""
    head = f"{score.kind} @ step {score.step}"
    if score.error is not None:
        return f"{head}: error: {score.error}"
    tag = " [mlgym grading]" if score.grading == "mlgym" else ""
    return f"{head}: validation {format_metrics(score.validation)} | test {format_metrics(score.test)}{tag}"


def best_score(record: TrajectoryRecord, split: str = "visible") -> float | None:
    """Best value of the record's primary metric over its scorings: ``visible`` (what the agent saw) or ``test``."""
    values = []
    for score in record.scores:
        if score.error is not None:
            continue
        metrics = visible_metrics(score) if split == "visible" else score.test
        if metrics and score.metric in metrics:
            values.append(metrics[score.metric])
    if not values:
        return None
    return max(values) if record.direction == "max" else min(values)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _header(record: TrajectoryRecord) -> Panel:
    lines = [
        f"task: {record.task_id}   model: {record.model}   policy: {record.policy}   seed: {record.seed}",
        f"episode: {record.episode_id}   run: {record.run_id}",
        f"exit status: {record.exit_status or '-'}   steps: {len(record.steps)}   wall: {record.wall_time_s:.1f} s",
        f"metric: {record.metric or '-'} ({record.direction})   baseline: {format_metrics(record.baseline)}",
        f"best validation: {_fmt(best_score(record, 'visible'))}   best test: {_fmt(best_score(record, 'test'))}",
        f"tokens: {record.tokens_sent} sent, {record.tokens_received} received   api calls: {record.api_calls}   "
        f"cost: ${record.cost_usd:.4f}",
    ]
    if record.submission:
        lines.append(f"submission: {record.submission}")
    if record.infra_error:
        lines.append(f"infra error: {record.infra_error}")
    return Panel(Text("\n".join(lines)), title=Text(f"trajectory {record.task_id}"), title_align="left")


def _step_view(step: StepRecord, scores: list[ScoreRecord], thought_lines: int, observation_lines: int) -> Group:
    parts: list[RenderableType] = [Rule(Text(f"step {step.step}"), align="left")]
    if step.format_errors:
        parts.append(Text(f"(re-asked {len(step.format_errors)}× after format errors)"))
    thought = trim_text(step.thought.strip(), thought_lines, 0, 2000)
    parts.append(Text(f"thought: {thought}" if thought else "thought: -"))
    action = step.action.rstrip("\n")  # MLGym's actions end in a newline
    parts.append(Panel(Text(action), title=Text("action"), title_align="left"))
    head = max(observation_lines * 2 // 3, 1)
    observation = trim_text(step.observation.rstrip(), head, observation_lines - head, 4000)
    parts.append(Text(f"observation ({step.execution_time_s:.1f} s):\n{observation}"))
    parts.extend(Text(f"score: {score_line(s)}") for s in scores)
    return Group(*parts)


def trajectory_view(record: TrajectoryRecord, thought_lines: int = 12, observation_lines: int = 30) -> Group:
    """Header, then every step (thought, boxed action, trimmed observation, its scores), then leftover scores."""
    by_step: dict[int, list[ScoreRecord]] = {}
    for score in record.scores:
        by_step.setdefault(score.step, []).append(score)
    parts: list[RenderableType] = [_header(record)]
    for step in record.steps:
        parts.append(_step_view(step, by_step.pop(step.step, []), thought_lines, observation_lines))
    leftover = [s for scores in by_step.values() for s in scores]
    if leftover:
        parts.append(Rule(Text("scores after the last step"), align="left"))
        parts.extend(Text(f"score: {score_line(s)}") for s in leftover)
    return Group(*parts)


def summary_view(records: Sequence[TrajectoryRecord]) -> Table:
    """One row per episode: id, task, model, exit status, best validation score, steps, cost."""
    table = Table(title=Text(f"{len(records)} episodes"), show_lines=False)
    for name, justify in [("episode", "left"), ("task", "left"), ("model", "left"), ("exit status", "left"),
                          ("best val", "right"), ("steps", "right"), ("cost $", "right")]:
        table.add_column(name, justify=justify, overflow="fold")
    for r in records:
        status = (r.exit_status or "-") if r.infra_error is None else f"infra error: {r.infra_error}"
        table.add_row(Text(r.episode_id), Text(r.task_id), Text(r.model), Text(status),
                      Text(_fmt(best_score(r, "visible"))), Text(str(len(r.steps))), Text(f"{r.cost_usd:.4f}"))
    total = sum(r.cost_usd for r in records)
    ok = sum(1 for r in records if r.succeeded)
    table.caption = Text(f"{ok} with a successful scoring; total cost ${total:.4f}")
    return table


def to_text(renderable: RenderableType, width: int = 100, color: bool = False) -> str:
    """Render with rich into a string: plain text, or ANSI colour when ``color``."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system="truecolor" if color else None,
                      force_terminal=color, highlight=False, emoji=False, soft_wrap=False)
    console.print(renderable)
    return buf.getvalue()


def render_trajectory(record: TrajectoryRecord, width: int = 100, color: bool = False) -> str:
    return to_text(trajectory_view(record), width=width, color=color)


def render_summary(records: Sequence[TrajectoryRecord], width: int = 120, color: bool = False) -> str:
    return to_text(summary_view(records), width=width, color=color)

"""Task code generation: asks the teacher for baseline.py, evaluate.py (and helpers) and turns them into TaskParts.

Reads a proposal and a summary of the materialised data; writes nothing (the caller saves the TaskParts).
Besides the code, the teacher writes `heuristic_moves`: whole-line edits of the workspace code that each
improve the validation metric. They become the task's `heuristic.yaml`, so the offline heuristic policy
(engine/agent/heuristic.py) can play the task; the verification loop uses that policy for its episode when
the teacher is not run as an agent.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import EngineError
from engine.prompting import render
from engine.protocols import ChatModel, SamplingParams
from engine.synth.records import ProposalRecord
from engine.synth.teacher_json import TeacherCall, ask_json
from engine.tasks.folder import FileSource, TaskParts, dump_yaml
from engine.tasks.spec import DatasetConfig, TaskConfig

log = logging.getLogger(__name__)

ERROR_LOG_MAX_CHARS = 6000
"""How much of an error log the debug prompt shows (its head and tail)."""

PIP_TO_IMPORT = {
    "scikit-learn": "sklearn", "pillow": "PIL", "opencv-python": "cv2", "opencv-python-headless": "cv2",
    "pyyaml": "yaml", "beautifulsoup4": "bs4", "python-dateutil": "dateutil", "scikit-image": "skimage",
    "huggingface-hub": "huggingface_hub", "pytorch": "torch",
}
"""Distribution name → import name, where they differ other than by '-' vs '_'."""
_IMPORT_TO_PIP = {v.lower(): k for k, v in PIP_TO_IMPORT.items() if k not in ("opencv-python-headless", "pytorch")}
_FILE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


# ---------------------------------------------------------------- records


class DataFile(BaseModel):
    """One materialised data file, as the teacher is shown it."""

    model_config = ConfigDict(extra="forbid")
    location: Literal["workspace", "grader"]
    path: str = Field(description="Relative to its location: data/train.csv, labels_test.csv.")
    columns: list[str]
    rows: int = Field(ge=0)
    sample_rows: list[dict[str, Any]] = Field(default_factory=list, description="The first few rows.")


class DataSummary(BaseModel):
    """The task's data after materialisation (filled by the caller): files, their columns, the id and target."""

    model_config = ConfigDict(extra="forbid")
    files: list[DataFile]
    id_column: str = "id"
    target_column: str
    notes: str = Field("", description="Anything else the code needs to know (label values, units, how rows were split).")

    def text(self, locations: tuple[str, ...] = ("workspace", "grader"), max_cell_chars: int = 80) -> str:
        """Plain-text listing: one block per file with its row count, columns and sample rows as CSV lines."""
        blocks = []
        for f in self.files:
            if f.location not in locations:
                continue
            where = f.path if f.location == "workspace" else f"grader/{f.path}"
            lines = [f"{where}: {f.rows} rows; columns: {', '.join(f.columns)}"]
            if f.sample_rows:
                lines.append("  first rows:")
                lines.append("    " + ",".join(f.columns))
                for row in f.sample_rows:
                    lines.append("    " + ",".join(_cell(row.get(c), max_cell_chars) for c in f.columns))
            blocks.append("\n".join(lines))
        if self.notes and "grader" in locations:
            blocks.append(self.notes.strip())
        return "\n\n".join(blocks)


def _cell(value: Any, max_chars: int) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


class TaskFields(BaseModel):
    """The task.yaml fields the teacher writes with the code."""

    model_config = ConfigDict(extra="ignore")  # teacher reply: a stray key is not worth a re-ask
    description: str = Field(min_length=20)
    metric: str = Field(min_length=1, max_length=64)
    direction: Literal["max", "min"]
    training_timeout: int = Field(1800, gt=0, le=7200)


class MoveReply(BaseModel):
    """An improvement move: replace the whole line(s) `find` of `file` with `replace`."""

    model_config = ConfigDict(extra="ignore")
    file: str
    find: str = Field(min_length=1)
    replace: str
    note: str = ""


class GeneratedCode(BaseModel):
    """The teacher's code reply. Moves are checked to apply in order, each to whole lines of the file so far."""

    model_config = ConfigDict(extra="ignore")
    files: dict[str, str]
    task: TaskFields
    heuristic_moves: list[MoveReply] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> GeneratedCode:
        missing = [f for f in ("baseline.py", "evaluate.py") if f not in self.files]
        if missing:
            raise ValueError(f"files lacks {missing}; write baseline.py and evaluate.py in full")
        bad = [f for f in self.files if not _FILE_NAME.match(f)]
        if bad:
            raise ValueError(f"file names {bad} are not plain Python file names (name.py, no folders)")
        local = {f[:-3] for f in self.files} - {"evaluate"}
        used = {m for _, m in _imports(self.files["evaluate.py"])} & local
        if used:
            raise ValueError(f"evaluate.py imports {sorted(used)}, but the grader runs apart from the workspace; "
                             "make evaluate.py self-contained")
        current = dict(self.files)
        for i, move in enumerate(self.heuristic_moves):
            if move.file not in current or move.file == "evaluate.py":
                raise ValueError(f"heuristic_moves[{i}].file {move.file!r} is not one of the workspace files "
                                 f"{sorted(f for f in current if f != 'evaluate.py')}")
            changed = apply_move(current[move.file], move.find, move.replace)
            if changed is None:
                raise ValueError(f"heuristic_moves[{i}].find is not a run of whole lines of {move.file} (after the "
                                 f"moves before it); copy the lines exactly: {move.find[:200]!r}")
            current[move.file] = changed
        return self


def apply_move(text: str, find: str, replace: str) -> str | None:
    """`text` with the first run of whole lines equal to `find` replaced by `replace`; None if there is none.

    >>> apply_move("a\\nb\\nc\\n", "b", "B1\\nB2")
    'a\\nB1\\nB2\\nc\\n'
    """
    lines = text.split("\n")
    want = find.rstrip("\n").split("\n")
    for i in range(len(lines) - len(want) + 1):
        if lines[i:i + len(want)] == want:
            return "\n".join(lines[:i] + replace.rstrip("\n").split("\n") + lines[i + len(want):])
    return None


# ---------------------------------------------------------------- imports


def import_name(package: str) -> str:
    """The module a distribution installs: "scikit-learn" → "sklearn", "numpy>=1.26" → "numpy"."""
    name = re.split(r"[<>=!~\[;\s]", package.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return PIP_TO_IMPORT.get(name, name.replace("-", "_"))


def _imports(source: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import; raises SyntaxError."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _third_party(files: dict[str, str]) -> list[tuple[str, int, str]]:
    local = {name[:-3] for name in files if name.endswith(".py")}
    out = []
    for name, source in files.items():
        for line, mod in _imports(source):
            if mod not in sys.stdlib_module_names and mod not in local and mod != "__future__":
                out.append((name, line, mod))
    return out


def check_imports(files: dict[str, str], allowed: list[str]) -> list[str]:
    """Problems with the files' imports: syntax errors, and modules that are neither stdlib, local, nor `allowed`.

    `allowed` holds distribution names (the task image's packages); one message per offending import.
    """
    allowed_mods = {import_name(p).lower() for p in allowed}
    problems = []
    for name, source in files.items():
        try:
            _imports(source)
        except SyntaxError as e:
            problems.append(f"{name}:{e.lineno}: syntax error: {e.msg}")
    if problems:
        return problems
    for name, line, mod in _third_party(files):
        if mod.lower() not in allowed_mods:
            problems.append(f"{name}:{line}: imports {mod!r}, which the task image does not hold; use only the "
                            f"standard library and: {', '.join(allowed)}")
    return problems


def requirements_of(files: dict[str, str]) -> list[str]:
    """Distribution names of the third-party modules the files import, sorted (e.g. ["pandas", "scikit-learn"])."""
    mods = {mod.lower() for _, _, mod in _third_party(files)}
    return sorted({_IMPORT_TO_PIP.get(m, m.replace("_", "-")) for m in mods})


# ---------------------------------------------------------------- prompting


def clip_log(text: str, max_chars: int = ERROR_LOG_MAX_CHARS) -> str:
    """The head and tail of a long log, with a note of what was cut (errors usually sit at the end)."""
    if len(text) <= max_chars:
        return text
    head, tail = max_chars // 5, max_chars - max_chars // 5
    return f"{text[:head]}\n[... {len(text) - head - tail} characters omitted ...]\n{text[-tail:]}"


def codegen_prompt(
    proposal: ProposalRecord, data: DataSummary, image_packages: list[str],
    previous: GeneratedCode | None = None, error_log: str | None = None,
) -> str:
    """The user message: prompts/synth/codegen.j2 (fresh) or prompts/synth/debug.j2 (previous + error_log)."""
    ctx = dict(proposal=proposal, data_text=data.text(), id_column=data.id_column, target_column=data.target_column,
               image_packages=list(image_packages))
    if previous is None:
        return render("synth/codegen.j2", **ctx)
    return render("synth/debug.j2", **ctx, previous_files=previous.files,
                  previous_task=previous.task.model_dump(), error_log=clip_log(error_log or ""))


def generate_task_code(
    model: ChatModel,
    proposal: ProposalRecord,
    data: DataSummary,
    *,
    image_packages: list[str],
    key: str,
    previous: GeneratedCode | None = None,
    error_log: str | None = None,
    params_base: SamplingParams | None = None,
) -> tuple[GeneratedCode | None, TeacherCall]:
    """Ask the teacher for the task's code: fresh, or (given `previous` and `error_log`) a repair of it.

    `key` keys the call in the response cache, e.g. "gen-<proposal_id>-<iteration>". Returns (None, call with
    the error) when the reply stays invalid after one re-ask. Imports are not checked here: run
    `check_imports` on the result and feed its problems back as an error log.
    """
    if (previous is None) != (error_log is None):
        raise EngineError("generate_task_code: pass both previous and error_log to repair, or neither to generate")
    prompt = codegen_prompt(proposal, data, image_packages, previous, error_log)
    reply, call = ask_json(model, [{"role": "user", "content": prompt}], GeneratedCode, key=key, params_base=params_base)
    mode = "debug" if previous is not None else "generate"
    log.info("%s %s for proposal %s: %s", mode, key, proposal.proposal_id, "ok" if reply else call.error)
    return reply, call  # type: ignore[return-value]


# ---------------------------------------------------------------- task folder


def task_id_for(proposal: ProposalRecord) -> str:
    """The task id: a slug of the proposal's name and the first 8 characters of its id."""
    slug = re.sub(r"[^a-z0-9]+", "-", proposal.name.lower()).strip("-")[:40].strip("-") or "task"
    return f"{slug}-{proposal.proposal_id[:8]}"


def _submission_text(id_column: str, target_column: str, metric: str, direction: str) -> str:
    better = "Higher" if direction == "max" else "Lower"
    return (f"SUBMISSION FORMAT: a file submission.csv in the workspace with columns {id_column},{target_column} and "
            f"one row for every row of data/validation.csv AND data/test.csv. `validate` reports {metric} on the "
            f"validation rows; the final score is {metric} on the held-out test rows. {better} is better.")


def to_task_parts(
    generated: GeneratedCode,
    proposal: ProposalRecord,
    data_files: dict[str, FileSource],
    grader_files: dict[str, FileSource],
    dataset_cfg: DatasetConfig | None,
    *,
    data: DataSummary | None = None,
    task_id: str | None = None,
) -> TaskParts:
    """A task folder from generated code: workspace = data_files + code but evaluate.py; grader = evaluate.py +
    grader_files; task.yaml; dataset.yaml (when `dataset_cfg`); heuristic.yaml from the moves.

    `data_files` are workspace-relative ("data/train.csv"), `grader_files` grader-relative ("labels_test.csv").
    The description is the teacher's, then `{dataset_docs}` (when there is a dataset config), the workspace
    files with their sample rows from `data` (never the grader's), and the submission format. The task id is
    `task_id`, or `task_id_for(proposal)` when None.
    """
    code = {name: text for name, text in generated.files.items() if name != "evaluate.py"}
    id_col = data.id_column if data else "id"
    target = data.target_column if data else (proposal.dataset.target_column if proposal.dataset else "target")
    parts = [generated.task.description.strip()]
    if dataset_cfg is not None:
        parts.append("{dataset_docs}")
    if data is not None and any(f.location == "workspace" for f in data.files):
        parts.append("DATA FILES\n" + data.text(locations=("workspace",)))
    parts.append(_submission_text(id_col, target, generated.task.metric, generated.task.direction))
    config = TaskConfig(
        id=task_id or task_id_for(proposal), name=proposal.name, description="\n\n".join(parts),
        dataset_configs=["dataset.yaml"] if dataset_cfg is not None else [],
        task_entrypoint="CSVSubmissionTasks", training_timeout=generated.task.training_timeout,
        starter_code=sorted(code), baseline_paths=["baseline.py"], evaluation_paths=["evaluate.py"],
        metric=generated.task.metric, direction=generated.task.direction,
        requirements=requirements_of(generated.files), submission_path="submission.csv", grading="separate",
        read_only_paths=["data"] if any(p.startswith("data/") for p in data_files) else [],
    )
    heuristic = {
        "run": "python baseline.py",
        "moves": [{"file": m.file, "find": m.find, "replace": m.replace, "run": "python baseline.py", "note": m.note}
                  for m in generated.heuristic_moves],
        "mistakes": [],
    }
    return TaskParts(
        config=config, datasets=[dataset_cfg] if dataset_cfg is not None else [],
        workspace={**data_files, **code}, grader={"evaluate.py": generated.files["evaluate.py"], **grader_files},
        files={"heuristic.yaml": dump_yaml(heuristic)},
    )

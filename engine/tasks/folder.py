"""Task folders on disk: reads and checks `task.yaml`, `dataset.yaml`, workspace/ and grader/; writes folders atomically."""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import TaskError
from engine.tasks.spec import DatasetConfig, TaskConfig, TaskSpec

log = logging.getLogger(__name__)

TASK_FILE = "task.yaml"
PROVENANCE_FILE = "provenance.json"

# What to do about a missing field, for the fields people forget most.
_MISSING_HINTS = {
    "id": "add the task id (letters, digits, '_', '.', '-')",
    "name": "add a short human-readable name",
    "description": "add the task text shown to the agent",
    "metric": "add the primary metric key",
    "data_path": "add the dataset's Hugging Face id or its path relative to the task folder",
}

FileSource = bytes | str | Path


class TaskParts(BaseModel):
    """A task folder not yet on disk: configs plus file contents (bytes/str) or host paths to copy (files or folders)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    config: TaskConfig
    datasets: list[DatasetConfig] = Field(default_factory=list, description="Aligned with config.dataset_configs.")
    workspace: dict[str, FileSource] = Field(default_factory=dict, description="Workspace-relative path → content.")
    grader: dict[str, FileSource] = Field(default_factory=dict, description="grader/-relative path → content.")
    files: dict[str, FileSource] = Field(default_factory=dict, description="Other files at the task root (heuristic.yaml).")
    provenance: dict[str, Any] | None = None


# ---------------------------------------------------------------- reading


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; TaskError names the file, line and problem otherwise."""
    if not path.is_file():
        raise TaskError(f"{path}: not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise TaskError(f"{path}: malformed YAML{where}: {problem}; fix the YAML syntax") from None
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except OSError as e:  # no permission, a special file
        raise TaskError(f"{path}: cannot read it ({e.strerror}); make it a readable file") from None
    if data is None:
        raise TaskError(f"{path}: empty; expected a mapping of fields")
    if not isinstance(data, dict):
        raise TaskError(f"{path}: expected a mapping of fields, got a YAML {type(data).__name__}")
    return data


def parse_model(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    """Validate `data` as `model`; TaskError names the file, each bad field, the bad value and what to do."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [_field_error(path, model, err) for err in e.errors()]
        raise TaskError("\n".join(lines)) from None


def _field_error(path: Path, model: type[BaseModel], err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "(root)"
    top = str(err["loc"][0]) if err["loc"] else ""
    kind = err["type"]
    if kind == "missing":
        hint = _MISSING_HINTS.get(top) or _describe_field(model, top) or "add it"
        return f"{path}: field '{field}': {err['msg']}; {hint}"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(top, list(model.model_fields), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(model.model_fields)}"
        return f"{path}: field '{field}': unknown field; remove it ({hint})"
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    desc = _describe_field(model, top)
    return f"{path}: field '{field}': {err['msg']} (got {got}); fix the value" + (f" ({desc})" if desc else "")


def _describe_field(model: type[BaseModel], name: str) -> str:
    info = model.model_fields.get(name)
    return (info.description or "") if info is not None else ""


def _safe_rel(value: str, where: str) -> PurePosixPath:
    rel = PurePosixPath(value)
    if not value or rel.is_absolute() or ".." in rel.parts:
        raise TaskError(f"{where}: {value!r} must be a relative path inside the task folder (no '..', not absolute)")
    return rel


def load_task(root: Path) -> TaskSpec:
    """Read and check a task folder: configs, workspace files named by the config, and the grader."""
    root = Path(root)
    task_file = root / TASK_FILE
    if not root.is_dir():
        raise TaskError(f"{root}: not a directory; pass a task folder (one that holds {TASK_FILE})")
    if not task_file.is_file():
        raise TaskError(f"{task_file}: not found; a task folder holds {TASK_FILE}")
    config: TaskConfig = parse_model(TaskConfig, read_yaml_mapping(task_file), task_file)
    datasets = [_load_dataset(root, rel, task_file) for rel in config.dataset_configs]
    _check_layout(root, config, task_file)
    return TaskSpec(root=root.resolve(), config=config, datasets=datasets)


def _load_dataset(root: Path, rel: str, task_file: Path) -> DatasetConfig:
    path = root / _safe_rel(rel, f"{task_file}: field 'dataset_configs'")
    if not path.is_file():
        raise TaskError(f"{task_file}: field 'dataset_configs': {rel!r} not found in {root}; add the file or remove the entry")
    ds: DatasetConfig = parse_model(DatasetConfig, read_yaml_mapping(path), path)
    if ds.is_local:
        local = root / _safe_rel(ds.data_path, f"{path}: field 'data_path'")
        if not local.exists():
            raise TaskError(f"{path}: field 'data_path': {ds.data_path!r} not found in {root}; local data lives in the task folder")
    for split, name in ds.splits.items():
        if not (root / "workspace" / "data" / _safe_rel(name, f"{path}: field 'splits.{split}'")).is_file():
            raise TaskError(f"{path}: field 'splits.{split}': {name!r} not found in {root}/workspace/data/; add the file")
    return ds


def _check_in(base: Path, values: list[str], task_file: Path, field: str, what: str) -> None:
    for value in values:
        if not (base / _safe_rel(value, f"{task_file}: field '{field}'")).exists():
            raise TaskError(f"{task_file}: field '{field}': {value!r} not found in {base}/; {what}")


def _check_layout(root: Path, cfg: TaskConfig, task_file: Path) -> None:
    ws = root / "workspace"
    if not ws.is_dir():
        raise TaskError(f"{root}: no workspace/ folder; a task folder needs workspace/ with the agent's starting files")
    fix = "add the file or remove the entry"
    _check_in(ws, cfg.starter_code, task_file, "starter_code", fix)
    _check_in(ws, cfg.baseline_paths, task_file, "baseline_paths", fix)
    _check_in(ws, cfg.read_only_paths, task_file, "read_only_paths", fix)
    _check_in(ws, [cfg.sample_submission] if cfg.sample_submission else [], task_file, "sample_submission", fix)
    _check_in(root, [cfg.requirements_path] if cfg.requirements_path else [], task_file, "requirements_path", fix)
    if cfg.grading == "separate":
        if not (root / "grader" / "evaluate.py").is_file():
            raise TaskError(
                f"{root}/grader/evaluate.py: not found (field 'grading' is 'separate'); "
                "add the grader script, or set grading: mlgym for a task graded in the agent's sandbox"
            )
        _check_in(root / "grader", cfg.evaluation_paths, task_file, "evaluation_paths", "separate graders live in grader/")
    else:
        if not cfg.evaluation_paths:
            raise TaskError(f"{task_file}: field 'evaluation_paths': empty; grading 'mlgym' runs evaluation_paths[0]")
        _check_in(ws, cfg.evaluation_paths, task_file, "evaluation_paths", "grading 'mlgym' runs it in the workspace")
    if cfg.task_entrypoint == "PythonSubmissionTasks":
        if not cfg.submission_path:
            raise TaskError(
                f"{task_file}: field 'submission_path': required for PythonSubmissionTasks; name the Python file the agent edits"
            )
        _check_in(ws, [cfg.submission_path], task_file, "submission_path", "the starter version must be in the workspace")
    for field, scores in (("baseline_scores", cfg.baseline_scores), ("baseline_test_scores", cfg.baseline_test_scores)):
        if scores and cfg.metric not in scores[0]:
            raise TaskError(
                f"{task_file}: field '{field}': first entry {scores[0]} lacks the primary metric {cfg.metric!r}; "
                "add it or fix field 'metric'"
            )


# ---------------------------------------------------------------- queries


def load_tasks(paths: list[Path]) -> list[TaskSpec]:
    """Every task folder under `paths` (each a task folder or a folder of them), loaded, in order."""
    roots = [root for p in paths for root in find_tasks(Path(p))]
    if not roots:
        raise TaskError(f"no task folders under {[str(p) for p in paths]}; pass folders holding {TASK_FILE}")
    return [load_task(r) for r in roots]


def find_tasks(path: Path) -> list[Path]:
    """A task folder itself, or the task folders directly inside `path`, sorted by name (hidden ones skipped)."""
    path = Path(path)
    if (path / TASK_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise TaskError(f"{path}: not found; pass a task folder or a folder of task folders")
    found = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / TASK_FILE).is_file())
    if not found:
        raise TaskError(f"{path}: no task folders inside (a task folder holds {TASK_FILE}); check the path")
    return found


def dataset_docs(datasets: list[DatasetConfig]) -> str:
    """MLGym's dataset documentation: `NAME:` then the description, one block per dataset, blank line between."""
    return "\n\n".join(f"{ds.name.upper()}:\n{ds.description.rstrip()}" for ds in datasets)


def describe(spec: TaskSpec) -> str:
    """The task text shown to the agent: the description with `{dataset_docs}` filled (other braces kept as written)."""
    return spec.config.description.replace("{dataset_docs}", dataset_docs(spec.datasets))


# ---------------------------------------------------------------- writing


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (descriptions, code) as YAML block scalars."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """YAML text with keys in the given order and multi-line strings as blocks."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def save_task(task: TaskSpec | TaskParts, root: Path, *, overwrite: bool = False) -> TaskSpec:
    """Write a task folder to `root` atomically: build it in a hidden sibling, check it with `load_task`, rename.

    A `TaskSpec` is copied from its own folder (task.yaml and dataset files rewritten from the models);
    `TaskParts` are written from their contents. Returns the task loaded from `root`.
    """
    root = Path(root)
    if root.exists() and not overwrite:
        raise TaskError(f"{root}: already exists; pass overwrite=True to replace it, or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)
        if isinstance(task, TaskSpec):
            shutil.copytree(task.root, tmp, symlinks=True, dirs_exist_ok=True)
            _write_configs(tmp, task.config, task.datasets)
        else:
            _write_parts(tmp, task)
        try:
            load_task(tmp)
        except TaskError as e:
            raise TaskError(str(e).replace(str(tmp), str(root))) from None
        _publish(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote task %s to %s", task.config.id, root)
    return load_task(root)


def _write_configs(dest: Path, config: TaskConfig, datasets: list[DatasetConfig]) -> None:
    if len(datasets) != len(config.dataset_configs):
        raise TaskError(
            f"task {config.id}: {len(datasets)} dataset configs for {len(config.dataset_configs)} "
            "entries of field 'dataset_configs'; pass one DatasetConfig per entry"
        )
    (dest / TASK_FILE).write_text(dump_yaml(config.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    for rel, ds in zip(config.dataset_configs, datasets):
        path = dest / _safe_rel(rel, f"task {config.id}: field 'dataset_configs'")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(ds.model_dump(mode="json", exclude_none=True)), encoding="utf-8")


def _write_parts(dest: Path, parts: TaskParts) -> None:
    _write_configs(dest, parts.config, parts.datasets)
    (dest / "workspace").mkdir()
    for base, files in ((dest / "workspace", parts.workspace), (dest / "grader", parts.grader), (dest, parts.files)):
        for rel, source in files.items():
            _write_file(base / _safe_rel(rel, f"task {parts.config.id}: file"), source)
    if parts.provenance is not None:
        text = json.dumps(parts.provenance, indent=2, sort_keys=True, default=str) + "\n"
        (dest / PROVENANCE_FILE).write_text(text, encoding="utf-8")


def _write_file(path: Path, source: FileSource) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        if source.is_dir():
            shutil.copytree(source, path, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, path)
        else:
            raise TaskError(f"{source}: not found; cannot copy it to {path.name}")
    elif isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source, encoding="utf-8")


def _publish(tmp: Path, root: Path) -> None:
    if not root.exists():
        os.rename(tmp, root)
        return
    old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(root, old)
    try:
        os.rename(tmp, root)
    except OSError:
        os.rename(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)

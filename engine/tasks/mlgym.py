"""Imports an MLGym task (`configs/tasks/<id>.yaml` of an MLGym checkout) and writes a synthscale task folder."""

from __future__ import annotations

import ast
import logging
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.errors import TaskError, UnsupportedTaskError
from engine.tasks.folder import TaskParts, parse_model, read_yaml_mapping, save_task
from engine.tasks.spec import DatasetConfig, DatasetSplit, Direction, TaskConfig, TaskSpec

log = logging.getLogger(__name__)

# MLGym's configs carry no metric direction; its evaluation code keeps this table (see MLGYM.md).
MLGYM_METRICS: dict[str, tuple[str, Direction]] = {
    "regressionKaggleHousePrice": ("r2", "max"),
    "3SATTime": ("Time", "min"),
    "imageClassificationCifar10": ("accuracy", "max"),
    "imageClassificationFMnist": ("accuracy", "max"),
    "imageCaptioningCOCO": ("BLEU Score", "max"),
    "languageModelingFineWeb": ("val_loss", "min"),
    "naturalLanguageInferenceMNLI": ("validation_accuracy", "max"),
    "battleOfSexes": ("Score", "max"),
    "prisonersDilemma": ("Score", "max"),
    "blotto": ("Score", "max"),
    "rlBreakoutMinAtar": ("Reward Mean", "max"),
    "rlMetaMazeMisc": ("Reward Mean", "max"),
    "rlMountainCarContinuous": ("Reward Mean", "max"),
}

DEFAULT_IMAGE_PACKAGES: frozenset[str] = frozenset({"numpy", "pandas", "scikit-learn", "scipy"})
MLGYM_DEFAULT_TRAINING_TIMEOUT_S = 3600  # what MLGym uses when a task config leaves training_timeout empty

# Import name → distribution name, where they differ.
_IMPORT_PACKAGES = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "cv2": "opencv-python",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "google": "protobuf",
}
_GPU_FRAMEWORKS = frozenset({"torch", "jax", "jaxlib", "tensorflow"})
_MLGYM_TASK_FIELDS = frozenset(
    {
        "id", "name", "description", "dataset_configs", "task_entrypoint", "training_timeout", "requirements_path",
        "benchmark_name", "use_generic_conda", "starter_code", "baseline_paths", "baseline_scores",
        "sample_submission", "evaluation_paths", "evaluation_read_only", "secret_files", "memory_path",
    }
)  # fmt: skip


class _MLGymDataset(BaseModel):
    """MLGym's dataset config (`configs/datasets/*.yaml`); is_local defaults to False there."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    data_path: str
    is_local: bool = False
    train_split: DatasetSplit | None = None
    valid_split: DatasetSplit | None = None
    test_split: DatasetSplit | None = None


def normalize_package(name: str) -> str:
    """PEP 503 name: lower case, runs of `-_.` as one `-` (`Scikit_Learn` → `scikit-learn`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> list[str]:
    """Distribution names in a requirements.txt (versions, extras, markers, options and comments dropped)."""
    names: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match and "://" not in match.group(0):
            names.append(normalize_package(match.group(0)))
    return sorted(set(names))


def imported_packages(sources: dict[str, str], local_modules: set[str]) -> list[str]:
    """Distributions imported by Python sources (path → text), leaving out the stdlib and `local_modules`."""
    found: set[str] = set()
    for path, text in sources.items():
        try:
            tree = ast.parse(text, filename=path)
        except SyntaxError as e:
            log.warning("cannot parse %s for imports (%s); its imports are not counted", path, e.msg)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in local_modules and top != "__future__":
                    found.add(normalize_package(_IMPORT_PACKAGES.get(top, top)))
    return sorted(found)


def check_supported(spec: TaskSpec, image_packages: set[str] | frozenset[str] | None = None) -> list[str]:
    """The task's required packages that the image lacks (the stdlib always counts as present), sorted."""
    have = {normalize_package(p) for p in (DEFAULT_IMAGE_PACKAGES if image_packages is None else image_packages)}
    if "sklearn" in have:
        have.add("scikit-learn")
    return sorted(
        r
        for r in {normalize_package(p) for p in spec.config.requirements}
        if r not in have and r.replace("-", "_") not in sys.stdlib_module_names
    )


def available_task_ids(mlgym_dir: Path) -> dict[str, Path]:
    """Task id → config file, for every `configs/tasks/*.yaml` of an MLGym checkout."""
    ids: dict[str, Path] = {}
    for path in sorted((Path(mlgym_dir) / "configs" / "tasks").glob("*.yaml")):
        try:
            ids[str(read_yaml_mapping(path).get("id", path.stem))] = path
        except TaskError as e:
            log.warning("skipping unreadable MLGym task config: %s", e)
    return ids


def _source(repo: Path, rel: str, where: str) -> Path:
    path = repo / rel
    if not path.exists():
        raise TaskError(f"{where}: {rel!r} not found in the MLGym checkout {repo}; check the path")
    return path


def _add_files(workspace: dict[str, Path], dest: str, src: Path, where: str) -> None:
    items = [(dest, src)] if src.is_file() else [
        (f"{dest}/{p.relative_to(src).as_posix()}", p) for p in sorted(src.rglob("*")) if p.is_file()
    ]  # fmt: skip
    for rel, path in items:
        if rel in workspace and workspace[rel] != path:
            raise TaskError(f"{where}: two sources for workspace/{rel} ({workspace[rel]} and {path}); rename one")
        workspace[rel] = path


def _import_datasets(repo: Path, raw: dict[str, Any], cfg_path: Path, workspace: dict[str, Path]) -> list[DatasetConfig]:
    datasets = []
    for rel in raw.get("dataset_configs") or []:
        path = _source(repo / "configs", rel, f"{cfg_path}: field 'dataset_configs'")
        ds: _MLGymDataset = parse_model(_MLGymDataset, read_yaml_mapping(path), path)
        fields = ds.model_dump(exclude={"data_path", "is_local"})
        if ds.is_local:
            src = _source(repo, ds.data_path, f"{path}: field 'data_path'")
            _add_files(workspace, "data" if src.is_dir() else f"data/{src.name}", src, str(path))
            datasets.append(DatasetConfig(data_path="workspace/data", is_local=True, **fields))
        else:
            datasets.append(DatasetConfig(data_path=ds.data_path, is_local=False, **fields))
    return datasets


def _resolve_metric(task_id: str, metric: str | None, direction: Direction | None) -> tuple[str, Direction]:
    known = MLGYM_METRICS.get(task_id)
    name = metric or (known[0] if known else None)
    if name is None:
        raise TaskError(
            f"MLGym task {task_id!r} is not in MLGYM_METRICS (the 13 MLGym-Bench tasks); pass metric= and direction="
        )
    if direction is None:
        if known is None or known[0] != name:
            raise TaskError(f"no direction known for metric {name!r} of MLGym task {task_id!r}; pass direction='max' or 'min'")
        direction = known[1]
    return name, direction


def _python_submission(workspace: dict[str, Path], baseline_paths: list[str], cfg_path: Path) -> str:
    if "target.py" in workspace:  # MLGym's PythonSubmissionTasks scores target.py
        return "target.py"
    first_py = next((p for p in baseline_paths if p.endswith(".py")), None)
    if first_py is None:
        raise TaskError(f"{cfg_path}: PythonSubmissionTasks without target.py or a .py baseline; cannot tell the artefact")
    return first_py


def import_mlgym_task(
    mlgym_dir: Path,
    task_id: str,
    out: Path,
    image_packages: set[str] | frozenset[str] | None = None,
    *,
    allow_unsupported: bool = False,
    metric: str | None = None,
    direction: Direction | None = None,
    overwrite: bool = False,
) -> TaskSpec:
    """Write MLGym task `task_id` as the task folder `out/<task_id>` (grading: mlgym, evaluate.py in the workspace).

    Starter code (files or folders, paths relative to the checkout) lands in the workspace under its base name;
    local datasets' files land in workspace/data/ (read-only). Requirements come from requirements_path and the
    imports of the starter and evaluation code; UnsupportedTaskError names those the image lacks.
    `metric`/`direction` override MLGYM_METRICS (needed for tasks outside MLGym-Bench).
    """
    repo = Path(mlgym_dir)
    cfg_path, raw = _read_task_config(repo, task_id)
    workspace, datasets = _build_workspace(repo, raw, cfg_path)
    requirements, files = _requirements(repo, raw, cfg_path, workspace)
    fields = _config_fields(task_id, raw, workspace, datasets, requirements, has_requirements_file=bool(files))
    fields["metric"], fields["direction"] = _resolve_metric(task_id, metric, direction)
    if fields["task_entrypoint"] == "PythonSubmissionTasks":
        fields["submission_path"] = _python_submission(workspace, fields["baseline_paths"], cfg_path)
    config: TaskConfig = parse_model(TaskConfig, fields, cfg_path)
    dest = Path(out) / task_id
    missing = check_supported(TaskSpec(root=dest, config=config, datasets=datasets), image_packages)
    if missing and not allow_unsupported:
        raise UnsupportedTaskError(
            f"MLGym task {task_id!r} needs {', '.join(missing)}, which the task image lacks; add them to the image "
            "and pass image_packages, or pass allow_unsupported=True to import it anyway"
        )
    provenance = {
        "source": "mlgym",
        "note": "imported from MLGym; graded MLGym's way (its evaluate.py runs in the agent's sandbox)",
        "mlgym_dir": str(repo.resolve()),
        "task_config": cfg_path.relative_to(repo).as_posix(),
        "metric_from": "argument" if metric else "MLGYM_METRICS",
        "unsupported_packages": missing,
        "dropped_fields": {k: raw[k] for k in ("benchmark_name", "secret_files", "memory_path") if raw.get(k)},
    }
    parts = TaskParts(config=config, datasets=datasets, workspace=dict(workspace), files=files, provenance=provenance)
    return save_task(parts, dest, overwrite=overwrite)


def _read_task_config(repo: Path, task_id: str) -> tuple[Path, dict[str, Any]]:
    ids = available_task_ids(repo)
    if task_id not in ids:
        raise TaskError(f"no MLGym task {task_id!r} in {repo}/configs/tasks; available: {', '.join(sorted(ids)) or 'none'}")
    raw = read_yaml_mapping(ids[task_id])
    unknown = sorted(set(raw) - _MLGYM_TASK_FIELDS)
    if unknown:
        raise TaskError(f"{ids[task_id]}: field '{unknown[0]}': not an MLGym task field; remove it (unknown: {unknown})")
    return ids[task_id], raw


def _build_workspace(repo: Path, raw: dict[str, Any], cfg_path: Path) -> tuple[dict[str, Path], list[DatasetConfig]]:
    """Workspace-relative path → source file: local data under data/, starter code and sample submission by name."""
    workspace: dict[str, Path] = {}
    datasets = _import_datasets(repo, raw, cfg_path, workspace)
    for rel in raw.get("starter_code") or []:
        src = _source(repo, rel, f"{cfg_path}: field 'starter_code'")
        _add_files(workspace, src.name, src, str(cfg_path))
    if raw.get("sample_submission"):
        src = _source(repo, raw["sample_submission"], f"{cfg_path}: field 'sample_submission'")
        workspace.setdefault(src.name, src)
    for field in ("evaluation_paths", "baseline_paths"):
        for value in map(str, raw.get(field) or []):
            if value not in workspace and not any(k.startswith(value.rstrip("/") + "/") for k in workspace):
                raise TaskError(f"{cfg_path}: field '{field}': {value!r} is not in the workspace built from starter_code")
    return workspace, datasets


def _config_fields(
    task_id: str,
    raw: dict[str, Any],
    workspace: dict[str, Path],
    datasets: list[DatasetConfig],
    requirements: list[str],
    *,
    has_requirements_file: bool,
) -> dict[str, Any]:
    """Our task.yaml fields from MLGym's (metric, direction and submission_path are added by the caller)."""
    sample = raw.get("sample_submission")
    return {
        "id": task_id,
        "name": raw.get("name", task_id),
        "description": _unescape_format(str(raw.get("description", ""))),
        "dataset_configs": _dataset_files(datasets),
        "task_entrypoint": raw.get("task_entrypoint", "CSVSubmissionTasks"),
        "training_timeout": raw.get("training_timeout") or MLGYM_DEFAULT_TRAINING_TIMEOUT_S,
        "requirements_path": "requirements.txt" if has_requirements_file else None,
        "use_generic_conda": raw.get("use_generic_conda", True),
        "starter_code": sorted({rel.split("/")[0] for rel in workspace if not rel.startswith("data/")}),
        "baseline_paths": [str(p) for p in raw.get("baseline_paths") or []],
        "baseline_scores": raw.get("baseline_scores") or [],
        "sample_submission": Path(sample).name if sample else None,
        "evaluation_paths": [str(p) for p in raw.get("evaluation_paths") or []],
        "evaluation_read_only": raw.get("evaluation_read_only", False),
        "read_only_paths": ["data"] if any(rel.startswith("data/") for rel in workspace) else [],
        "requirements": requirements,
        "gpus": 1 if _GPU_FRAMEWORKS & set(requirements) else 0,
        "grading": "mlgym",
    }


def _requirements(
    repo: Path, raw: dict[str, Any], cfg_path: Path, workspace: dict[str, Path]
) -> tuple[list[str], dict[str, Path | str | bytes]]:
    files: dict[str, Path | str | bytes] = {}
    names: set[str] = set()
    if raw.get("requirements_path"):
        src = _source(repo, str(raw["requirements_path"]), f"{cfg_path}: field 'requirements_path'")
        files["requirements.txt"] = src
        names.update(parse_requirements(src.read_text(encoding="utf-8")))
    code = {rel: path for rel, path in workspace.items() if rel.endswith(".py") and not rel.startswith("data/")}
    local = {Path(rel).stem for rel in code} | {part for rel in workspace for part in rel.split("/")[:-1]}
    names.update(imported_packages({rel: p.read_text(encoding="utf-8", errors="replace") for rel, p in code.items()}, local))
    return sorted(names), files


def _dataset_files(datasets: list[DatasetConfig]) -> list[str]:
    if len(datasets) == 1:
        return ["dataset.yaml"]
    return [f"dataset_{i}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', ds.name)}.yaml" for i, ds in enumerate(datasets)]


def _unescape_format(text: str) -> str:
    """MLGym fills descriptions with str.format, so literal braces are doubled there; ours keep them single."""
    return text.replace("{{", "{").replace("}}", "}")

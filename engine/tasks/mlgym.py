"""Imports an MLGym task config (`configs/tasks/*.yaml` of an MLGym checkout) and writes a synthscale task folder.

Every config either imports or stops with one line naming all that is missing and how to get it: a Hub dataset
(`--materialise` downloads it into the workspace), a data folder (and the MLGym helper that makes it), packages
the task image lacks (`--image-package`, `--allow-unsupported`), a metric (`--metric`, `--direction`).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict

from engine.config import HubConfig
from engine.errors import TaskError, UnsupportedTaskError
from engine.tasks.folder import TaskParts, parse_model, read_yaml_mapping, save_task
from engine.tasks.spec import DatasetConfig, DatasetSplit, Direction, TaskConfig, TaskEntrypoint, TaskSpec

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
                if top not in sys.stdlib_module_names and top not in local_modules and top not in ("__future__", "__main__"):
                    found.add(normalize_package(_IMPORT_PACKAGES.get(top, top)))
    return sorted(found)


def check_supported(spec: TaskSpec, image_packages: set[str] | frozenset[str] | None = None) -> list[str]:
    """The task's required packages that the image lacks (the stdlib always counts as present), sorted."""
    return lacking_packages(spec.config.requirements, image_packages)


def lacking_packages(requirements: list[str], image_packages: set[str] | frozenset[str] | None = None) -> list[str]:
    """`requirements` the image lacks (DEFAULT_IMAGE_PACKAGES when None); the stdlib always counts as present."""
    have = {normalize_package(p) for p in (DEFAULT_IMAGE_PACKAGES if image_packages is None else image_packages)}
    if "sklearn" in have:
        have.add("scikit-learn")
    return sorted(r for r in {normalize_package(p) for p in requirements}
                  if r not in have and r.replace("-", "_") not in sys.stdlib_module_names)


_ENTRYPOINTS: tuple[str, ...] = get_args(TaskEntrypoint)
# datasets' packaged builders: `load_dataset("csv", ...)` names a file format, not a Hub dataset
_BUILDERS = frozenset({"arrow", "audiofolder", "csv", "generator", "imagefolder", "json", "pandas", "parquet", "sql",
                       "text", "videofolder", "webdataset", "xml"})
_HUB_HOW = ("rerun with --materialise to download {them} into the workspace through huggingface_hub (needs network; "
            "set HF_TOKEN for a gated dataset)")
_PACKAGES_HOW = ("add them to the task image and name each with --image-package, or pass --allow-unsupported to "
                 "import it anyway")


class MLGymTaskRef(BaseModel):
    """One `configs/tasks/*.yaml` of a checkout: MLGym's id, and the id its synthscale task folder gets (the config
    file's stem where another config shares MLGym's id: imageClassificationCifar10L1)."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    mlgym_id: str
    task_id: str


def task_configs(mlgym_dir: Path) -> list[MLGymTaskRef]:
    """Every readable `configs/tasks/*.yaml` of an MLGym checkout, by file name."""
    found: list[tuple[Path, str]] = []
    for path in sorted((Path(mlgym_dir) / "configs" / "tasks").glob("*.yaml")):
        try:
            found.append((path, str(read_yaml_mapping(path).get("id", path.stem))))
        except TaskError as e:
            log.warning("skipping unreadable MLGym task config: %s", e)
    ids = [i for _, i in found]
    return [MLGymTaskRef(path=p, mlgym_id=i, task_id=i if ids.count(i) == 1 or p.stem == i else p.stem)
            for p, i in found]


def available_task_ids(mlgym_dir: Path) -> dict[str, Path]:
    """Task id (as imported) → config file, for every `configs/tasks/*.yaml` of an MLGym checkout."""
    return {ref.task_id: ref.path for ref in task_configs(mlgym_dir)}


def resolve_task_config(mlgym_dir: Path, task: str | Path) -> MLGymTaskRef:
    """The config `task` names: a config file (path, file name or stem), else an imported id, else MLGym's id when
    one config alone has it. `imageClassificationCifar10` is the plain config; its L1 variant, which shares MLGym's
    id, is `imageClassificationCifar10L1` (its file's stem)."""
    refs = task_configs(mlgym_dir)
    text = str(task)
    if text.endswith((".yaml", ".yml")) and Path(text).is_file():
        for ref in refs:
            if ref.path.resolve() == Path(text).resolve():
                return ref
        raise TaskError(f"{text}: not one of {Path(mlgym_dir)}/configs/tasks/*.yaml; name a config of that checkout")
    for match in (lambda r: text in (r.path.name, r.path.stem), lambda r: r.task_id == text,
                  lambda r: r.mlgym_id == text):
        hits = [r for r in refs if match(r)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            names = ", ".join(r.path.name for r in hits)
            raise TaskError(f"MLGym id {text!r} is shared by {names}; name the config file instead")
    available = ", ".join(sorted(r.task_id for r in refs)) or "none"
    raise TaskError(f"no MLGym task {text!r} in {Path(mlgym_dir)}/configs/tasks; available: {available}")


def hub_ids_in_code(sources: dict[str, str]) -> list[str]:
    """Hub dataset ids that Python sources load by literal: the first argument of `load_dataset(...)` calls.

    >>> hub_ids_in_code({"a.py": "load_dataset('multi_nli'); load_dataset('csv', data_files='x.csv')"})
    ['multi_nli']
    """
    found: set[str] = set()
    for path, text in sources.items():
        try:
            tree = ast.parse(text, filename=path)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            value = node.args[0].value
            if name == "load_dataset" and isinstance(value, str) and value not in _BUILDERS and not value.startswith((".", "/")):
                found.add(value)
    return sorted(found)


def materialise_hub_dataset(hf_id: str, hub: HubConfig, cache_dir: Path | None = None) -> tuple[str, dict[str, Path]]:
    """Download Hub dataset `hf_id` at its current commit: (commit sha, repo-relative path → local file).

    The files land in the workspace under `<hf_id>/`, where `load_dataset("<hf_id>")` run from the workspace finds
    them as a local folder, so MLGym's code loads the dataset with no network."""
    from huggingface_hub import HfApi, snapshot_download

    token: str | bool = os.environ.get(hub.token_env) or False
    try:
        sha = HfApi(endpoint=hub.endpoint, token=token).dataset_info(hf_id).sha
        folder = Path(snapshot_download(hf_id, repo_type="dataset", revision=sha, endpoint=hub.endpoint, token=token,
                                        cache_dir=cache_dir, etag_timeout=hub.timeout_s))
    except Exception as e:  # noqa: BLE001 - any Hub or transport failure is the same stop for the user
        raise UnsupportedTaskError(
            f"materialising the Hub dataset {hf_id} from {hub.endpoint} failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); check the id, the network and ${hub.token_env}") from None
    files = {p.relative_to(folder).as_posix(): p.resolve() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != ".gitattributes"}
    log.info("materialised %s@%s: %d files", hf_id, sha, len(files))
    return str(sha), files


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


def _missing_data_folder(repo: Path, data_path: str, ds_rel: str) -> str:
    """What to say about a local dataset folder the checkout lacks: the MLGym helper that makes it, if any."""
    task_dir = (repo / data_path).parent
    helpers = sorted(p.relative_to(repo).as_posix() for p in (task_dir / "_helpers").glob("*.py")) if (
        task_dir / "_helpers").is_dir() else []
    how = (f"which the checkout lacks: make it with MLGym's helper {', '.join(helpers)}" if helpers else
           "which the checkout lacks and no MLGym helper makes: put the dataset's files there")
    return f"the data folder {data_path} (configs/{ds_rel}), {how}"


def _import_datasets(repo: Path, raw: dict[str, Any], workspace: dict[str, Path],
                     missing: list[str]) -> list[DatasetConfig]:
    """Dataset configs → ours; local data copied into workspace/data/; what is absent is appended to `missing`."""
    datasets = []
    for rel in raw.get("dataset_configs") or []:
        path = repo / "configs" / rel
        if not path.is_file():
            missing.append(f"the dataset config configs/{rel}, which the checkout lacks: write it (name, description, "
                           "data_path, is_local) or use a checkout that has it")
            continue
        ds: _MLGymDataset = parse_model(_MLGymDataset, read_yaml_mapping(path), path)
        fields = ds.model_dump(exclude={"data_path", "is_local"})
        if not ds.is_local:
            datasets.append(DatasetConfig(data_path=ds.data_path, is_local=False, **fields))
        elif not (repo / ds.data_path).exists():
            missing.append(_missing_data_folder(repo, ds.data_path, rel))
        else:
            src = repo / ds.data_path
            _add_files(workspace, "data" if src.is_dir() else f"data/{src.name}", src, str(path))
            datasets.append(DatasetConfig(data_path="workspace/data", is_local=True, **fields))
    return datasets


def _resolve_metric(ref: MLGymTaskRef, raw: dict[str, Any], metric: str | None, direction: Direction | None,
                    missing: list[str]) -> tuple[str, Direction] | None:
    """MLGym's metric for the task (MLGYM_METRICS by MLGym's id), or the flags'; problems go to `missing`."""
    known = MLGYM_METRICS.get(ref.mlgym_id)
    baseline = [str(k) for k in (raw.get("baseline_scores") or [{}])[0]]
    reports = f" (its baseline reports {', '.join(baseline)})" if baseline else ""
    name = metric or (known[0] if known else None)
    if name is None:
        missing.append(f"a metric: {ref.mlgym_id!r} is not one of the 13 MLGym-Bench tasks whose metrics are known; "
                       f"pass --metric{reports} and --direction max or min")
        return None
    if baseline and name not in baseline:
        missing.append(f"a metric its baseline_scores has: --metric {name!r} is not one of {', '.join(baseline)}")
        return None
    if direction is None and (known is None or known[0] != name):
        missing.append(f"the direction of metric {name!r}: pass --direction max or min")
        return None
    return name, direction or known[1]  # type: ignore[index]


def _python_submission(workspace: dict[str, Path], raw: dict[str, Any]) -> str | None:
    """MLGym scores target.py; where a task has none (3SATTime), the first starter .py that is not evaluation code."""
    if "target.py" in workspace:
        return "target.py"
    evaluation = {str(p) for p in raw.get("evaluation_paths") or []}
    starters = [Path(str(rel)).name for rel in raw.get("starter_code") or []]
    return next((n for n in starters if n.endswith(".py") and n not in evaluation and n in workspace), None)


def import_mlgym_task(
    mlgym_dir: Path,
    task: str | Path,
    out: Path,
    image_packages: set[str] | frozenset[str] | None = None,
    *,
    allow_unsupported: bool = False,
    metric: str | None = None,
    direction: Direction | None = None,
    overwrite: bool = False,
    hub: HubConfig | None = None,
    hub_cache_dir: Path | None = None,
) -> TaskSpec:
    """Write the MLGym task config `task` (see `resolve_task_config`) as the task folder `out/<task id>` (grading:
    mlgym, evaluate.py in the workspace) and return it.

    Starter code lands in the workspace under its base name; local datasets' files in workspace/data/ (read-only).
    Hub datasets (dataset configs that are not local, and `load_dataset("<id>")` literals in the code) are
    downloaded into workspace/<id>/ when `hub` is given (the CLI's --materialise). Requirements come from
    requirements_path and the code's imports. Anything missing stops the import with one UnsupportedTaskError line;
    packages the image lacks only without `allow_unsupported`. `metric`/`direction` override MLGYM_METRICS.
    """
    repo = Path(mlgym_dir)
    ref = resolve_task_config(repo, task)
    raw = _read_task_config(ref.path)
    missing: list[str] = []
    entry = raw.get("task_entrypoint", "CSVSubmissionTasks")
    if entry not in _ENTRYPOINTS:
        missing.append(f"a runnable task class: task_entrypoint {entry!r} is none of {', '.join(_ENTRYPOINTS)}")
    workspace: dict[str, Path] = {}
    datasets = _import_datasets(repo, raw, workspace, missing)
    _add_starter_code(repo, raw, workspace, missing)
    resolved = _resolve_metric(ref, raw, metric, direction, missing)
    requirements, files, code = _requirements(repo, raw, ref.path, workspace)
    hub_ids = sorted({d.data_path for d in datasets if not d.is_local} | set(hub_ids_in_code(code)))
    revisions: dict[str, str] = {}
    if hub_ids and hub is None:
        ids = ", ".join(hub_ids)
        missing.append(f"the Hub dataset{'s' * (len(hub_ids) > 1)} {ids}: "
                       + _HUB_HOW.format(them="them" if len(hub_ids) > 1 else "it"))
    lacking = lacking_packages(requirements, image_packages)
    if lacking and not allow_unsupported:
        missing.append(f"packages the task image lacks ({', '.join(lacking)}): {_PACKAGES_HOW}")
    if missing:
        rel = ref.path.relative_to(repo).as_posix()
        raise UnsupportedTaskError(f"MLGym task {ref.task_id!r} ({rel}) cannot be imported; it needs "
                                   + "; and ".join(missing))
    if hub is not None:
        for hf_id in hub_ids:
            revisions[hf_id], got = materialise_hub_dataset(hf_id, hub, hub_cache_dir)
            for path, src in got.items():
                workspace[f"{hf_id}/{path}"] = src
        datasets = [d.model_copy(update={"revision": revisions[d.data_path]}) if d.data_path in revisions else d
                    for d in datasets]
    fields = _config_fields(ref.task_id, raw, workspace, datasets, requirements, has_requirements_file=bool(files),
                            hub_folders=hub_ids if hub is not None else [])
    fields["metric"], fields["direction"] = resolved  # type: ignore[misc]
    if entry == "PythonSubmissionTasks":
        fields["submission_path"] = _python_submission(workspace, raw)
    config: TaskConfig = parse_model(TaskConfig, fields, ref.path)
    provenance = {
        "source": "mlgym",
        "note": "imported from MLGym; graded MLGym's way (its evaluate.py runs in the agent's sandbox)",
        "mlgym_dir": str(repo.resolve()),
        "task_config": ref.path.relative_to(repo).as_posix(),
        "mlgym_id": ref.mlgym_id,
        "metric_from": "argument" if metric else "MLGYM_METRICS",
        "unsupported_packages": lacking,
        "hub_datasets": revisions,
        "dropped_fields": {k: raw[k] for k in ("benchmark_name", "secret_files", "memory_path") if raw.get(k)},
    }
    parts = TaskParts(config=config, datasets=datasets, workspace=dict(workspace), files=files, provenance=provenance)
    return save_task(parts, Path(out) / ref.task_id, overwrite=overwrite)


def _read_task_config(path: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(path)
    unknown = sorted(set(raw) - _MLGYM_TASK_FIELDS)
    if unknown:
        raise TaskError(f"{path}: field '{unknown[0]}': not an MLGym task field; remove it (unknown: {unknown})")
    return raw


def _add_starter_code(repo: Path, raw: dict[str, Any], workspace: dict[str, Path], missing: list[str]) -> None:
    """Starter code and the sample submission by base name; evaluation/baseline paths must be among them."""
    sample = [raw["sample_submission"]] if raw.get("sample_submission") else []
    for field, rels in (("starter_code", raw.get("starter_code") or []), ("sample_submission", sample)):
        for rel in map(str, rels):
            src = repo / rel
            if not src.exists():
                missing.append(f"its {field} {rel}, which the checkout lacks: use a checkout that has it")
            elif field == "starter_code":
                _add_files(workspace, src.name, src, f"{field} {rel}")
            else:
                workspace.setdefault(src.name, src)
    if missing:
        return
    for field in ("evaluation_paths", "baseline_paths"):
        for value in map(str, raw.get(field) or []):
            if value not in workspace and not any(k.startswith(value.rstrip("/") + "/") for k in workspace):
                missing.append(f"its {field} entry {value!r} among the files starter_code puts in the workspace")


def _config_fields(
    task_id: str,
    raw: dict[str, Any],
    workspace: dict[str, Path],
    datasets: list[DatasetConfig],
    requirements: list[str],
    *,
    has_requirements_file: bool,
    hub_folders: list[str],
) -> dict[str, Any]:
    """Our task.yaml fields from MLGym's (metric, direction and submission_path are added by the caller)."""
    sample = raw.get("sample_submission")
    data = ("data/", *(f"{h}/" for h in hub_folders))
    return {
        "id": task_id,
        "name": raw.get("name", task_id),
        "description": _unescape_format(str(raw.get("description", ""))),
        "dataset_configs": _dataset_files(datasets),
        "task_entrypoint": raw.get("task_entrypoint", "CSVSubmissionTasks"),
        "training_timeout": raw.get("training_timeout") or MLGYM_DEFAULT_TRAINING_TIMEOUT_S,
        "requirements_path": "requirements.txt" if has_requirements_file else None,
        "use_generic_conda": raw.get("use_generic_conda", True),
        "starter_code": sorted({rel.split("/")[0] for rel in workspace if not rel.startswith(data)}),
        "baseline_paths": [str(p) for p in raw.get("baseline_paths") or []],
        "baseline_scores": raw.get("baseline_scores") or [],
        "sample_submission": Path(sample).name if sample else None,
        "evaluation_paths": [str(p) for p in raw.get("evaluation_paths") or []],
        "evaluation_read_only": raw.get("evaluation_read_only", False),
        "read_only_paths": (["data"] if any(rel.startswith("data/") for rel in workspace) else []) + hub_folders,
        "requirements": requirements,
        "gpus": 1 if _GPU_FRAMEWORKS & set(requirements) else 0,
        "grading": "mlgym",
    }


def _requirements(
    repo: Path, raw: dict[str, Any], cfg_path: Path, workspace: dict[str, Path]
) -> tuple[list[str], dict[str, Path | str | bytes], dict[str, str]]:
    """Required distributions, the requirements file to copy, and the workspace's code (path → text)."""
    files: dict[str, Path | str | bytes] = {}
    names: set[str] = set()
    if raw.get("requirements_path"):
        src = _source(repo, str(raw["requirements_path"]), f"{cfg_path}: field 'requirements_path'")
        files["requirements.txt"] = src
        names.update(parse_requirements(src.read_text(encoding="utf-8")))
    code = {rel: path for rel, path in workspace.items() if rel.endswith(".py") and not rel.startswith("data/")}
    local = {Path(rel).stem for rel in code} | {part for rel in workspace for part in rel.split("/")[:-1]}
    texts = {rel: p.read_text(encoding="utf-8", errors="replace") for rel, p in code.items()}
    names.update(imported_packages(texts, local))
    return sorted(names), files, texts


def _dataset_files(datasets: list[DatasetConfig]) -> list[str]:
    if len(datasets) == 1:
        return ["dataset.yaml"]
    return [f"dataset_{i}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', ds.name)}.yaml" for i, ds in enumerate(datasets)]


def _unescape_format(text: str) -> str:
    """MLGym fills descriptions with str.format, so literal braces are doubled there; ours keep them single."""
    return text.replace("{{", "{").replace("}}", "}")

"""Contamination guard: reads a proposal, its sampled rows and a row-hash index (JSON); returns a RejectRecord or None.

A synthesized task must not be built on MLGym-Bench's datasets, environments or games (students are scored
there), nor restate one of its tasks. Four checks, in order, each with its reject reason:

- ``contaminated_dataset``: the proposal's Hub id, dataset name or config is a benchmark dataset or an alias of
  one, or its name/description names one (``benchmark.BENCHMARK_ALIASES``).
- ``contaminated_environment``: the text names a benchmark environment (MinAtar Breakout, MetaMaze,
  MountainCarContinuous), or the game's payoffs are MLGym's own (when the caller passes them).
- ``contaminated_rows``: sampled rows hash to rows of a benchmark dataset (a renamed re-upload).
- ``contaminated_description``: the description is near-identical to a benchmark task's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import ArtifactError, HubError
from engine.synth.guards.benchmark import (
    BENCHMARK_ALIASES,
    BENCHMARK_DESCRIPTIONS,
    MLGYM_BLOTTO,
    MLGYM_GAME_PAYOFFS,
)
from engine.synth.guards.text import alias_spans, jaccard, shingles, squash
from engine.synth.records import ProposalRecord, RejectRecord

__all__ = [
    "BENCHMARK_ALIASES", "BENCHMARK_DESCRIPTIONS", "BENCHMARK_HUB_SPLITS", "ContaminationIndex", "check_contamination",
    "contamination_index_from_hub", "description_similarity", "match_dataset", "match_payoffs", "row_fingerprints",
]

log = logging.getLogger(__name__)

ROW_HITS_MIN = 2  # this many sampled rows found in one benchmark dataset is a re-upload …
ROW_HIT_SHARE_MIN = 0.5  # … and so is this share of the hashable sampled rows
MIN_FINGERPRINT_CHARS = 16  # shorter rows ("0", "cat") are common to many datasets; they are not hashed
LONG_CELL_CHARS = 48
DESCRIPTION_SHINGLE_WORDS = 2
# Where `contamination_index_from_hub` can read text benchmarks through the viewer (name → (hf_id, config, split)).
# Image datasets are left out: the viewer serves images by URL, which says nothing about their pixels. These ids
# are the public Hub names as we know them; check them online when building the index.
BENCHMARK_HUB_SPLITS: dict[str, tuple[str, str | None, str]] = {
    "mnli": ("nyu-mll/multi_nli", "default", "train"),
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT", "train"),
}
_MISSING = {"", "na", "nan", "none", "null", "n/a"}
_SQUASHED = {name: {squash(a) for a in e.aliases} | {squash(i.split("/")[-1]) for i in e.hub_ids}
             for name, e in BENCHMARK_ALIASES.items()}
_EXACT = {name: {squash(a) for a in e.exact_aliases} for name, e in BENCHMARK_ALIASES.items()}
_HUB_IDS = {i.lower(): name for name, e in BENCHMARK_ALIASES.items() for i in e.hub_ids}

RowSource = Callable[[str, "str | None", str, int], list[dict[str, Any]]]
Payoffs = Sequence[Sequence[Any]] | Mapping[Any, Any]


# ---------------------------------------------------------------- row hashes


def normalise_value(value: Any) -> str | None:
    """A cell in the form re-uploads agree on: numbers by value (``"3.0"``, ``3`` and ``3.0000001`` alike), text
    case-folded with whitespace collapsed, missing values as one token. None for cells that cannot be compared
    (media the viewer serves by URL); a media dict with ``bytes`` hashes the bytes.

    >>> [normalise_value(v) for v in (3, "3.0", 0.1234567, "  Hello   World ", None, {"src": "http://x"})]
    ['3', '3', '0.123457', 'hello world', '∅', None]
    """
    if value is None or isinstance(value, bool):
        return "∅" if value is None else str(value).lower()
    if isinstance(value, (bytes, bytearray)):
        return "b:" + hashlib.sha1(bytes(value)).hexdigest()
    if isinstance(value, (int, float)):
        return _number(float(value))
    if isinstance(value, str):
        text = " ".join(value.split()).casefold()
        if text in _MISSING:
            return "∅"
        try:
            return _number(float(text))
        except ValueError:
            return text
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return normalise_value(value["bytes"])
        if "src" in value or "path" in value:
            return None
        parts = [normalise_value(v) for v in value.values()]
        return None if any(p is None for p in parts) else "{" + ",".join(sorted(parts)) + "}"  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        parts = [normalise_value(v) for v in value]
        return None if any(p is None for p in parts) else "[" + ",".join(parts) + "]"  # type: ignore[arg-type]
    return " ".join(str(value).split()).casefold()


def _number(x: float) -> str:
    if math.isnan(x):
        return "∅"
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def row_fingerprints(row: Mapping[str, Any], *, min_chars: int = MIN_FINGERPRINT_CHARS) -> set[str]:
    """Hashes of one row that ignore its column names and column order.

    Column names are left out entirely: a row is the sorted multiset of its normalised cell values, hashed
    (the multiset matches every row an ordered tuple of values would, and also reordered columns). Besides the
    whole row, each leave-one-column-out multiset is hashed, so a re-upload that adds, drops or relabels one
    column (an extra index, the label as text) still matches. A multiset whose values total fewer than
    `min_chars` characters is not hashed: short rows are shared by unrelated datasets. Each text cell of at least
    `LONG_CELL_CHARS` characters is also hashed alone, so a text re-upload that keeps only some columns matches.

    >>> len(row_fingerprints({"a": "a long enough sentence", "b": 1}))  # whole row, and without b
    2
    """
    values = [v for v in (normalise_value(x) for x in row.values()) if v is not None]
    variants = [values] + ([values[:i] + values[i + 1:] for i in range(len(values))] if len(values) > 1 else [])
    out = set()
    for vals in variants:
        if sum(len(v) for v in vals) >= min_chars:
            out.add(hashlib.sha256("\x1f".join(sorted(vals)).encode()).hexdigest()[:16])
    for v in values:  # a long text cell (a premise, a document) identifies its row on its own
        if len(v) >= LONG_CELL_CHARS:
            out.add("c" + hashlib.sha256(v.encode()).hexdigest()[:15])
    return out


class ContaminationIndex:
    """Row fingerprints (``row_fingerprints``) per benchmark dataset; saved as JSON.

    synthscale ships no real index: this machine is offline. Build one once, online, with
    ``contamination_index_from_hub`` and point the synthesis stage at the saved file.
    """

    VERSION = 1

    def __init__(self, hashes: Mapping[str, Iterable[str]] | None = None, *, min_chars: int = MIN_FINGERPRINT_CHARS):
        self.min_chars = min_chars
        self.hashes: dict[str, set[str]] = {name: set(h) for name, h in (hashes or {}).items()}

    def __len__(self) -> int:
        return sum(len(h) for h in self.hashes.values())

    @property
    def names(self) -> list[str]:
        return sorted(self.hashes)

    def build_from_rows(self, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add the fingerprints of `rows` under benchmark dataset `name`; returns how many were new."""
        bucket = self.hashes.setdefault(name, set())
        before = len(bucket)
        for row in rows:
            bucket |= row_fingerprints(row, min_chars=self.min_chars)
        return len(bucket) - before

    def row_hits(self, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], int]:
        """(rows found per benchmark dataset, rows that had any fingerprint at all)."""
        hits: dict[str, int] = {}
        hashable = 0
        for row in rows:
            prints = row_fingerprints(row, min_chars=self.min_chars)
            hashable += bool(prints)
            for name in self.names:
                if prints & self.hashes[name]:
                    hits[name] = hits.get(name, 0) + 1
        return hits, hashable

    def to_json(self) -> dict[str, Any]:
        return {"version": self.VERSION, "min_chars": self.min_chars,
                "datasets": {name: sorted(h) for name, h in sorted(self.hashes.items())}}

    def save(self, path: Path | str) -> None:
        """Write the index atomically (a temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> ContaminationIndex:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{path}: contamination index not found; build it with "
                                "contamination_index_from_hub (online) or unset the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{path}: not a JSON contamination index ({e}); rebuild it") from None
        version = data.get("version") if isinstance(data, dict) else None
        if version != cls.VERSION or not isinstance(data.get("datasets"), dict):
            raise ArtifactError(f"{path}: contamination index version {version!r}, expected {cls.VERSION} "
                                "with a 'datasets' mapping; rebuild it")
        return cls(data["datasets"], min_chars=int(data.get("min_chars", MIN_FINGERPRINT_CHARS)))


def contamination_index_from_hub(
    source: RowSource | Any,
    datasets: Mapping[str, tuple[str, str | None, str]],
    n_rows: int,
    *,
    viewer_url: str = "https://datasets-server.huggingface.co",
    timeout_s: float = 30.0,
) -> ContaminationIndex:
    """Fill an index with the first `n_rows` rows of each benchmark dataset (name → (hf_id, config, split)).

    `source` is either a callable ``(hf_id, config, split, n_rows) -> rows`` (a dataset validator's row
    fetcher), or an HTTP session with ``get(url, params=, timeout=)`` (``requests.Session``) that is pointed at
    the dataset viewer's ``/rows`` endpoint (100 rows a page; a None config means ``default``). Run it once,
    online; nothing here is bundled with synthscale.
    """
    index = ContaminationIndex()
    for name, (hf_id, config, split) in datasets.items():
        rows = source(hf_id, config, split, n_rows) if callable(source) else _viewer_rows(
            source, viewer_url, hf_id, config, split, n_rows, timeout_s)
        added = index.build_from_rows(name, rows[:n_rows])
        log.info("contamination index: %s (%s) %d rows, %d fingerprints", name, hf_id, len(rows[:n_rows]), added)
    return index


def _viewer_rows(session: Any, viewer_url: str, hf_id: str, config: str | None, split: str, n_rows: int,
                 timeout_s: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    url = viewer_url.rstrip("/") + "/rows"
    while len(rows) < n_rows:
        params = {"dataset": hf_id, "config": config or "default", "split": split,
                  "offset": len(rows), "length": min(100, n_rows - len(rows))}
        try:
            resp = session.get(url, params=params, timeout=timeout_s)
            status = resp.status_code
            body = resp.json() if status == 200 else None
        except Exception as e:  # noqa: BLE001 - transport and JSON errors alike mean no rows
            raise HubError(f"{url} {params}: {type(e).__name__}: {e}; check viewer_url and the network") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("rows"), list):
            raise HubError(f"{url} {params}: HTTP {status}, expected a JSON object with 'rows'; "
                           "check the dataset id, config and split")
        page = [r["row"] for r in body["rows"] if isinstance(r, dict) and isinstance(r.get("row"), dict)]
        rows += page
        if not page or len(rows) >= int(body.get("num_rows_total", 1 << 62)):
            break
    return rows


# ---------------------------------------------------------------- the checks


def match_dataset(hf_id: str, config: str | None = None) -> tuple[str, str] | None:
    """(benchmark name, what matched) when a Hub id or its config is a benchmark dataset, else None.

    >>> match_dataset("uoft-cs/cifar10"), match_dataset("someone/CIFAR-10-LT"), match_dataset("cifar100")
    (('cifar10', 'uoft-cs/cifar10'), ('cifar10', 'cifar10'), None)
    >>> match_dataset("nyu-mll/glue", "mnli")
    ('mnli', 'mnli')
    """
    if hf_id.lower() in _HUB_IDS:
        return _HUB_IDS[hf_id.lower()], hf_id.lower()
    name = hf_id.split("/")[-1]
    for text in (name, config or ""):
        found = _match_text(text, kinds=("dataset",))
        if found:
            return found
    for bench, exact in _EXACT.items():
        if squash(name) in exact:
            return bench, squash(name)
    return None


def _match_text(text: str, kinds: Sequence[str]) -> tuple[str, str] | None:
    spans = alias_spans(text)
    for bench, entry in BENCHMARK_ALIASES.items():
        if entry.kind in kinds:
            hit = sorted(_SQUASHED[bench] & spans)
            if hit:
                return bench, hit[0]
    return None


def description_similarity(text: str) -> tuple[str, float]:
    """(the most similar benchmark task id, Jaccard of word bigrams with its description)."""
    mine = shingles(text, DESCRIPTION_SHINGLE_WORDS)
    scores = {t: jaccard(mine, shingles(d, DESCRIPTION_SHINGLE_WORDS)) for t, d in BENCHMARK_DESCRIPTIONS.items()}
    best = max(sorted(scores), key=lambda t: scores[t])
    return best, scores[best]


def match_payoffs(payoffs: Payoffs) -> str | None:
    """The benchmark game whose payoffs these are, or None.

    Matrix games: the row player's payoffs, ``matrix[my_action][their_action]`` (numbers, or (mine, theirs)
    pairs of which the first counts), or a mapping ``{(mine, theirs): payoff}``; equal to MLGym's up to a
    relabelling of either player's actions. Blotto: a mapping with ``soldiers`` and ``battlefields``.

    >>> match_payoffs([[1, 5], [0, 3]]), match_payoffs([[4, 0], [5, 1]])
    ('prisoners_dilemma', None)
    """
    if isinstance(payoffs, Mapping) and "soldiers" in payoffs:
        same = all(payoffs.get(k) == v for k, v in MLGYM_BLOTTO.items())
        return "blotto" if same else None
    matrix = _as_matrix(payoffs)
    if matrix is None:
        return None
    for game, ref in MLGYM_GAME_PAYOFFS.items():
        if len(ref) != len(matrix) or any(len(r) != len(ref[0]) for r in matrix) or len(matrix) > 6:
            continue
        cells = [(i, j) for i in range(len(ref)) for j in range(len(ref[0]))]
        for rows in itertools.permutations(range(len(ref))):
            for cols in itertools.permutations(range(len(ref[0]))):
                if all(abs(matrix[rows[i]][cols[j]] - ref[i][j]) < 1e-9 for i, j in cells):
                    return game
    return None


def _as_matrix(payoffs: Payoffs) -> list[list[float]] | None:
    def first(x: Any) -> float:
        return float(x[0] if isinstance(x, (list, tuple)) else x)

    try:
        if isinstance(payoffs, Mapping):
            mine = sorted({k[0] for k in payoffs})
            theirs = sorted({k[1] for k in payoffs})
            return [[first(payoffs[(a, b)]) for b in theirs] for a in mine]
        return [[first(x) for x in row] for row in payoffs]
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def check_contamination(
    proposal: ProposalRecord,
    sample_rows: Sequence[Mapping[str, Any]] | None,
    index: ContaminationIndex | None,
    *,
    description_overlap_max: float,
    payoffs: Payoffs | None = None,
) -> RejectRecord | None:
    """The first contamination found in `proposal` as a RejectRecord (stage ``guard``), or None when clean.

    `payoffs` (a game's payoffs, see ``match_payoffs``) lets a game be checked against MLGym's own; without
    them a game that merely shares a benchmark game's name passes (other payoffs make a different task).
    """
    found = _dataset_reason(proposal) or _environment_reason(proposal, payoffs)
    if found is None and sample_rows and index is not None:
        found = _rows_reason(sample_rows, index)
    if found is None:
        task, score = description_similarity(proposal.description)
        if score > description_overlap_max:
            found = "contaminated_description", f"description {score:.2f} similar to MLGym task {task}"
    if found is None:
        return None
    log.info("proposal %s rejected: %s (%s)", proposal.proposal_id, *found)
    return RejectRecord(stage="guard", item_id=proposal.proposal_id, reason=found[0], detail=found[1])


def _dataset_reason(p: ProposalRecord) -> tuple[str, str] | None:
    if p.dataset is not None:
        hit = match_dataset(p.dataset.hf_id, p.dataset.config)
        if hit:
            return "contaminated_dataset", (f"dataset {p.dataset.hf_id!r} is benchmark dataset {hit[0]} "
                                            f"(alias {hit[1]!r})")
    hit = _match_text(f"{p.name}\n{p.description}", kinds=("dataset",))
    if hit:
        return "contaminated_dataset", f"the proposal names benchmark dataset {hit[0]} ({hit[1]!r})"
    return None


def _environment_reason(p: ProposalRecord, payoffs: Payoffs | None) -> tuple[str, str] | None:
    text = f"{p.name}\n{p.description}\n{p.dataset.hf_id if p.dataset else ''}"
    hit = _match_text(text, kinds=("environment",))
    if hit:
        return "contaminated_environment", f"the proposal uses benchmark environment {hit[0]} ({hit[1]!r})"
    if payoffs is not None:
        game = match_payoffs(payoffs)
        if game:
            return "contaminated_environment", f"the game has MLGym's payoffs for {game}"
    elif _match_text(text, kinds=("game",)):
        log.debug("proposal %s names a benchmark game; no payoffs given to compare", p.proposal_id)
    return None


def _rows_reason(rows: Sequence[Mapping[str, Any]], index: ContaminationIndex) -> tuple[str, str] | None:
    hits, hashable = index.row_hits(rows)
    for name, n in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0])):
        if n >= ROW_HITS_MIN or (hashable and n / hashable >= ROW_HIT_SHARE_MIN):
            return "contaminated_rows", f"{n} of {hashable} sampled rows are rows of benchmark dataset {name}"
    return None

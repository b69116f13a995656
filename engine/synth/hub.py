"""Checks a proposal's dataset on the Hugging Face Hub: reads dataset info, search and the viewer's first rows.

Writes nothing; returns a `DatasetCheck` (ok, or a reject reason: no_dataset, not_found, private, disabled,
gated, split, columns, unsupported_features, viewer). The Hub and the viewer are reached through
`HubConfig.endpoint` and `viewer_url`, so tests point both at a loopback hub.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx2
import requests
from huggingface_hub import HfApi
from huggingface_hub.errors import DisabledRepoError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from engine.config import HubConfig
from engine.errors import ConfigError, HubError
from engine.synth.records import DatasetCheck, DatasetProposal, ProposalRecord

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
_TABULAR_TYPES = ("Value", "ClassLabel")


def extract_licence(card_data: Any, tags: list[str] | None) -> str | None:
    """The licence id, lower case: the card's `license` (first if a list), else a `license:*` tag.

    >>> extract_licence({"license": ["MIT", "other"]}, None)
    'mit'
    >>> extract_licence(None, ["task:x", "license:cc-by-4.0"])
    'cc-by-4.0'
    """
    value = card_data.get("license") if isinstance(card_data, dict) else getattr(card_data, "license", None)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    for tag in tags or []:
        if tag.lower().startswith("license:"):
            return tag.split(":", 1)[1].strip().lower()
    return None


def missing_columns(proposal: DatasetProposal, available: list[str]) -> list[str]:
    """Proposed input and target columns absent from `available`, in the proposal's order."""
    wanted = [*proposal.input_columns, proposal.target_column]
    return [c for c in dict.fromkeys(wanted) if c not in available]


def unsupported_columns(proposal: DatasetProposal, features: list[dict[str, Any]]) -> list[str]:
    """Proposed columns whose viewer feature type is not a plain value (images, audio, lists, …)."""
    types = {f["name"]: f.get("type", {}) for f in features}
    wanted = dict.fromkeys([*proposal.input_columns, proposal.target_column])
    return [c for c in wanted if c in types and types[c].get("_type") not in _TABULAR_TYPES]


def pick_config(splits: list[dict[str, Any]], split: str) -> str | None:
    """The viewer's default config: `default` if listed, else the first config that has `split`, else the first."""
    configs = list(dict.fromkeys(s["config"] for s in splits))
    if "default" in configs:
        return "default"
    with_split = [s["config"] for s in splits if s["split"] == split]
    return with_split[0] if with_split else (configs[0] if configs else None)


def search_match(wanted: str, candidates: list[str]) -> str | None:
    """A candidate id that is `wanted` up to case, else one with the same name under another owner."""
    for cand in candidates:
        if cand.lower() == wanted.lower():
            return cand
    name = wanted.split("/")[-1].lower()
    for cand in candidates:
        if cand.split("/")[-1].lower() == name:
            return cand
    return None


def _cell_text(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_samples(check: DatasetCheck, n: int, *, columns: list[str] | None = None, width: int = 40) -> str:
    """The first `n` sample rows as a markdown table (cells cut to `width` characters), for a task description.
    `columns` picks and orders the columns shown (default: all the check found).

    >>> c = DatasetCheck(ok=True, hf_id="a/b", columns=["x", "y"], sample_rows=[{"x": 1, "y": "a|b"}])
    >>> print(describe_samples(c, 5))
    | x | y |
    |---|---|
    | 1 | a\\|b |
    """
    rows = check.sample_rows[:n]
    columns = columns or check.columns or (list(rows[0]) if rows else [])
    if not columns:
        return ""
    lines = ["| " + " | ".join(_cell_text(c, width) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell_text(row.get(c), width) for c in columns) + " |")
    return "\n".join(lines)


class HubDatasetValidator:
    """Checks proposed datasets against the Hugging Face Hub (or anything that speaks its protocol)."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        # An empty token is no token; False stops huggingface_hub from falling back to a stored login.
        self._token: str | None = os.environ.get(cfg.token_env) or None
        self.api = HfApi(endpoint=cfg.endpoint, token=self._token or False)

    def check(self, proposal: ProposalRecord) -> DatasetCheck:
        """What the Hub says about the proposal's dataset; network failures raise HubError, a token the Hub
        rejects ConfigError, everything about the dataset itself is a reject in the returned check."""
        result = self._check(proposal)
        logger.info("proposal %s: dataset %s%s -> %s %s", proposal.proposal_id, result.hf_id,
                    f" (asked {result.corrected_from})" if result.corrected_from else "",
                    "ok" if result.ok else result.reason, result.revision or "")
        return result

    def _check(self, proposal: ProposalRecord) -> DatasetCheck:
        ds = proposal.dataset
        if ds is None:
            return DatasetCheck(ok=False, hf_id="", reason="no_dataset",
                                detail=f"proposal {proposal.proposal_id} names no dataset")
        info, corrected, reject = self._lookup(ds.hf_id)
        if reject is not None:
            return reject
        base = {"hf_id": info.id, "corrected_from": corrected, "revision": info.sha,
                "licence": extract_licence(info.card_data, info.tags), "size_bytes": _data_size(info)}
        if info.private:
            return DatasetCheck(ok=False, reason="private", detail=f"{info.id} is private; tasks need public data",
                                **base)
        if info.disabled:
            return DatasetCheck(ok=False, reason="disabled", detail=f"{info.id} is disabled on the Hub", **base)
        if info.gated and not self._token:
            return DatasetCheck(ok=False, reason="gated", detail=(
                f"{info.id} is gated ({info.gated}); set ${self.cfg.token_env} to a token with access"), **base)
        return self._check_viewer(ds, base, gated=bool(info.gated))

    def _lookup(self, hf_id: str) -> tuple[Any, str | None, DatasetCheck | None]:
        """dataset_info, falling back to a search that corrects the id; returns (info, corrected_from, reject)."""
        try:
            info = self._info(hf_id)
            # The Hub answers a renamed or differently cased id with the canonical one.
            return info, (hf_id if info.id != hf_id else None), None
        except GatedRepoError:
            return None, None, DatasetCheck(ok=False, hf_id=hf_id, reason="gated", detail=(
                f"{hf_id} is gated; set ${self.cfg.token_env} to a token with access"))
        except DisabledRepoError:
            return None, None, DatasetCheck(ok=False, hf_id=hf_id, reason="disabled", detail=f"{hf_id} is disabled")
        except RepositoryNotFoundError:
            pass
        name = hf_id.split("/")[-1]
        try:
            candidates = [d.id for d in self.api.list_datasets(search=name, limit=self.cfg.search_limit)]
        except (HfHubHTTPError, httpx2.TransportError) as e:
            raise HubError(f"searching the Hub at {self.cfg.endpoint} for {name!r} failed: {e}") from e
        match = search_match(hf_id, candidates)
        if match is None or match == hf_id:
            return None, None, DatasetCheck(ok=False, hf_id=hf_id, reason="not_found", detail=(
                f"{hf_id} does not exist (or is private); search for {name!r} found {candidates[:5]}"))
        logger.info("dataset id %s corrected to %s by search", hf_id, match)
        try:
            return self._info(match), hf_id, None
        except RepositoryNotFoundError:  # includes gated: a search hit we cannot read is no match
            return None, None, DatasetCheck(ok=False, hf_id=hf_id, reason="not_found",
                                            detail=f"{hf_id} does not exist; search hit {match} is not readable")

    def _info(self, hf_id: str) -> Any:
        try:
            return self.api.dataset_info(hf_id, files_metadata=True, timeout=self.cfg.timeout_s)
        except (RepositoryNotFoundError, DisabledRepoError):
            raise
        except HfHubHTTPError as e:
            if e.response is not None and e.response.status_code == 401:
                raise ConfigError(f"the Hub at {self.cfg.endpoint} rejects the token in ${self.cfg.token_env}; "
                                  "replace it or unset the variable") from e
            raise HubError(f"dataset_info({hf_id!r}) at {self.cfg.endpoint} failed: {e}") from e
        except (httpx2.TransportError, OSError) as e:  # refused, timed out: not an HTTP answer
            raise HubError(f"the Hub at {self.cfg.endpoint} is unreachable: {e}") from e

    def _check_viewer(self, ds: DatasetProposal, base: dict[str, Any], *, gated: bool) -> DatasetCheck:
        hf_id = base["hf_id"]
        config = ds.config
        if config is None:
            splits = self._viewer("/splits", {"dataset": hf_id}, gated)
            if isinstance(splits, DatasetCheck):
                return splits.model_copy(update=base)
            config = pick_config(splits.get("splits", []), ds.split)
            if config is None:
                return DatasetCheck(ok=False, reason="viewer", detail=f"the viewer lists no configs for {hf_id}",
                                    **base)
            available = [s["split"] for s in splits["splits"] if s["config"] == config]
            if ds.split not in available:
                return DatasetCheck(ok=False, config=config, reason="split", detail=(
                    f"split {ds.split!r} not in config {config!r} of {hf_id}; available: {available}"), **base)
        first = self._viewer("/first-rows", {"dataset": hf_id, "config": config, "split": ds.split}, gated)
        if isinstance(first, DatasetCheck):
            return first.model_copy(update={**base, "config": config, "split": ds.split})
        features = first.get("features", [])
        columns = [f["name"] for f in features]
        rows = [r["row"] for r in first.get("rows", [])][: self.cfg.sample_rows]
        found = {**base, "config": config, "split": ds.split, "columns": columns, "sample_rows": rows}
        missing = missing_columns(ds, columns)
        if missing:
            return DatasetCheck(ok=False, reason="columns", detail=f"missing: {missing}; available: {columns}", **found)
        odd = unsupported_columns(ds, features)
        if odd:
            return DatasetCheck(ok=False, reason="unsupported_features", detail=(
                f"columns {odd} are not plain values (images, audio, lists); only tabular data is supported"), **found)
        return DatasetCheck(ok=True, **found)

    def _viewer(self, route: str, params: dict[str, str], gated: bool) -> dict[str, Any] | DatasetCheck:
        """GET a viewer route; a 4xx becomes a `viewer` reject (`gated` when a gated dataset refuses the token),
        an unreachable viewer a HubError."""
        url = self.cfg.viewer_url.rstrip("/") + route
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            r = requests.get(url, params=params, headers=headers, timeout=self.cfg.timeout_s)
        except requests.RequestException as e:
            raise HubError(f"the dataset viewer at {self.cfg.viewer_url} is unreachable: {type(e).__name__}") from e
        if 400 <= r.status_code < 500:
            code = r.headers.get("X-Error-Code", "")
            refused = gated and r.status_code in (401, 403)
            return DatasetCheck(ok=False, hf_id=params["dataset"], reason="gated" if refused else "viewer", detail=(
                f"viewer {route} answered {r.status_code} {code} for {params}"
                + (f"; the token in ${self.cfg.token_env} has no access" if refused else "")))
        if r.status_code != 200:
            raise HubError(f"the dataset viewer answered {r.status_code} for {route} {params}; retry later")
        return r.json()


def _data_size(info: Any) -> int | None:
    """Bytes of the repo's data files (parquet, csv, jsonl, json), when the info lists their sizes."""
    sizes = [s.size for s in info.siblings or [] if s.rfilename.endswith(DATA_SUFFIXES)]
    return sum(sizes) if sizes and None not in sizes else None

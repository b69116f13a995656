"""A loopback Hugging Face Hub and dataset viewer over HTTP: serves in-memory datasets to the real clients.

It speaks the routes `huggingface_hub` and our validator call (dataset info, search, tree, resolve with the
ETag / X-Repo-Commit headers, the viewer's /splits, /first-rows and /rows) and fails the way the Hub does
(`X-Error-Code: RepoNotFound`, `GatedRepo`, `RevisionNotFound`, `EntryNotFound`). Tests, benchmarks and the
offline demo point `HubConfig.endpoint` and `viewer_url` at it; it never reaches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pyarrow as pa

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
_SPLIT_WORDS = ("train", "validation", "valid", "dev", "test")
_DISABLED_MESSAGE = "Access to this resource is disabled."
_TIMESTAMP = "2026-01-01T00:00:00.000Z"


@dataclass
class LoopbackDataset:
    """One dataset repo the loopback hub serves; `files` is its main revision (path -> bytes)."""

    id: str
    files: dict[str, bytes]
    sha: str | None = None
    licence: str | None = "mit"
    gated: Literal[False, "auto", "manual"] = False
    private: bool = False
    disabled: bool = False
    card_data: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    access_tokens: frozenset[str] | None = None  # tokens let into a gated/private repo; None: every valid token


def parquet_bytes(columns: dict[str, list[Any]] | pa.Table) -> bytes:
    """A parquet file's bytes from columns (or a table), for building loopback datasets."""
    import pyarrow.parquet as pq

    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, as the Hub reports it in `oid` / `blobId`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def content_sha(files: dict[str, bytes]) -> str:
    """A 40-hex commit id derived from the content, so equal content gets an equal revision."""
    h = hashlib.sha1()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
    return h.hexdigest()


@dataclass
class _Repo:
    meta: LoopbackDataset
    revisions: dict[str, dict[str, bytes]]
    main: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many synthesis workers connect at once (socketserver's default backlog is 5)


class LoopbackHub:
    """A real HTTP server in a background thread; `with LoopbackHub({...}) as hub: hub.endpoint`."""

    def __init__(self, datasets: dict[str, LoopbackDataset], host: str = "127.0.0.1", port: int = 0,
                 tokens: set[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        for ds in datasets.values():
            sha = ds.sha or content_sha(ds.files)
            self._repos[ds.id] = _Repo(meta=ds, revisions={sha: dict(ds.files)}, main=sha)
        self.tokens = set(tokens or ())
        self.requests: list[tuple[str, str]] = []
        self._server = _Server((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def viewer_url(self) -> str:
        return self.endpoint

    def start(self) -> LoopbackHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        logger.info("loopback hub serving %d datasets at %s", len(self._repos), self.endpoint)
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, dataset_id: str, files: dict[str, bytes]) -> str:
        """Commit new content to a dataset's main branch; older revisions stay reachable by sha."""
        sha = content_sha(files)
        with self._lock:
            repo = self._repos[dataset_id]
            repo.revisions[sha] = dict(files)
            repo.main = sha
        return sha

    def main_sha(self, dataset_id: str) -> str:
        with self._lock:
            return self._repos[dataset_id].main

    # -- lookups used by the handler -------------------------------------------------------------

    def _find_repo(self, rest: str) -> tuple[_Repo | None, str]:
        """Split `owner/name/more…` into a known repo and the remainder (longest id first)."""
        with self._lock:
            for rid in sorted(self._repos, key=len, reverse=True):
                if rest == rid or rest.startswith(rid + "/"):
                    return self._repos[rid], rest[len(rid) + 1:]
        return None, rest

    def _files_at(self, repo: _Repo, revision: str) -> tuple[str, dict[str, bytes]] | None:
        with self._lock:
            sha = repo.main if revision == "main" else revision
            files = repo.revisions.get(sha)
        return (sha, files) if files is not None else None


class _Reply(Exception):
    """An HTTP answer raised from inside a route."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> _Reply:
    headers = dict(extra or {})
    if code:
        headers["X-Error-Code"] = code
    headers["X-Error-Message"] = message
    return _Reply(status, {"error": message}, headers)


def _make_handler(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("loopback hub: " + format, *args)

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, head: bool) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            hub.requests.append((self.command, url.path))
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            try:
                if token is not None and token not in hub.tokens:
                    raise _error(401, None, "Invalid credentials in Authorization header")
                status, body, headers = 200, *_route(hub, unquote(url.path), query, token)
            except _Reply as reply:
                status, body, headers = reply.status, reply.body, reply.headers
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

    return Handler


def _route(hub: LoopbackHub, path: str, query: dict[str, list[str]], token: str | None) -> tuple[Any, dict[str, str]]:
    if path == "/api/datasets":
        return _search(hub, query, token), {}
    if path.startswith("/api/datasets/"):
        return _api_dataset(hub, path[len("/api/datasets/"):], query, token)
    if path.startswith("/datasets/"):
        return _resolve(hub, path[len("/datasets/"):], token)
    if path in ("/splits", "/first-rows", "/rows"):
        return _viewer(hub, path, query, token), {}
    raise _error(404, None, f"no route {path}")


def _granted(repo: _Repo, token: str | None) -> bool:
    allowed = repo.meta.access_tokens
    return token is not None and (allowed is None or token in allowed)


def _visible(repo: _Repo, token: str | None) -> bool:
    return not repo.meta.private or _granted(repo, token)


def _search(hub: LoopbackHub, query: dict[str, list[str]], token: str | None) -> list[dict[str, Any]]:
    words = [w.lower() for w in query.get("search", [])]
    author = query.get("author", [None])[0]
    limit = int(query.get("limit", ["1000"])[0])
    with hub._lock:
        repos = list(hub._repos.values())
    out = []
    for repo in repos:
        rid = repo.meta.id
        if not _visible(repo, token) or not all(w in rid.lower() for w in words):
            continue
        if author and rid.split("/")[0] != author:
            continue
        out.append(_info(repo, repo.main, repo.revisions[repo.main], blobs=False, siblings=False))
    return out[:limit]


def _info(repo: _Repo, sha: str, files: dict[str, bytes], *, blobs: bool, siblings: bool = True) -> dict[str, Any]:
    meta = repo.meta
    card = dict(meta.card_data)
    tags = list(meta.tags)
    if meta.licence is not None:
        card.setdefault("license", meta.licence)
        tags.append(f"license:{meta.licence}")
    info: dict[str, Any] = {
        "_id": sha[:24], "id": meta.id, "author": meta.id.split("/")[0] if "/" in meta.id else None,
        "sha": sha, "lastModified": _TIMESTAMP, "createdAt": _TIMESTAMP, "private": meta.private,
        "gated": meta.gated, "disabled": meta.disabled, "downloads": 0, "likes": 0, "tags": tags,
        "cardData": card, "description": "",
    }
    if siblings:
        info["siblings"] = [
            {"rfilename": p, **({"size": len(b), "blobId": git_blob_oid(b)} if blobs else {})}
            for p, b in sorted(files.items())
        ]
    return info


def _api_dataset(hub: LoopbackHub, rest: str, query: dict[str, list[str]], token: str | None) -> tuple[Any, dict]:
    repo, tail = hub._find_repo(rest)
    if repo is None or not _visible(repo, token):
        status = 401 if repo is not None else 404
        raise _error(status, "RepoNotFound", "Repository not found")
    blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
    if tail == "":
        sha, files = hub._files_at(repo, "main")  # type: ignore[misc]
        return _info(repo, sha, files, blobs=blobs), {}
    kind, _, rest_rev = tail.partition("/")
    revision, _, sub = rest_rev.partition("/")
    found = hub._files_at(repo, revision)
    if found is None:
        raise _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    sha, files = found
    if kind == "revision":
        return _info(repo, sha, files, blobs=blobs), {}
    if kind == "tree":
        if repo.meta.disabled:
            raise _error(403, None, _DISABLED_MESSAGE)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        return _tree(files, sub.strip("/"), recursive), {"X-Repo-Commit": sha}
    raise _error(404, None, f"no route /api/datasets/{rest}")


def _tree(files: dict[str, bytes], under: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = under + "/" if under else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, data in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            folder = prefix + "/".join(parts[:depth])
            if recursive or depth == 1:
                entries.setdefault(folder, {"type": "directory", "oid": content_sha({folder: b""}), "size": 0,
                                            "path": folder})
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}
    return list(entries.values())


def _resolve(hub: LoopbackHub, rest: str, token: str | None) -> tuple[bytes, dict[str, str]]:
    repo, tail = hub._find_repo(rest)
    if repo is None or not _visible(repo, token):
        raise _error(401 if repo is not None else 404, "RepoNotFound", "Repository not found")
    if repo.meta.gated and not _granted(repo, token):
        # Anonymous: 401; a valid token not yet approved for this repo: 403 (as the Hub does).
        raise _error(401 if token is None else 403, "GatedRepo", "Access to this dataset is restricted.")
    if repo.meta.disabled:
        raise _error(403, None, _DISABLED_MESSAGE)
    kind, _, rest_rev = tail.partition("/")
    revision, _, filename = rest_rev.partition("/")
    found = hub._files_at(repo, revision) if kind == "resolve" else None
    if found is None:
        raise _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    sha, files = found
    if filename not in files:
        raise _error(404, "EntryNotFound", f"{filename} does not exist on {revision}", {"X-Repo-Commit": sha})
    data = files[filename]
    return data, {"ETag": f'"{git_blob_oid(data)}"', "X-Repo-Commit": sha,
                  "Content-Type": "application/octet-stream", "Accept-Ranges": "none"}


# -- the dataset viewer ---------------------------------------------------------------------------


def viewer_layout(files: dict[str, bytes]) -> dict[tuple[str, str], list[str]]:
    """(config, split) -> data files, by the loopback's own simple rule: first folder is the config
    unless it is `data`; the split is the file name's first word if it names a split, else train."""
    layout: dict[tuple[str, str], list[str]] = {}
    for path in sorted(files):
        if not path.endswith(DATA_SUFFIXES):
            continue
        parts = path.split("/")
        config = parts[0] if len(parts) >= 2 and parts[0] != "data" else "default"
        word = re.split(r"[-._/]", parts[-1])[0].lower()
        split = word if word in _SPLIT_WORDS else "train"
        layout.setdefault((config, split), []).append(path)
    return layout


def _viewer(hub: LoopbackHub, route: str, query: dict[str, list[str]], token: str | None) -> dict[str, Any]:
    dataset = query.get("dataset", [""])[0]
    repo, tail = hub._find_repo(dataset)
    if repo is None or tail or not _visible(repo, token) or (repo.meta.gated and not _granted(repo, token)):
        raise _error(401, "ExternalUnauthenticatedError",
                     "The dataset does not exist, or is not accessible without authentication (private or gated).")
    if repo.meta.disabled:
        raise _error(404, "ResponseNotFound", "Not found.")
    sha, files = hub._files_at(repo, "main")  # type: ignore[misc]
    layout = viewer_layout(files)
    if route == "/splits":
        return {"splits": [{"dataset": dataset, "config": c, "split": s} for c, s in layout],
                "pending": [], "failed": []}
    config, split = query.get("config", [""])[0], query.get("split", [""])[0]
    if (config, split) not in layout:
        raise _error(404, "ResponseNotFound", "Not found.")
    table = pa.concat_tables([read_table(p, files[p]) for p in layout[(config, split)]])
    # /first-rows: the first 100 rows; /rows: a page of at most 100 from `offset`.
    offset = int(query.get("offset", ["0"])[0]) if route == "/rows" else 0
    length = min(int(query.get("length", ["100"])[0]), 100) if route == "/rows" else 100
    page = table.slice(offset, length)
    features = [{"feature_idx": i, "name": f.name, "type": _feature_type(f.type)} for i, f in enumerate(table.schema)]
    rows = [{"row_idx": n, "row": {k: _cell(v, hub.viewer_url, dataset, n, k) for k, v in row.items()},
             "truncated_cells": []} for n, row in enumerate(page.to_pylist(), start=offset)]
    if route == "/rows":
        return {"features": features, "rows": rows, "num_rows_total": table.num_rows, "num_rows_per_page": 100,
                "partial": False}
    return {"dataset": dataset, "config": config, "split": split, "features": features, "rows": rows,
            "truncated": table.num_rows > page.num_rows}


def read_table(path: str, data: bytes) -> pa.Table:
    """Read one data file of a supported format into Arrow."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(io.BytesIO(data))
    if path.endswith(".csv"):
        import pyarrow.csv as pcsv
        return pcsv.read_csv(io.BytesIO(data))
    import pyarrow.json as pjson
    return pjson.read_json(io.BytesIO(data))


def _feature_type(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)):
        return {"_type": "Image"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"_type": "List", "feature": _feature_type(t.value_type)}
    if pa.types.is_binary(t):
        return {"_type": "Value", "dtype": "binary"}
    name = {"double": "float64", "float": "float32", "large_string": "large_string"}.get(str(t), str(t))
    return {"_type": "Value", "dtype": name}


def _cell(value: Any, base: str, dataset: str, row: int, column: str) -> Any:
    if isinstance(value, dict) and "bytes" in value:
        return {"src": f"{base}/assets/{quote(dataset)}/--/{row}/{quote(column)}/image.jpg", "height": 0, "width": 0}
    if isinstance(value, bytes):
        return None
    return value

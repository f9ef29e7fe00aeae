"""A tiny in-memory Hugging Face Hub for tests (stdlib only: ``http.server`` + ``threading``).

It speaks enough of the Hub HTTP API for the *real* ``huggingface_hub`` client (and therefore
``transformers`` / ``peft`` ``from_pretrained`` / ``push_to_hub``) to work end to end without internet:

* ``GET  /api/whoami-v2``
* ``POST /api/repos/create`` / ``DELETE /api/repos/delete``
* ``POST /api/validate-yaml`` (README.md model cards are validated before every commit)
* ``GET  /api/{models,datasets,spaces}/{repo_id}[/revision/{rev}]``      (repo/model info, ``siblings``, ``sha``)
* ``GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]`` (``recursive``/``expand``), ``POST .../paths-info/{rev}``
* ``POST /api/{type}s/{repo_id}/preupload/{rev}`` and ``POST .../commit/{rev}`` (NDJSON: ``header``, ``file``
  (base64), ``lfsFile``, ``deletedFile``, ``deletedFolder``; ``create_pr=1`` and ``parentCommit`` supported)
* ``GET  .../commits/{rev}``, ``GET .../refs``, ``POST/DELETE .../branch/{branch}``
* git-LFS "basic" transfer: ``POST /{repo_id}.git/info/lfs/objects/batch`` + ``PUT`` upload + ``POST`` verify
* ``HEAD``/``GET /{repo_id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length`` and, for
  LFS files, ``X-Linked-Etag``/``X-Linked-Size`` (``Range`` requests are honoured).

Everything lives in memory (``LocalHub.repos``); every commit gets a random 40-hex sha and keeps a full snapshot of
the files, so older revisions stay downloadable by sha. Files matching the repo's ``.gitattributes`` LFS patterns
(the Hub default one is committed on repo creation: ``*.safetensors``, ``*.bin``, ``*.pt``...), binary files and
files >= 10 MiB go through LFS, like on the real Hub (pass ``LocalHub(lfs=False)`` to make every file "regular",
i.e. sent inline as base64 in the commit payload).

Xet: ``huggingface_hub`` >= 1.x uploads LFS files through Xet storage whenever ``hf_xet`` is installed, unless
``huggingface_hub.constants.HF_HUB_DISABLE_XET`` is true (read at call time, initialised from env
``HF_HUB_DISABLE_XET`` at import). The server cannot opt out of that for uploads (the decision is purely
client-side), so :meth:`LocalHub.patch_client` sets it; the ``xet-*-token`` endpoints answer 501 with a hint.
Downloads never use Xet here because ``/resolve`` never sends ``X-Xet-Hash`` headers.

Usage
-----
In a test module (``tests/`` has no ``__init__.py``, so pytest puts ``tests/`` on ``sys.path``)::

    from hub_server import LocalHub, local_hub  # noqa: F401  (importing the fixture registers it)

    def test_roundtrip(local_hub, tmp_path):
        from huggingface_hub import HfApi
        api = HfApi()                                    # -> local_hub.endpoint, token = local_hub.token
        api.create_repo("user/tiny")
        model.push_to_hub("user/tiny")                   # or api.upload_folder(...)
        AutoModel.from_pretrained("user/tiny")           # downloads from the local hub into a tmp HF_HOME
        assert "model.safetensors" in local_hub.repos["user/tiny"].files()

To share it with every test, add ``from hub_server import local_hub  # noqa: F401`` to ``tests/conftest.py``
(conftest.py is imported with ``tests/`` on ``sys.path`` too). Import it under one name only (``hub_server``, not
also ``tests.hub_server``), otherwise pytest sees two copies of the module.

The ``local_hub`` fixture starts a fresh server and, through ``monkeypatch`` (undone after the test):

* env: ``HF_ENDPOINT``, ``HF_TOKEN`` (= ``local_hub.token``), ``HF_HUB_OFFLINE=0``, ``TRANSFORMERS_OFFLINE=0``,
  ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HOME``/``HF_HUB_CACHE``/... -> a tmp dir,
  ``NO_PROXY``; removes ``HUGGING_FACE_HUB_TOKEN``/``HF_TOKEN_PATH``/staging vars.
* ``huggingface_hub.constants`` values that were computed at import time from those env vars: ``ENDPOINT``,
  ``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_URL_HOSTS``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET``,
  ``HF_HUB_DISABLE_TELEMETRY``, ``HF_HUB_DISABLE_IMPLICIT_TOKEN``, ``HF_HOME``, ``HF_HUB_CACHE``,
  ``HUGGINGFACE_HUB_CACHE``, ``HF_ASSETS_CACHE``, ``HUGGINGFACE_ASSETS_CACHE``, ``HF_XET_CACHE``,
  ``HF_TOKEN_PATH``, ``HF_STORED_TOKENS_PATH`` and the other ``*_PATH`` files under ``HF_HOME``;
  plus copies made with ``from ..constants import X`` in already-imported ``huggingface_hub``/``transformers``/
  ``peft``/... modules (e.g. ``huggingface_hub.utils._cache_manager.HF_HUB_CACHE``).
* ``huggingface_hub.hf_api.api.endpoint`` (the module-level ``HfApi()`` behind ``huggingface_hub.create_repo``,
  ``model_info``, ``upload_folder``, ``file_exists``... whose endpoint was frozen at import), and
  ``transformers.utils.hub._hf_api`` (cached ``HfApi`` used by ``push_to_hub``) is reset to ``None``.
  New ``HfApi()`` instances pick up the patched ``constants.ENDPOINT`` by themselves.
* ``datasets.config`` (if installed): ``HF_ENDPOINT``, ``HUB_DATASETS_URL``, ``HF_HUB_OFFLINE``,
  ``HF_DATASETS_OFFLINE``, ``HF_UPDATE_DOWNLOAD_COUNTS``, ``HF_DATASETS_CACHE`` & co, so ``load_dataset("user/ds")``
  and ``Dataset.push_to_hub`` work too; ``transformers.utils.hub.HF_MODULES_CACHE``. ``transformers.utils.hub`` and
  ``datasets.config`` are imported by the fixture so that their import-time values are patched *and restored*
  (imported for the first time inside a test, they would keep this server's endpoint for the rest of the session).

Without the fixture: ``with LocalHub() as hub: HfApi(endpoint=hub.endpoint, token=hub.token)...`` works for
the ``HfApi`` methods, but ``hf_hub_download``/``from_pretrained`` need the constants patched
(``hub.patch_client(monkeypatch, hf_home)``, e.g. with ``pytest.MonkeyPatch.context()`` for a module-scoped hub),
LFS uploads need ``HF_HUB_DISABLE_XET``, and ``constants.HF_HUB_OFFLINE`` must be False (``tests/conftest.py``
sets ``HF_HUB_OFFLINE=1`` for the whole session, so every request would raise ``OfflineModeIsEnabled``).

Extra knobs: ``LocalHub(user="user", orgs=("test-org",), token=None, lfs=True, lfs_threshold=10 MiB)``;
``hub.add_token(token, user)`` for a second user; ``hub.requests`` records ``(method, path, authenticated)``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import importlib
import json
import os
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

__all__ = ["HubFile", "HubCommit", "HubRepo", "LocalHub", "local_hub"]

REPO_TYPES = ("model", "dataset", "space")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses non-LFS files >= 10 MiB

# The `.gitattributes` the Hub commits when a repo is created.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""

_REV = r"(?P<rev>[^/]+)"
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_REPO = r"^/api/(?P<rtype>models|datasets|spaces)/" + _REPO
_GIT_REPO = r"^/(?:(?P<prefix>datasets|spaces)/)?" + _REPO


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    """An immutable file blob. ``lfs`` says whether it is stored as a git-LFS pointer on the Hub."""

    content: bytes
    lfs: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def lfs_pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
        ).encode()

    @property
    def git_oid(self) -> str:
        """git blob id: sha1 of the content, or of the LFS pointer file for LFS files (like the Hub)."""
        return _git_blob_sha1(self.lfs_pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """What ``/resolve`` returns as ETag: sha256 for LFS files, git blob sha1 otherwise (like the Hub)."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class HubCommit:
    oid: str
    title: str
    message: str
    author: str
    date: str
    parents: list[str]
    files: dict[str, HubFile]


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    created_at: str = field(default_factory=_now)
    branches: dict[str, str] = field(default_factory=dict)  # branch name (incl. "refs/pr/N") -> commit oid
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, HubCommit] = field(default_factory=dict)
    num_prs: int = 0

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def url_path(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return prefix + self.repo_id

    def resolve(self, revision: str | None = None) -> str:
        """Branch / tag / (prefix of a) commit sha -> full commit sha. Raises a 404 RevisionNotFound."""
        revision = revision or "main"
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def files(self, revision: str | None = None) -> dict[str, HubFile]:
        """Snapshot of the files at ``revision`` (default: head of ``main``)."""
        return self.commits[self.resolve(revision)].files

    def read(self, path: str, revision: str | None = None) -> bytes:
        return self.files(revision)[path].content

    @property
    def sha(self) -> str:
        return self.resolve("main")

    def add_commit(
        self, branch: str, files: dict[str, HubFile], title: str, message: str = "", author: str = ""
    ) -> str:
        parent = self.branches.get(branch)
        oid = secrets.token_hex(20)
        self.commits[oid] = HubCommit(
            oid=oid,
            title=title,
            message=message,
            author=author or self.namespace,
            date=_now(),
            parents=[parent] if parent else [],
            files=dict(files),
        )
        self.branches[branch] = oid
        return oid

    def history(self, revision: str | None = None) -> list[HubCommit]:
        out = []
        oid: str | None = self.resolve(revision)
        while oid:
            commit = self.commits[oid]
            out.append(commit)
            oid = commit.parents[0] if commit.parents else None
        return out

    def lfs_patterns(self, revision: str | None = None) -> list[str]:
        try:
            attrs = self.files(revision).get(".gitattributes")
        except HubError:
            attrs = None
        if attrs is None:
            return []
        patterns = []
        for line in attrs.content.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns


class HubError(Exception):
    """Turned into an HTTP error response (JSON ``{"error": message}`` + ``X-Error-Code``/``X-Error-Message``)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}  # merged into the JSON error body


def _matches_gitattributes(path: str, patterns: list[str]) -> bool:
    basename = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern.replace("**/", "*").lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(basename, pattern):
            return True
    return False


# --------------------------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded) path
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    user: str | None  # None: no/invalid token
    match: re.Match

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from None

    def arg(self, name: str) -> str | None:
        value = self.match.groupdict().get(name)
        return unquote(value) if value is not None else None

    def flag(self, name: str) -> bool:
        values = self.query.get(name)
        return bool(values) and values[-1].lower() in ("1", "true", "yes")


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # for HEAD: length of the body a GET would return

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> "_Response":
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httpx pools connections
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        hub: LocalHub = self.server.hub  # type: ignore[attr-defined]
        body = self._read_body()
        parts = urlsplit(self.path)
        try:
            response = hub._dispatch(self.command, parts.path, parse_qs(parts.query), self.headers, body)
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message.encode("ascii", "replace").decode()
            response = _Response.json({**e.extra, "error": e.message}, status=e.status, headers=headers)
        except Exception as e:  # pragma: no cover - server bug: report it instead of hanging the client
            hub.errors.append(e)
            response = _Response.json({"error": f"LocalHub internal error: {e!r}"}, status=500)
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Type": "application/octet-stream", **response.headers}
        length = response.content_length if response.content_length is not None else len(response.body)
        headers["Content-Length"] = str(length)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: "LocalHub"


# --------------------------------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------------------------------


class LocalHub:
    """In-memory Hub server. Use as a context manager (or ``start()``/``stop()``).

    Attributes:
        endpoint: ``"http://127.0.0.1:PORT"`` (set once started).
        token: a valid write token for ``user`` (``"hf_test_..."``).
        user: the token's user name (default ``"user"``); ``orgs`` are extra namespaces it can write to.
        repos: ``{"user/name": HubRepo, "datasets/user/name": HubRepo, ...}``.
        lfs_objects: ``{sha256: bytes}`` uploaded through the LFS batch API.
        requests: ``[(method, path, authenticated), ...]`` seen by the server.
    """

    def __init__(
        self,
        *,
        user: str = "user",
        orgs: tuple[str, ...] = ("test-org",),
        token: str | None = None,
        lfs: bool = True,
        lfs_threshold: int = LFS_SIZE_THRESHOLD,
    ) -> None:
        self.user = user
        self.orgs = tuple(orgs)
        self.token = token or f"hf_test_{secrets.token_hex(12)}"
        self.tokens: dict[str, str] = {self.token: user}
        self.user_orgs: dict[str, tuple[str, ...]] = {user: self.orgs}
        self.lfs = lfs
        self.lfs_threshold = lfs_threshold
        self.repos: dict[str, HubRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self.errors: list[BaseException] = []
        self.endpoint = ""
        self.lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern, Callable[[_Request], _Response]]] = [
            ("GET", r"^/api/whoami-v2$", self._whoami),
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("DELETE", r"^/api/repos/delete$", self._delete_repo),
            ("POST", r"^/api/validate-yaml$", lambda req: _Response.json({"errors": [], "warnings": []})),
            ("GET", _API_REPO + r"$", self._repo_info),
            ("GET", _API_REPO + r"/revision/" + _REV + "$", self._repo_info),
            ("GET", _API_REPO + r"/tree/" + _REV + r"(?:/(?P<path>.*))?$", self._tree),
            ("POST", _API_REPO + r"/paths-info/" + _REV + "$", self._paths_info),
            ("POST", _API_REPO + r"/preupload/" + _REV + "$", self._preupload),
            ("POST", _API_REPO + r"/commit/" + _REV + "$", self._commit),
            ("GET", _API_REPO + r"/commits/" + _REV + "$", self._list_commits),
            ("GET", _API_REPO + r"/refs$", self._refs),
            ("POST", _API_REPO + r"/branch/(?P<branch>[^/]+)$", self._create_branch),
            ("DELETE", _API_REPO + r"/branch/(?P<branch>[^/]+)$", self._delete_branch),
            ("GET", _API_REPO + r"/xet-(?:read|write)-token/.*$", self._xet),
            ("POST", _GIT_REPO + r"\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("PUT", r"^/__lfs/upload/(?P<oid>[0-9a-f]{64})$", self._lfs_upload),
            ("POST", r"^/__lfs/verify/(?P<oid>[0-9a-f]{64})$", self._lfs_verify),
            ("GET", _GIT_REPO + r"/resolve/" + _REV + r"/(?P<path>.+)$", self._resolve),
            ("HEAD", _GIT_REPO + r"/resolve/" + _REV + r"/(?P<path>.+)$", self._resolve),
        ]
        self._routes = [(m, re.compile(p), h) for m, p, h in self._routes]  # type: ignore[misc]

    # ---- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> "LocalHub":
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- helpers for tests ----------------------------------------------------------------------------------------

    def add_token(self, token: str, user: str, orgs: tuple[str, ...] = ()) -> str:
        self.tokens[token] = user
        self.user_orgs[user] = tuple(orgs)
        return token

    def repo(self, repo_id: str, repo_type: str = "model") -> HubRepo:
        return self.repos[self._key(repo_type, repo_id)]

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> HubRepo:
        """Create a repo directly (no HTTP), with the usual initial ``.gitattributes`` commit."""
        with self.lock:
            key = self._key(repo_type, repo_id)
            if key in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = HubRepo(repo_id=repo_id, repo_type=repo_type, private=private)
            initial = {".gitattributes": HubFile(DEFAULT_GITATTRIBUTES.encode())}
            repo.add_commit("main", initial, "initial commit", author=repo.namespace)
            self.repos[key] = repo
            return repo

    def patch_client(self, monkeypatch: pytest.MonkeyPatch, hf_home: str | os.PathLike) -> None:
        """Point ``huggingface_hub`` (and transformers/peft through it) at this server. See module docstring."""
        from huggingface_hub import constants

        hf_home = str(hf_home)
        hub_cache = os.path.join(hf_home, "hub")
        os.makedirs(hub_cache, exist_ok=True)

        env = {
            "HF_ENDPOINT": self.endpoint,
            "HF_TOKEN": self.token,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
            "HF_HOME": hf_home,
            "HF_HUB_CACHE": hub_cache,
            "HUGGINGFACE_HUB_CACHE": hub_cache,
            "HF_ASSETS_CACHE": os.path.join(hf_home, "assets"),
            "HF_XET_CACHE": os.path.join(hf_home, "xet"),
            "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("no_proxy", env["NO_PROXY"])
        for key in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HUGGINGFACE_CO_STAGING", "TRANSFORMERS_CACHE"):
            monkeypatch.delenv(key, raising=False)

        new_values: dict[str, Any] = {
            "ENDPOINT": self.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
            "HF_HOME": hf_home,
            "HF_HUB_CACHE": hub_cache,
            "HUGGINGFACE_HUB_CACHE": hub_cache,
            "default_cache_path": hub_cache,
            "HF_ASSETS_CACHE": os.path.join(hf_home, "assets"),
            "HUGGINGFACE_ASSETS_CACHE": os.path.join(hf_home, "assets"),
            "default_assets_cache_path": os.path.join(hf_home, "assets"),
            "HF_XET_CACHE": os.path.join(hf_home, "xet"),
            "default_xet_cache_path": os.path.join(hf_home, "xet"),
            "HF_TOKEN_PATH": os.path.join(hf_home, "token"),
            "HF_STORED_TOKENS_PATH": os.path.join(hf_home, "stored_tokens"),
            "CHECK_FOR_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_update_done"),
            "CHECK_FOR_SKILL_UPDATE_DONE_PATH": os.path.join(hf_home, ".check_for_skill_update_done"),
            "AGENT_HARNESSES_PATH": os.path.join(hf_home, ".agent_harnesses.json"),
        }
        if hasattr(constants, "HF_URL_HOSTS"):
            new_values["HF_URL_HOSTS"] = frozenset(constants.HF_URL_HOSTS) | {"127.0.0.1"}
        # Libraries that freeze env-derived settings at import: import them now (if installed) so that they are
        # patched (and restored) here, instead of capturing this server's endpoint forever when first imported
        # inside a test.
        for optional in ("transformers.utils.hub", "datasets.config"):
            with contextlib.suppress(Exception):
                importlib.import_module(optional)
        _patch_module_values(monkeypatch, constants, new_values)

        tf_hub = sys.modules.get("transformers.utils.hub")
        if tf_hub is not None and hasattr(tf_hub, "HF_MODULES_CACHE"):
            _patch_module_values(monkeypatch, tf_hub, {"HF_MODULES_CACHE": os.path.join(hf_home, "modules")})

        ds_config = sys.modules.get("datasets.config")
        if ds_config is not None:
            ds_cache = Path(hf_home) / "datasets"
            ds_values: dict[str, Any] = {
                "HF_ENDPOINT": self.endpoint,
                "HUB_DATASETS_URL": self.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
                "HF_HUB_OFFLINE": False,
                "HF_DATASETS_OFFLINE": False,
                "HF_UPDATE_DOWNLOAD_COUNTS": False,
                "HF_CACHE_HOME": hf_home,
                "HF_DATASETS_CACHE": ds_cache,
                "HF_MODULES_CACHE": Path(hf_home) / "modules",
                "DOWNLOADED_DATASETS_PATH": ds_cache / "downloads",
                "EXTRACTED_DATASETS_PATH": ds_cache / "downloads" / "extracted",
            }
            _patch_module_values(monkeypatch, ds_config, ds_values)

        # Module-level HfApi() behind `huggingface_hub.create_repo`, `upload_folder`, `model_info`, ...
        hf_api_module = sys.modules.get("huggingface_hub.hf_api")
        if hf_api_module is not None and getattr(hf_api_module, "api", None) is not None:
            monkeypatch.setattr(hf_api_module.api, "endpoint", self.endpoint)
        # transformers caches one HfApi (created with the endpoint of the time) for push_to_hub & co.
        if tf_hub is not None and hasattr(tf_hub, "_hf_api"):
            monkeypatch.setattr(tf_hub, "_hf_api", None)

    # ---- dispatch -------------------------------------------------------------------------------------------------

    def _dispatch(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> _Response:
        auth = headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        with self.lock:
            self.requests.append((method, path, bool(token)))
        if token is not None and token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        user = self.tokens.get(token) if token else None
        allowed = set()
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method != method:
                allowed.add(route_method)
                continue
            with self.lock:
                return handler(_Request(method, path, query, headers, body, user, match))
        if allowed:
            raise HubError(405, f"Method {method} not allowed on {path}")
        raise HubError(404, f"LocalHub: no route for {method} {path}")

    # ---- auth / repo lookup ---------------------------------------------------------------------------------------

    @staticmethod
    def _key(repo_type: str | None, repo_id: str) -> str:
        repo_type = repo_type or "model"
        return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"

    def _namespaces(self, user: str | None) -> set[str]:
        return {user, *self.user_orgs.get(user, ())} if user else set()

    def _require_user(self, req: _Request, action: str = "perform this action") -> str:
        if req.user is None:
            raise HubError(401, f"You must be authenticated to {action}: pass a token (HF_TOKEN / token=...)")
        return req.user

    def _get_repo(self, req: _Request, write: bool = False) -> HubRepo:
        groups = req.match.groupdict()
        if groups.get("rtype"):
            repo_type = groups["rtype"][:-1]
        else:
            repo_type = {"datasets": "dataset", "spaces": "space"}.get(groups.get("prefix") or "", "model")
        repo_id = f"{unquote(groups['ns'])}/{unquote(groups['name'])}"
        if write:
            user = self._require_user(req, f"write to {repo_type} repo {repo_id}")
        else:
            user = req.user
        repo = self.repos.get(self._key(repo_type, repo_id))
        if repo is None or (repo.private and repo.namespace not in self._namespaces(user)):
            status = 401 if user is None else 404
            raise HubError(status, "Repository not found", code="RepoNotFound")
        if write and repo.namespace not in self._namespaces(user):
            raise HubError(403, f"You don't have the rights to write to {repo_type} repo {repo_id}")
        return repo

    # ---- endpoints ------------------------------------------------------------------------------------------------

    def _whoami(self, req: _Request) -> _Response:
        user = self._require_user(req, "call whoami")
        return _Response.json(
            {
                "type": "user",
                "id": hashlib.md5(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "orgs": [{"type": "org", "name": org, "fullname": org} for org in self.user_orgs.get(user, ())],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}},
            }
        )

    def _create_repo(self, req: _Request) -> _Response:
        user = self._require_user(req, "create a repo")
        payload = req.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        name = payload.get("name")
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        namespace = payload.get("organization") or user
        if namespace not in self._namespaces(user):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{self._key(repo_type, repo_id)}"
        if self._key(repo_type, repo_id) in self.repos:
            # the client reads `url` from the 409 body when exist_ok=True
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        visibility = payload.get("visibility")
        private = bool(payload.get("private")) or visibility == "private"
        repo = self.create_repo(repo_id, repo_type=repo_type, private=private)
        return _Response.json({"url": url, "name": repo_id, "id": repo_id, "private": repo.private})

    def _delete_repo(self, req: _Request) -> _Response:
        user = self._require_user(req, "delete a repo")
        payload = req.json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        key = self._key(repo_type, repo_id)
        if key not in self.repos:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if self.repos[key].namespace not in self._namespaces(user):
            raise HubError(403, f"You don't have the rights to delete {repo_id}")
        del self.repos[key]
        return _Response.json({})

    def _file_entry(self, path: str, f: HubFile, commit: HubCommit | None = None) -> dict:
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.lfs_pointer)}
        if commit is not None:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _folder_entry(self, path: str, files: dict[str, HubFile], commit: HubCommit | None = None) -> dict:
        inner = sorted((p, f.git_oid) for p, f in files.items() if p.startswith(path + "/"))
        oid = hashlib.sha1(repr(inner).encode()).hexdigest()
        entry: dict[str, Any] = {"type": "directory", "oid": oid, "path": path}
        if commit is not None:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _repo_info(self, req: _Request) -> _Response:
        repo = self._get_repo(req)
        commit = repo.commits[repo.resolve(req.arg("rev"))]
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": f.size, "blobId": f.git_oid}
            if f.lfs:
                sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(f.lfs_pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            config = commit.files.get("config.json")
            if config is not None:
                with contextlib.suppress(Exception):
                    cfg = json.loads(config.content)
                    info["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
        if repo.repo_type == "space":
            info.update({"sdk": "gradio", "runtime": {"stage": "RUNNING"}})
        return _Response.json(info)

    def _tree(self, req: _Request) -> _Response:
        repo = self._get_repo(req)
        commit = repo.commits[repo.resolve(req.arg("rev"))]
        base = (req.arg("path") or "").strip("/")
        recursive = req.flag("recursive")
        expand = req.flag("expand")
        files = commit.files
        prefix = base + "/" if base else ""
        if base and base in files:
            raise HubError(404, f"{base} is a file, not a directory", code="EntryNotFound")
        below = {p: f for p, f in files.items() if p.startswith(prefix)}
        if base and not below:
            raise HubError(404, f"Path {base} not found in {repo.repo_id}", code="EntryNotFound")
        entries: list[dict] = []
        folders: set[str] = set()
        for path, f in sorted(below.items()):
            rel_parts = path[len(prefix) :].split("/")
            for depth in range(1, len(rel_parts)):
                if not recursive and depth > 1:
                    break
                folders.add(prefix + "/".join(rel_parts[:depth]))
            if recursive or len(rel_parts) == 1:
                entries.append(self._file_entry(path, f, commit if expand else None))
        entries += [self._folder_entry(p, files, commit if expand else None) for p in sorted(folders)]
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        return _Response.json(entries)

    def _paths_info(self, req: _Request) -> _Response:
        repo = self._get_repo(req)
        commit = repo.commits[repo.resolve(req.arg("rev"))]
        content_type = req.headers.get("Content-Type") or ""
        if "json" in content_type:
            payload = req.json()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(req.body.decode())
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._file_entry(path, commit.files[path], commit if expand else None))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(self._folder_entry(path, commit.files, commit if expand else None))
        return _Response.json(out)

    def _upload_mode(self, repo: HubRepo, revision: str, path: str, size: int, sample: bytes) -> str:
        if not self.lfs:
            return "regular"
        if size >= self.lfs_threshold or b"\x00" in sample:
            return "lfs"
        return "lfs" if _matches_gitattributes(path, repo.lfs_patterns(revision)) else "regular"

    def _preupload(self, req: _Request) -> _Response:
        repo = self._get_repo(req, write=True)
        revision = req.arg("rev") or "main"
        files = repo.files(revision) if not req.flag("create_pr") else repo.files("main")
        out = []
        for item in req.json().get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample") or "")
            mode = self._upload_mode(repo, revision, path, int(item.get("size") or 0), sample)
            entry: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            existing = files.get(path)
            if existing is not None:
                # compared client-side with sha256 (lfs) / git sha1 (regular) to skip unchanged files
                entry["oid"] = existing.sha256 if mode == "lfs" else _git_blob_sha1(existing.content)
            out.append(entry)
        return _Response.json({"files": out, "commitOid": repo.resolve(revision)})

    def _commit(self, req: _Request) -> _Response:
        repo = self._get_repo(req, write=True)
        revision = req.arg("rev") or "main"
        create_pr = req.flag("create_pr")
        head = repo.resolve(revision)
        if revision not in repo.branches and not create_pr:
            raise HubError(400, f"Cannot commit to {revision!r}: not a branch", code="RevisionNotFound")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "First NDJSON line of a commit must be the header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
                files[path] = HubFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                oid = value.get("oid")
                content = self.lfs_objects.get(oid)
                if content is None:
                    raise HubError(400, f"LFS object {oid} for {path} was never uploaded")
                files[path] = HubFile(content, lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        pr_url = None
        if create_pr:
            repo.num_prs += 1
            branch = f"refs/pr/{repo.num_prs}"
            repo.branches[branch] = head
            pr_url = f"{self.endpoint}/{repo.url_path}/discussions/{repo.num_prs}"
        else:
            branch = revision
        title, description = header.get("summary") or "update", header.get("description") or ""
        oid = repo.add_commit(branch, files, title, description, req.user or "")
        return _Response.json(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self.endpoint}/{repo.url_path}/commit/{oid}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            }
        )

    def _list_commits(self, req: _Request) -> _Response:
        repo = self._get_repo(req)
        return _Response.json(
            [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "date": c.date,
                    "authors": [{"user": c.author}],
                }
                for c in repo.history(req.arg("rev"))
            ]
        )

    def _refs(self, req: _Request) -> _Response:
        repo = self._get_repo(req)

        def ref(name: str, prefix: str, oid: str) -> dict:
            return {"name": name, "ref": name if name.startswith("refs/") else f"{prefix}{name}", "targetCommit": oid}

        branches = [ref(n, "refs/heads/", o) for n, o in repo.branches.items() if not n.startswith("refs/pr/")]
        prs = [ref(n, "", o) for n, o in repo.branches.items() if n.startswith("refs/pr/")]
        return _Response.json(
            {
                "branches": branches,
                "converts": [],
                "tags": [ref(n, "refs/tags/", o) for n, o in repo.tags.items()],
                "pullRequests": prs if req.flag("include_prs") else None,
            }
        )

    def _create_branch(self, req: _Request) -> _Response:
        repo = self._get_repo(req, write=True)
        branch = req.arg("branch") or ""
        if branch.startswith("refs/"):
            raise HubError(400, f"Invalid branch name {branch!r}")
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = (req.json() if req.body else {}).get("startingPoint")
        repo.branches[branch] = repo.resolve(start or "main")
        return _Response.json({})

    def _delete_branch(self, req: _Request) -> _Response:
        repo = self._get_repo(req, write=True)
        branch = req.arg("branch") or ""
        if branch not in repo.branches or branch == "main":
            raise HubError(404 if branch != "main" else 403, f"Cannot delete branch {branch}", code="RevisionNotFound")
        del repo.branches[branch]
        return _Response.json({})

    def _xet(self, req: _Request) -> _Response:
        raise HubError(
            501,
            "LocalHub does not implement Xet storage: set HF_HUB_DISABLE_XET=1 (and "
            "huggingface_hub.constants.HF_HUB_DISABLE_XET = True, e.g. via LocalHub.patch_client) so that the "
            "client falls back to the git-LFS upload path",
        )

    def _lfs_batch(self, req: _Request) -> _Response:
        self._get_repo(req, write=True)  # auth + existence check
        payload = req.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "LocalHub only supports LFS 'upload' batches")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.endpoint}/__lfs/upload/{oid}", "header": {}, "expires_in": 3600},
                    "verify": {"href": f"{self.endpoint}/__lfs/verify/{oid}", "header": {}},
                }
            objects.append(entry)
        return _Response.json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, req: _Request) -> _Response:
        oid = req.arg("oid") or ""
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match sha256 {oid}")
        self.lfs_objects[oid] = req.body
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})

    def _lfs_verify(self, req: _Request) -> _Response:
        oid = req.arg("oid") or ""
        payload = req.json()
        content = self.lfs_objects.get(oid)
        if content is None or int(payload.get("size", len(content))) != len(content):
            raise HubError(404, f"LFS object {oid} not found")
        return _Response.json({"success": True})

    def _resolve(self, req: _Request) -> _Response:
        repo = self._get_repo(req)
        commit_oid = repo.resolve(req.arg("rev"))
        path = unquote(req.match.group("path"))
        f = repo.commits[commit_oid].files.get(path)
        if f is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit_oid})
        headers = {
            "X-Repo-Commit": commit_oid,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        data = f.content
        status = 200
        range_header = req.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
        if match and req.method == "GET" and (match.group(1) or match.group(2)):
            start_s, end_s = match.groups()
            if start_s:
                start, end = int(start_s), int(end_s) if end_s else f.size - 1
            else:
                start, end = max(f.size - int(end_s), 0), f.size - 1
            end = min(end, f.size - 1)
            if start >= f.size or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{f.size}"})
            data = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        if req.method == "HEAD":
            return _Response(status, b"", headers, content_length=len(data))
        return _Response(status, data, headers)


_PATCHED_PACKAGES = (
    "huggingface_hub",
    "transformers",
    "peft",
    "datasets",
    "diffusers",
    "accelerate",
    "evaluate",
    "sentence_transformers",
)


def _patch_module_values(monkeypatch: pytest.MonkeyPatch, owner: Any, new_values: dict[str, Any]) -> None:
    """``monkeypatch.setattr(owner, name, value)`` for each item, and also in every imported module of the HF
    libraries that holds a copy of the old value under the same name (``from .constants import HF_HUB_CACHE``)."""
    new_values = {k: v for k, v in new_values.items() if hasattr(owner, k)}
    old_values = {k: getattr(owner, k) for k in new_values}
    for mod_name, module in list(sys.modules.items()):
        if module is None or module is owner or not mod_name.startswith(_PATCHED_PACKAGES):
            continue
        namespace = getattr(module, "__dict__", {})
        for name, old in old_values.items():
            if name in namespace and type(namespace[name]) is type(old) and namespace[name] == old:
                monkeypatch.setattr(module, name, new_values[name])
    for name, value in new_values.items():
        monkeypatch.setattr(owner, name, value)


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """A fresh :class:`LocalHub`, with ``huggingface_hub`` (and transformers/peft) pointed at it.

    ``HF_HOME`` is a fresh tmp dir (empty cache), ``HF_TOKEN`` is ``local_hub.token`` (user ``local_hub.user``).
    """
    with LocalHub() as hub:
        hub.patch_client(monkeypatch, tmp_path_factory.mktemp("hf_home"))
        yield hub

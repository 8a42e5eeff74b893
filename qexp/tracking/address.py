"""Where a store is and who writes to it: URI checks, passwords kept out of what is shown, and
the tags that say what produced a run."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..contract import TAGS
from ..errors import config_error

URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def check_uri(uri: Any) -> None:
    """Refuse tracking URIs that cannot work, before anything runs."""
    fix = ("Use sqlite:///<abs path>/mlflow.db (the default keeps it under ./mlruns), "
           "or an MLflow server, e.g. tracking.uri=http://127.0.0.1:5000.")
    if not isinstance(uri, str) or not uri:
        raise config_error("tracking.uri", uri, "Missing tracking URI", fix)
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        raise config_error("tracking.uri", redact(uri), "MLflow's plain file store is in maintenance mode and "
                           "refuses to start without MLFLOW_ALLOW_FILE_STORE=true", fix)
    if scheme not in URI_SCHEMES:
        raise config_error("tracking.uri", redact(uri), "Unknown tracking URI scheme", fix)
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if not uri.startswith("sqlite:///") or not path:
            raise config_error("tracking.uri", uri, "A SQLite URI needs a file path", fix)
        folder = Path(path).parent  # created when a run is logged: checking a config leaves no folder behind
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise config_error("tracking.uri", uri, f"Cannot create the store's folder ({existing} is not a "
                               "writable folder)", "Choose a writable location.")


def redact(text: str) -> str:
    """`text` (a URI, or a line holding one) with the password of any `scheme://user:password@host`
    replaced by `***`: how qexp prints and logs a store's address. Credentials belong in
    MLFLOW_TRACKING_USERNAME/PASSWORD or ~/.mlflow/credentials, never in a URI (which lands in shell
    histories); this is for those who put them there anyway."""
    return _URI_PASSWORD.sub(r"\1:***@", text)


_URI_PASSWORD = re.compile(r"(://[^/\s:@]+):[^@\s/]*@")


def store_user(uri: str | None = None) -> str | None:
    """The user MLflow's client authenticates as: MLFLOW_TRACKING_USERNAME, else ~/.mlflow/credentials, else
    the user written into an http(s) `uri` (`http://alice:...@host`, sent as basic auth)."""
    from urllib.parse import unquote, urlparse

    from mlflow.utils.credentials import read_mlflow_creds

    found = read_mlflow_creds().username
    if found or not uri:
        return found
    parsed = urlparse(uri)
    return unquote(parsed.username) if parsed.scheme in ("http", "https") and parsed.username else None


@functools.cache
def source_tags(uri: str | None = None) -> dict[str, str]:
    """What produced a run, for the UI's Source and User columns: the command, qexp's version, from a
    git checkout the commit, and who ran it (the user of the tracking server at `uri`, else the login name)."""
    import subprocess
    from importlib import metadata

    tags = {TAGS.SOURCE_NAME: "python -m qexp", TAGS.SOURCE_TYPE: "LOCAL", TAGS.VERSION: metadata.version("qexp"),
            TAGS.USER: store_user(uri) or _login()}
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            tags[TAGS.GIT_COMMIT] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"


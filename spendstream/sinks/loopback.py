"""Who may talk to a loopback endpoint: the data directory's owner, from this machine, not a web page.

The worker's query endpoint and ``spendstream store`` bind 127.0.0.1, but every
local user can reach a loopback port, and so can any web page open in a local
browser (directly, or through a DNS name rebound to 127.0.0.1). So a request is
served only when it

- carries the secret in ``<data_dir>/worker.secret`` (mode 0600: readable by the
  directory's owner alone) as ``Authorization: Bearer <secret>``;
- names this endpoint by a loopback ``Host`` with its port (a rebound DNS name
  arrives with its own name);
- has no ``Origin`` (browsers add one to cross-site requests; our clients never do);
- sends the one ``Content-Type`` the route reads (a form or ``text/plain`` body is
  what a page can send without asking first).

The secret stays the same across restarts, so a worker keeps talking to a
``spendstream store`` that came back; delete the file to change it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

SECRET_FILE = "worker.secret"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class SecretUnreadable(RuntimeError):
    """The endpoint secret is missing, unreadable, or readable by others than its owner."""


class SecretMissing(SecretUnreadable):
    """No secret yet: the worker or `spendstream store` has not started (or the data directory is another)."""


def secret_path(data_dir: Path) -> Path:
    return Path(data_dir) / SECRET_FILE


def ensure_secret(data_dir: Path) -> SecretStr:
    """The data directory's endpoint secret, created (mode 0600) if there is none yet.

    Raises SecretUnreadable when the file exists but others could read it.
    """
    path = secret_path(data_dir)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never replace a secret another process made; the mode is given at
        # creation, so there is no moment when the file is readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_secret(data_dir)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32))
        file.flush()
        os.fsync(file.fileno())
    return read_secret(data_dir)


def read_secret(data_dir: Path) -> SecretStr:
    """The secret a client sends; SecretUnreadable (saying why) when it cannot be used."""
    path = secret_path(data_dir)
    try:
        return read_secret_file(path, remedy="delete it and restart the worker or `spendstream store` to make a "
                                             "new one")
    except SecretMissing:
        raise SecretMissing(f"{path} does not exist: start the worker or `spendstream store` for "
                            f"{data_dir} first (SPENDSTREAM_DATA_DIR must name its data directory)") from None
    except SecretUnreadable as exc:
        if exc.__cause__ is None:
            raise
        raise SecretUnreadable(f"cannot read {path} ({exc.__cause__.strerror}): only the owner of {data_dir} "
                               "may query or write through its endpoint") from None


def read_secret_file(path: Path, *, remedy: str) -> SecretStr:
    """The secret in ``path``, which must be a regular file of this user's that only they can read (mode 0600)
    holding at least 32 characters. SecretMissing when there is no file; SecretUnreadable, saying why and
    ``remedy``, when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretMissing(f"{path} does not exist") from None
    except OSError as exc:
        raise SecretUnreadable(f"cannot read {path} ({exc.strerror})") from exc
    with os.fdopen(fd, "r", encoding="ascii") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise SecretUnreadable(
                f"{path} must be a file of yours with mode 0600 (it is {stat.filemode(info.st_mode)}, "
                f"uid {info.st_uid}): others may have read it; {remedy}")
        token = file.read().strip()
    if len(token) < 32:
        raise SecretUnreadable(f"{path} holds no usable secret (32 characters at least); {remedy}")
    return SecretStr(token)


def auth_headers(secret: SecretStr) -> dict[str, str]:
    """The header a client sends with every request."""
    return {"Authorization": f"Bearer {secret.get_secret_value()}"}


def browser_refusal(headers: Mapping[str, str], *, port: int) -> tuple[int, str] | None:
    """Why a request to a loopback port looks like a web page's (an Origin, or a Host that is not loopback:
    a rebound DNS name), as (403, reason); None when it does not."""
    if "Origin" in headers:
        return 403, "refused: requests from web pages (with an Origin header) are not served"
    if headers.get("Host", "").lower() not in {f"{host}:{port}" for host in _LOOPBACK_HOSTS}:
        return 403, f"refused: the Host header must be 127.0.0.1:{port} or localhost:{port}"
    return None


def refusal(headers: Mapping[str, str], *, secret: SecretStr, port: int,
            content_type: str | None) -> tuple[int, str] | None:
    """Why a request must not be served, as (HTTP status, reason), or None to serve it.

    ``content_type`` is the media type the route reads; None for routes without a body.
    The reasons never include what the request sent.
    """
    if (refused := browser_refusal(headers, port=port)) is not None:
        return refused
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    expected = secret.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        return 401, f"refused: send Authorization: Bearer <the contents of {SECRET_FILE} in the data directory>"
    sent_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type is not None and sent_type != content_type:
        return 415, f"refused: the Content-Type must be {content_type}"
    return None

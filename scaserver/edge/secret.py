"""The server secret (``server.secret_file``): it keys the Record-Route signatures, digest
nonces and PURRs, so calls, challenges and push routes in progress survive a restart."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

SECRET_BYTES: Final = 32


class SecretFileError(Exception):
    """``server.secret_file`` cannot be read, created, or holds too short a secret."""


def server_secret(path: str) -> bytes:
    """The server secret kept in ``path`` (``server.secret_file``): read when the file exists,
    else a random one written there first (mode 0600, hex); "" means a new secret for this
    process only.  Two servers starting at once on the same file end up with the same secret:
    the file appears whole or not at all (written aside, then hard-linked into place)."""
    if not path:
        return secrets.token_bytes(SECRET_BYTES)
    target = Path(path)
    try:
        if not target.exists():
            _create_secret_file(target)
        text = target.read_text().strip()
    except OSError as error:
        raise SecretFileError(f"{path}: {error.strerror}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()  # an operator's own secret, as written
    if len(secret) < 16:
        raise SecretFileError(f"{path}: the server secret must have at least 16 bytes")
    return secret


def _create_secret_file(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(SECRET_BYTES) + "\n")
        os.link(aside, target)
    except FileExistsError:
        pass  # another process was first: its secret is the one
    finally:
        aside.unlink()

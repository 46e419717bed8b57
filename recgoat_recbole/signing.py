"""The local user's secret key, and HMAC-SHA256 signatures under it: what lets this package tell a file that
this user's own runs wrote (a signed dataset cache, a benchmark record) from one that anyone else planted.

The key is ``$XDG_CACHE_HOME/recgoat_recbole/cache.key`` (else ``~/.cache/...``): 32 random bytes, created
on first use with mode 0600. A key file is used only when it is a regular file (not a link, a folder or a
device) of at least 32 bytes, owned by this user and neither readable nor writable by anyone else; any other
key file is refused with one :class:`KeyFileError` naming it and saying what to do (delete it, and a new key
is made). A key that a run cannot create (read-only or unwritable folder) is the same one-line error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat

__all__ = ["KeyFileError", "key_file", "secret_key", "sign", "verify", "KEY_BYTES"]

#: the length of a key this package makes, and the shortest key it accepts
KEY_BYTES = 32


class KeyFileError(ValueError):
    """The signing key file cannot be trusted or created; the message names it and says what to do."""


def key_file() -> str:
    """Where the key is: ``$XDG_CACHE_HOME/recgoat_recbole/cache.key``, else ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "recgoat_recbole", "cache.key")


def _check(path: str, info: os.stat_result) -> None:
    """Refuse a key file that anyone but this user could have written or read."""
    remedy = "delete it (a new key is made on the next run; caches signed with the old one are rebuilt)"
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"signing key {path} is not a regular file: {remedy}")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KeyFileError(f"signing key {path} is owned by uid {info.st_uid}, not by you: {remedy}")
    if info.st_mode & 0o077:
        raise KeyFileError(f"signing key {path} has mode {stat.S_IMODE(info.st_mode):o}: others could read or "
                           f"write it, so it proves nothing; {remedy}")
    if info.st_size < KEY_BYTES:
        raise KeyFileError(f"signing key {path} holds {info.st_size} bytes (< {KEY_BYTES}): {remedy}")


def _read(path: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)  # a symlink planted as the key is refused, not followed
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise KeyFileError(f"signing key {path} is a symbolic link: delete it (a new key is made on the "
                               "next run)") from None
        raise
    try:
        info = os.fstat(fd)
        _check(path, info)
        with os.fdopen(fd, "rb", closefd=False) as f:
            key = f.read(1 << 16)
    finally:
        os.close(fd)
    if len(key) < KEY_BYTES:  # (the size changed between fstat and read)
        raise KeyFileError(f"signing key {path} holds {len(key)} bytes (< {KEY_BYTES}): delete it")
    return key


def _create(path: str) -> None:
    """Write a new key under a unique temporary name and link it into place: the first writer wins, a
    concurrent run reads the winner's key, nobody ever reads a half-written key."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = os.path.join(folder, f".cache.key.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create the signing key {path}: {exc.strerror or exc} (set XDG_CACHE_HOME to "
                           "a folder of yours that is writable)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyFileError(f"cannot create the signing key {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def secret_key() -> bytes:
    """This user's signing key, created when there is none (see the module docstring)."""
    path = key_file()
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror}") from None
    except IsADirectoryError:
        raise KeyFileError(f"signing key {path} is not a regular file: delete it") from None
    except OSError as exc:  # a path through a file, a device, ...
        raise KeyFileError(f"cannot create the signing key {path}: {exc.strerror or exc} (set XDG_CACHE_HOME to "
                           "a folder of yours that is writable)") from None
    _create(path)
    return _read(path)


def sign(data: bytes) -> str:
    """The HMAC-SHA256 of ``data`` under this user's key, as hex."""
    return hmac.new(secret_key(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, signature: str | bytes) -> bool:
    """Whether ``signature`` is this user's signature of ``data`` (constant-time comparison)."""
    if isinstance(signature, bytes):
        try:
            signature = signature.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(data), signature)

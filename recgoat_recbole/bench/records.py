"""Benchmark records on disk: one JSON object per file, signed with this user's key
(:mod:`recgoat_recbole.signing`), read back safely. The record I/O of ``recgoat bench`` / ``recgoat tune``
(:mod:`~recgoat_recbole.bench.execute`, which says when a record is trusted) and of the speed benchmark
(:mod:`~recgoat_recbole.bench.speed`); each passes its own check of what a well-formed record holds.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from typing import Any, Callable

__all__ = ["MAX_RECORD_BYTES", "canonical", "read_record", "save_record", "package_commit", "config_digest",
           "record_command"]

#: a larger file is no record (read_record refuses it before reading)
MAX_RECORD_BYTES = 16 * 2**20


def canonical(record: dict) -> bytes:
    """What a record's signature covers: every field but ``signature`` (and the in-memory ``unverified``), as
    ``json.dumps(sort_keys=True)`` of the record as JSON reads it back."""
    body = {k: v for k, v in record.items() if k not in ("signature", "unverified")}
    return json.dumps(json.loads(json.dumps(body)), sort_keys=True).encode("utf-8")


def read_record(path: str, malformed: Callable[[Any], str],
                check_signature: bool = True) -> tuple[dict | None, str]:
    """``(record, "")`` for a well-formed record signed by this user; ``(record, reason)`` for a well-formed one
    whose signature is missing or does not verify; ``(None, reason)`` for a file that is no record (unreadable,
    truncated, not JSON, or ``malformed(record)`` names what is wrong). Never raises for what the file holds."""
    try:
        if os.path.getsize(path) > MAX_RECORD_BYTES:
            return None, f"not a run record ({os.path.getsize(path):,} bytes)"
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return None, f"not valid JSON, truncated or damaged ({' '.join(str(exc).split())[:120]})"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    problem = malformed(record)
    if problem:
        return None, problem
    record.pop("unverified", None)
    if not check_signature:
        return record, "signature not checked (this user's signing key is unusable)"
    signature = record.get("signature")
    if signature is None:
        return record, "not signed (written by a recgoat without record signatures, or not by a run of yours)"
    from recgoat_recbole.signing import verify

    if not verify(canonical(record), signature):
        return record, "its signature does not verify (edited since it was written, or written by someone else)"
    return record, ""


@functools.lru_cache(maxsize=1)
def package_commit() -> str | None:
    """The git commit of this package's checkout (``git rev-parse HEAD`` in its folder), once per process;
    ``None`` when the package is not in its own git checkout or git is missing or slow."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../recgoat_recbole
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:  # Popen, not subprocess.run: tests replace run() to fake the worker
        proc = subprocess.Popen(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
    except OSError:
        return None
    lines = out.split()
    if proc.returncode != 0 or len(lines) != 2 or not re.fullmatch(r"[0-9a-f]{40}", lines[1]):
        return None
    # only the package's own checkout (an installed package inside some other repository is not it)
    if os.path.realpath(os.path.join(lines[0], os.path.basename(package))) != os.path.realpath(package):
        return None
    return lines[1]


def save_record(record: dict, path: str) -> dict:
    """Write ``record`` to ``path`` atomically (a run is either finished on disk or absent; a unique temporary
    file, so two writers never share one), with the code that wrote it and this user's signature."""
    from recgoat_core.feature_files import atomic_write
    from recgoat_recbole.version import __version__
    from recgoat_recbole.signing import sign

    record = {k: v for k, v in record.items() if k not in ("signature", "unverified")}
    record.setdefault("recgoat_version", __version__)  # (a copy keeps the code that trained it)
    record.setdefault("git_commit", package_commit())
    record["signature"] = sign(canonical(record))
    text = json.dumps(record, indent=1)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), suffix=".tmp")
    return record


def config_digest(files: "list[str] | tuple[str, ...]") -> str:
    """SHA-256 over the contents of the YAML files, in order: a run records the exact config it trained with."""
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def record_command(out: str, command: str) -> None:
    """Append ``command`` to ``OUT/commands.txt`` (once): what a committed results folder says it ran. Nothing
    when ``out`` exists and is not a folder (the run's own checks name that error)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        return
    path = os.path.join(out, "commands.txt")
    seen = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            seen = [line.rstrip("\n") for line in f]
    if command not in seen:
        os.makedirs(out, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(command + "\n")

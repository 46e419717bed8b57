"""Running the specs: each (dataset, model, variant, seed) trains in its own subprocess
(:mod:`recgoat_recbole.bench.worker`), with its result saved as JSON the moment it finishes, so an interrupted
benchmark resumes without repeating finished runs. A finished run is reused only with identical settings (the
same overrides, YAML files and YAML contents, and the same model defaults), here or from an earlier output
folder.

What a record (``OUT/runs/<key>.json``) says, and when it is trusted:

- which code wrote it: ``recgoat_version`` and ``git_commit`` (``git rev-parse HEAD`` of the package's checkout,
  asked once per process; ``None`` for an installed package); which settings: the spec (``config_files``,
  ``overrides``, ``seed``), ``config_sha`` (the YAML files' contents) and ``defaults_sha`` (the model's
  defaults, :func:`defaults_digest`: a run at the defaults is not reused once they change); a copy from another
  folder also
  ``reused_from`` (the run's key there) and ``reused_dir`` (that folder), and keeps the version and commit of the
  code that trained it;
- ``signature``: an HMAC-SHA256 of the record's canonical JSON (:func:`canonical`: every field but the
  signature, ``json.dumps(sort_keys=True)``) under this user's key (:mod:`recgoat_recbole.signing`).

A record is reused -- resumed in the same ``--out``, or copied from a ``--reuse`` folder -- only when its
signature verifies: one of this user's runs wrote it and nobody changed it since. Any other record (edited by
hand, written by another user, by a version of this package without signatures, or not a well-formed record:
truncated, not JSON, fields missing) gets one warning line naming the file and the reason, and its run is
trained again (its file in ``--out`` is then replaced); a copy is never made from it (a copy is signed here,
so copying would vouch for numbers nobody checked).

With ``train=False`` (``--report-only``) a well-formed record of ``--out`` that does not verify still makes the
tables: re-deriving the tables of someone else's output folder is legitimate, and nothing is trained or signed.
It is marked instead: the record gets ``unverified`` (the reason; in memory only, never saved), the report marks
its row and says how many runs are not signed by this user's runs (:mod:`~recgoat_recbole.bench.report`).
Malformed records are left out of the tables (with the warning). Records in ``--reuse`` folders are never used
unverified, not even for a report.

A ``--reuse`` folder that does not exist or has no ``runs/``, and a ``--out`` (or its ``runs/``) that is a file,
are one :class:`FileNotFoundError` / :class:`FileExistsError` before anything runs.
"""

from __future__ import annotations

import functools
import inspect
import json
import numbers
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any, Callable, Sequence

from recgoat_recbole.bench.design import RunSpec
# the record I/O (execute._save, .canonical, .package_commit: the names this module always had)
from recgoat_recbole.bench.records import (canonical, config_digest, package_commit, read_record,
                                            save_record as _save)

__all__ = ["PATH_KEYS", "worker_env", "defaults_digest", "run_one", "run_all", "config_digest", "settings_differ", "find_identical", "canonical",
           "load_record", "package_commit", "RECORD_FIELDS"]


#: config keys holding folders that a user writes relative to where they run ``recgoat bench``
PATH_KEYS = ("data_path", "feature_cache_dir")


def _absolute_paths(spec: RunSpec) -> dict[str, str]:
    """Relative ``data_path`` / ``feature_cache_dir`` from the spec's YAML files or overrides, made absolute.

    Runs execute in ``out_dir/work/<key>``; without this, ``data_path: recgoat_data`` would be looked up there.
    A YAML's ``data_path`` relative to the YAML's own folder (what ``recgoat data import`` writes: ``..``) is
    resolved against that folder first (:func:`recgoat_recbole.yaml_paths.resolve_data_path`, the rule every
    RecBole ``Config`` follows here); any other relative path against the caller's working directory.
    """
    import yaml

    from recgoat_recbole.patches.yaml_data_path import resolve_data_path

    found: dict[str, Any] = {}  # key -> (as written, as meant)
    for path in spec.config_files:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if isinstance(values, dict):
            meant = resolve_data_path(values, path)
            found.update({k: (v, meant[k]) for k, v in values.items() if k in PATH_KEYS})
    found.update({k: (v, v) for k, v in spec.overrides.items() if k in PATH_KEYS})
    found.setdefault("feature_cache_dir", ("recgoat_cache",) * 2)  # the default (auto: features, kNN graphs)
    return {k: os.path.abspath(meant) for k, (written, meant) in found.items()
            if isinstance(written, str) and not os.path.isabs(written)}


def worker_env(jobs: int) -> dict[str, str]:
    """The environment of a run: with ``jobs`` runs at once, each gets an equal share of the cores this process
    may use as its thread count (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, unless you set them). Without it,
    every run's torch starts one thread per core, and two runs on two cores (``--jobs 2``) spend most of their
    time waiting on each other's threads (several times slower per epoch than with one thread each)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if jobs > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(max(1, cores // jobs)))
    return env


def run_one(spec: RunSpec, out_dir: str, timeout: float | None = None, verbose: bool = True,
            progress: Callable[[int, int, float, float], Any] | None = None, keep_checkpoint: bool = False,
            jobs: int = 1) -> dict:
    """Run ``spec`` in a subprocess (working directory ``out_dir/work/<key>``) and save its result JSON.

    ``jobs``: how many runs share the machine with this one; each gets the cores / ``jobs`` threads
    (:func:`worker_env`).

    Each run has its own working directory because RecBole names a checkpoint ``saved/<model>-<time to the
    second>.pth``: two runs of one model started in the same second (``--jobs``) would share, overwrite and
    delete each other's best model.

    With ``verbose`` the subprocess's RecBole log (one line per epoch) streams to this process's stderr;
    without, only its warnings and errors do (the full log is in ``out_dir/work/<key>/log``).
    ``progress(epoch, epochs, seconds_per_epoch, setup_seconds)`` is called after every training epoch.
    ``keep_checkpoint`` keeps the run's best checkpoint (in ``out_dir/work/<key>/saved/``; the record's
    ``checkpoint``); by default only the metrics are kept.
    """
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    work = os.path.join(out_dir, "work", spec.key)
    os.makedirs(work, exist_ok=True)
    fields = {**asdict(spec), "config_files": [os.path.abspath(f) for f in spec.config_files]}
    fields["overrides"] = {**spec.overrides, **_absolute_paths(spec)}
    payload = json.dumps({**fields, "keep_checkpoint": keep_checkpoint})
    cmd = [sys.executable, "-m", "recgoat_recbole.bench.worker", payload]
    tail: deque[str] = deque(maxlen=15)
    epochs = spec.overrides.get("epochs")
    watch = _EpochWatcher(int(epochs) if isinstance(epochs, int) else 0, progress)
    read_end, write_end = os.pipe()  # the run's stderr, read line by line while it runs

    def read_stderr() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                tail.append(line.rstrip("\n"))
                watch.feed(line)
                if verbose or _shown_when_quiet(line):
                    sys.stderr.write(line)
                    sys.stderr.flush()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=write_end, text=True, timeout=timeout,
                              env=worker_env(jobs))
    finally:
        os.close(write_end)
        reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"run {spec.key} failed (exit {proc.returncode}); see the log above or in "
                           f"{work}/log\n" + "\n".join(tail))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("checkpoint"):
        result["checkpoint"] = os.path.relpath(os.path.join(work, result["checkpoint"]))
    record = {**asdict(spec), "label": spec.label, "key": spec.key, **result,
              "config_sha": config_digest(fields["config_files"]), "defaults_sha": defaults_digest(spec.model)}
    return _save(record, os.path.join(out_dir, "runs", f"{spec.key}.json"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EPOCH = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")
#: RecBole log lines shown without --verbose: warnings, errors, and the slow first-time feature encoding
_QUIET_SHOWN = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Error:|text features: encoding")


def _shown_when_quiet(line: str) -> bool:
    return bool(_QUIET_SHOWN.search(_ANSI.sub("", line)))


class _EpochWatcher:
    """Reads a run's RecBole log lines and reports each finished training epoch to ``progress``."""

    def __init__(self, epochs: int, progress: Callable[[int, int, float, float], Any] | None) -> None:
        self.epochs, self.progress = epochs, progress
        self.start = time.perf_counter()
        self.fit_start: float | None = None

    def feed(self, line: str) -> None:
        match = _EPOCH.search(_ANSI.sub("", line))
        if match is None or self.progress is None:
            return
        now = time.perf_counter()
        done = int(match.group(1)) + 1
        if self.fit_start is None:  # the first epoch began when its training began
            self.fit_start = now - float(match.group(2))
        per = (now - self.fit_start) / done
        self.progress(done, self.epochs or done, per, self.fit_start - self.start)


def settings_differ(record: dict, spec: RunSpec, unknown_defaults_differ: bool = False) -> str:
    """Why a finished run's settings differ from ``spec`` ('' when they match). Runs recorded before the
    config digest existed are checked on their overrides and file names only; runs recorded before the defaults
    digest, on the rest (with ``unknown_defaults_differ``, as for a copy from another folder: not for a model
    whose defaults this package defines)."""
    from recgoat_recbole.keys import package_models

    if record.get("overrides", spec.overrides) != spec.overrides:
        changed = sorted(k for k in {*record["overrides"], *spec.overrides}
                         if record["overrides"].get(k) != spec.overrides.get(k))
        return "overrides differ: " + ", ".join(f"{k} {record['overrides'].get(k)!r} -> {spec.overrides.get(k)!r}"
                                                for k in changed)
    files = [os.path.abspath(p) for p in spec.config_files]
    if [os.path.abspath(p) for p in record.get("config_files", files)] != files:
        return f"config files differ: {record['config_files']} -> {files}"
    if "config_sha" in record and all(os.path.isfile(p) for p in files) and \
            record["config_sha"] != config_digest(files):
        return "the YAML files changed since"
    current = defaults_digest(spec.model)
    if "defaults_sha" in record:
        if record["defaults_sha"] != current:
            return f"the defaults of {spec.model} changed since"
    elif unknown_defaults_differ and package_models(spec.model):
        # recorded before records carried the digest: RecBole's own defaults are pinned by its version, this
        # package's change between commits, so such a run of a model this package defines is not trusted
        return f"recorded without the defaults of {spec.model}, which this package defines and may have changed"
    return ""


@functools.lru_cache(maxsize=None)
def defaults_digest(model: str) -> str:
    """SHA-256 of what ``model`` runs with when a setting is not given: this package's defaults
    (``recgoat_recbole/keys.py``) for the models it defines, RecBole's model YAML and version for its own (for
    ``<B>+Align``: both). A record keeps it, so that a run at the defaults is not reused after they change."""
    import hashlib

    import recbole

    from recgoat_recbole.bench.names import ALIGN_SUFFIX
    from recgoat_recbole.keys import defaults, package_models

    parts: dict[str, Any] = {}
    for name in package_models(model):
        parts[name] = defaults(name)
    base = model[: -len(ALIGN_SUFFIX)] if model.endswith(ALIGN_SUFFIX) else model
    if base not in parts:
        path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{base}.yaml")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                parts[base] = {"recbole": recbole.__version__, "yaml": hashlib.sha256(f.read()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode("utf-8")).hexdigest()


def find_identical(spec: RunSpec, folder: str, log: Callable[[str], Any] | None = None,
                   _loaded: dict[str, tuple[dict | None, str]] | None = None) -> dict | None:
    """A finished run in ``folder/runs`` with the same dataset, model, seed, config files and overrides, whose
    signature verifies (see the module docstring); records that do not are skipped, each with one ``log``
    warning (once per file when the same ``_loaded`` cache is passed)."""
    runs = os.path.join(folder, "runs")
    if not os.path.isdir(runs):
        return None
    loaded = {} if _loaded is None else _loaded
    for name in sorted(os.listdir(runs)):
        if not name.endswith(".json") or not name.startswith(f"{spec.dataset}__{spec.model}"):
            continue
        path = os.path.join(runs, name)
        if path not in loaded:
            loaded[path] = load_record(path)
            if loaded[path][1] and log is not None:
                log(f"warning: {path}: {loaded[path][1]}; not reused")
        record, problem = loaded[path]
        if record is None or problem:
            continue
        if (record["dataset"], record["model"], record["seed"]) != (spec.dataset, spec.model, spec.seed):
            continue
        if "overrides" in record and "config_files" in record and not settings_differ(record, spec, True):
            return record
    return None


#: the fields every record has, and their types (a record without them is malformed)
RECORD_FIELDS: dict[str, Any] = {
    "dataset": str, "model": str, "seed": int, "label": str, "key": str, "test": dict, "valid": dict,
    "epochs": numbers.Real, "epoch_s": numbers.Real, "total_s": numbers.Real, "peak_mib": numbers.Real,
    "device": str,
}


def _malformed(record: Any) -> str:
    if not isinstance(record, dict):
        return f"not a run record (a JSON {type(record).__name__}, not an object)"
    for field, kind in RECORD_FIELDS.items():
        value = record.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"not a run record (field {field!r} missing or not a {getattr(kind, '__name__', kind)})"
    for field in ("test", "valid"):
        bad = [k for k, v in record[field].items() if not isinstance(v, numbers.Real) or isinstance(v, bool)]
        if bad:
            return f"not a run record ({field}[{bad[0]!r}] is not a number)"
    for field, kind in (("overrides", dict), ("config_files", list)):
        if field in record and not isinstance(record[field], kind):
            return f"not a run record (field {field!r} is not a {kind.__name__})"
    if "cold" in record:
        cold = record["cold"]
        if not isinstance(cold, dict) or not isinstance(cold.get("test"), dict) or not all(
                isinstance(part, dict) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                               for v in part.values()) for part in cold["test"].values()):
            return "not a run record (field 'cold' is not the cold items' metrics)"
    if not all(isinstance(p, str) for p in record.get("config_files", [])):
        return "not a run record (config_files holds something other than file names)"
    for field in ("reused_dir", "reused_from", "recgoat_version", "git_commit", "config_sha", "defaults_sha",
                  "checkpoint"):
        if record.get(field) is not None and not isinstance(record[field], str):
            return f"not a run record (field {field!r} is not a string)"
    return ""


def load_record(path: str, check_signature: bool = True,
                malformed: Callable[[Any], str] | None = None) -> tuple[dict | None, str]:
    """``(record, "")`` for a well-formed record signed by this user; ``(record, reason)`` for a well-formed one
    whose signature is missing or does not verify; ``(None, reason)`` for a file that is no record (unreadable,
    truncated, not JSON, fields missing). Never raises for what the file holds. ``malformed(record)`` says what
    is wrong with a record ('' when nothing): by default, what a run record of ``recgoat bench`` needs
    (:func:`recgoat_recbole.bench.records.read_record`)."""
    return read_record(path, malformed or _malformed, check_signature)


def _clock(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    from recgoat_recbole.progress import format_seconds

    return format_seconds(seconds)


def _check_folders(out_dir: str, reuse_from: Sequence[str]) -> None:
    """``--out`` must be a folder (or not exist yet), each ``--reuse`` folder an earlier output folder."""
    for path in (out_dir, os.path.join(out_dir, "runs")):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise FileExistsError(f"--out {out_dir}: {path} exists and is not a folder; --out takes a folder (a new "
                                  "one, or an earlier output folder to resume)")
    for folder in reuse_from:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--reuse {folder}: no such folder")
        if not os.path.isdir(os.path.join(folder, "runs")):
            raise FileNotFoundError(f"--reuse {folder}: no runs/ folder in it (--reuse takes earlier --out folders "
                                    "of `recgoat bench` or `recgoat tune`)")


def _key_usable(train: bool, log) -> bool:
    """Whether records can be signed and checked: training needs this user's key (else one KeyFileError before
    anything runs); a report without it checks nothing and marks every record."""
    from recgoat_recbole.signing import KeyFileError, secret_key

    try:
        secret_key()
        return True
    except KeyFileError as exc:
        if train:
            raise
        log(f"warning: {exc}; the records' signatures are not checked: every record is marked unverified")
        return False


def run_all(specs: Sequence[RunSpec], out_dir: str, log=print, verbose: bool | None = None,
            show_test: bool = True, train: bool = True, jobs: int = 1,
            reuse_from: Sequence[str] = (), keep_checkpoints: bool = False) -> list[dict]:
    """Run every spec not already finished in ``out_dir/runs``; returns all records (old and new), in spec order.

    With ``train=False`` nothing is trained: the records are the finished runs, and the others are listed.
    ``jobs`` runs that many subprocesses at once. A spec whose identical run (same dataset, model, seed, config
    files and overrides) is finished in one of the ``reuse_from`` folders is copied from there, not trained.
    ``verbose`` streams every run's RecBole log; without it (``None``: the ``recgoat`` command's ``--verbose``,
    else on) a run shows ``epoch k/N`` lines with the time left for the run and for the whole job.
    ``keep_checkpoints``: each new run keeps its best checkpoint (:func:`run_one`).
    Which records are trusted, and the checks of ``out_dir`` and ``reuse_from``: the module docstring.
    """
    from concurrent.futures import ThreadPoolExecutor

    _check_folders(out_dir, reuse_from)
    check = _key_usable(train, log)
    loaded: dict[str, tuple[dict | None, str]] = {}  # the --reuse folders' records, each read (and warned) once
    found: dict[int, dict] = {}
    todo: list[tuple[int, RunSpec]] = []
    for n, spec in enumerate(specs, 1):
        path = os.path.join(out_dir, "runs", f"{spec.key}.json")
        if os.path.lexists(path):
            record, problem = load_record(path, check_signature=check)
            if record is not None and (not problem or not train):
                if problem:
                    record["unverified"] = problem
                    if check:
                        log(f"warning: {path}: {problem}; in the tables, marked as not signed by your runs")
                difference = settings_differ(record, spec)
                if difference and not train and difference.startswith("the defaults of"):
                    log(f"warning: {path}: {difference}; in the tables as it was trained")
                elif difference:
                    raise FileExistsError(f"{path} was trained with other settings ({difference}): use another "
                                          "--out, or delete that file to train it again")
                found[n] = record
                log(f"[{n}/{len(specs)}] {spec.key}: done earlier, reused")
                continue
            log(f"warning: {path}: {problem}; not reused, " +
                ("training it again" if train else "left out of the tables"))
        twin, twin_dir = None, None
        if check:
            for folder in reuse_from:
                twin = find_identical(spec, folder, log, loaded)
                if twin is not None:
                    twin_dir = folder
                    break
        if twin is not None:
            found[n] = _save({**twin, **asdict(spec), "label": spec.label, "key": spec.key,
                              "reused_from": twin["key"], "reused_dir": os.path.abspath(twin_dir)}, path)
            log(f"[{n}/{len(specs)}] {spec.key}: the identical run {twin['key']} is finished, reused")
            continue
        if not train:
            log(f"[{n}/{len(specs)}] {spec.key}: not run yet, left out of the tables")
            continue
        todo.append((n, spec))
    which = "test" if show_test else "valid"
    failed: list[str] = []
    if verbose is None:
        verbose = os.environ.get("RECGOAT_VERBOSE") != "0"
    pending = {n: spec for n, spec in todo}
    seen: dict[str, tuple[float, float]] = {}  # model -> (setup seconds, seconds per epoch) of its last run

    def job_left(n: int, spec: RunSpec, run_left: float, setup: float, per: float) -> float:
        """The time left for the runs not started yet, from what the runs so far took (a rough upper bound)."""
        later = 0.0
        for m, other in pending.items():
            if m == n:
                continue
            s0, p0 = seen.get(other.model, (setup, per))
            later += s0 + p0 * float(other.overrides.get("epochs") or 0)
        return run_left + later / max(jobs, 1)

    def one(item: tuple[int, RunSpec]) -> tuple[int, dict | None]:
        n, spec = item
        log(f"[{n}/{len(specs)}] {spec.key}: running ...")
        t0 = time.perf_counter()

        def progress(epoch: int, epochs: int, per: float, setup: float) -> None:
            seen[spec.model] = (setup, per)
            run_left = per * (epochs - epoch)
            log(f"[{n}/{len(specs)}] {spec.label} epoch {epoch}/{epochs}  {per:.1f} s/epoch  "
                f"ETA run ≤ {_clock(run_left)}, all ≤ {_clock(job_left(n, spec, run_left, setup, per))}")

        try:
            accepted = inspect.signature(run_one).parameters
            extra = {"progress": progress} if "progress" in accepted else {}
            if keep_checkpoints and "keep_checkpoint" in accepted:
                extra["keep_checkpoint"] = True
            if "jobs" in accepted:
                extra["jobs"] = jobs
            record = run_one(spec, out_dir, verbose=verbose and jobs == 1, **extra)  # (tests replace run_one)
        except RuntimeError as exc:  # the other runs go on; the failures are raised together at the end
            log(f"[{n}/{len(specs)}] {exc}")
            failed.append(spec.key)
            return n, None
        finally:
            pending.pop(n, None)
        log(f"[{n}/{len(specs)}] {spec.key}: {which} NDCG@10 {record[which].get('ndcg@10', float('nan')):.4f} "
            f"in {time.perf_counter() - t0:.0f} s ({record['epochs']} epochs)")
        return n, record

    if jobs <= 1:
        results = [one(item) for item in todo]
    else:  # each run is its own subprocess: threads only wait on them
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, todo))
    found.update((n, record) for n, record in results if record is not None)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(specs)} runs failed: {', '.join(failed)}; the others are "
                           f"saved in {out_dir}/runs, and a rerun trains only what is missing")
    return [found[n] for n in sorted(found)]

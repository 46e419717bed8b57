"""Top-k recommendations from a checkpoint (``recgoat recommend``), written as MMRec writes them.

:func:`recommend` loads a RecBole checkpoint the safe way (:func:`~recgoat_recbole.patches.safe_checkpoints.
read_checkpoint`: nothing in the file can run code), rebuilds the dataset, the split and the model as RecBole's
``load_data_and_model`` does (:func:`~recgoat_recbole.patches.safe_checkpoints.data_and_model`), and ranks
every item for every user (or the users of a file) by the model's ``full_sort_predict`` -- RecBole's
full-sort scoring; a model without it is scored by ``predict`` over every item, as
``recbole.utils.case_study.full_sort_scores`` does. RecBole's padding item and the user's interactions of the
excluded splits (:data:`EXCLUDE`; default the training split, as RecBole masks training items when it ranks
for validation, and MMRec when it ranks for test) never enter a list.

The output is MMRec's ``save_recommended_topk`` layout (its ``TopKEvaluator``): a tab-separated file, header
``id top_0 ... top_{k-1}``, then one line per user, the user and its k items best first, every field
separated by a tab -- but with the dataset's original tokens (the ids of the ``.inter`` file), not RecBole's
internal ids. A user with fewer than k items left to recommend has empty fields at the end. The file is
written atomically (a reader never sees half of it; a failed run leaves the previous file as it was).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["RecommendError", "RecommendReport", "EXCLUDE", "recommend", "top_k", "read_users", "write_topk"]

logger = logging.getLogger(__name__)

#: ``exclude`` choices: the splits whose interactions of a user are never recommended to that user
EXCLUDE = {
    "train": ("train",),
    "train+valid": ("train", "valid"),  # RecBole's mask when it ranks for test
    "all": ("train", "valid", "test"),  # everything the user is known to have interacted with
    "none": (),
}


class RecommendError(ValueError):
    """A checkpoint, user list or option that :func:`recommend` cannot use; the message says which and why."""


@dataclass
class RecommendReport:
    output: str
    users: int
    k: int
    exclude: str
    #: users who got fewer than k items (too few items left after the exclusion)
    short: int
    model: str
    dataset: str

    def __str__(self) -> str:
        short = f"; {self.short} users have fewer items left" if self.short else ""
        excluded = {"train": "the training interactions", "train+valid": "the training and validation interactions",
                    "all": "every interaction of the user", "none": "nothing"}[self.exclude]
        return (f"{self.output}: top {self.k} of {self.model} on {self.dataset} for {self.users:,} users, "
                f"{excluded} excluded{short}")


def _check_output(path: str) -> str:
    """Before anything is loaded: ``path`` can be written (a file name, in a folder that exists and is writable
    or can be created)."""
    from recgoat_core.feature_files import FeatureFileError, check_output_path

    try:
        return check_output_path(path, suffixes=None)
    except FeatureFileError as exc:
        raise RecommendError(str(exc)) from None


def read_users(path: str, dataset: Any) -> np.ndarray:
    """The internal ids of the users listed in ``path``: one token per line (the first tab-separated field, so a
    top-k file can be given back; a first line ``id`` / ``user_id`` / ``userID`` or the dataset's user field that
    is no user is a header), in file order, each once. An unknown token is a :class:`RecommendError`."""
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n").split("\t")[0].strip() for line in f]
    except UnicodeDecodeError:
        raise RecommendError(f"--users {path}: not UTF-8 text (one user token per line)") from None
    except IsADirectoryError:
        raise RecommendError(f"--users {path} is a folder; give a file of user tokens, one per line") from None
    tokens = [t for t in tokens if t]
    known = dataset.field2token_id[dataset.uid_field]
    if tokens and tokens[0] not in known and tokens[0] in {"id", "user_id", "userID", dataset.uid_field}:
        tokens = tokens[1:]
    if not tokens:
        raise RecommendError(f"--users {path}: no user tokens in it (one per line)")
    unknown = [t for t in tokens if t not in known or known[t] == 0]  # (id 0 is RecBole's padding user)
    if unknown:
        shown = ", ".join(repr(t[:40]) for t in unknown[:5])
        raise RecommendError(f"--users {path}: {len(unknown):,} users are not in the checkpoint's dataset "
                             f"(e.g. {shown})")
    return np.asarray([known[t] for t in dict.fromkeys(tokens)], dtype=np.int64)


def _excluded(splits: dict[str, Any], names: Sequence[str], n_users: int, n_items: int):
    """A boolean sparse [users, items] matrix of the interactions of the splits ``names``."""
    import scipy.sparse as sp

    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for name in names:
        part = splits.get(name)
        if part is None or not len(part.inter_feat):
            continue
        rows.append(part.inter_feat[part.uid_field].numpy().astype(np.int64))
        cols.append(part.inter_feat[part.iid_field].numpy().astype(np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r), dtype=bool), (r, c)), shape=(n_users, n_items))


def top_k(model: Any, dataset: Any, users: np.ndarray, k: int, excluded: Any, batch_size: int,
          device: Any) -> np.ndarray:
    """The internal ids of each user's ``k`` best items ([len(users), k], best first; 0 -- RecBole's padding id
    -- where fewer than ``k`` items are left): scores from ``full_sort_predict`` (else ``predict`` over every
    item), the padding item and the ``excluded`` (user, item) pairs set to -inf."""
    import torch
    from recbole.data.interaction import Interaction

    n_items = dataset.item_num
    out = np.zeros((len(users), k), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            batch = users[start:start + batch_size]
            interaction = dataset.join(Interaction({dataset.uid_field: torch.as_tensor(batch)})).to(device)
            try:
                scores = model.full_sort_predict(interaction)
            except NotImplementedError:  # as recbole.utils.case_study.full_sort_scores
                interaction = interaction.repeat_interleave(n_items)
                interaction.update(dataset.get_item_feature().to(device).repeat(len(batch)))
                scores = model.predict(interaction)
            scores = scores.view(-1, n_items).float()
            scores[:, 0] = -torch.inf
            mask = excluded[batch].tocoo()
            if mask.nnz:
                scores[torch.as_tensor(mask.row, device=scores.device),
                       torch.as_tensor(mask.col, device=scores.device)] = -torch.inf
            values, index = torch.topk(scores, k, dim=1)
            index[torch.isneginf(values)] = 0
            out[start:start + len(batch)] = index.cpu().numpy()
    return out


def write_topk(path: str, user_tokens: Sequence[str], item_tokens: np.ndarray, k: int) -> None:
    """MMRec's layout (module docstring), atomically; ``item_tokens`` [users, k] with ``""`` for no item."""
    from recgoat_core.feature_files import atomic_write

    def write(f) -> None:
        f.write(("id\t" + "\t".join(f"top_{i}" for i in range(k)) + "\n").encode("utf-8"))
        step = 4096
        for start in range(0, len(user_tokens), step):
            lines = ("\t".join([str(u), *row]) + "\n"
                     for u, row in zip(user_tokens[start:start + step], item_tokens[start:start + step].tolist()))
            f.write("".join(lines).encode("utf-8"))

    atomic_write(path, write, suffix=".tmp")


def _load(checkpoint: str, device: Any, quiet: bool) -> tuple:
    from recgoat_recbole.patches.safe_checkpoints import data_and_model, read_checkpoint

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    try:
        stored = read_checkpoint(checkpoint, device)
    except pickle.UnpicklingError as exc:
        raise RecommendError(" ".join(str(exc).split())) from None
    except (RuntimeError, ValueError, EOFError, OSError) as exc:  # not a torch file, truncated
        raise RecommendError(f"{checkpoint}: not a readable RecBole checkpoint ({' '.join(str(exc).split())[:200]})"
                             ) from None
    config = stored["config"]
    # a checkpoint of a multi-process run (recgoat run --nproc): rebuilt here in one process, without the
    # distributed sampler its loaders would otherwise ask for
    config["single_spec"], config["local_rank"] = True, 0
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        raise RecommendError(f"{checkpoint}: {config['model']} is a sequential model; recommend ranks for users of "
                             "general, context-aware and knowledge-based models (sequential ones need each "
                             "user's item sequence)")
    data_path = config["data_path"]
    if not (isinstance(data_path, str) and os.path.isdir(data_path)):
        raise RecommendError(f"{checkpoint}: its dataset folder {data_path} is not here (the dataset is read again "
                             "to rebuild the model and map its ids back to tokens)")
    return data_and_model(stored, checkpoint, quiet=quiet)


def recommend(checkpoint: str, output: str, k: int | None = None, users_file: str | None = None,
              exclude: str = "train", device: str | None = None, quiet: bool = True) -> RecommendReport:
    """Write the top ``k`` items of every user of the checkpoint's dataset (or of ``users_file``) to ``output``
    (module docstring). ``k`` defaults to the checkpoint's largest ``topk``, as MMRec writes ``max(topk)``;
    ``device`` to CUDA when there is one, else the CPU; ``exclude`` is a key of :data:`EXCLUDE`."""
    import torch

    if exclude not in EXCLUDE:
        raise RecommendError(f"--exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
    if k is not None and k < 1:
        raise RecommendError(f"--k must be at least 1, got {k}")
    output = _check_output(output)
    if users_file is not None and not os.path.isfile(users_file):
        raise FileNotFoundError(f"--users file not found: {users_file}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise RecommendError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecommendError(f"--device {device}: CUDA is not available here; use --device cpu")
    config, model, dataset, train_data, valid_data, test_data = _load(checkpoint, device, quiet)
    n_items = dataset.item_num
    k = int(k if k is not None else max(config["topk"]))
    if k > n_items - 1:
        raise RecommendError(f"--k {k}: the dataset has only {n_items - 1:,} items")
    users = (read_users(users_file, dataset) if users_file is not None
             else np.arange(1, dataset.user_num, dtype=np.int64))
    splits = {"train": train_data._dataset, "valid": getattr(valid_data, "_dataset", None),
              "test": getattr(test_data, "_dataset", None)}
    excluded = _excluded(splits, EXCLUDE[exclude], dataset.user_num, n_items)
    batch_size = max(1, int(config["eval_batch_size"]) // n_items)
    ids = top_k(model, dataset, users, k, excluded, batch_size, device)
    item_tokens = np.asarray(dataset.field2id_token[dataset.iid_field], dtype=object)[ids]
    item_tokens[ids == 0] = ""
    user_tokens = np.asarray(dataset.field2id_token[dataset.uid_field], dtype=object)[users].tolist()
    write_topk(output, user_tokens, item_tokens, k)
    report = RecommendReport(output, len(users), k, exclude, int((ids == 0).any(axis=1).sum()),
                             str(config["model"]), str(config["dataset"]))
    logger.info(str(report))
    return report


"""The one training and evaluation path: RecBole's ``run_recbole``, with what the benchmarks need to measure.

:func:`run_training` does what ``recbole.quick_start.run_recbole`` does, in the same order (config, seed,
logger, dataset, split, seed again, model, trainer, ``fit`` with selection on validation, one evaluation on
test from the best checkpoint), so a run gives the same numbers as ``run_recbole`` with the same arguments.
It also returns what ``run_recbole`` drops: the time of every training epoch, the model build time, the
checkpoint path, the config, the trainer and the three splits.

Its callers: ``recgoat run`` (:mod:`recgoat_cli.commands`), every benchmark and tuning run
(:mod:`recgoat_recbole.bench.worker`) and ``benchmarks/bench_speed.py``. :func:`run_distributed` is RecBole's
``run(..., nproc=N)`` with this path in every process (``recgoat run --nproc N``).

Importing it imports :mod:`recgoat_recbole`, which applies the patch table and registers the models, so the
names of RecGOAT, the peers and ``<Backbone>+Align`` work here like RecBole's own.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from recgoat_recbole.progress import format_seconds

__all__ = ["run_training", "run_distributed", "TrainingResult", "per_user_metrics", "PER_USER_METRICS",
           "COLD_SLICES", "cold_item_mask", "topk_rows", "slice_rows", "ranking_metric_names"]

#: ``on_epoch(epoch_index, seconds, loss)``: called after every training epoch
EpochCallback = Callable[[int, float, Any], None]
#: ``before_model(config, dataset)``: called after the split, before the model is built; may change ``config``
#: and return the keys it changed (recorded in :attr:`TrainingResult.adjusted`)
BeforeModel = Callable[[Any, Any], "dict[str, Any] | None"]


@dataclass
class TrainingResult:
    """What one training run produced. ``test_result`` is ``None`` with ``evaluate_test=False``;
    ``best_valid_result`` is ``None`` when no validation ran (``eval_step: 0``)."""

    #: the RecBole ``Config`` the run used (with any change ``before_model`` made)
    config: Any
    best_valid_score: float
    best_valid_result: dict | None
    test_result: dict | None
    #: whether a bigger ``valid_metric`` is better (``run_recbole``'s ``valid_score_bigger``)
    valid_score_bigger: bool
    #: wall time of every training epoch, in order (``len(epoch_times)`` is the number of epochs trained)
    epoch_times: list[float]
    #: the best model's checkpoint (``saved=True``), else ``None``
    checkpoint: str | None
    #: the config keys that ``before_model`` changed, with their new values
    adjusted: dict[str, Any]
    #: seconds to build the model (graphs, features, moving to the device)
    build_s: float
    #: seconds from loading the dataset to the end of the test evaluation
    total_s: float
    model: Any = field(default=None, repr=False)
    trainer: Any = field(default=None, repr=False)
    #: ``(train, valid, test)`` data loaders
    data: tuple = field(default=(), repr=False)
    #: every validation of ``fit``, in order: ``(epochs trained so far, valid_metric)``
    valid_curve: list[tuple[int, float]] = field(default_factory=list)
    #: the test metrics of every test user, in RecBole's definitions (:func:`per_user_metrics`):
    #: ``{"user_id": int array, "ndcg@10": float array, ...}``; ``None`` without a full-ranking test
    per_user: dict | None = field(default=None, repr=False)
    #: when the test split has cold items (no train interaction; full ranking, one process), what they got
    #: (:data:`COLD_SLICES`): ``{"items": cold items (candidates), "test_items": cold items among the test
    #: positives, "test_interactions": cold test interactions, "test": {slice: {"users": n, "recall@10": ..., ...}},
    #: "per_user": {slice: {"user_id": ..., "ndcg@10": ..., "recall@20": ...}}}``; else ``None``
    cold: dict | None = field(default=None, repr=False)

    @property
    def epochs(self) -> int:
        """Epochs trained (early stopping may end a run before its ``epochs`` budget)."""
        return len(self.epoch_times)

    @property
    def best_epoch(self) -> int | None:
        """Epochs trained at the best validation (the last of equal scores, as RecBole's early stopping keeps)."""
        if not self.valid_curve:
            return None
        sign = 1.0 if self.valid_score_bigger else -1.0
        best = max(range(len(self.valid_curve)), key=lambda i: (sign * self.valid_curve[i][1], i))
        return int(self.valid_curve[best][0])

    @property
    def mean_epoch_s(self) -> float:
        return statistics.mean(self.epoch_times) if self.epoch_times else 0.0

    def as_run_recbole(self) -> dict[str, Any]:
        """The dictionary ``run_recbole`` returns for the same run."""
        return {"best_valid_score": self.best_valid_score, "valid_score_bigger": self.valid_score_bigger,
                "best_valid_result": self.best_valid_result, "test_result": self.test_result}


def _time_epochs(trainer: Any, device: Any, on_epoch: EpochCallback | None) -> list[float]:
    """Wrap ``trainer._train_epoch`` (what ``Trainer.fit`` calls once per epoch) to record its wall time."""
    times: list[float] = []
    original = trainer._train_epoch
    cuda = getattr(device, "type", str(device)) == "cuda"

    def timed(train_data, epoch_idx, *args, **kwargs):
        t0 = time.perf_counter()
        loss = original(train_data, epoch_idx, *args, **kwargs)
        if cuda:  # kernels are asynchronous: the epoch ends when the device is done
            import torch

            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(epoch_idx, times[-1], loss)
        return loss

    trainer._train_epoch = timed
    return times


def _record_validation(trainer: Any, epoch_times: list[float],
                       then: Callable[[int, float], Any] | None = None) -> list[tuple[int, float]]:
    """Wrap ``trainer._valid_epoch`` to record ``(epochs trained so far, valid score)`` at every validation
    (and pass each to ``then``)."""
    curve: list[tuple[int, float]] = []
    original = trainer._valid_epoch

    def recorded(*args, **kwargs):
        score, result = original(*args, **kwargs)
        curve.append((len(epoch_times), float(score)))
        if then is not None:
            then(*curve[-1])
        return score, result

    trainer._valid_epoch = recorded
    return curve


#: the per-user test metrics a run keeps (what significance tests pair on): ``name@k`` of RecBole's metrics
PER_USER_METRICS = ("ndcg@10", "recall@20")


#: the parts of a test set with cold items (items without a train interaction) that a run reports apart:
#: ``cold``: full ranking over every item, only the user's cold positives relevant (users with ≥ 1);
#: ``among_cold``: ranking among the cold items only (every warm item's score -inf), cold positives relevant
#: (users with ≥ 1); ``warm``: full ranking over every item, only the user's warm positives relevant (users with
#: ≥ 1). In each, the other positives stay in the ranking as items that are not relevant: the numbers are the
#: plain full-ranking metrics of the test set cut down to its cold (warm) interactions.
COLD_SLICES = ("cold", "among_cold", "warm")


def cold_item_mask(train_items: Any, n_items: int) -> Any:
    """The cold items: a bool tensor over RecBole's ``n_items`` ids, true for every item with no interaction in
    ``train_items`` (the train split's item ids); the padding id 0 is never cold."""
    import torch

    degree = torch.bincount(torch.as_tensor(train_items).long().flatten(), minlength=n_items)
    cold = degree == 0
    cold[0] = False
    return cold


def topk_rows(scores: Any, positives: Any, k: int) -> Any:
    """RecBole 1.2.1's ``rec.topk`` rows (``Collector.eval_batch_collect``): for each row of ``scores`` (history
    already -inf), whether each of its top ``k`` items is in ``positives`` (a bool or 0/1 matrix of the same
    shape), then the row's number of positives."""
    import torch

    _, topk_idx = torch.topk(scores, k, dim=-1)
    pos_matrix = positives.to(torch.int)
    pos_len = pos_matrix.sum(dim=1, keepdim=True)
    return torch.cat((torch.gather(pos_matrix, dim=1, index=topk_idx), pos_len), dim=1)


def slice_rows(scores: Any, positive_u: Any, positive_i: Any, cold: Any, k: int) -> dict[str, tuple[Any, Any]]:
    """The ``rec.topk`` rows of every slice of :data:`COLD_SLICES` for one evaluation batch: ``{slice: (rows kept,
    a bool over the batch's users; their rows)}``, keeping the users with at least one positive of the slice.
    ``scores``, ``positive_u`` and ``positive_i`` are what RecBole's full-sort evaluation gives its collector;
    ``cold`` is :func:`cold_item_mask` (on the scores' device)."""
    import torch

    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[positive_u, positive_i] = True
    cold_pos, warm_pos = positives & cold, positives & ~cold
    among = scores.masked_fill(~cold, float("-inf"))
    out = {}
    for name, pos, ranked in (("cold", cold_pos, scores), ("among_cold", cold_pos, among), ("warm", warm_pos, scores)):
        rows = topk_rows(ranked, pos, k)
        keep = rows[:, -1] > 0
        out[name] = (keep, rows[keep])
    return out


def _capture_test_ranking(trainer: Any, uid_field: str, cold: Any = None) -> dict:
    """Make the next ``trainer.evaluate`` keep its users, in order, and the collected ``rec.topk`` (each
    user's hits in the top max(topk) and number of positives): what RecBole averages into its metrics. With
    ``cold`` (:func:`cold_item_mask`), also every batch's :func:`slice_rows`, in ``box["slices"]``."""
    box: dict[str, Any] = {"users": [], "topk": None, "slices": {name: [] for name in COLD_SLICES}}
    collector, evaluator = trainer.eval_collector, trainer.evaluator
    collect, evaluate = collector.eval_batch_collect, evaluator.evaluate
    k = max(collector.topk) if cold is not None else 0

    def collect_users(scores, interaction, positive_u, positive_i):
        users = interaction[uid_field].detach().cpu()
        box["users"].append(users)
        if cold is not None:
            if box.get("cold_on") is None or box["cold_on"].device != scores.device:
                box["cold_on"] = cold.to(scores.device)
            for name, (keep, rows) in slice_rows(scores, positive_u, positive_i, box["cold_on"], k).items():
                box["slices"][name].append((users[keep.cpu()], rows.cpu()))
        return collect(scores, interaction, positive_u, positive_i)

    def evaluate_kept(struct):
        if "rec.topk" in struct:
            box["topk"] = struct.get("rec.topk")
        return evaluate(struct)

    collector.eval_batch_collect = collect_users
    evaluator.evaluate = evaluate_kept
    box["restore"] = lambda: (setattr(collector, "eval_batch_collect", collect),
                              setattr(evaluator, "evaluate", evaluate))
    return box


def per_user_metrics(config: Any, users: Any, topk: Any, names: Sequence[str] = PER_USER_METRICS) -> dict | None:
    """Each test user's ``names`` (``metric@k``), computed by RecBole's own metric classes from ``rec.topk``
    (so their mean is the reported metric). ``None`` when there is nothing to compute (no ``rec.topk``)."""
    import numpy as np
    import torch
    from recbole.evaluator import metrics as recbole_metrics

    if topk is None or not users:
        return None
    max_k = max(config["topk"])
    pos_index, pos_len = torch.split(topk, [max_k, 1], dim=1)
    pos_index, pos_len = pos_index.to(torch.bool).numpy(), pos_len.squeeze(-1).numpy()
    out: dict[str, Any] = {"user_id": torch.cat(users).numpy().astype(np.int64)}
    if len(out["user_id"]) != len(pos_len):
        return None
    classes = {name.lower(): cls for name, cls in vars(recbole_metrics).items() if isinstance(cls, type)}
    for name in names:
        metric, _, k = name.partition("@")
        if metric not in classes or not k.isdigit() or not 1 <= int(k) <= max_k:
            continue
        values = classes[metric](config).metric_info(pos_index, pos_len)
        out[name] = np.asarray(values[:, int(k) - 1], dtype=np.float64)
    return out


def ranking_metric_names(config: Any) -> list[str]:
    """``metric@k`` for each of the config's metrics that RecBole computes per user from ``rec.topk`` (Recall,
    NDCG, Hit, MRR, Precision, MAP) and each ``topk``, in the order of RecBole's result."""
    from recbole.evaluator import metrics as recbole_metrics

    classes = {name.lower(): cls for name, cls in vars(recbole_metrics).items() if isinstance(cls, type)}
    names = []
    for metric in config["metrics"]:
        cls = classes.get(str(metric).lower())
        if cls is not None and list(getattr(cls, "metric_need", [])) == ["rec.topk"]:
            names += [f"{str(metric).lower()}@{k}" for k in config["topk"]]
    return names


def _cold_test(train: Any, test: Any, config: Any) -> tuple[Any, dict] | None:
    """``(cold_item_mask, counts)`` when the test split is ranked over every item and has cold positives."""
    from recbole.data.dataloader import FullSortEvalDataLoader

    if not isinstance(test, FullSortEvalDataLoader):
        return None
    iid = config["ITEM_ID_FIELD"]
    cold = cold_item_mask(train._dataset.inter_feat[iid], train._dataset.item_num)
    test_items = test._dataset.inter_feat[iid].long()
    hit = cold[test_items]
    if not bool(hit.any()):
        return None
    return cold, {"items": int(cold.sum()), "test_items": int(test_items[hit].unique().numel()),
                  "test_interactions": int(hit.sum())}


def _cold_results(config: Any, slices: dict, counts: dict) -> dict:
    """:attr:`TrainingResult.cold` from the captured slices: each slice's per-user metrics (RecBole's classes,
    :func:`per_user_metrics`) and their means, rounded as RecBole rounds its results."""
    import numpy as np
    import torch

    names = ranking_metric_names(config)
    places = int(config["metric_decimal_place"] or 4)
    out: dict[str, Any] = {**counts, "test": {}, "per_user": {}}
    for name in COLD_SLICES:
        parts = slices[name]
        users = [u for u, _ in parts]
        rows = torch.cat([r for _, r in parts]) if parts else None
        n = int(rows.shape[0]) if rows is not None else 0
        values = per_user_metrics(config, users, rows, names) if n else None
        out["test"][name] = {"users": n, **{m: round(float(np.mean(v)), places)
                                            for m, v in (values or {}).items() if m != "user_id"}}
        if values is not None:
            out["per_user"][name] = {m: v for m, v in values.items() if m == "user_id" or m in PER_USER_METRICS}
    return out


def _console_level(logger: logging.Logger, level: int) -> None:
    """Raise the level of ``logger``'s console handlers (not its log files) to ``level``."""
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, level))


def _warn_one_user_per_batch(config: Any, dataset: Any, logger: logging.Logger) -> None:
    """One warning line when ``eval_batch_size`` makes full-ranking evaluation score one user per batch
    (RecBole fits ``eval_batch_size // n_items`` users in a batch, at least one)."""
    mode = (config["eval_args"] or {}).get("mode")
    full = mode == "full" or (isinstance(mode, dict) and "full" in mode.values())
    size, items = int(config["eval_batch_size"]), int(dataset.item_num)
    if full and size < 2 * items:
        suggest = min(max(4096, 64 * items), 2**22)
        logger.warning(f"eval_batch_size {size} < 2 x {items:,} items: full-ranking evaluation scores one user per "
                       f"batch (slow); set eval_batch_size: {suggest} (64 users per batch)")


def _loss_text(loss: Any) -> str:
    """``loss 5.8746`` or, for a loss of several terms (RecBole's ``train_loss1``, ...), their sum and the terms:
    ``loss 5.8746 (4.5717 + 1.2854 + 0.0065)``."""
    if isinstance(loss, (tuple, list)):
        terms = [float(t) for t in loss]
        return f"loss {sum(terms):.4f} (" + " + ".join(f"{t:.4g}" for t in terms) + ")"
    try:
        return f"loss {float(loss):.4f}"
    except (TypeError, ValueError):
        return ""


class _ProgressLines:
    """The console's epoch lines: ``epoch k/N  loss x  valid NDCG@10 y (best z at k')  s/epoch  ETA``, one per
    training epoch, written once the epoch's validation (if one follows it) is done, and the end of
    :meth:`finish`: whether early stopping ended the run, its best epoch and score."""

    def __init__(self, emit: Callable[[str], Any], config: Any, epochs: int, then: EpochCallback | None,
                 eval_step: int | None = None) -> None:
        self.emit, self.then = emit, then
        self.epochs, self.metric = epochs, str(config["valid_metric"])
        # the trainer's (RecBole caps config["eval_step"] at the epochs)
        self.eval_step = int(config["eval_step"] or 0) if eval_step is None else int(eval_step)
        self.bigger = bool(config["valid_metric_bigger"])
        self.start = time.perf_counter()
        self.pending: str | None = None
        self.best: tuple[float, int] | None = None

    def on_epoch(self, epoch: int, seconds: float, loss: Any) -> None:
        self._flush("")  # an epoch whose validation never came (none this run: no validation data)
        done = epoch + 1
        per = (time.perf_counter() - self.start) / done
        self.pending = "  ".join(part for part in (f"epoch {done}/{self.epochs}", _loss_text(loss)) if part)
        self.timing = f"{per:.1f} s/epoch  ETA ≤ {format_seconds(per * (self.epochs - done))}"
        if not (self.eval_step and done % self.eval_step == 0):  # no validation follows this epoch
            self._flush("")
        if self.then is not None:
            self.then(epoch, seconds, loss)

    def on_valid(self, epochs_done: int, score: float) -> None:
        if self.best is None or (score > self.best[0] if self.bigger else score < self.best[0]) or \
                score == self.best[0]:  # (RecBole keeps the last of equal scores)
            self.best = (score, epochs_done)
        best = f" (best {self.best[0]:.4f} at {self.best[1]})" if self.best[1] != epochs_done else " (best)"
        self._flush(f"valid {self.metric} {score:.4f}{best}")

    def _flush(self, valid: str) -> None:
        if self.pending is not None:
            self.emit("  ".join(part for part in (self.pending, valid, self.timing) if part))
            self.pending = None

    def finish(self, epochs_done: int, stopping_step: int) -> None:
        self._flush("")
        best = f"; best epoch {self.best[1]}, valid {self.metric} {self.best[0]:.4f}" if self.best else ""
        if epochs_done < self.epochs:
            self.emit(f"stopped early at epoch {epochs_done} of {self.epochs} (valid {self.metric} did not improve "
                      f"for stopping_step {stopping_step} validations){best}")
        else:
            self.emit(f"trained all {self.epochs} epochs{best}")


def _read_dataset(create_dataset: Callable[[Any], Any], config: Any) -> Any:
    """``create_dataset(config)``, with an atomic file that the CSV reader rejects (a field over its size limit,
    a broken quote) as one :class:`ConfigError` naming the dataset folder instead of a traceback."""
    import csv

    from pandas.errors import ParserError

    from recgoat_recbole.config_check import ConfigError

    try:
        return create_dataset(config)
    except (csv.Error, ParserError) as exc:
        raise ConfigError(f"cannot read the atomic files in {config['data_path']}: {exc} (tab-separated "
                          "RecBole atomic files expected; a token or text field must stay below 131,072 "
                          "characters)") from None


def run_training(model: Any = None, dataset: str | None = None, config_file_list: Sequence[str] | None = None,
                 config_dict: dict[str, Any] | None = None, *, saved: bool = True, evaluate_test: bool = True,
                 show_progress: bool | None = None, log_details: bool = True,
                 on_epoch: EpochCallback | None = None,
                 before_model: BeforeModel | None = None,
                 progress: Callable[[str], Any] | None = None, quiet: bool = False) -> TrainingResult:
    """Train ``model`` with early stopping on validation, then evaluate the best model on test once.

    ``model``, ``dataset``, ``config_file_list``, ``config_dict`` and ``saved`` mean what they mean for
    ``run_recbole``; with the defaults the run, its log and its metrics are ``run_recbole``'s.

    - ``evaluate_test=False`` skips the test evaluation (``test_result`` is ``None``).
    - ``show_progress``: progress bars for fit and evaluation (default: the config's ``show_progress``).
    - ``log_details=False`` leaves out what ``run_recbole`` logs besides training: ``sys.argv``, the config,
      the dataset, the model, its FLOPs (one extra forward pass) and the environment table.
    - ``on_epoch(epoch_index, seconds, loss)`` is called after every training epoch.
    - ``before_model(config, dataset)`` runs after the split and before the model is built: it may change the
      config (the keys it returns are recorded in ``adjusted``).
    - ``progress(line)`` gets one line per epoch: ``epoch k/N``, the training loss, the validation score (and
      the best so far), seconds per epoch and the time left at most; and a last line saying whether early
      stopping ended the run, with its best epoch and score (``recgoat run`` prints them).
    - ``quiet=True`` keeps RecBole's INFO lines out of the console (its log file still gets them).
    """
    from logging import getLogger

    from recbole.config import Config
    from recbole.data import data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    from recgoat_recbole.config_check import ConfigError, check_value_lists, validate_run
    from recgoat_recbole.keys import unknown_keys
    # RecBole's create_dataset with the signed, keyed cache (what run_recbole runs too: the safe_dataset_cache
    # patch); data_preparation's dataloader cache is patched in its own module
    from recgoat_recbole.dataset_cache import create_dataset

    try:
        config = Config(model=model, dataset=dataset, config_file_list=list(config_file_list) if config_file_list
                        else None, config_dict=config_dict)
    except ConfigError:
        raise
    except (ValueError, KeyError) as exc:  # RecBole's own checks (topk, no dataset, ...): one line, not a trace
        raise ConfigError(f"config: {exc.args[0] if exc.args else exc}") from None
    validate_run(config)  # one ConfigError naming the key, before anything is read or written
    check_value_lists(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    if quiet:
        _console_level(logger, logging.WARNING)
    for key, close in unknown_keys(config):  # a typo would run the default silently
        logger.warning(f"config key {key!r} is unknown: no run reads it, so it changes nothing"
                       + (f"; did you mean {close!r}?" if close else ""))
    if log_details:
        logger.info(sys.argv)
        logger.info(config)

    start = time.perf_counter()
    data = _read_dataset(create_dataset, config)
    if log_details:
        logger.info(data)
    train, valid, test = data_preparation(config, data)
    _warn_one_user_per_batch(config, data, logger)
    adjusted = dict((before_model(config, data) if before_model is not None else None) or {})

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    t0 = time.perf_counter()
    net = get_model(config["model"])(config, train._dataset).to(config["device"])
    build_s = time.perf_counter() - t0
    if log_details:
        from recbole.data.transform import construct_transform
        from recbole.utils import get_flops, set_color

        logger.info(net)
        flops = get_flops(net, data, config["device"], logger, construct_transform(config))
        logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    # (a closed-form model's trainer runs one epoch whatever config["epochs"] says)
    epochs = int(getattr(trainer, "epochs", config["epochs"]))
    lines = _ProgressLines(progress, config, epochs, on_epoch, getattr(trainer, "eval_step", None)) \
        if progress is not None else None
    epoch_times = _time_epochs(trainer, config["device"], lines.on_epoch if lines else on_epoch)
    valid_curve = _record_validation(trainer, epoch_times, lines.on_valid if lines else None)
    bars = config["show_progress"] if show_progress is None else show_progress
    best_valid_score, best_valid_result = trainer.fit(train, valid, saved=saved, show_progress=bars)
    if lines is not None:
        lines.finish(len(epoch_times), int(config["stopping_step"]))
    test_result, per_user, cold = None, None, None
    if evaluate_test:
        # (under DDP each process holds a shard of the users: no per-user values there)
        found = _cold_test(train, test, config) if config["single_spec"] else None
        ranking = _capture_test_ranking(trainer, config["USER_ID_FIELD"], found[0] if found else None)
        try:
            test_result = trainer.evaluate(test, load_best_model=saved, show_progress=bars)
        finally:
            ranking["restore"]()
        if config["single_spec"]:
            per_user = per_user_metrics(config, ranking["users"], ranking["topk"])
        if found is not None:
            cold = _cold_results(config, ranking["slices"], found[1])
    total_s = time.perf_counter() - start

    if log_details:
        from recbole.utils import get_environment, set_color

        logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
        logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
        logger.info(set_color("test result", "yellow") + f": {test_result}")
    if not config["single_spec"]:
        import torch.distributed as dist

        dist.destroy_process_group()

    checkpoint = trainer.saved_model_file if saved and os.path.isfile(trainer.saved_model_file) else None
    return TrainingResult(config=config, best_valid_score=best_valid_score, best_valid_result=best_valid_result,
                          test_result=test_result, valid_score_bigger=config["valid_metric_bigger"],
                          epoch_times=epoch_times, checkpoint=checkpoint, adjusted=adjusted, build_s=build_s,
                          total_s=total_s, model=net, trainer=trainer, data=(train, valid, test),
                          valid_curve=valid_curve, per_user=per_user, cold=cold)


def run_distributed(model: str, dataset: str | None = None, config_file_list: Sequence[str] | None = None,
                    config_dict: dict[str, Any] | None = None, *, nproc: int = 1, world_size: int = -1,
                    ip: str = "localhost", port: str = "5678", group_offset: int = 0, saved: bool = True,
                    show_progress: bool | None = None, progress: Callable[[str], Any] | None = None,
                    quiet: bool = False) -> dict[str, Any] | None:
    """RecBole 1.2.1's ``recbole.quick_start.run`` with ``nproc`` / ``world_size`` / ``ip`` / ``port`` /
    ``group_offset``, step for step, with :func:`run_training` in each process instead of ``run_recbole``:
    ``world_size`` -1 is ``nproc``; the config gets ``world_size``, ``ip``, ``port``, ``nproc`` and ``offset``;
    ``nproc`` processes are spawned, rank r with ``local_rank`` r (RecBole's ``run_recboles``); the
    ``ddp_cpu`` patch runs them over gloo on the CPU when there is no CUDA.

    ``model`` is a name (``"RecGOAT"``, ``"SGL+Align"``, ``"LightGCN"``): each process looks it up again.
    Returns what local rank 0 trained: ``run_recbole``'s dict plus ``checkpoint`` and ``log`` (its log file),
    or None when that rank returned nothing. An exception raised in a process is raised here (a
    ``ConfigError`` in the config stays one), from torch's ``ProcessRaisedException`` (which holds the
    process's traceback); the other processes are stopped."""
    import torch.multiprocessing as mp

    if world_size == -1:
        world_size = nproc
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved, "show_progress": show_progress,
              "progress": progress, "quiet": quiet}
    try:
        mp.spawn(_run_rank, args=(model, dataset, list(config_file_list or []) or None, kwargs), nprocs=nproc,
                 join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        errors = [item["error"] for item in _drain(queue) if "error" in item]
        if errors:
            raise errors[0] from exc
        raise
    results = [item for item in _drain(queue) if "error" not in item]
    return results[0] if results else None


def _drain(queue: Any) -> list[dict]:
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items


def _run_rank(rank: int, model: str, dataset: str | None, config_file_list: list[str] | None,
              kwargs: dict[str, Any]) -> None:
    """One process of :func:`run_distributed` (RecBole's ``run_recboles``): ``local_rank`` = ``rank``, then
    :func:`run_training`; local rank 0 puts its result on the queue, a failing process its exception."""
    kwargs = dict(kwargs)
    queue = kwargs.pop("queue")
    kwargs["config_dict"] = dict(kwargs["config_dict"], local_rank=rank)
    if rank != 0:
        kwargs["progress"] = None  # one "epoch k/N" line per epoch, not one per process
    try:
        result = run_training(model, dataset, config_file_list, **kwargs)
    except Exception as exc:
        try:
            queue.put({"error": exc})
        except Exception:  # an exception that cannot be pickled: its text
            queue.put({"error": RuntimeError(f"{type(exc).__name__}: {exc}")})
        raise
    if rank == 0:
        log = next((h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)),
                   None)
        queue.put({**result.as_run_recbole(), "checkpoint": result.checkpoint, "log": log})

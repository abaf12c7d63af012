"""Facts about a finished run that need the data or the model, gathered once at the end of `fit`
and stored in the run folder (facts.json), so the doctor and the report need nothing else.

- the data summary: rows per split, class counts, feature scales of the inputs the model saw, and
  what was done to the data (columns dropped, encoded, imputed; target scaling: data/preparation.py);
- leakage: validation/test rows whose features also occur, exactly, in the training split (and
  those that also carry the same target: only these inflate a score), and how much they lift the
  split's accuracy (accuracy on them against the rest);
- suspected mislabeled rows: the training rows the final model gets most confidently wrong, and an
  estimate of the label-noise rate (rows that the model and a nearest-neighbour vote both
  confidently assign to another class);
- a baseline of what the data allows: a linear model and a k-nearest-neighbour model fitted on
  the same training rows (standardized), scored on the validation rows that are not copies of
  training rows, in milliseconds; and the linear model against the network on those rows, paired;
- calibration: the expected calibration error (ECE) of the validation split;
- the target's scale as the loss sees it (regression);
- the confusion matrix of the test split (validation when there is no test split).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from ..callbacks.nonfinite import all_finite
from ..data.checks import row_keys
from ..metrics import predictions, probabilities, r2
from . import baselines as bl

MOMENT_ROWS = 256           # rows of the training split read at a time for the feature scales


def class_counts(y: torch.Tensor, n_classes: int) -> list[int]:
    return torch.bincount(y.long().cpu(), minlength=n_classes).tolist()


def row_block_moments(x: torch.Tensor, size: int = MOMENT_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and (population) standard deviation of the rows of `x` (on the CPU, float64), two
    passes over blocks of `size` rows: no temporary larger than one block in float64."""
    flat = x.reshape(len(x), -1)
    total = torch.zeros(flat.shape[1], dtype=torch.float64)
    for i in range(0, len(flat), size):
        total += flat[i:i + size].cpu().double().sum(0)
    mean = total / max(len(flat), 1)
    squares = torch.zeros_like(total)
    for i in range(0, len(flat), size):
        squares += flat[i:i + size].cpu().double().sub_(mean).square_().sum(0)
    return mean, (squares / max(len(flat), 1)).sqrt_()


def feature_scales(x: torch.Tensor, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Spread of per-feature standard deviations and means of the (normalized) training inputs."""
    mean, std = row_block_moments(x)
    varying = std > 1e-8
    out: dict[str, Any] = {"features": int(std.shape[0]), "constant": int((~varying).sum())}
    if varying.any():
        idx = torch.nonzero(varying).squeeze(1)
        s = std[idx]
        lo, hi = idx[s.argmin()].item(), idx[s.argmax()].item()

        def label(i: int) -> str:
            return names[i] if i < len(names) else f"feature {i}"

        out.update({"std_min": float(s.min()), "std_max": float(s.max()), "std_min_feature": label(lo),
                    "std_max_feature": label(hi), "abs_mean_max": float(mean[idx].abs().max()),
                    "std_median": float(s.median())})
    return out


def keys_with_targets(keys: list[bytes], y: np.ndarray | None) -> list[bytes]:
    """Row keys (data/checks.row_keys), each followed by its row's target when targets are given."""
    if y is None or len(keys) == 0:
        return keys
    ys = np.ascontiguousarray(np.asarray(y).reshape(len(y), -1))
    return [k + b"|" + t.tobytes() for k, t in zip(keys, ys)]


def leaked_keys(train: list[bytes], other: list[bytes]) -> np.ndarray:
    """Which of the `other` row keys occur among the `train` ones."""
    seen = set(train)
    return np.array([k in seen for k in other], dtype=bool)


def leak_lift(correct: np.ndarray, leaked: np.ndarray) -> dict[str, Any]:
    """How much the leaked rows lift a split's accuracy: the split's accuracy minus the accuracy it
    would have if the leaked rows scored like the others (share x (accuracy on them - on the rest))."""
    if not leaked.any() or leaked.all():
        return {}
    on, off = float(correct[leaked].mean()), float(correct[~leaked].mean())
    return {"accuracy_leaked": on, "accuracy_rest": off, "lift": float(leaked.mean() * (on - off))}


BASELINE_ROWS = 2000        # rows of the training split the baselines are fitted on (at most)
ECE_BINS = 15


def _float64_blocks(x: torch.Tensor, keep: torch.Tensor | None, size: int = bl.QUERY_BLOCK):
    """The rows of `x` (those `keep` marks) as float64 CPU tensors of at most `size` rows: no float64 copy
    of the whole split at once. Each block is written over the last (one buffer): use it before the next."""
    flat = x.reshape(len(x), -1)
    buffer = torch.empty(min(size, len(flat)), flat.shape[1], dtype=torch.float64)
    for i in range(0, len(flat), size):
        block = flat[i:i + size] if keep is None else flat[i:i + size][keep[i:i + size].to(flat.device)]
        yield buffer[:len(block)].copy_(block)


class TrainingSample:
    """At most BASELINE_ROWS rows of the training split (drawn without replacement, in split order),
    standardized in float64: what the baselines and the label-noise estimate are fitted on, copied once
    for both. `x` is None when one of its values is not finite."""

    def __init__(self, x: torch.Tensor, seed: int = 0):
        flat = x.reshape(len(x), -1)
        self.rows = torch.arange(len(x))
        if len(x) > BASELINE_ROWS:
            self.rows = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(x), BASELINE_ROWS,
                                                                                   replace=False)))
        # a float64 copy of the sample's rows only, filled a block of rows at a time
        xs = torch.empty(len(self.rows), flat.shape[1], dtype=torch.float64)
        for i in range(0, len(xs), bl.QUERY_BLOCK):
            xs[i:i + bl.QUERY_BLOCK].copy_(flat[self.rows[i:i + bl.QUERY_BLOCK].to(flat.device)])
        self.x, self.scale = None, None
        if all_finite([xs]):        # (isfinite would hold a float64 |x| as large as the sample)
            self.scale = bl.Standardizer(xs)
            self.x = self.scale(xs)


def baselines(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
              task: str, seed: int = 0, keep: torch.Tensor | None = None,
              net: np.ndarray | None = None, sample: TrainingSample | None = None) -> dict[str, Any]:
    """What the data allows: a linear model (ridge, or logistic regression) and a k-NN, fitted on (a sample
    of) the training rows, standardized, scored on the validation rows (those `keep` marks; accuracy,
    or R2 for regression). With `net`, the network's predictions on those same rows (labels, or outputs
    in the target's units), `versus_net` compares it with the linear model row by row (linear_versus_net).
    The models are watch/baselines.py's; only the sample (`sample`, when the caller drew it already) is
    held in float64, the validation rows are read a block at a time."""
    sample = sample or TrainingSample(train_x, seed)
    xt, yt, scale = sample.x, train_y[sample.rows.to(train_y.device)].cpu(), sample.scale
    yv = (val_y if keep is None else val_y[keep.to(val_y.device)]).cpu()
    if xt is None or not all(torch.isfinite(b).all() for b in _float64_blocks(val_x, keep)):
        return {}
    k = int(min(15, max(1, round(len(xt) ** 0.5 / 2))))

    def val_blocks():
        return (scale(b) for b in _float64_blocks(val_x, keep))

    if task == "regression":
        if yt.dim() > 1 and yt.shape[1] == 1:
            yt, yv = yt[:, 0], yv[:, 0]
        yt = yt.double()
        weights = bl.ridge(xt, yt)
        linear = torch.cat([bl.linear_predict(weights, b) for b in val_blocks()]).reshape(yv.shape)
        knn = torch.cat([bl.knn_regress(d, i, yt) for d, i in bl.nearest(val_blocks(), xt, k)]).reshape(yv.shape)
        metric, scores = "r2", {"linear": r2(linear, yv), "knn": r2(knn, yv)}
    else:
        classes, codes = torch.unique(yt.long(), return_inverse=True)
        if len(classes) < 2:
            return {}
        weights = bl.logistic(xt, codes, len(classes))
        linear = classes[torch.cat([bl.class_of(bl.linear_predict(weights, b)) for b in val_blocks()])]
        knn = classes[torch.cat([bl.knn_classify(i, codes, len(classes)) for _, i in bl.nearest(val_blocks(), xt, k)])]
        yv = yv.long()
        metric = "accuracy"
        scores = {"linear": float((linear == yv).double().mean()), "knn": float((knn == yv).double().mean())}
    out = {"metric": metric, "val": max(scores.values()), "models": scores, "k": k, "rows": int(len(xt))}
    if net is not None:
        out["versus_net"] = linear_versus_net(yv.numpy(), linear.numpy(), np.asarray(net), metric)
    return out


def linear_versus_net(y: np.ndarray, linear: np.ndarray, net: np.ndarray, metric: str) -> dict[str, Any]:
    """The linear baseline against the network on the same validation rows, paired row by row: each
    one's score, the gap (linear - network) and its standard error. R2: the per-row difference of
    squared errors over the rows' total sum of squares (their sum is the R2 gap exactly); accuracy:
    the per-row difference of hits. {} for several regression outputs or fewer than 2 rows."""
    y, linear, net = (np.asarray(a, dtype=np.float64) for a in (y, linear, net))
    if metric == "r2":
        y, linear, net = (a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a for a in (y, linear, net))
        if y.ndim != 1 or net.shape != y.shape or len(y) < 2:
            return {}
        tss = float(((y - y.mean()) ** 2).sum())
        if tss <= 0:
            return {}
        d = ((y - net) ** 2 - (y - linear) ** 2) / tss
        scores = (1 - float(((y - linear) ** 2).sum()) / tss, 1 - float(((y - net) ** 2).sum()) / tss)
        gap, se = float(d.sum()), float(d.std(ddof=1) * np.sqrt(len(d)))
    else:
        if len(y) < 2 or net.shape != y.shape:
            return {}
        d = (linear == y).astype(np.float64) - (net == y)
        scores = (float((linear == y).mean()), float((net == y).mean()))
        gap, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    return {"linear": scores[0], "net": scores[1], "gap": gap, "se": se, "rows": int(len(y))}


def label_noise(model_probs: torch.Tensor, x: torch.Tensor, y: torch.Tensor, confidence: float = 0.6,
                seed: int = 0, sample: TrainingSample | None = None) -> dict[str, Any]:
    """Estimated share of wrong labels among the training rows: rows that the final model predicts as
    another class with probability >= `confidence`, and that the majority of their nearest
    training neighbours (the row itself left out) also assign to another class. A model that merely
    underfits is wrong on many rows its neighbours get right, so it does not inflate the estimate."""
    ys = y.long().cpu()
    if len(x) < 20:
        return {}
    sample = sample or TrainingSample(x, seed)      # a sample is enough for a rate, and keeps this to milliseconds
    rows = sample.rows
    if sample.x is None or not torch.isfinite(model_probs).all():
        return {}
    k = 10
    nn_idx = bl.nearest_others(sample.x, k)
    votes = ys[rows][nn_idx]
    neighbours_agree = (votes == ys[rows][:, None]).double().mean(1)
    conf, pred = model_probs[rows].max(1)
    suspect = (pred != ys[rows]) & (conf >= confidence) & (neighbours_agree < 0.5)
    return {"checked": int(len(rows)), "suspects": int(suspect.sum()), "rate": float(suspect.double().mean()),
            "confidence": confidence, "neighbours": k}


def calibration(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence|
    weighted by the bin's share of rows; also the mean confidence and accuracy."""
    if len(y) == 0 or not torch.isfinite(probs).all():
        return {}
    conf, pred = probs.max(1)
    correct = (pred == y.long().cpu()).double()
    conf = conf.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs())
    return {"ece": ece, "confidence": float(conf.mean()), "accuracy": float(correct.mean()), "rows": int(len(y)),
            "bins": bins}


def target_scale(y: torch.Tensor) -> dict[str, Any]:
    t = y.double().reshape(len(y), -1).cpu()
    if len(t) < 2 or not torch.isfinite(t).all():
        return {}
    return {"std": float(t.std(0, unbiased=False).max()), "abs_mean": float(t.mean(0).abs().max())}


def class_probabilities(out: torch.Tensor, loss_kind: str) -> torch.Tensor:
    """Class probabilities for the facts; a hinge head's scores go through softmax (the metrics
    report none for it, the facts still need a ranking of the classes)."""
    probs = probabilities(out, "classification", loss_kind)
    return torch.softmax(out, 1) if probs is None else probs


def confident_mistakes(probs: torch.Tensor, y: torch.Tensor, top: int) -> list[tuple[int, int, float]]:
    """(position, predicted class, its probability) of the `top` most confident wrong predictions."""
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).squeeze(1)
    order = wrong[conf[wrong].argsort(descending=True)][:top]
    return [(int(i), int(pred[i]), float(conf[i])) for i in order]


@torch.inference_mode()
def _outputs(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    was = model.training
    model.eval()
    out = None
    for i in range(0, len(x), batch):
        part = model(x[i:i + batch])
        if out is None:         # one result tensor, filled batch after batch (no list of parts to join)
            out = torch.empty((len(x), *part.shape[1:]), dtype=torch.float32)
        out[i:i + len(part)] = part
        del part
    model.train(was)
    return out if out is not None else torch.empty(0)


def _without_codes(x: torch.Tensor, ds) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The inputs and their names but the entity-embedding code columns (data.categorical = auto): the
    network looks those up, their scale means nothing."""
    codes = {ds.feature_names.index(c) for c in ds.preparation.get("embedded", {})}
    if not codes:
        return x, ds.feature_names
    keep = [j for j in range(x.shape[1]) if j not in codes]
    return x[:, keep], tuple(ds.feature_names[j] for j in keep)


def _split_row_keys(prepared) -> dict[int, bytes]:
    """Row keys by source row index, of the split tensors' rows (the dataset holds none once prepared):
    imputed and normalized alike, exact copies of a row stay exact copies."""
    keys: dict[int, bytes] = {}
    for name in ("train", "val", "test"):
        part, idx = getattr(prepared, name), prepared.indices.get(name, ())
        if part is not None and len(idx):
            keys.update(zip(np.asarray(idx).tolist(), row_keys(part.x.cpu().numpy())))
    return keys


def gather_facts(model: torch.nn.Module, prepared, task: str, top: int, eval_batch: int,
                 loss_kind: str) -> dict[str, Any]:
    """The facts of a finished run (see the module's docstring). Before and after them the C heap's free
    pages (training's and the facts' freed temporaries) are handed back to the system, so the run holds
    less while the report is drawn beside it."""
    release_free_heap()         # (what training and the last evaluations freed)
    try:
        return _gather(model, prepared, task, top, eval_batch, loss_kind)
    finally:
        release_free_heap()


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; nothing elsewhere). Freed tensors
    of a few MiB stay in the heap, between live small blocks, as resident pages no one uses."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _trim:
        _trim(0)


_trim: Any = None


def _gather(model: torch.nn.Module, prepared, task: str, top: int, eval_batch: int,
            loss_kind: str) -> dict[str, Any]:
    ds, ix = prepared.dataset, prepared.indices
    splits = {"train": prepared.train, "val": prepared.val, "test": prepared.test}
    every_key = prepared.row_keys or _split_row_keys(prepared)     # (a Prepared made by hand may not carry them)

    def keys(split: str, targets: bool = False) -> list[bytes]:
        return keys_with_targets([every_key[i] for i in ix[split]], ds.y[ix[split]] if targets else None)

    facts: dict[str, Any] = {
        "data": {"name": ds.name, "task": task, "shape": list(ds.x.shape[1:]), "classes": list(ds.classes),
                 "rows": {k: 0 if v is None else len(v) for k, v in splits.items()},
                 "preparation": ds.preparation},
        "scales": feature_scales(*_without_codes(prepared.train.x, ds)),
        "leakage": {k: int(leaked_keys(keys("train"), keys(k)).sum()) for k in ("val", "test")},
        "leakage_same_target": {k: int(leaked_keys(keys("train", True), keys(k, True)).sum())
                                for k in ("val", "test")},
    }
    val, sample = prepared.val, None
    if val is not None and len(val) >= 10 and (task == "regression" or val.y.dim() == 1):
        # scored on the validation rows that are not copies of training rows: a baseline fitted on a
        # row's copy measures memory, not what the data allows
        fresh = torch.from_numpy(~leaked_keys(keys("train", True), keys("val", True)))
        if int(fresh.sum()) < 10:
            fresh[:] = True
        out = _outputs(model, val.x, eval_batch)[fresh]
        net = (out if task == "regression" else predictions(out, task)).numpy()
        sample = TrainingSample(prepared.train.x)
        facts["baseline"] = baselines(prepared.train.x, prepared.train.y, val.x, val.y, task, keep=fresh, net=net,
                                      sample=sample)
        if facts["baseline"]:
            facts["baseline"]["val_rows_left_out"] = int((~fresh).sum())
    if task == "regression":
        facts["data"]["target"] = target_scale(prepared.train.y)
        return facts
    n = ds.n_classes
    facts["data"]["class_counts"] = {k: class_counts(v.y, n) for k, v in splits.items() if v is not None}
    train = prepared.train
    if train.y.dim() == 1:
        probs = class_probabilities(_outputs(model, train.x, eval_batch), loss_kind)
        facts["noise"] = label_noise(probs, train.x, train.y, sample=sample)
        facts["suspects"] = [
            {"index": int(prepared.indices["train"][i]), "label": ds.classes[int(train.y[i])],
             "prediction": ds.classes[p], "confidence": round(c, 4)}
            for i, p, c in confident_mistakes(probs, train.y.cpu(), top)]
    if val is not None and val.y.dim() == 1 and len(val):
        facts["calibration"] = {"split": "val", **calibration(class_probabilities(_outputs(model, val.x, eval_batch), loss_kind),
                                                                val.y)}
    lift = {}
    for k in ("val", "test"):
        part = splits[k]
        if part is None or part.y.dim() != 1 or not facts["leakage_same_target"].get(k):
            continue
        leaked = leaked_keys(keys("train", True), keys(k, True))
        pred = class_probabilities(_outputs(model, part.x, eval_batch), loss_kind).argmax(1)
        lift[k] = leak_lift((pred == part.y.long().cpu()).numpy(), leaked)
    if lift:
        facts["leakage_lift"] = lift
    split = "test" if prepared.test is not None else "val"
    part = splits[split]
    if part is not None and part.y.dim() == 1:
        pred = class_probabilities(_outputs(model, part.x, eval_batch), loss_kind).argmax(1)
        cm = torch.zeros(n, n, dtype=torch.long)
        cm.index_put_((part.y.long().cpu(), pred), torch.ones(len(pred), dtype=torch.long), accumulate=True)
        facts["confusion"] = {"split": split, "matrix": cm.tolist()}
    return facts

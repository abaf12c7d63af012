"""Facts about a finished run that need the data or the model, gathered once at the end of `fit`
and stored in the run folder (facts.json), so the doctor and the report need nothing else.

- the data summary: rows per split, class counts, feature scales of the inputs the model saw;
- leakage: validation/test rows whose features also occur, exactly, in the training split;
- suspected mislabeled rows: the training rows the final model gets most confidently wrong;
- the confusion matrix of the test split (validation when there is no test split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FACTS = "facts.json"


def class_counts(y: torch.Tensor, n_classes: int) -> list[int]:
    return torch.bincount(y.long().cpu(), minlength=n_classes).tolist()


def feature_scales(x: torch.Tensor, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Spread of per-feature standard deviations and means of the (normalized) training inputs."""
    flat = x.reshape(len(x), -1).double().cpu()
    std, mean = flat.std(0, unbiased=False), flat.mean(0)
    varying = std > 1e-8
    out: dict[str, Any] = {"features": int(flat.shape[1]), "constant": int((~varying).sum())}
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


def shared_rows(train_x: np.ndarray, other_x: np.ndarray) -> int:
    """Rows of `other_x` whose features occur exactly in `train_x`."""
    if len(other_x) == 0:
        return 0
    seen = {r.tobytes() for r in np.ascontiguousarray(train_x.reshape(len(train_x), -1))}
    return int(sum(r.tobytes() in seen for r in np.ascontiguousarray(other_x.reshape(len(other_x), -1))))


def probabilities(out: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits: sigmoid for one output, softmax otherwise."""
    if out.shape[1] == 1:
        p = torch.sigmoid(out.squeeze(1))
        return torch.stack([1 - p, p], 1)
    if bool((out <= 0).all()) and torch.allclose(out.exp().sum(1), out.new_ones(len(out)), atol=1e-3):
        return out.exp()            # the model already ends in log_softmax (nll loss)
    return torch.softmax(out, 1)


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
    out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).float().cpu()
    model.train(was)
    return out


def gather_facts(model: torch.nn.Module, prepared, task: str, top: int, eval_batch: int) -> dict[str, Any]:
    ds = prepared.dataset
    splits = {"train": prepared.train, "val": prepared.val, "test": prepared.test}
    facts: dict[str, Any] = {
        "data": {"name": ds.name, "task": task, "shape": list(ds.x.shape[1:]), "classes": list(ds.classes),
                 "rows": {k: 0 if v is None else len(v) for k, v in splits.items()}},
        "scales": feature_scales(prepared.train.x, ds.feature_names),
        "leakage": {k: shared_rows(ds.x[prepared.indices["train"]], ds.x[prepared.indices[k]])
                    for k in ("val", "test")},
    }
    if task == "regression":
        return facts
    n = ds.n_classes
    facts["data"]["class_counts"] = {k: class_counts(v.y, n) for k, v in splits.items() if v is not None}
    train = prepared.train
    if train.y.dim() == 1:
        probs = probabilities(_outputs(model, train.x, eval_batch))
        facts["suspects"] = [
            {"index": int(prepared.indices["train"][i]), "label": ds.classes[int(train.y[i])],
             "prediction": ds.classes[p], "confidence": round(c, 4)}
            for i, p, c in confident_mistakes(probs, train.y.cpu(), top)]
    split = "test" if prepared.test is not None else "val"
    part = splits[split]
    if part is not None and part.y.dim() == 1:
        pred = probabilities(_outputs(model, part.x, eval_batch)).argmax(1)
        cm = torch.zeros(n, n, dtype=torch.long)
        cm.index_put_((part.y.long().cpu(), pred), torch.ones(len(pred), dtype=torch.long), accumulate=True)
        facts["confusion"] = {"split": split, "matrix": cm.tolist()}
    return facts

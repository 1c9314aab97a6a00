"""ConfusionMatrix against an independent slow numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studybench.metrics import ConfusionMatrix


def slow_metrics(preds, targets, num_classes, ignore=255):
    """Per-pixel loops, no shared code with the implementation."""
    tp = np.zeros(num_classes)
    gt = np.zeros(num_classes)
    pr = np.zeros(num_classes)
    correct = total = 0
    for pred, target in zip(preds, targets):
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if t == ignore:
                continue
            total += 1
            gt[t] += 1
            pr[p] += 1
            if p == t:
                tp[t] += 1
                correct += 1
    ious, accs = [], []
    for c in range(num_classes):
        union = gt[c] + pr[c] - tp[c]
        ious.append(tp[c] / union if union > 0 else None)
        accs.append(tp[c] / gt[c] if gt[c] > 0 else None)
    present = [v for v in ious if v is not None]
    return {
        "miou": sum(present) / len(present),
        "pixel_acc": correct / total,
        "mean_acc": np.mean([v for v in accs if v is not None]),
        "iou": ious,
    }


@pytest.mark.parametrize("seed", range(6))
def test_matches_slow_reference_with_ignored_and_absent_classes(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 7))
    cm = ConfusionMatrix(c)
    preds, targets = [], []
    for _ in range(3):  # several batches: dataset-level accumulation
        target = rng.integers(0, c - 1, size=(2, 9, 11))  # class c-1 never in GT
        target[rng.random(target.shape) < 0.2] = 255
        pred = rng.integers(0, c, size=target.shape)
        if seed % 2:  # class 0 never predicted and never in GT in odd seeds
            target[target == 0] = 1
            pred[pred == 0] = 1
        cm.update(torch.from_numpy(pred), torch.from_numpy(target))
        preds.append(pred)
        targets.append(target)
    got = cm.compute()
    want = slow_metrics(preds, targets, c)
    assert got.miou == pytest.approx(want["miou"], rel=1e-12)
    assert got.pixel_acc == pytest.approx(want["pixel_acc"], rel=1e-12)
    assert got.mean_acc == pytest.approx(want["mean_acc"], rel=1e-12)
    for g, w in zip(got.iou, want["iou"]):
        assert (np.isnan(g) and w is None) or g == pytest.approx(w, rel=1e-12)


def test_logits_are_argmaxed_and_perfect_prediction_scores_one():
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [2, 0]]]), 3).permute(0, 3, 1, 2).float()
    cm = ConfusionMatrix(3)
    cm.update(logits, target)
    m = cm.compute()
    assert m.miou == 1.0 and m.pixel_acc == 1.0 and m.mean_acc == 1.0


def test_out_of_range_label_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="label 7"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))

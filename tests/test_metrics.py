"""ConfusionMatrix against an independent slow numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studybench.engine.measure import count_host_reads
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


def test_out_of_range_label_is_an_error_when_the_matrix_is_read():
    """Checked on the device and reported at the read (a check per batch would stop the host per batch)."""
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [255, 2]]]))
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [255, 2]]]))
    with pytest.raises(ValueError, match="label 7"):
        cm.compute()
    bad_pred = ConfusionMatrix(3)
    bad_pred.update(torch.tensor([[[0, 5]]]), torch.tensor([[[0, 255]]]))  # 5 only where the label is ignored
    assert bad_pred.matrix.sum() == 1
    bad_pred.update(torch.tensor([[[0, 5]]]), torch.tensor([[[0, 1]]]))
    with pytest.raises(ValueError, match="prediction holds a class id outside"):
        bad_pred.compute()


def test_updates_make_no_host_read_and_the_matrix_is_read_once():
    cm = ConfusionMatrix(4)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 4, (2, 8, 8), generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)) for _ in range(5)
    ]
    with count_host_reads(torch.device("cpu")) as during:
        for pred, target in batches:
            cm.update(pred, target)
    assert during.count == 0, during.sites
    with count_host_reads(torch.device("cpu")) as reading:
        matrix = cm.matrix
        cm.compute()  # reuses the copy
    assert reading.count == 1 and int(matrix.sum()) == 5 * 2 * 64
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for pred, target in batches:
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            expected[t, p] += 1
    assert torch.equal(matrix, expected)


def test_empty_matrix_reads_as_zeros():
    assert torch.equal(ConfusionMatrix(2).matrix, torch.zeros(2, 2, dtype=torch.int64))

"""Per-image confusion counts (a real evaluation) and the report's bootstrap over validation images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studybench.counts import miou, read_image_counts, write_image_counts
from studybench.data import build_dataset
from studybench.data.loaders import val_loader_for
from studybench.engine.evaluation import evaluate, image_counts_npz, keeps_image_counts
from studybench.metrics import ConfusionMatrix
from studybench.models import build_model
from studybench.report.images import (
    cell_stability,
    image_totals,
    percentile_interval,
    resample_weights,
    run_interval,
    scored_miou,
)
from studybench.study.spec import DataCfg, ModelCfg

CLASSES = 4


def test_a_real_evaluation_keeps_per_image_counts_that_sum_to_its_matrix():
    """A tiny U-Net over 5 synthetic images in batches of 2, 2, 1: one [C, C] per image, in order,
    summing to the dataset matrix; the artifact round-trips and scores the logged mIoU exactly."""
    cfg = DataCfg(options={"num_classes": CLASSES, "image_size": 32, "val_images": 5})
    val_set = build_dataset(cfg, "val", train=False)
    torch.manual_seed(0)
    model = build_model(ModelCfg(options={"decoder_channels": [16, 8, 8, 8, 8]}), CLASSES)
    loader = val_loader_for(val_set, batch_size=2, seed=0, workers=0)  # batches of 2, 2, 1
    metrics, matrix, _ = evaluate(model, loader, CLASSES, torch.device("cpu"))

    per_image = matrix.update_counts()
    assert per_image.shape == (5, CLASSES, CLASSES) and per_image.dtype == np.int64
    assert (per_image.sum(axis=0) == matrix.matrix.numpy()).all()
    for counts, (_, mask) in zip(per_image, (val_set[i] for i in range(5))):
        assert counts.sum() == int((mask != 255).sum())  # each image's own pixels, in loader order
    assert float(miou(per_image.sum(axis=0))) == metrics.miou  # the same rule, bit for bit

    stored = read_image_counts(image_counts_npz(matrix, val_set))
    assert (stored.counts == per_image).all() and stored.ids == ["0", "1", "2", "3", "4"]
    assert stored.class_names == list(val_set.class_names)


def test_per_update_counts_change_no_metric_and_are_refused_when_not_kept():
    rng = np.random.default_rng(3)
    plain, kept = ConfusionMatrix(3), ConfusionMatrix(3, per_update=True)
    for _ in range(4):
        target = torch.from_numpy(rng.integers(0, 3, (9, 7)))
        target[0] = 255
        pred = torch.from_numpy(rng.integers(0, 3, (9, 7)))
        plain.update(pred, target)
        kept.update(pred, target)
    assert plain.compute() == kept.compute() and (plain.matrix == kept.matrix).all()
    assert kept.update_counts().shape == (4, 3, 3)
    with pytest.raises(ValueError, match="per_update=True"):
        plain.update_counts()
    bad = ConfusionMatrix(3, per_update=True)
    bad.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7))
    with pytest.raises(ValueError, match="label 7"):
        bad.update_counts()


def test_the_artifact_is_compact_and_checked():
    """VOC's 1,449 val images x 21 classes, Cityscapes' 500 x 19: sizes printed (sparse counts compress well)."""
    rng = np.random.default_rng(0)
    for name, images, classes in (("voc2012", 1449, 21), ("cityscapes", 500, 19)):
        counts = simulated_images(rng, images, classes, pixels=500 * 375)
        data = write_image_counts(counts, [str(i) for i in range(images)], [f"c{c}" for c in range(classes)])
        print(f"{name}: {images} x {classes}^2 per-image counts: {len(data) / 1e6:.2f} MB compressed")
        assert len(data) < counts.size * 4  # below the raw int32 size
        assert keeps_image_counts(images, classes)
        assert (read_image_counts(data).counts == counts).all()
    assert not keeps_image_counts(5000, 254)  # 2.6 GB of device memory: none kept
    with pytest.raises(ValueError, match="do not fit"):
        write_image_counts(np.zeros((2, 3, 3)), ["a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="not a per-image counts artifact"):
        read_image_counts(write_npz(something=np.zeros(2)))


def write_npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def simulated_images(rng: np.random.Generator, n: int, classes: int = CLASSES, pixels: int = 1024) -> np.ndarray:
    """``[n, C, C]`` confusion counts of ``n`` independent images: class 0 always present, the others in
    80-30 % of images with varying areas, and an image-level difficulty that blurs every row of its matrix."""
    presence = np.linspace(0.8, 0.3, classes - 1)
    present = np.column_stack([np.ones(n, bool), rng.random((n, classes - 1)) < presence])
    area = rng.gamma(2.0, 1.0, (n, classes)) * present * np.geomspace(6, 0.5, classes)
    gt = rng.multinomial(pixels, area / area.sum(axis=1, keepdims=True))
    easy = rng.beta(2, 2, n)[:, None, None]
    rows = rng.gamma(1.5 + 30 * easy * np.eye(classes))  # Dirichlet rows: near the diagonal on easy images
    return rng.multinomial(gt, rows / rows.sum(axis=-1, keepdims=True))


def test_resample_weights_draw_each_image_with_replacement():
    w = resample_weights(7, 2000, np.random.default_rng(0))
    assert w.shape == (2000, 7) and (w.sum(axis=1) == 7).all()
    assert abs(w.mean() - 1) < 0.02 and abs(w.var() - 6 / 7) < 0.05  # multinomial(7, 1/7): mean 1, var 6/7


def test_resampled_miou_is_the_miou_of_the_resampled_images():
    rng = np.random.default_rng(1)
    counts = simulated_images(rng, 12)
    weights = resample_weights(12, 5, rng)
    got = scored_miou(image_totals(counts), weights)
    for w, value in zip(weights, got):
        chosen = np.repeat(counts, w.astype(int), axis=0)
        assert value == pytest.approx(float(miou(chosen.sum(axis=0))), rel=1e-12)


def test_a_resample_without_a_rare_class_leaves_it_out_as_the_logged_mIoU_does():
    counts = np.zeros((2, 3, 3), np.int64)
    counts[0] = [[50, 0, 0], [0, 0, 0], [0, 0, 0]]  # image 0: background only, all right
    counts[1] = [[40, 5, 5], [2, 8, 0], [0, 0, 0]]  # image 1: class 1 present; class 2 only predicted
    weights = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    got = scored_miou(image_totals(counts), weights)
    assert got[0] == 1.0  # classes 1 and 2 absent from GT and prediction: left out, not zero
    assert got[1] == pytest.approx(np.mean([40 / 52, 8 / 15, 0.0]))
    assert got[2] == float(miou(counts.sum(axis=0)))


def test_the_interval_covers_the_full_set_mIoU_and_the_truth_95_percent_of_the_time():
    """1,000 validation sets of 100 images drawn from a population of 5,000 (its mIoU is the truth), each
    with its 1,000-resample percentile interval: coverage within 95 % ± 2.5 points (93.9 % here; 92.9 % at
    30 images, 94.4 % at 300, 94.0 % at 1,000: the percentile bootstrap runs about a point short)."""
    rng = np.random.default_rng(1)
    population = simulated_images(rng, 5000)
    truth = float(miou(population.sum(axis=0)))
    totals = image_totals(population)
    covered, draws = 0, 1000
    for _ in range(draws):
        sample = totals[rng.integers(0, len(totals), 100)]
        lo, hi = percentile_interval(scored_miou(sample, resample_weights(100, 1000, rng)))
        covered += lo <= truth <= hi
    print(f"coverage of the image-bootstrap interval, 100 images: {covered / draws:.3f}")
    assert abs(covered / draws - 0.95) <= 0.025, covered / draws

    one_run = population[:100]
    value, lo, hi = run_interval(one_run)
    assert lo < value < hi and value == float(miou(one_run.sum(axis=0)))
    assert run_interval(one_run) == (value, lo, hi)  # seeded: the same interval every time


def test_a_method_better_on_every_image_keeps_its_rank_in_every_resample():
    rng = np.random.default_rng(2)
    truth = simulated_images(rng, 20)
    perfect = np.stack([np.diag(m.sum(axis=1)) for m in truth])  # every pixel right
    runs = {"ce": [truth, truth], "oracle": [perfect, perfect], "same": [truth, truth]}
    got = cell_stability(runs, "ce", reps=300).set_index("method")
    assert got.loc["oracle", "rank"] == 1 and (got["p_same_rank"] == 1.0).all()
    assert got.loc["oracle", "p_beats_baseline"] == 1.0 and got.loc["oracle", "miou"] == 1.0
    assert got.loc["same", "p_beats_baseline"] == 0.5  # identical runs: a tie in every resample
    assert np.isnan(got.loc["ce", "p_beats_baseline"])
    assert got.loc["oracle", "diff_lo"] > 0 and got.loc["same", "diff"] == 0


def test_a_close_pair_flips_rank_under_resampling():
    """Two methods that swap which images they do well on: the ranking rests on the images drawn."""
    rng = np.random.default_rng(4)
    a, b = simulated_images(rng, 40), simulated_images(rng, 40)
    got = cell_stability({"a": [a], "b": [b]}, "a", reps=500).set_index("method")
    assert 0.05 < got.loc["b", "p_beats_baseline"] < 0.95
    assert (got["p_same_rank"] < 1.0).all()
    assert got.loc["b", "diff_lo"] < 0 < got.loc["b", "diff_hi"]

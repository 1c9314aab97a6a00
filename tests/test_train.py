"""Trainer pieces: seeding, padding, and the split backward that times the loss on its own."""

from __future__ import annotations

import torch

from studybench.data import build_dataset
from studybench.engine.rng import init_stream
from studybench.engine.train import pad_batch, seed_everything, train_loader_for
from studybench.models import build_model
from studybench.schemes import build_scheme
from studybench.study.spec import DataCfg, LossCfg, ModelCfg, RunConfig, TrainCfg

LIGHT = ModelCfg(arch="unet", encoder="resnet18", options={"decoder_channels": [16, 16, 8, 8, 8]})


def test_same_seed_same_init_and_data_order_whatever_the_loss():
    weights = []
    for torch_seed in (1, 2):  # whatever the global generator holds
        torch.manual_seed(torch_seed)
        with init_stream(3, "model"):
            weights.append(build_model(LIGHT, 4).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    ds = build_dataset(DataCfg(options={"image_size": 32, "train_images": 12}), "train", train=True)

    def order(seed: int, epoch: int = 0) -> list[float]:
        loader = train_loader_for(ds, 4, seed=seed, workers=0)
        loader.sampler.set_epoch(epoch)
        return [m.sum().item() for _, m in loader]

    assert order(5) == order(5)
    assert order(6) != order(5) and order(5, epoch=1) != order(5)


def test_pad_batch_pads_images_with_zero_and_targets_with_ignore():
    images, target = torch.ones(1, 3, 33, 40), torch.zeros(1, 33, 40, dtype=torch.long)
    pi, pt = pad_batch(images, target)
    assert pi.shape[-2:] == (64, 64) and pt.shape[-2:] == (64, 64)
    assert pi[..., 33:, :].abs().sum() == 0 and (pt[:, 33:, :] == 255).all() and (pt[:, :, 40:] == 255).all()
    assert torch.equal(pi[..., :33, :40], images)


def test_split_backward_equals_one_backward():
    """The scheme times the loss on detached leaves; the gradients must be exactly those of
    a plain ``loss(model(x), y).backward()``."""
    config = RunConfig(model=LIGHT, loss=LossCfg(name="ce"), train=TrainCfg(optimizer="sgd", lr=0.1, momentum=0.0))
    seed_everything(0)
    scheme = build_scheme(config, 4, torch.device("cpu"), total_steps=1, seed=0)
    with init_stream(0, "model"):
        plain = build_model(LIGHT, 4)
    images = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 4, (2, 32, 32))
    target[:, :4] = 255
    stats = scheme.train_step(images, target)
    value = torch.nn.functional.cross_entropy(plain(images), target, ignore_index=255)
    value.backward()
    assert torch.allclose(stats.loss, value)
    # SGD without momentum: new = old - lr * grad, so compare the updates
    for (name, p_new), p_old in zip(scheme.model.named_parameters(), plain.parameters()):
        expected = p_old.detach() - 0.1 * p_old.grad
        assert torch.allclose(p_new.detach(), expected, atol=1e-6), name
    assert len(scheme.loss_timer.samples) == 1

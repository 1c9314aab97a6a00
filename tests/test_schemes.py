"""Training schemes beyond (logits, target): Self-Regulation (multi-exit) and deep mutual learning."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import invoke
from mlflow.tracking import MlflowClient

from studybench.engine.measure import count_params
from studybench.engine.train import seed_everything
from studybench.losses import sr
from studybench.models import build_model
from studybench.models.exits import ExitHeads
from studybench.schemes import SCHEMES, build_scheme
from studybench.schemes.mutual import mutual_kl
from studybench.study.spec import ModelCfg, RunConfig

LIGHT = {"arch": "unet", "encoder": "resnet18", "options": {"decoder_channels": [16, 16, 8, 8, 8]}}
PEER = {"arch": "linknet", "encoder": "resnet18"}  # no dropout: the reference step below is deterministic
CPU = torch.device("cpu")


def config(scheme: dict, **train) -> RunConfig:
    return RunConfig.model_validate(
        {"model": LIGHT, "scheme": scheme, "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0, **train}}
    )


def batch(b: int = 2, c: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, size, size, generator=g)
    target = torch.randint(0, c, (b, size, size), generator=g)
    target[:, :5] = 255
    return images, target


# ----------------------------------------------------------------------------- the multi-exit wrapper
def test_exit_e0_is_the_plain_model_and_only_the_plain_model_is_evaluated():
    model = build_model(ModelCfg(**LIGHT), 4)
    heads = ExitHeads.for_model(model, 4)
    model.eval()
    heads.eval()
    images, _ = batch()
    with torch.no_grad():
        out = heads(model, images)
        plain = model(images)
    assert torch.equal(out.logits[0], plain)
    assert len(out.logits) == 5 and all(z.shape == plain.shape for z in out.logits)
    assert all(q.shape == (2, 4) for q in out.presence) and len(out.presence) == 5

    seed_everything(0)
    scheme = build_scheme(config({"name": "self-regulation"}), 4, CPU, total_steps=2)
    assert list(scheme.networks) == ["model"] and scheme.headline == "model"
    assert count_params(scheme.networks["model"]) == count_params(build_model(ModelCfg(**LIGHT), 4))
    costs = scheme.extra_costs()
    assert costs["exits_params_m"] == pytest.approx(count_params(scheme.heads) / 1e6) and costs["exits_params_m"] > 0
    assert costs["exits_infer_params_m"] == 0.0 and costs["exits_infer_gflops_per_image"] == 0.0
    scheme.train_step(*batch())
    costs = scheme.extra_costs()
    assert costs["exits_train_gflops_per_image"] > 0 and costs["model_train_gflops_per_image"] > 0


def test_the_sr_baseline_builds_no_exits_and_equals_the_supervised_ce_step():
    images, target = batch()
    params = []
    for scheme_cfg in ({"name": "supervised"}, {"name": "self-regulation", "mea": False, "sr_f": False, "sr_l": False}):
        seed_everything(0)
        scheme = build_scheme(config(scheme_cfg), 4, CPU, total_steps=1)
        stats = scheme.train_step(images, target)
        params.append([p.detach().clone() for p in scheme.networks["model"].parameters()])
    assert scheme.heads is None and set(stats.parts) == {"seg"}
    assert all(torch.equal(a, b) for a, b in zip(*params))


# ----------------------------------------------------------------------------- gradient routing (teachers detached)
@pytest.fixture(scope="module")
def exits():
    torch.manual_seed(0)
    model = build_model(ModelCfg(**LIGHT), 4)
    heads = ExitHeads.for_model(model, 4)
    images, target = batch()
    return model, heads, heads(model, images), target


def reached(loss: torch.Tensor, module: torch.nn.Module) -> bool:
    grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_sr_f_trains_deeper_exits_never_its_teacher(exits, mode):
    model, heads, out, target = exits
    loss = sr.sr_f_loss(out.logits, target, tau=2.0, mode=mode)
    assert not reached(loss, heads.exits[0])  # e1 is the teacher
    assert all(reached(loss, heads.exits[i]) for i in (1, 2, 3))  # e2, e3, e4
    assert reached(loss, model.segmentation_head)  # e0 is a student
    assert not any(reached(loss, h) for h in heads.presence)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_sr_l_trains_shallow_presence_heads_never_e0(exits, mode):
    model, heads, out, target = exits
    loss = sr.sr_l_loss(out.presence, target, tau=2.0, mode=mode)
    assert not reached(loss, heads.presence[0]) and not reached(loss, model.segmentation_head)
    assert not reached(loss, model.decoder)
    assert all(reached(loss, heads.presence[i]) for i in (1, 2, 3, 4))
    assert all(reached(loss, h) for h in heads.exits)  # through GAP of each exit's logits


def test_mea_reaches_every_exit_and_without_mea_only_e0(exits):
    model, heads, out, target = exits
    seg, cls = sr.seg_loss(out.logits, target), sr.cls_loss(out.presence, target)
    assert all(reached(seg, h) for h in heads.exits) and reached(seg, model.segmentation_head)
    assert all(reached(cls, h) for h in heads.presence)
    seg0, cls0 = sr.seg_loss(out.logits[:1], target), sr.cls_loss(out.presence[:1], target)
    assert not any(reached(seg0, h) for h in heads.exits) and reached(seg0, model.segmentation_head)
    assert reached(cls0, heads.presence[0]) and not any(reached(cls0, h) for h in heads.presence[1:])


# ----------------------------------------------------------------------------- values against slow references
def _softmax(v: list[float], tau: float = 1.0) -> list[float]:
    m = max(x / tau for x in v)
    e = [math.exp(x / tau - m) for x in v]
    return [x / sum(e) for x in e]


def _bce(x: float, t: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def _pixels(target):
    b, h, w = target.shape
    return [(i, y, x) for i in range(b) for y in range(h) for x in range(w) if target[i, y, x] < 3]


def _images(target):
    return [i for i in range(target.shape[0]) if any(target[i].flatten() < 3)]


def slow_sr_f(logits, target, tau, mode):
    total, z1 = 0.0, logits[1]
    for e in (2, 3, 4, 0):
        vals = []
        for i, y, x in _pixels(target):
            t, s = z1[i, :, y, x].tolist(), logits[e][i, :, y, x].tolist()
            if mode == "paper":
                pt, ps = _softmax(t, tau), _softmax(s, tau)
                vals.append(-(tau**2) * sum(a * math.log(b) for a, b in zip(pt, ps)))
            else:
                vals.append(-math.log(_softmax(s)[max(range(3), key=lambda c: t[c])]))
        total += sum(vals) / len(vals)
    return total


def slow_sr_l(presence, target, tau, mode):
    total, images = 0.0, _images(target)
    for e in (1, 2, 3, 4):
        vals = []
        for i in images:
            t, s = presence[0][i].tolist(), presence[e][i].tolist()
            if mode == "paper":
                pt, ps = _softmax(t, tau), _softmax(s, tau)
                vals.append(-(tau**2) * sum(a * math.log(b) for a, b in zip(pt, ps)))
            else:
                vals.extend(_bce(sc, 1 / (1 + math.exp(-tc))) for tc, sc in zip(t, s))
        total += sum(vals) / len(vals)
    return total


def slow_mea(logits, presence, target):
    seg = sum(
        sum(-math.log(_softmax(z[i, :, y, x].tolist())[target[i, y, x]]) for i, y, x in _pixels(target))
        / len(_pixels(target))
        for z in logits
    )
    cls = 0.0
    for q in presence:
        vals = []
        for i in _images(target):
            present = set(target[i].flatten().tolist()) - {3, 255}
            vals.extend(_bce(q[i, c].item(), float(c in present)) for c in range(3))
        cls += sum(vals) / len(vals)
    return seg, cls


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(1)
    logits = [3 * torch.randn(3, 3, 3, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    presence = [2 * torch.randn(3, 3, generator=g, dtype=torch.float64) for _ in range(5)]
    target = torch.randint(0, 3, (3, 3, 4), generator=g)
    target[0, 0, :] = 255
    target[0, 1, 1] = 3  # a label >= C: ignored as well
    target[2] = 255  # an image without any valid pixel
    return logits, presence, target


@pytest.mark.parametrize("mode", ["paper", "code"])
@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_sr_terms_match_a_slow_reference(tiny, mode, tau):
    logits, presence, target = tiny
    assert sr.sr_f_loss(logits, target, tau, mode).item() == pytest.approx(
        slow_sr_f(logits, target, tau, mode), rel=1e-10
    )
    assert sr.sr_l_loss(presence, target, tau, mode).item() == pytest.approx(
        slow_sr_l(presence, target, tau, mode), rel=1e-10
    )
    seg, cls = slow_mea(logits, presence, target)
    assert sr.seg_loss(logits, target).item() == pytest.approx(seg, rel=1e-10)
    assert sr.cls_loss(presence, target).item() == pytest.approx(cls, rel=1e-10)


def test_presence_targets_ignore_255_and_labels_beyond_c(tiny):
    _, _, target = tiny
    t, image_valid = sr.presence_targets(target, 3)
    assert image_valid.tolist() == [True, True, False]
    for i in range(2):
        assert t[i].tolist() == [c in set(target[i].flatten().tolist()) for c in range(3)]
    assert not t[2].any()


def test_sr_gradcheck_on_students_and_all_ignored_batch(tiny):
    """Teachers are constants of the loss (detached), so gradcheck differentiates the students only."""
    logits, presence, target = tiny
    z1, q0 = logits[1], presence[0]
    students = [z.clone().requires_grad_() for i, z in enumerate(logits) if i != 1]
    students_q = [q.clone().requires_grad_() for q in presence[1:]]
    for mode in ("paper", "code"):
        assert torch.autograd.gradcheck(lambda z0, *z, m=mode: sr.sr_f_loss([z0, z1, *z], target, 1.5, m), students)
        assert torch.autograd.gradcheck(lambda *q, m=mode: sr.sr_l_loss([q0, *q], target, 1.5, m), students_q)
    ignored = torch.full_like(target, 255)
    every_z, every_q = [students[0], z1, *students[1:]], [q0, *students_q]
    for value in (
        sr.sr_f_loss(every_z, ignored),
        sr.sr_l_loss(every_q, ignored),
        sr.seg_loss(every_z, ignored),
        sr.cls_loss(every_q, ignored),
    ):
        assert value.item() == 0.0
        grads = torch.autograd.grad(value, students + students_q, allow_unused=True)
        assert all(g is None or not g.any() for g in grads)


def test_warmup_runs_mea_alone_first_and_parts_are_recorded():
    seed_everything(0)
    scheme = build_scheme(config({"name": "self-regulation", "warmup": 0.5, "mode": "code"}), 4, CPU, total_steps=4)
    parts = [scheme.train_step(*batch(seed=s)).parts for s in range(3)]
    assert set(parts[0]) == {"seg", "cls", "sr_f", "sr_l"}
    assert parts[0]["sr_f"] == 0 and parts[1]["sr_l"] == 0 and parts[2]["sr_f"] > 0 and parts[2]["sr_l"] > 0
    assert len(scheme.loss_timer.samples) == 3


def test_sr_rejects_bad_parameters():
    for bad in ({"tau": 0.0}, {"warmup": 1.0}, {"sr_f_weight": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_scheme(config({"name": "self-regulation", **bad}), 4, CPU, total_steps=2)
    with pytest.raises(ValueError, match="mode"):
        SCHEMES.check("self-regulation", {"mode": "official"})


# ----------------------------------------------------------------------------- deep mutual learning
def test_mutual_kl_matches_the_direct_formula_and_never_trains_the_other():
    g = torch.Generator().manual_seed(2)
    z_self = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z_other = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 3, 3), generator=g)
    target[1, :2] = 255
    value = mutual_kl(z_self, z_other, target)
    p_o, p_s = z_other.softmax(1), z_self.softmax(1)
    per_pixel = (p_o * (p_o.log() - p_s.log())).sum(1)
    valid = target != 255
    assert value.item() == pytest.approx(per_pixel[valid].mean().item(), rel=1e-12)
    grad_self, grad_other = torch.autograd.grad(value, [z_self, z_other], allow_unused=True)
    assert grad_other is None and grad_self.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda z: mutual_kl(z, z_other, target), [z_self])
    zero = mutual_kl(z_self, z_other, torch.full_like(target, 255))
    assert zero.item() == 0.0 and not torch.autograd.grad(zero, z_self)[0].any()


def test_mutual_step_alternates_exactly_as_dml():
    """One scheme step equals: step the student against the peer, recompute both, step the peer."""
    cfg = config({"name": "mutual", "peer": PEER})
    images, target = batch()
    images = images.double()  # float64, so that fused vs. plain SGD rounding cannot hide a real difference
    seed_everything(0)
    scheme = build_scheme(cfg, 4, CPU, total_steps=1)
    scheme.student.double(), scheme.peer.double()  # same Parameter objects: the optimisers still hold them
    student, peer = copy.deepcopy(scheme.student), copy.deepcopy(scheme.peer)
    opt_s = torch.optim.SGD(student.parameters(), lr=0.05)
    opt_p = torch.optim.SGD(peer.parameters(), lr=0.05)

    def kl(z, other):
        return (
            F.kl_div(F.log_softmax(z, 1), F.softmax(other.detach(), 1), reduction="none").sum(1)[target != 255].mean()
        )

    with torch.no_grad():
        z_peer = peer(images)
    z = student(images)
    (F.cross_entropy(z, target, ignore_index=255) + kl(z, z_peer)).backward()
    opt_s.step()
    with torch.no_grad():
        z_student = student(images)
    z = peer(images)
    (F.cross_entropy(z, target, ignore_index=255) + kl(z, z_student)).backward()
    opt_p.step()

    stats = scheme.train_step(images, target)
    assert set(stats.parts) == {"student_ce", "student_kl", "peer_ce", "peer_kl"}
    assert stats.loss.item() == pytest.approx(sum(v.item() for v in stats.parts.values()))
    for mine, ref in ((scheme.student, student), (scheme.peer, peer)):
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), name
    assert set(scheme.networks) == {"student", "peer"} and scheme.headline == "student"
    assert len(scheme.loss_timer.samples) == 1


def test_mutual_parameters_are_checked_before_training():
    SCHEMES.check("mutual", {"peer": {"arch": "deeplabv3", "encoder": "resnet50"}, "evaluate": "peer"})
    for bad, match in (({"peer": {"arch": "deeplabv9"}}, "unknown model arch"), ({"evaluate": "teacher"}, "evaluate")):
        with pytest.raises(ValueError, match=match):
            SCHEMES.check("mutual", bad)
    scheme = build_scheme(config({"name": "mutual", "evaluate": "peer"}), 4, CPU, total_steps=1)
    assert scheme.headline == "peer" and "student_params_m" in scheme.extra_costs()


# ----------------------------------------------------------------------------- through the real trainer and MLflow
SMOKE = """\
study: schemes-smoke
seeds: [0]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 2, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method:
    - ce
    - {name: sr, scheme: {name: self-regulation, mode: code, warmup: 0.25}}
    - name: dml
      scheme:
        name: mutual
        peer: {arch: deeplabv3, encoder: resnet18, options: {decoder_channels: 32}}
"""


def test_smoke_study_of_both_schemes_through_the_cli(write_study, tracking_uri):
    result = invoke("run", str(write_study(SMOKE)), "--tracking-uri", tracking_uri)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("schemes-smoke")
    runs = {r.data.tags["studybench.method"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"ce", "sr", "dml"} and all(r.info.status == "FINISHED" for r in runs.values())
    sr_run, dml_run = runs["sr"].data, runs["dml"].data
    for key in ("train/seg", "train/cls", "train/sr_f", "train/sr_l", "exits_params_m", "exits_train_gflops_per_image"):
        assert key in sr_run.metrics, key
    assert len(client.get_metric_history(runs["sr"].info.run_id, "train/sr_f")) == 2
    assert sr_run.metrics["params_m"] == runs["ce"].data.metrics["params_m"]  # exits are not evaluated
    assert sr_run.params["scheme.mode"] == "code"
    for key in ("train/student_ce", "train/student_kl", "train/peer_ce", "train/peer_kl", "miou", "peer/miou"):
        assert key in dml_run.metrics, key
    assert dml_run.metrics["peak_mem_mb"] > 0 and dml_run.metrics["loss_ms"] > 0

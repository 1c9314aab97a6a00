"""Seeds by source (``seeds: {init: [...], data: [...]}``): expansion, keys, names, checks, streams (no training)."""

from __future__ import annotations

import yaml
from helpers import TINY_STUDY, invoke

from studybench.data.sampler import EpochSampler
from studybench.study.config import Study
from studybench.study.grid import expand
from studybench.study.spec import SOURCES, seed_id

#: Keys of TINY_STUDY with seeds [0, 1, 7] as computed before seeds by source existed (commit ad269a2):
#: a plain seed list must key every run exactly as it did.
KEYS_BEFORE = {
    "ce · unet · s0": "b25c88e3eaab7357",
    "ce · unet · s1": "be87c8e208a90b60",
    "ce · unet · s7": "9af8c23c4fd946cf",
    "dice · unet · s0": "172a0d398e0187c5",
    "dice · unet · s1": "817132687eeb7547",
    "dice · unet · s7": "d72c5c0e8b6ec6ed",
}


def tiny(seeds: str, extra: str = "") -> Study:
    return Study.model_validate(yaml.safe_load(TINY_STUDY.replace("seeds: [0]", f"seeds: {seeds}") + extra))


def keys(study: Study, profile: str | None = None) -> dict[str, str]:
    return {s.name: s.key for s in expand(study, profile, check_data=False)}


def test_a_plain_seed_list_keys_every_run_as_before():
    specs = expand(tiny("[0, 1, 7]"), check_data=False)
    assert {s.name: s.key for s in specs} == KEYS_BEFORE
    assert all(s.sources is None and s.stream_seeds == dict.fromkeys(SOURCES, s.seed) for s in specs)
    assert not any(k.startswith("seed.") for k in specs[0].params())  # no new params on plain runs


def test_every_source_on_one_seed_is_that_plain_seed():
    """One key, one computation: all four streams on seed s train what plain seed s trains."""
    plain = keys(tiny("[0, 1, 7]"))
    for s in (0, 1, 7):
        same = tiny(f"{{init: [{s}], data: [{s}], aug: [{s}], method: [{s}]}}")
        assert sorted(keys(same).values()) == sorted(v for k, v in plain.items() if k.endswith(f"s{s}"))
    assert sorted(keys(tiny("{init: [0]}")).values()) == sorted(v for k, v in plain.items() if k.endswith("s0"))
    assert set(keys(tiny("{init: [1]}")).values()).isdisjoint(plain.values())  # init 1, the rest on 0: new runs


def test_sources_cross_and_methods_pair_by_the_whole_tuple():
    specs = expand(tiny("{init: [0, 1, 2], data: [0, 5]}"), check_data=False)
    assert len(specs) == 2 * 3 * 2 and len({s.key for s in specs}) == 12
    ce = {s.seed: s for s in specs if s.method == "ce"}
    dice = {s.seed: s for s in specs if s.method == "dice"}
    assert set(ce) == set(dice) and len(ce) == 6  # one seed id per tuple, shared by the methods
    tuples = {(s.sources["init"], s.sources["data"], s.sources["aug"], s.sources["method"]) for s in ce.values()}
    assert tuples == {(i, d, 0, 0) for i in (0, 1, 2) for d in (0, 5)}
    assert ce[0].sources == dict.fromkeys(SOURCES, 0)  # the diagonal run is plain seed 0 ...
    assert all(s >= 2**32 for s in ce if s != 0)  # ... every other id lies above any plain seed
    run = next(s for s in ce.values() if s.sources["init"] == 2 and s.sources["data"] == 5)
    assert run.name == "ce · unet · i2.d5.a0.m0"
    assert run.stream_seeds == {"init": 2, "data": 5, "aug": 0, "method": 0}
    assert {k: v for k, v in run.params().items() if k.startswith("seed.")} == {
        "seed.init": 2,
        "seed.data": 5,
        "seed.aug": 0,
        "seed.method": 0,
    }
    assert seed_id(run.sources) == run.seed


def test_a_profile_gives_seeds_by_source_too():
    study = tiny("[0, 1, 7]", "profiles:\n  sources: {seeds: {aug: [3, 4]}}\n")
    specs = expand(study, "sources", check_data=False)
    assert sorted(s.name for s in specs if s.method == "ce") == ["ce · unet · i0.d0.a3.m0", "ce · unet · i0.d0.a4.m0"]
    assert keys(study) == KEYS_BEFORE  # without the profile: the study's own list


def test_bad_seeds_by_source_exit_2_naming_the_field(tmp_path):
    cases = {
        "{init: [0], dropout: [1]}": "seeds.dropout: unknown key 'dropout'; allowed: init, data, aug, method",
        "{init: []}": "seeds.init: List should have at least 1 item",
        "{data: [1, 1]}": "seeds.data: Value error, seeds must be unique, got [1, 1]",
        "{}": "seeds: Value error, give the seeds of at least one source: init, data, aug, method",
        "{aug: [true]}": "seeds.aug.0: Input should be a valid integer",
    }
    for seeds, message in cases.items():
        path = tmp_path / "study.yaml"
        path.write_text(TINY_STUDY.replace("seeds: [0]", f"seeds: {seeds}"))
        out = invoke("validate", str(path), cwd=tmp_path)
        assert out.returncode == 2 and message in out.stdout + out.stderr, (seeds, out.stdout + out.stderr)
        assert not (tmp_path / "results").exists()
    path.write_text(TINY_STUDY.replace("seeds: [0]", "seeds: {init: [0, 1]}") + "tune: {budget: 2}\n")
    out = invoke("validate", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "seeds: seeds by source are not supported with tune:" in out.stdout + out.stderr


def test_the_sampler_draws_order_and_augmentation_from_their_own_seeds():
    def drawn(seed: int, aug_seed: int | None) -> tuple[list[int], list[int]]:
        sampler = EpochSampler(16, seed, aug_seed=aug_seed)
        sampler.set_epoch(2)
        keys = list(sampler)
        return [k.index for k in keys], [k.seed for k in sorted(keys, key=lambda k: k.index)]

    order, aug = drawn(3, None)
    assert drawn(3, 3) == (order, aug)  # a plain seed: both from it, as before
    moved = drawn(3, 9)
    assert moved[0] == order and moved[1] == drawn(9, None)[1]  # order of seed 3, augmentation of seed 9
    assert drawn(9, 3)[1] == aug and drawn(9, 3)[0] != order

"""A trial's result does not depend on its pack: on the CPU (the compiled kernels) every epoch's
metrics, its best epoch and its final weights are bitwise those it gets alone, beside wider,
narrower and equal-width neighbours, beside a neighbour that finishes early (its slot refilled),
and after an interruption that reruns it in a new pack. The truth is the trial trained alone
(`study.train.train`, a pack of one); the code before this engine failed every comparison here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tasks
from study import worker
from study.config import TrainConfig
from study.pack import PackTrial, train_pack
from study.train import train

JSB = tasks.get("jsb_chorales")
SETTINGS = TrainConfig(batch_size=1, max_epochs=20, patience=20, eval_batch_size=2)
# widths 5 (the same twice), 8 (wider) and 3 (narrower); the last one diverges in epoch 1
HPARAMS = {
    "a": {"hidden_size": 5, "learning_rate": 0.05, "momentum": 0.9, "input_noise": 0.3},
    "wide": {"hidden_size": 8, "learning_rate": 0.02, "momentum": 0.5, "input_noise": 0.1},
    "narrow": {"hidden_size": 3, "learning_rate": 0.1, "momentum": 0.0, "input_noise": 0.0},
    "same": {"hidden_size": 5, "learning_rate": 0.01, "momentum": 0.95, "input_noise": 0.2},
    "boom": {"hidden_size": 7, "learning_rate": 1e38, "momentum": 0.5, "input_noise": 0.0},
}
SEEDS = {key: 10 + k for k, key in enumerate(HPARAMS)}


def small_jsb():
    splits = JSB.tiny(np.random.default_rng(0))
    return {"train": splits["train"].subset(range(6)), **{s: splits[s] for s in ("valid", "test")}}


def without_time(history):
    return [{k: v for k, v in m.items() if k != "time_s"} for m in history]


def alone(variant, splits, key):
    """The trial alone: (result, history, final weights)."""
    ((_, got),) = packed(variant, splits, [key], 1).items()
    return got


def packed(
    variant, splits, keys, slots, stop_after=None, settings=SETTINGS, device="cpu", hparams=HPARAMS
):
    """Trials `keys` in a pack of `slots`; with `stop_after`, the pack is abandoned (as a killed
    worker) once that many trials finished. Returns {key: (result, history, weights)}."""
    histories, weights, done = {}, {}, {}
    trials = [PackTrial(k, hparams[k], SEEDS[k]) for k in keys]
    run = train_pack(
        JSB, variant, trials, splits, settings, slots,
        lambda key, m: histories.setdefault(key, []).append(m), device,
        on_finish=lambda key, w: weights.__setitem__(key, w),
    )  # fmt: skip
    for key, result in run:
        done[key] = (result, without_time(histories.get(key, [])), weights[key])
        if stop_after is not None and len(done) == stop_after:
            run.close()
            break
    return done


def assert_bitwise(got, want, what):
    result, history, weights = got
    w_result, w_history, w_weights = want
    assert result["numerics"] == w_result["numerics"]
    for name in ("status", "error", "epochs", "best_epoch", "val_metric", "test_metric"):
        assert result[name] == w_result[name], (what, name)
    assert result["train_loss"] == w_result["train_loss"] and history == w_history, what
    assert weights.keys() == w_weights.keys()
    for name, w in w_weights.items():
        assert torch.equal(weights[name], w), (what, name)


@pytest.mark.parametrize("variant", ["V", "NP", "FGR", "GRU", "NOAF"])
def test_a_trial_is_bitwise_the_same_alone_in_any_pack_and_after_a_resume(variant):
    splits = small_jsb()
    want = {k: alone(variant, splits, k) for k in ("a", "wide", "narrow", "same")}
    assert want["a"][0]["epochs"] == 20 and len(want["a"][1]) == 20
    history = []  # the public single-trial API is that same pack of one
    result = train(JSB, variant, HPARAMS["a"], splits, SETTINGS, SEEDS["a"], report=history.append)
    assert {k: v for k, v in result.items() if k not in ("wall_s", "started_at")} == {
        k: v for k, v in want["a"][0].items() if k not in ("wall_s", "started_at")
    }
    assert without_time(history) == want["a"][1]
    pairs = packed(variant, splits, ["a", "wide"], 2)  # padded beside a wider one
    pairs |= packed(variant, splits, ["narrow", "same"], 2)  # the widest beside a narrower one
    assert want["a"][0]["numerics"] == "cpu-compiled"
    for key, got in pairs.items():
        assert_bitwise(got, want[key], f"pack of 2: {key}")
    # 4 slots, 5 trials: "boom" diverges in epoch 1 and its slot goes to "a" at epoch 2
    fours = packed(variant, splits, ["boom", "wide", "narrow", "same", "a"], 4)
    assert fours["boom"][0]["error"] is not None
    for key in ("a", "wide", "narrow", "same"):
        assert_bitwise(fours[key], want[key], f"pack of 4: {key}")
    # interrupted once the diverging trial is recorded; the rest rerun in a new pack
    first = packed(variant, splits, ["boom", "a", "narrow", "wide"], 2, stop_after=1)
    assert list(first) == ["boom"]
    resumed = packed(variant, splits, ["a", "narrow", "wide", "same"], 4)
    for key in ("a", "narrow", "wide"):
        assert_bitwise(resumed[key], want[key], f"resumed: {key}")


def test_bidirectional_trials_are_bitwise_the_same_in_a_pack():
    timit = tasks.get("timit")
    splits = timit.tiny(np.random.default_rng(1))
    settings = TrainConfig(batch_size=2, max_epochs=3, patience=3, eval_batch_size=3)
    hps = [HPARAMS["a"], HPARAMS["wide"]]
    want = []
    for k, hp in enumerate(hps):
        history = []
        want.append((train(timit, "V", hp, splits, settings, k, report=history.append), history))
    histories = {}
    trials = [PackTrial(k, hp, k) for k, hp in enumerate(hps)]
    on_epoch = lambda key, m: histories.setdefault(key, []).append(m)  # noqa: E731
    for key, result in train_pack(timit, "V", trials, splits, settings, 2, on_epoch):
        assert result["val_metric"] == want[key][0]["val_metric"]
        assert without_time(histories[key]) == without_time(want[key][1])


def test_worker_trial_and_pack_jobs_take_the_same_route(tmp_path):
    """`run_trial` is a pack job of one: the same result as that trial in a pack job."""
    from tasks.base import save_prepared

    splits = small_jsb()
    save_prepared(tmp_path, splits, {})
    settings = TrainConfig(batch_size=1, max_epochs=3, patience=3, eval_batch_size=2)
    job = {
        "task": "jsb_chorales",
        "variant": "V",
        "data_path": str(tmp_path),
        "training": settings.model_dump(),
        "device": "cpu",
        "hidden_size_meaning": "per_direction",
    }
    one = worker.run_trial({**job, "trial": 7, "hparams": HPARAMS["a"], "seed": 3})
    trials = [
        {"trial": 7, "hparams": HPARAMS["a"], "seed": 3},
        {"trial": 8, "hparams": HPARAMS["wide"], "seed": 4},
    ]
    many = {r["trial"]: r for r in worker.run_pack({**job, "trials": trials, "slots": 2})}
    assert one["numerics"] == many[7]["numerics"] == "cpu-compiled"
    assert one["val_metric"] == many[7]["val_metric"] and one["epochs"] == 3
    assert without_time(one["history"]) == without_time(many[7]["history"])


@pytest.mark.parametrize("spec", ["reference-mode", "unknown-field"])
def test_the_reference_loop_on_the_cpu_trains_one_trial_at_a_time(spec, monkeypatch):
    """Where the reference loop runs on the CPU (ODYSSEY_CELLS=reference, a spec the kernels do
    not know), a pack trains its trials one at a time at their own sizes: still bitwise."""
    import dataclasses

    import variants

    variant = "V"
    if spec == "reference-mode":
        monkeypatch.setenv("ODYSSEY_CELLS", "reference")
    else:

        @dataclasses.dataclass(frozen=True)
        class Future(variants.LSTMSpec):
            tied_gates: bool = False

        variant = Future()
    splits = small_jsb()
    settings = TrainConfig(batch_size=1, max_epochs=2, patience=2, eval_batch_size=2)
    want = train(JSB, variant, HPARAMS["a"], splits, settings, 1)
    assert want["numerics"] == "cpu-reference"
    trials = [PackTrial(0, HPARAMS["a"], 1), PackTrial(1, HPARAMS["wide"], 2)]
    got = dict(train_pack(JSB, variant, trials, splits, settings, 2))
    assert got[0]["val_metric"] == want["val_metric"] and got[0]["numerics"] == "cpu-reference"


@pytest.mark.gpu
def test_cuda_pack_equals_the_trial_alone_within_tolerance():
    """On CUDA (batched reference loop, TF32 off) a packed trial equals its run alone within
    float32 rounding: relative 1e-4 on every epoch's metrics over 5 epochs."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    splits = small_jsb()
    settings = TrainConfig(batch_size=1, max_epochs=5, patience=5, eval_batch_size=2)
    for variant in ("V", "GRU"):
        want = {}
        for key in ("a", "wide"):
            history = []
            r = train(JSB, variant, HPARAMS[key], splits, settings, SEEDS[key], "cuda",
                      history.append)  # fmt: skip
            assert r["numerics"] == "cuda-reference"
            want[key] = without_time(history)
        runs = packed(variant, splits, ["a", "wide"], 2, settings=settings, device="cuda")
        got = {k: v[1] for k, v in runs.items()}
        for key, history in want.items():
            for a, b in zip(history, got[key], strict=True):
                assert b == pytest.approx(a, rel=1e-4, abs=1e-6), (variant, key)


def test_two_threads_change_nothing_either():
    """With 2 threads a trial alone runs its BLAS calls outside any parallel region and in a pack
    inside one: the kernels keep BLAS on one thread per trial, so the numbers still agree."""
    splits = small_jsb()
    settings = TrainConfig(batch_size=2, max_epochs=3, patience=3, eval_batch_size=4, threads=2)
    hparams = {**HPARAMS, "a": {**HPARAMS["a"], "hidden_size": 40}}
    want = packed("V", splits, ["a"], 1, settings=settings, hparams=hparams)["a"]
    got = packed("V", splits, ["a", "wide"], 2, settings=settings, hparams=hparams)["a"]
    assert_bitwise(got, want, "2 threads")

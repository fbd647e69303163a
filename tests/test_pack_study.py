"""The study engine with packs of trials (in-process executor): a packed study records the same
trials as an unpacked one, a driver killed in the middle of a pack resumes with every trial
exactly once, and divergence or a worker error inside a pack touches only its own trials."""

from __future__ import annotations

import math

import pytest
from test_study_resume import Killed, _check_exactly_once

from study import plan, results, runner
from study.scheduler import InlineExecutor
from study.worker import run_pack, run_trial

pytestmark = pytest.mark.integration  # whole studies


def _run(cfg, pack_fn=run_pack):
    return runner.run(
        cfg, executor_factory=lambda c, d: InlineExecutor(pack_fn=pack_fn), live=False
    )


def test_packed_study_records_what_the_unpacked_one_does(tmp_path, smoke):
    alone, packed = smoke(tmp_path / "a", pack=1), smoke(tmp_path / "b", pack=2)
    jobs = []
    assert _run(alone)["complete"] == 6
    assert _run(packed, lambda job: jobs.append(job) or run_pack(job))["complete"] == 6
    assert {j["slots"] for j in jobs} == {2} and all(j["kind"] == "pack" for j in jobs)
    a = results.read_trials(alone.study_dir).set_index(["variant", "trial"]).sort_index()
    b = _check_exactly_once(packed).set_index(["variant", "trial"]).sort_index()
    assert (a["hp_hidden_size"] == b["hp_hidden_size"]).all()
    assert (a["epochs"] == b["epochs"]).all() and (a["best_epoch"] == b["best_epoch"]).all()
    for col in ("val_metric", "test_metric", "train_loss", "hp_learning_rate"):
        assert b[col].tolist() == pytest.approx(a[col].tolist(), rel=1e-4), col
    epochs_a = results.read_epochs(alone.study_dir, "jsb_chorales", "V", 0)
    epochs_b = results.read_epochs(packed.study_dir, "jsb_chorales", "V", 0)
    assert len(epochs_a) == len(epochs_b) > 0


def test_packs_group_similar_hidden_sizes_within_rounds_of_trial_numbers(tmp_path):
    """Pack 1: rounds of 4 trials by number, jobs of 2 by hidden size within a round."""
    from study.record import Pending

    sizes = [90, 20, 200, 21, 150, 30, 25, 180]
    trials = [Pending("t", "V", k, {"hidden_size": h}) for k, h in enumerate(sizes)][::-1]
    packs = plan.cut_into_packs(trials, 1, "per_direction", False)
    got = [[p.params["hidden_size"] for p in pk] for pk in packs]
    assert got == [[20, 21], [90, 200], [25, 30], [150, 180]]


def test_interleave_keeps_the_pairs_counts_level():
    jobs = [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]
    assert plan.interleave(jobs) == ["a1", "b1", "c1", "a2", "b2", "a3"]  # all level: round-robin
    # a has 4 recorded, b 1, c 0 (jobs of size 2 but the last): the lowest pair goes next, ties
    # in the pairs' order
    jobs = [["a1", "a2"], ["b1", "b2", "b3"], ["c1", "c2"]]
    got = plan.interleave(jobs, [4, 1, 0], size=lambda job: 2)
    # levels a4 b1 c0: c1 (c2), b1 (b3), c2 (c4, c done), b2 (b5), a1 (a6), b3 (b7), a2
    assert got == ["c1", "b1", "c2", "b2", "a1", "b3", "a2"]


@pytest.mark.parametrize("pack", [1, 2])
def test_a_resumed_study_fills_the_groups_that_are_behind_first(tmp_path, smoke, pack):
    """V recorded 2 trials, NP none: NP's trials go first until the two are level, then the pairs
    alternate (one trial per job, or packs of 2)."""
    assert _run(smoke(variants=["V"], trials=2))["complete"] == 2
    order = []

    def one(job):
        order.append([(job["variant"], job["trial"])])
        return run_trial(job)

    def packed(job):
        order.append([(job["variant"], t["trial"]) for t in job["trials"]])
        return run_pack(job)

    executor = InlineExecutor(fn=one, pack_fn=packed)
    counts = runner.run(smoke(trials=3, pack=pack), executor_factory=lambda c, d: executor)
    assert counts["ran"] == 4
    if pack == 1:
        assert order == [[("NP", 0)], [("NP", 1)], [("V", 2)], [("NP", 2)]]
    else:
        # a job holds up to PACK_QUEUE x 2 = 4 trials: NP's three (ordered by hidden size),
        # then V's one
        assert [sorted(job) for job in order] == [[("NP", 0), ("NP", 1), ("NP", 2)], [("V", 2)]]


def test_killed_in_the_middle_of_a_pack_resumes_exactly_once(tmp_path, smoke):
    cfg = smoke(pack=3)  # 3 trials per pair: one pack each of V and NP
    yielded = []

    def dies_after_two(job):
        for result in run_pack(job):
            if len(yielded) == 2:
                raise Killed
            yielded.append((job["variant"], result["trial"]))
            yield result

    with pytest.raises(Killed):
        _run(cfg, dies_after_two)
    assert len(results.read_trials(cfg.study_dir)) == 2  # recorded as they finished
    before = results.read_trials(cfg.study_dir).set_index(["variant", "trial"])

    rerun = []
    counts = _run(cfg, lambda job: rerun.append(job) or run_pack(job))
    assert counts == {"complete": 6, "failed": 0, "expected": 6, "ran": 4}
    rerun_trials = sorted((j["variant"], t["trial"]) for j in rerun for t in j["trials"])
    assert len(rerun_trials) == 4 and not set(yielded) & set(rerun_trials)
    df = _check_exactly_once(cfg).set_index(["variant", "trial"])
    for key in before.index:  # what was recorded was kept, not retrained
        assert df.loc[key, "started_at"] == before.loc[key, "started_at"]
    assert _run(cfg, lambda job: pytest.fail("nothing should run"))["ran"] == 0


def test_divergence_in_a_pack_is_recorded_and_its_neighbours_finish(tmp_path, smoke):
    cfg = smoke(pack=3)

    def one_explodes(job):
        trials = [
            {**t, "hparams": {**t["hparams"], "learning_rate": math.inf}}
            if (job["variant"], t["trial"]) == ("V", 1)
            else t
            for t in job["trials"]
        ]
        return run_pack({**job, "trials": trials})

    counts = _run(cfg, one_explodes)
    assert counts["complete"] == 5 and counts["failed"] == 1
    df = _check_exactly_once(cfg).set_index(["variant", "trial"])
    assert df.loc[("V", 1), "status"] == "failed" and "became" in df.loc[("V", 1), "error"]
    assert df.drop(("V", 1))["val_metric"].map(math.isfinite).all()


def test_a_pack_whose_worker_fails_reruns_only_its_unreported_trials(tmp_path, smoke):
    cfg = smoke(pack=3)
    failed_once = []

    jobs = []

    def fails_after_one(job):
        jobs.append(job)
        for k, result in enumerate(run_pack(job)):
            if k == 1 and job["variant"] == "NP" and not failed_once:
                failed_once.append(job)
                raise RuntimeError("simulated: worker lost its data")
            yield result

    counts = _run(cfg, fails_after_one)
    assert counts == {"complete": 6, "failed": 0, "expected": 6, "ran": 6}
    _check_exactly_once(cfg)
    retried = jobs[jobs.index(failed_once[0]) + 1 :]
    retried = [j for j in retried if j["variant"] == "NP"]
    assert len(retried) == 1 and len(retried[0]["trials"]) == 2  # packed again, together


def test_pack_sizes_by_device_and_task(tmp_path, smoke):
    cfg = smoke(pack=None)
    assert plan.pack_size(cfg, "cpu") == 4 and plan.pack_size(cfg, "cpu", bidirectional=True) == 1
    assert plan.pack_size(cfg, "cuda", bidirectional=True) == 256
    assert plan.pack_size(smoke(pack=8), "cpu", bidirectional=True) == 8  # as asked
    tpe = smoke(pack=8, sampler="tpe")
    assert plan.pack_size(tpe, "cuda") == 1  # an adaptive sampler asks after each result

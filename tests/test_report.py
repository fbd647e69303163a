"""Tests of the report builder (analysis/): statistics against hand-worked numbers, fANOVA
against exact and known decompositions, and pages built from full, partial and empty tables."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_report import make_trials, registry_orders, write_study  # noqa: E402

from analysis import fanova, stats  # noqa: E402
from analysis.build import Settings, build  # noqa: E402
from analysis.load import read_results  # noqa: E402

FAST = Settings(n_trees=8, n_resamples=200, fanova_resamples=4, fanova_resample_trees=4)

# ----------------------------------------------------------------------------- statistics


def test_welch_against_hand_computation():
    x, y = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8, 10])
    t, dof, p = stats.welch(x, y)
    # means 2.5 and 6, variances 5/3 and 10: se^2 = 5/12 + 2 = 29/12
    assert t == pytest.approx(-3.5 / math.sqrt(29 / 12))
    assert t == pytest.approx(-2.2514, abs=1e-4)
    assert dof == pytest.approx((29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 2**2 / 4))
    assert dof == pytest.approx(5.5214, abs=1e-3)
    assert p == pytest.approx(2 * sps.t.sf(abs(t), dof))


def test_holm_known_vector():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.04, 0.06) = 0.06
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    adj = stats.holm([np.nan, 0.02, 0.5, 0.9])
    assert np.isnan(adj[0])
    np.testing.assert_allclose(adj[1:], [0.06, 1.0, 1.0])  # 0.02*3, 0.5*2 -> 1, 0.9 -> 1


def test_hedges_g_hand():
    # pooled SD 1, d = -3, correction 1 - 3 / (4 * 4 - 1) = 0.8
    assert stats.hedges_g(np.array([1.0, 2, 3]), np.array([4.0, 5, 6])) == pytest.approx(-2.4)


@pytest.mark.parametrize(
    "n, k", [(0, 0), (1, 1), (5, 1), (10, 1), (11, 2), (19, 2), (20, 2), (200, 20), (201, 21)]
)
def test_top_count(n, k):
    assert stats.top_count(n) == k


def test_top_fraction_picks_lowest_validation_with_ties_by_trial():
    df = pd.DataFrame(
        {
            "task": "t",
            "variant": "V",
            "trial": range(11),
            "val_metric": [5, 1, 3, 1, 9, 8, 7, 6, 4, 2, 10.0],
        }
    )
    top = stats.top_fraction(df)
    assert top["trial"].tolist() == [1, 3]  # ceil(1.1) = 2; both have val 1, lower trial first


def _table(groups: dict[str, list[float]], task: str = "t") -> pd.DataFrame:
    rows = [
        {
            "task": task,
            "variant": v,
            "trial": i,
            "status": "complete",
            "val_metric": x,
            "test_metric": x,
            "n_params": 1.0,
        }
        for v, xs in groups.items()
        for i, x in enumerate(xs)
    ]
    return pd.DataFrame(rows)


def test_compare_to_baseline_verdicts_and_seeded_ci():
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 1.0, 40)
    groups = {
        "V": base.tolist(),
        "BAD": (base + 3.0).tolist(),
        "SAME": rng.normal(0.0, 1.0, 40).tolist(),
        "GOOD": (base - 3.0).tolist(),
        "ONE": [0.5],
    }
    long = stats.with_subsets(_table(groups))
    out = stats.compare_to_baseline(long, list(groups), "V", seed=3, n_resamples=500)
    allv = out[out["subset"] == stats.ALL].set_index("variant")
    assert allv.loc["BAD", "verdict"] == "worse"
    assert allv.loc["GOOD", "verdict"] == "better"
    assert allv.loc["SAME", "verdict"] == "n.s."
    assert allv.loc["ONE", "verdict"] == stats.TOO_FEW
    assert allv.loc["BAD", "diff"] == pytest.approx(3.0)
    assert allv.loc["BAD", "diff_lo"] <= 3.0 <= allv.loc["BAD", "diff_hi"]
    assert allv.loc["BAD", "p_holm"] >= allv.loc["BAD", "p"]
    again = stats.compare_to_baseline(long, list(groups), "V", seed=3, n_resamples=500)
    pd.testing.assert_frame_equal(out, again)
    # top 10 % of 40 = 4 trials per group, still enough for a test
    assert (out[out["subset"] == stats.TOP].set_index("variant").loc["BAD", "n"]) == 4


def test_verdict_uses_the_raw_p_like_the_paper_and_holm_is_reported_beside_it():
    """Five variants each slightly worse than V: raw p just under 0.05 is 'worse' (uncorrected,
    as the paper tested) while Holm over the family of five makes it 'n.s.'."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, 30)
    groups = {"V": base.tolist()}
    for k in range(5):
        groups[f"X{k}"] = (base + 0.45 + 0.002 * k).tolist()  # same spread, shifted
    out = stats.compare_to_baseline(
        stats.with_subsets(_table(groups)), list(groups), "V", n_resamples=100
    )
    allv = out[out["subset"] == stats.ALL].set_index("variant")
    x0 = allv.loc["X0"]
    assert x0["p"] < 0.05 < x0["p_holm"]
    assert x0["verdict"] == "worse" and x0["verdict_holm"] == "n.s."


def test_compare_without_baseline():
    long = stats.with_subsets(_table({"NP": [1.0, 2.0, 3.0]}))
    out = stats.compare_to_baseline(long, ["V", "NP"], "V")
    assert set(out["verdict"]) == {"no baseline"}


# ----------------------------------------------------------------------------- fANOVA


def test_tree_anova_on_hand_built_tree():
    # x0 < .5: 0;  x0 >= .5 and x1 < .5: 1;  x0 >= .5 and x1 >= .5: 3 (on the unit square)
    boxes = fanova.LeafBoxes(
        lo=np.array([[0, 0], [0.5, 0], [0.5, 0.5]]),
        hi=np.array([[0.5, 1], [1, 0.5], [1, 1]]),
        value=np.array([0, 1, 3.0]),
    )
    tree = fanova.TreeAnova(boxes, np.array([[0.0, 1], [0, 1]]))
    assert tree.mean == pytest.approx(1.0)
    assert tree.variance == pytest.approx(1.5)  # .5 * 1 + .25 * 0 + .25 * 4
    assert tree.marginal_variance((0,)) == pytest.approx(1.0)  # marginal 0 | 2
    assert tree.marginal_variance((1,)) == pytest.approx(0.25)  # marginal .5 | 1.5
    assert tree.marginal_variance((0, 1)) == pytest.approx(1.5)
    fa = fanova.Fanova(["a", "b"], tree.bounds, [tree])
    got = {r["effect"]: r["fraction"] for r in fa.importances()}
    assert got["a"] == pytest.approx(2 / 3) and got["b"] == pytest.approx(1 / 6)
    assert got["a x b"] == pytest.approx(1 / 6) and got["higher order"] == pytest.approx(0)
    np.testing.assert_allclose(tree.marginal_at((1,), [np.array([0.25, 0.75])]), [0.5, 1.5])


def test_fanova_matches_optuna_tree_code_on_the_same_trees():
    tree_mod = pytest.importorskip("optuna.importance._fanova._tree")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (150, 3))
    y = np.sin(5 * x[:, 0]) + x[:, 1] * x[:, 2]
    bounds = np.array([[0.0, 1]] * 3)
    fa = fanova.fit(x, y, bounds, ["a", "b", "c"], n_trees=3, seed=0)
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(
        n_estimators=3, max_features=0.7, max_depth=64, random_state=0, n_jobs=1
    ).fit(x, y)
    for est, ours in zip(forest.estimators_, fa.trees, strict=True):
        ref = tree_mod._FanovaTree(est.tree_, bounds)
        assert ours.variance == pytest.approx(ref.variance)
        for dims in [(0,), (1,), (2,), (0, 1), (1, 2)]:
            assert ours.marginal_variance(dims) == pytest.approx(
                ref.get_marginal_variance(np.array(dims))
            )


def test_fanova_learning_rate_only():
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [
            rng.uniform(-6, -2, 300),
            rng.uniform(1.3, 2.3, 300),
            rng.uniform(-2, 0, 300),
            rng.uniform(0, 1, 300),
        ]
    )
    y = (x[:, 0] + 3.5) ** 2
    bounds = np.array([[-6, -2], [1.3, 2.3], [-2, 0], [0, 1.0]])
    rows = fanova.fit(x, y, bounds, ["lr", "h", "m", "n"], n_trees=30, seed=1).importances()
    got = {r["effect"]: r["fraction"] for r in rows}
    # truth is 1; a forest of fully grown trees trying 70 % of the features per split leaves
    # ~10 % in spurious terms (automl/fanova gives 0.867 on these data with 100 trees)
    assert got["lr"] > 0.85
    assert max(got["h"], got["m"], got["n"]) < 0.03


def test_fanova_additive_split():
    # y = 2 x0 + x1 on the unit square: Var = 4/12 + 1/12 -> 0.8 and 0.2, no interaction
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (400, 3))
    y = 2 * x[:, 0] + x[:, 1]
    rows = fanova.fit(
        x, y, np.array([[0, 1.0]] * 3), ["a", "b", "c"], n_trees=30, seed=0
    ).importances()
    got = {r["effect"]: r["fraction"] for r in rows}
    assert got["a"] == pytest.approx(0.8, abs=0.08)
    assert got["b"] == pytest.approx(0.2, abs=0.06)
    assert got["c"] < 0.03 and got["a x b"] < 0.05


# ----------------------------------------------------------------------------- pages


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    write_study(tmp / "results", make_trials(trials=12, seed=0), "full")
    index = build("full", tmp / "results", tmp / "out", FAST)
    return index


def test_page_names_every_variant_and_task(full_report):
    text = full_report.read_text()
    variants, tasks = registry_orders()
    for name in variants + tasks:
        assert name in text
    assert "GENERATED STAND-IN" in text  # timit and iam_online are stand-ins in the fixture
    out = full_report.parent
    for name in ("significance", "importance", "progress", "paper_variants", "failures"):
        assert (out / "tables" / f"{name}.csv").is_file()
    assert len(list((out / "figures").glob("*.png"))) == 6 * len(tasks)  # with learning curves
    assert "data:image/png;base64," in text
    summary = (out / "summary.md").read_text()
    assert "stand-in" in summary and "Mann-Whitney" in summary


def test_page_tables_have_the_right_shape(full_report):
    variants, tasks = registry_orders()
    sig = pd.read_csv(full_report.parent / "tables" / "significance.csv")
    assert len(sig) == len(tasks) * 2 * (len(variants) - 1)
    imp = pd.read_csv(full_report.parent / "tables" / "importance.csv")
    pooled = imp[imp["group"] == "all"]
    for _, part in pooled.groupby("task"):
        assert len(part) == 11 and part["fraction"].sum() == pytest.approx(1.0)
    # 12 trials per variant >= 10: every variant analysed too
    assert set(imp["group"]) == {"all", *variants}


def test_partial_study_builds_and_says_so(tmp_path):
    variants, tasks = registry_orders()
    df = make_trials(trials=6, seed=1, tasks=tasks[:2], fail_rate=0.0)
    df.loc[
        (df["task"] == tasks[0]) & (df["variant"] == variants[1]) & (df["trial"] == 0),
        ["status", "error", "test_metric", "val_metric"],
    ] = ["failed", "loss is inf", np.nan, np.nan]
    df = df[~((df["task"] == tasks[0]) & (df["variant"] == variants[2]))]  # a missing pair
    df = df[~((df["task"] == tasks[1]) & (df["variant"] == variants[0]))]  # no baseline
    df = df[~((df["task"] == tasks[1]) & (df["variant"] == variants[3]) & (df["trial"] > 0))]
    write_study(
        tmp_path / "results", df, "partial", expected=10, tasks=tasks[:2], variants=variants
    )
    index = build("partial", tmp_path / "results", tmp_path / "out", FAST)
    text = index.read_text()
    assert f"{tasks[0]}/{variants[2]}" in text  # the missing pair is named
    assert "loss is inf" in text
    assert "too few trials" in text
    assert f"no complete trial of the baseline {variants[0]}" in text
    # 6 trials per variant < 10: said once for all groups with that n, not once per group
    assert text.count("too few trials (n = 6, needs &gt;= 10)") == 2  # once per task
    assert "still be running" in text  # 6 of 10 expected
    res = read_results("partial", tmp_path / "results")
    assert res.variants == variants and res.tasks == tasks[:2]


def test_empty_and_tableless_studies_build(tmp_path):
    write_study(
        tmp_path / "results",
        make_trials(trials=1).iloc[:0],
        "empty",
        expected=5,
        tasks=registry_orders()[1],
        variants=registry_orders()[0],
    )
    text = build("empty", tmp_path / "results", tmp_path / "out1", FAST).read_text()
    assert "no trials yet" in text
    (tmp_path / "results" / "fresh").mkdir()
    text = build("fresh", tmp_path / "results", tmp_path / "out2", FAST).read_text()
    assert "no trials.parquet" in text and "no config.yaml" in text


def test_unknown_study_names_the_known_ones(tmp_path):
    (tmp_path / "results" / "alpha").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="known studies: alpha"):
        build("beta", tmp_path / "results", tmp_path / "out")


def test_cli_command(tmp_path):
    from odyssey.commands import report

    write_study(tmp_path / "results", make_trials(trials=3, seed=2, tasks=["jsb_chorales"]), "cli")
    parser = argparse.ArgumentParser()
    report.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "report",
            "cli",
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(tmp_path / "out"),
            "--trees",
            "5",
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "out" / "index.html").is_file()


@pytest.mark.slow
def test_fanova_agrees_with_automl_fanova(monkeypatch):
    """Same data, the reference implementation (pip fanova; needs a shim for np.float)."""
    ff = pytest.importorskip("fanova.fanova")
    from ConfigSpace import ConfigurationSpace
    from ConfigSpace.hyperparameters import UniformFloatHyperparameter

    class NumpyWithFloat:  # fanova 2.0.19 uses np.float, removed in NumPy 1.24
        float = float

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(ff, "np", NumpyWithFloat())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, 4))
    y = 2 * x[:, 0] + x[:, 1] + np.sin(6 * x[:, 2]) * x[:, 0]
    bounds = np.array([[0, 1.0]] * 4)
    ours = fanova.fit(x, y, bounds, list("abcd"), n_trees=100, seed=1).importances()
    cs = ConfigurationSpace()
    for i in range(4):
        cs.add(UniformFloatHyperparameter(f"x{i}", 0.0, 1.0))
    ref = ff.fANOVA(x, y, config_space=cs, n_trees=100, seed=1)
    for i, row in enumerate(ours[:4]):
        expected = ref.quantify_importance((i,))[(i,)]["individual importance"]
        assert row["fraction"] == pytest.approx(expected, abs=0.04)
    pair = ref.quantify_importance((0, 2))[(0, 2)]["individual importance"]
    assert ours[5]["effect"] == "a x c" and ours[5]["fraction"] == pytest.approx(pair, abs=0.04)


@pytest.mark.slow
def test_full_paper_sized_fixture_builds(tmp_path):
    """3 tasks x 10 variants x 200 trials, 100 trees: the page builds (its time is measured by
    hand and reported, never asserted)."""
    write_study(tmp_path / "results", make_trials(trials=200, seed=0), "paper")
    html = build("paper", tmp_path / "results", tmp_path / "out").read_text()
    assert all(v in html for v in ("FGR", "CIFG", "timit", "jsb_chorales"))


def test_box_axis_cuts_far_outliers_and_counts_them():
    from matplotlib.figure import Figure

    from analysis.plots import _clip_outliers

    ax = Figure().subplots()
    data = [np.array([9.0, 9.5, 10.0, 10.5, 9.7, 9.9]), np.array([9.2, 9.8, 10.1, 24000.0, 800.0])]
    assert _clip_outliers(ax, data, np.arange(2)) == 2  # quartiles 9.6 and 10.3: fence 12.4
    assert ax.get_ylim()[1] == pytest.approx(12.4)
    calm = Figure().subplots()
    assert _clip_outliers(calm, [np.array([1.0, 2.0, 3.0, 4.0])], np.arange(1)) == 0

"""The report holds the paper's findings only against studies the paper could have run: one of
its three tasks, on the real, full corpus, under its protocol (the shipped `paper` preset). The
pure decision (`analysis.comparable`) against hand-written configs, then pages built from
comparable, demo-like and plug-in studies; plus the provenance of code versions and plug-ins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_report import make_trials, write_study  # noqa: E402

from analysis import comparable, provenance, stats  # noqa: E402
from analysis.build import Settings, build, time_trend  # noqa: E402
from analysis.comparable import TaskData, comparability, protocol_differences  # noqa: E402
from analysis.load import read_results  # noqa: E402

FAST = Settings(n_trees=4, n_resamples=50, fanova_resamples=0)
PRESETS = Path(__file__).resolve().parents[1] / "study" / "presets"
PAPER = comparable.paper_protocol()
DEMO_TRAINING = {"batch_size": 4, "max_epochs": 10, "patience": 4}
PLUGINS = {
    "variants": {
        "MGU": {
            "path": "mylab.cells:MGU",
            "distribution": "mylab",
            "version": "0.1",
            "sha256": "0123456789abcdef" * 4,
        }
    },
    "tasks": {
        "adding": {
            "path": "mylab.tasks:ADDING",
            "distribution": "mylab",
            "version": "0.1",
            "sha256": "fedcba9876543210" * 4,
        }
    },
}

# ----------------------------------------------------------------------------- the decision


def test_the_paper_protocol_is_the_paper_preset_as_the_study_resolves_it():
    from study import config

    cfg = config.resolve("paper")
    s, t = cfg.space, cfg.training
    assert PAPER["space"] == {
        "hidden_size": list(s.hidden_size),
        "learning_rate": list(s.learning_rate),
        "one_minus_momentum": list(s.one_minus_momentum),
        "input_noise": list(s.input_noise),
    }
    assert PAPER["training"] == {
        "batch_size": t.batch_size,
        "max_epochs": t.max_epochs,
        "patience": t.patience,
    }
    # and they are the paper's numbers (Greff et al. 2017: 20-200 blocks, 1e-6..1e-2, ...)
    assert PAPER["space"]["learning_rate"] == [1e-6, 1e-2]
    assert (t.batch_size, t.max_epochs, t.patience) == (1, 150, 15)


def test_the_paper_preset_differs_in_nothing():
    preset = yaml.safe_load((PRESETS / "paper.yaml").read_text())
    assert protocol_differences(preset, PAPER) == []


def test_the_demo_preset_differences_are_named_with_the_papers_values():
    demo = yaml.safe_load((PRESETS / "demo.yaml").read_text())
    assert protocol_differences(demo, PAPER) == [
        "hidden size 16..64 (paper 20..200)",
        "learning rate 1e-2..5e-2 (paper 1e-6..1e-2)",
        "1 - momentum 1e-2..0.2 (paper 1e-2..1)",
        "input noise 0..0.5 (paper 0..1)",
        "batch size 4 (paper 1)",
        "at most 10 epochs (paper 150)",
        "early stopping after 4 epochs without improvement (paper 15)",
    ]


def test_settings_a_config_does_not_record_are_differences():
    got = protocol_differences({}, PAPER)
    assert len(got) == 7 and all("not recorded" in g for g in got)
    assert "batch size not recorded (paper 1)" in got
    tpe = protocol_differences({**yaml.safe_load((PRESETS / "paper.yaml").read_text()),
                                "sampler": "tpe"}, PAPER)  # fmt: skip
    assert tpe == ["search by tpe (paper: random search)"]


@pytest.mark.parametrize(
    "task, data, differences, reasons",
    [
        ("jsb_chorales", TaskData("paper", False), [], []),
        ("timit", TaskData("paper", False), [], []),
        ("timit", TaskData("paper", True), [], ["generated stand-in corpus (paper: the real one)"]),
        (
            "jsb_chorales",
            TaskData("paper", None),
            [],
            ["whether the data is the real corpus is not recorded"],
        ),
        (
            "jsb_chorales",
            TaskData("paper", False, size=120),
            ["batch size 4 (paper 1)"],
            ["corpus cut to 120 training sequences (paper: all of it)", "batch size 4 (paper 1)"],
        ),
        (
            "adding",
            TaskData("plugin", None, "mylab.tasks:ADDING"),
            [],
            ["adding is your own task (a plug-in), not one of the paper's"],
        ),
        ("copy", TaskData("other", False), [], ["copy is not one of the paper's tasks"]),
        # a plug-in that reuses a paper task's name is still the user's task
        (
            "timit",
            TaskData("plugin", None, "mylab.tasks:TIMIT"),
            [],
            ["timit is your own task (a plug-in), not one of the paper's"],
        ),
    ],
)
def test_comparability(task, data, differences, reasons):
    got = comparability(task, data, differences)
    assert got.comparable == (not reasons) and list(got.reasons) == reasons
    assert got.text == ("comparable with the paper" if not reasons else "not comparable: "
                        + "; ".join(reasons))  # fmt: skip


def test_task_data_from_the_results_folder():
    plugin = comparable.task_data("adding", {"source": "plugin", "stand_in": None}, None, None, {})
    assert plugin.kind == "plugin" and plugin.label == "your task (plug-in)"
    named = comparable.task_data("adding", None, False, PLUGINS["tasks"]["adding"], {})
    assert named.label == "your task (plug-in mylab.tasks:ADDING)"
    assert comparable.task_data("copy", {}, True, None, {}).label == "not one of the paper's tasks"
    real = comparable.task_data("jsb_chorales", {"stand_in": False}, None, None, {})
    assert (real.kind, real.stand_in, real.label) == ("paper", False, "real corpus")
    cut = comparable.task_data(
        "jsb_chorales", {}, False, None, {"data": {"jsb_chorales": {"size": 120}}}
    )
    assert cut.size == 120 and cut.label == "real corpus, cut to 120 training sequences"
    assert comparable.task_data("timit", {}, True, None, {}).label == "generated stand-in"


# ----------------------------------------------------------------------------- pages


def _page(tmp_path: Path, name: str, **study) -> str:
    df = study.pop("df")
    write_study(tmp_path / "results", df, name, **study)
    return build(name, tmp_path / "results", tmp_path / name, FAST).read_text()


def test_a_demo_like_study_is_not_judged_against_the_paper(tmp_path):
    df = make_trials(trials=12, seed=4, tasks=["jsb_chorales"], variants=["V", "NFG", "FGR"])
    text = _page(tmp_path, "demo", df=df, training=DEMO_TRAINING)
    head = text[: text.index('id="overview"')]
    assert "Not comparable with the paper" in head
    assert "batch size 4 (paper 1); at most 10 epochs (paper 150)" in head
    body = text[text.index("</style>") :]
    for judged in ("real disagreement", "too few trials to tell", ">agrees<", ">differs<"):
        assert judged not in body, judged
    tables = tmp_path / "demo" / "tables"
    assert pd.read_csv(tables / "paper_variants.csv").empty
    assert pd.read_csv(tables / "paper_hyperparameters.csv").empty
    row = pd.read_csv(tables / "comparability.csv").iloc[0]
    assert (
        row["comparable"] == "no" and "batch size 4 (paper 1)" in row["what differs from the paper"]
    )
    sig = pd.read_csv(tables / "significance.csv")
    assert set(sig["comparable with the paper"].str[:3]) == {"no:"}
    summary = (tmp_path / "demo" / "summary.md").read_text()
    assert "jsb_chorales: real corpus; not comparable: batch size 4 (paper 1)" in summary


def test_a_comparable_study_is_judged_and_says_what_r_means(tmp_path):
    df = make_trials(trials=12, seed=4, tasks=["jsb_chorales"], variants=["V", "NFG", "FGR"])
    text = _page(tmp_path, "same", df=df)
    assert "Comparable with the paper: jsb_chorales." in text
    assert "Protocol: the paper&#39;s" in text
    assert "[R] recalled, not checked against the paper&#39;s text" in text
    verdicts = pd.read_csv(tmp_path / "same" / "tables" / "paper_variants.csv")
    ran = verdicts[verdicts["ours (all)"] != "not run"]
    assert set(ran["variant"]) == {"NFG", "FGR"} and set(verdicts["tag"]) == {"R"}
    assert "NOAF</td>" not in text  # a paper variant the study did not run gets no row
    claims = pd.read_csv(tmp_path / "same" / "tables" / "paper_hyperparameters.csv")
    assert len(claims) == 5 and set(claims["match"]) <= {"agrees", "differs"}


def test_generated_and_cut_corpora_are_not_comparable(tmp_path):
    df = make_trials(trials=12, seed=5, tasks=["timit", "jsb_chorales"], variants=["V", "NFG"])
    text = _page(tmp_path, "mixed", df=df, data={"jsb_chorales": {"size": 120}})
    assert "timit</b>: generated stand-in" in text
    assert "corpus cut to 120 training sequences (paper: all of it)" in text
    assert pd.read_csv(tmp_path / "mixed" / "tables" / "paper_variants.csv").empty


def test_a_plugin_task_is_the_users_and_its_origin_is_named(tmp_path):
    variants = ["V", "NFG", "MGU"]
    df = make_trials(trials=12, seed=6, tasks=["jsb_chorales", "adding"], variants=variants)
    text = _page(tmp_path, "plug", df=df, tasks=["jsb_chorales", "adding"], plugins=PLUGINS)
    assert "adding</b>: your task (plug-in mylab.tasks:ADDING)" in text
    assert "adding is your own task (a plug-in), not one of the paper&#39;s" in text
    assert "no (real)" not in text and "GENERATED STAND-IN" not in text
    for origin in ("mylab.cells:MGU", "mylab.tasks:ADDING", "0123456789ab", "fedcba987654"):
        assert origin in text, origin
    verdicts = pd.read_csv(tmp_path / "plug" / "tables" / "paper_variants.csv")
    assert set(verdicts["task"]) == {"jsb_chorales"}  # the paper's task still is judged
    sources = pd.read_csv(tmp_path / "plug" / "tables" / "data_sources.csv").set_index("task")
    assert sources.loc["adding", "data"] == "your task (plug-in mylab.tasks:ADDING)"


def test_data_json_with_and_without_plugins_reads(tmp_path):
    df = make_trials(trials=2, seed=7, tasks=["jsb_chorales"], variants=["V"])
    write_study(tmp_path / "results", df, "old")  # no data.json at all
    assert read_results("old", tmp_path / "results").plugins == {"variants": {}, "tasks": {}}
    write_study(tmp_path / "results", df, "new", plugins=PLUGINS)
    got = read_results("new", tmp_path / "results").plugins
    assert got["tasks"]["adding"]["path"] == "mylab.tasks:ADDING"
    doc = json.loads((tmp_path / "results" / "new" / "data.json").read_text())
    doc["plugins"] = ["not", "a", "mapping"]
    (tmp_path / "results" / "new" / "data.json").write_text(json.dumps(doc))
    res = read_results("new", tmp_path / "results")
    assert res.plugins == {"variants": {}, "tasks": {}}
    assert any("plugins" in n for n in res.notes)


# ----------------------------------------------------------------------------- provenance


def _versions(shift: float) -> pd.DataFrame:
    """Two code versions of 2 x 100 trials whose test metric is a function of the learning rate.
    As in a resumed study, the second version finishes the long trials (small learning rates,
    the worse ones), so the raw metrics of the versions differ though nothing changed; its
    metric is then moved by `shift` (the trials' spread is about 1)."""
    rng = np.random.default_rng(0)
    n = 200
    lr = 10 ** rng.uniform(-6, -2, n)
    quality = (np.log10(lr) + 2) ** 2 / 4 + 0.3 * rng.normal(size=n)
    late = rng.random(n) < np.where(np.log10(lr) < -4, 0.8, 0.2)  # long trials finish late
    return pd.DataFrame(
        dict(
            task="t",
            variant=np.where(np.arange(n) % 2, "V", "NFG"),
            code_version=np.where(late, "bbb2222", "aaa1111"),
            test_metric=quality + np.where(late, shift, 0.0),
            hp_learning_rate=lr,
            hp_hidden_size=rng.integers(20, 200, n),
            hp_momentum=1 - 10 ** rng.uniform(-2, 0, n),
            hp_input_noise=rng.uniform(0, 1, n),
        )
    )


def test_a_code_change_that_moved_the_numbers_is_found_and_one_that_did_not_is_not():
    same = _versions(0.0)
    raw = [g["test_metric"] for _, g in same.groupby("code_version")]
    assert mannwhitneyu(*raw).pvalue < 1e-6  # the raw metrics differ: selection alone
    assert "no sign that a code change moved the numbers" in provenance.version_effect(same)
    assert "DIFFER" in provenance.version_effect(_versions(1.0))
    assert "not tested" in provenance.version_effect(same.iloc[:25])


def test_code_versions_are_listed_with_their_trial_counts(tmp_path):
    df = make_trials(trials=12, seed=8, tasks=["jsb_chorales"], variants=["V", "NFG"])
    df.loc[df["trial"] >= 6, "code_version"] = "def5678"
    text = _page(tmp_path, "versions", df=df)
    table = provenance.code_versions(df, stats.complete(df)).set_index("code version")
    assert table["trials"].to_dict() == {"abc1234": 12, "def5678": 12}
    assert "Trials come from 2 code versions" in text and "is not tested" in text


def test_time_is_fitted_per_epoch_so_early_stopping_does_not_move_it():
    rng = np.random.default_rng(1)
    hidden = rng.integers(20, 200, 60)
    epochs = rng.integers(5, 150, 60)  # early stopping: any number of epochs
    done = pd.DataFrame(
        dict(
            task="t",
            hp_hidden_size=hidden,
            epochs=epochs,
            wall_s=0.01 * hidden**1.5 * epochs,
            code_version="abc1234",
        )
    )
    assert time_trend(done, ["t"])["exponent"].iloc[0] == pytest.approx(1.5)


def test_the_screenshot_tool_says_in_one_line_that_it_needs_pillow(tmp_path, monkeypatch):
    from analysis import screenshot

    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails
    with pytest.raises(SystemExit, match=r"^screenshot: .*needs Pillow \(PIL\): pip install"):
        screenshot.main([str(page), str(tmp_path / "png")])


def test_the_fanova_message_says_what_was_analysed_and_what_was_not(tmp_path):
    df = make_trials(trials=6, seed=9, tasks=["jsb_chorales"], variants=["V", "NFG"], fail_rate=0)
    text = _page(tmp_path, "six", df=df)
    assert "The pooled fANOVA (all variants) is below; per variant, not analysed: too few " in text
    assert "No fANOVA for" not in text
    small = make_trials(trials=4, seed=9, tasks=["jsb_chorales"], variants=["V"], fail_rate=0)
    text = _page(tmp_path, "four", df=small)
    assert "No fANOVA for jsb_chorales: too few trials (n = 4, needs &gt;= 10)." in text
    assert "The pooled fANOVA" not in text


def test_with_several_code_versions_the_trend_is_fitted_on_the_largest_one():
    rng = np.random.default_rng(2)
    hidden, epochs = rng.integers(20, 200, 90), rng.integers(5, 150, 90)
    version = np.where(np.arange(90) < 60, "new1111", "old2222")
    # the old code recorded a whole pack's time for small trials: no trend of its own
    wall = np.where(version == "new1111", 0.01 * hidden**1.5, 2.0) * epochs
    done = pd.DataFrame(
        dict(task="t", hp_hidden_size=hidden, epochs=epochs, wall_s=wall, code_version=version)
    )
    row = time_trend(done, ["t"]).iloc[0]
    assert row["exponent"] == pytest.approx(1.5) and row["code version"] == "new1111"
    assert row["trials"] == 60


def test_pairs_with_too_few_trials_are_named_in_few_words():
    from analysis.build import _pairs_text

    prog = pd.DataFrame(
        dict(
            task=["timit"] * 3 + ["jsb_chorales"] * 3,
            variant=["V", "NIG", "GRU"] * 2,
            state=["too few complete trials"] * 4 + ["done", "not in this study"],
        )
    )
    few = prog[prog["state"] == "too few complete trials"]
    assert _pairs_text(few, prog) == "timit (every variant); jsb_chorales: V"
    assert _pairs_text(few.iloc[:3], prog.iloc[:3]) == "every pair"


def test_trials_for_power_of_a_huge_effect_is_the_fewest_a_t_test_takes():
    from analysis import power

    # diverged trials give |g| of 6-10, where statsmodels' root search returns NaN
    assert power.n_for_power(9.5) == 2.0 and power.n_for_power(-6.2) == 2.0
    assert power.power(6.2, 2, 2) >= 0.8  # so 2 per group does reach 80 %
    assert power.n_for_power(0.5) == 64.0  # Cohen's table, unchanged


def test_a_small_effect_is_told_from_none_only_above_what_none_gets():
    """Momentum measured at 2 % (bootstrap 1.5-2.4 %, clear of the paper's 1 %): a real
    disagreement, unless a shuffled momentum (no effect at all) gets as much at this n."""
    from analysis import paper

    def rows(momentum: float) -> pd.DataFrame:
        mains = dict(learning_rate=0.7, hidden_size=0.1, momentum=momentum, input_noise=0.05)
        out = [dict(hp=k, kind="main", fraction=v) for k, v in mains.items()]
        out.append(dict(hp="learning_rate x hidden_size", kind="pairwise", fraction=0.05))
        return pd.DataFrame(out).assign(task="jsb_chorales", group="all")

    imp = rows(0.02)
    boot = pd.concat(rows(0.015 + 0.0005 * b).assign(resample=b) for b in range(20))

    def cause(nulls):
        out = paper.compare_hyperparameters(
            imp, boot, {}, ["jsb_chorales"], nulls={"jsb_chorales": np.asarray(nulls)}
        )
        return out[out["rule"].str.contains("momentum")].iloc[0]

    assert cause([])["cause"] == "real disagreement"
    assert cause([0.001, 0.004, 0.006])["cause"] == "real disagreement"  # none gets < 1 %
    shuffled = cause([0.01, 0.02, 0.03])  # none gets up to 3 % here: cannot tell
    assert (
        shuffled["cause"] == "too few trials"
        and "no effect at all gets up to" in shuffled["bootstrap"]
    )


def test_a_maximised_metric_is_better_higher_in_the_verdicts():
    """Counting's largest n is better higher: a variant that counts less far than V is worse,
    its means are shown as measured, and its best is its highest."""
    import pandas as pd

    from analysis import stats

    rows = [
        {
            "task": "counting",
            "variant": v,
            "trial": i,
            "status": "complete",
            "val_metric": m,
            "test_metric": m,
            "n_params": 10,
        }
        for v, ms in (("V", range(20, 30)), ("GRU", range(0, 10)))
        for i, m in enumerate(ms)
    ]
    trials = pd.DataFrame(rows)
    lower = stats.oriented(trials, ("counting",))
    assert (lower["test_metric"] <= 0).all()
    assert (
        stats.oriented(lower, ("counting",))["test_metric"].tolist()
        == trials["test_metric"].tolist()
    )
    long = stats.with_subsets(lower, 0.1)
    sig = stats.shown_as_measured(
        stats.compare_to_baseline(long, ["V", "GRU"], "V", n_resamples=50), ("counting",)
    )
    row = sig[(sig["subset"] == stats.ALL) & (sig["variant"] == "GRU")].iloc[0]
    assert row["verdict"] == "worse" and row["mean"] == 4.5 and row["mean_base"] == 24.5
    summary = stats.variant_summary(stats.oriented(long, ("counting",)), ("counting",))
    best = summary[(summary["subset"] == stats.ALL)].set_index("variant")["best"]
    assert best["V"] == 29 and best["GRU"] == 9
    top = summary[(summary["subset"] == stats.TOP)].set_index("variant")["best"]
    assert top["V"] == 29  # the top 10 % are the highest


def _with_extra(rng, name: str, values, metric) -> pd.DataFrame:
    """60 complete V trials on JSB Chorales, the paper's four drawn at random, a study's own
    dimension `name` recorded in hp_extra with `values`, and `metric` as both metrics."""
    import json

    from analysis.load import normalise

    n = len(values)
    df = pd.DataFrame(
        {
            "task": "jsb_chorales",
            "variant": "V",
            "status": "complete",
            "trial": range(n),
            "hp_hidden_size": rng.integers(20, 200, n),
            "hp_learning_rate": 10 ** rng.uniform(-6, -2, n),
            "hp_momentum": 1 - 10 ** rng.uniform(-2, 0, n),
            "hp_input_noise": rng.uniform(0, 1, n),
            "hp_extra": [json.dumps({name: v}) for v in values],
            "val_metric": metric,
            "test_metric": metric,
        }
    )
    return normalise(df)


def test_a_studys_own_dimension_enters_the_fanova():
    """A dimension of `space.extra` (recorded in hp_extra) is analysed beside the paper's four:
    when it alone decides the metric, it takes most of the variance."""
    from analysis import importance

    rng = np.random.default_rng(0)
    wd = 10 ** rng.uniform(-6, -2, 60)
    trials = _with_extra(rng, "weight_decay", wd.tolist(), np.log10(wd) + 10)
    assert np.allclose(trials["hp_weight_decay"], wd)
    extra = {"weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}
    got = importance.analyse(trials, ["jsb_chorales"], ["V"], {}, n_trees=16, extra=extra)
    pooled = got.importance[(got.importance["group"] == importance.POOLED)]
    main = pooled[pooled["kind"] == "main"].set_index("hp")["fraction"]
    assert main["weight_decay"] > 0.5 and main.drop("weight_decay").max() < main["weight_decay"] / 5


def test_a_categorical_dimension_enters_the_fanova_with_equal_weight_per_choice():
    """A categorical dimension of `space.extra` is analysed as the index of its choice: when it
    alone decides the metric it takes most of the variance; a value that is not a choice makes
    the group unanalysable (named), never a silent guess."""
    from analysis import importance

    rng = np.random.default_rng(1)
    act = rng.choice(["tanh", "relu", "sigmoid"], 60).tolist()
    effect = {"tanh": 8.5, "relu": 9.5, "sigmoid": 12.0}
    trials = _with_extra(rng, "activation", act, [effect[a] for a in act])
    extra = {"activation": {"type": "categorical", "choices": ["tanh", "relu", "sigmoid"]}}
    x = importance.encode(trials, importance.extra_dimensions(extra)[0])
    assert x["activation"].tolist() == [["tanh", "relu", "sigmoid"].index(a) for a in act]
    got = importance.analyse(trials, ["jsb_chorales"], ["V"], {}, n_trees=16, extra=extra)
    pooled = got.importance[(got.importance["group"] == importance.POOLED)]
    main = pooled[pooled["kind"] == "main"].set_index("hp")["fraction"]
    assert main["activation"] > 0.7 and main.drop("activation").max() < 0.05
    trials.loc[0, "hp_activation"] = "gelu"  # recorded, but not one of the configured choices
    got = importance.analyse(trials, ["jsb_chorales"], ["V"], {}, n_trees=4, extra=extra)
    assert "missing or out of range" in got.skipped["reason"].iloc[0]

"""Variants declared in a study file (`variants: [V, {name: CIFG-NP, ...}]`): validated against the
spec's flags, recorded in config.yaml, shipped to the workers as flags, trained and named."""

from __future__ import annotations

import pytest

import variants
from study import config, plan, results, runner
from study.scheduler import InlineExecutor
from study.worker import variant_of

SPEC = """preset: smoke
variants:
  - V
  - {name: CIFG-NP, coupled_input_forget: true, peepholes: false}
"""


def _resolve(tmp_path, text=SPEC, **over):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    over = {"results": str(tmp_path / "res"), **over}  # data: the session's (conftest.py)
    return config.resolve(str(path), over)


def test_declared_variant_is_validated_and_round_trips(tmp_path):
    cfg = _resolve(tmp_path)
    assert cfg.variants == ("V", "CIFG-NP")
    assert dict(cfg.custom_variants) == {
        "CIFG-NP": {"peepholes": False, "coupled_input_forget": True}
    }
    saved = tmp_path / "config.yaml"
    saved.write_text(config.dump(cfg))
    again = config.load_saved(saved)
    assert again.variants == cfg.variants and again.custom_variants == cfg.custom_variants
    assert again.fingerprint() == cfg.fingerprint()
    assert "custom_variants" in cfg.fingerprint()  # what the name means is part of the study


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{name: X, peephole: false}", "unknown lstm flag(s) 'peephole'; valid: input_gate"),
        ("{name: V, peepholes: false}", "variant name 'V' is the registry's"),
        ("{peepholes: false}", "a declared variant needs a name"),
        ("{name: X, peepholes: 3}", "variant flag peepholes must be true or false"),
        (
            "{name: X, input_gate: false, coupled_input_forget: true}",
            "coupled_input_forget needs both an input gate and a forget gate",
        ),
        ("{name: X, kind: xyz}", "unknown cell kind 'xyz'; known: lstm, gru"),
    ],
)
def test_bad_declarations_are_named(tmp_path, item, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _resolve(tmp_path, f"preset: smoke\nvariants: [V, {item}]\n")


def test_jobs_carry_the_flags_and_workers_build_them(tmp_path):
    from study.record import Pending

    cfg = _resolve(tmp_path)
    params = {"hidden_size": 5, "learning_rate": 0.01, "one_minus_momentum": 0.5, "input_noise": 0}
    job = plan.trial_job(cfg, Pending("jsb_chorales", "CIFG-NP", 0, params), "/data", "cpu")
    spec = variant_of(job)
    assert spec == variants.lstm(coupled_input_forget=True, peepholes=False)
    assert (
        variant_of(plan.trial_job(cfg, Pending("jsb_chorales", "V", 0, params), "/d", "cpu")) == "V"
    )


def test_a_study_trains_and_records_a_declared_variant(tmp_path):
    cfg = _resolve(tmp_path, trials=2)
    counts = runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(), live=False)
    assert counts["complete"] + counts["failed"] == 4
    df = results.read_trials(cfg.study_dir)
    assert sorted(set(df["variant"])) == ["CIFG-NP", "V"]
    for row in df[df["variant"] == "CIFG-NP"].itertuples():  # 3 weighted blocks, no peepholes
        n = row.hp_hidden_size
        assert row.n_params == 3 * n * (88 + n) + 3 * n + 88 * n + 88
    # the report names it from what the study recorded, after the registry's variants
    from analysis.load import read_results

    assert list(results.read_data(cfg.study_dir).variants)[-1] == "CIFG-NP"
    res = read_results(cfg.name, cfg.results)
    assert res.variants == ["V", "CIFG-NP"] and not any("CIFG-NP" in n for n in res.notes)
    assert res.names.variants["CIFG-NP"] == results.declared_title(cfg.custom_variants["CIFG-NP"])

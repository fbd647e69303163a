"""Study config: presets resolve and validate; bad settings fail with messages naming valid
choices; a study refuses a config that changes what its trials mean."""

from __future__ import annotations

import logging

import pytest

import tasks
import variants
from study import config, runner

# the paper's tasks and variants (the registries' first entries; `all` adds the synthetic tasks
# and the ungated baselines)
PAPER_TASKS = ("timit", "iam_online", "jsb_chorales")
PAPER_VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR", "GRU")


@pytest.mark.parametrize("name", config.PRESETS)
def test_presets_resolve(name):
    cfg = config.resolve(name)
    assert cfg.name == name
    assert set(cfg.tasks) <= set(tasks.TASKS) and set(cfg.variants) <= set(variants.VARIANTS)
    # round trip through the saved YAML gives the same config
    assert config.from_dict(__import__("yaml").safe_load(config.dump(cfg))) == cfg


def test_paper_preset_is_the_paper_protocol():
    cfg = config.resolve("paper")
    assert cfg.trials == 200 and cfg.sampler == "random"
    assert cfg.tasks == PAPER_TASKS and cfg.variants == PAPER_VARIANTS
    assert (cfg.training.batch_size, cfg.training.max_epochs, cfg.training.patience) == (1, 150, 15)
    assert cfg.training.layers == 1 and not cfg.training.residual  # one layer, as the paper
    s = cfg.space
    assert s.hidden_size == (20, 200) and s.learning_rate == (1e-6, 1e-2)
    assert s.one_minus_momentum == (0.01, 1.0) and s.input_noise == (0.0, 1.0)
    assert s.hidden_size_meaning == "per_direction"


def test_demo_runs_the_papers_variants_on_the_papers_tasks():
    cfg = config.resolve("demo")
    assert cfg.tasks == PAPER_TASKS and cfg.variants == PAPER_VARIANTS
    assert cfg.report


def test_file_then_flags_override(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        "preset: smoke\ntrials: 7\ntraining: {max_epochs: 9}\nspace: {input_noise: [0, 0.5]}\n"
    )
    cfg = config.resolve(str(f), {"trials": 11, "variants": ["GRU"], "seed": None})
    assert cfg.name == "mine" and cfg.trials == 11 and cfg.variants == ("GRU",)
    assert cfg.training.max_epochs == 9 and cfg.training.patience == 2  # rest from smoke
    assert cfg.space.input_noise == (0.0, 0.5) and cfg.space.hidden_size == (4, 12)
    assert cfg.seed == 0  # None means "flag not given"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"variants": ["V", "CIFx"]}, ["unknown variant 'CIFx'", "V, NIG, NFG"]),
        ({"tasks": ["timmit"]}, ["unknown task 'timmit'", "timit, iam_online, jsb_chorales"]),
        ({"device": "tpu"}, ["unknown device 'tpu'", "cpu, cuda, auto"]),
        ({"trials": 0}, ["trials must be an integer >= 1"]),
        ({"workers": -1}, ["workers must be an integer >= 1"]),
        ({"seed": -3}, ["seed must be an integer >= 0, got -3"]),
        ({"sampler": "grid"}, ["unknown sampler 'grid'", "random, tpe"]),
        ({"name": "a/b"}, ["folder name"]),
        # settings of the wrong type (as a YAML spec can give them): one line, no traceback
        ({"training": 3}, ["training must be a mapping of settings, got 3"]),
        ({"variants": 5}, ["variants must be a list or a comma-separated string", "V, NIG"]),
        ({"data": {"jsb_chorales": 5}}, ["data.jsb_chorales must be a mapping"]),
        ({"storage": 7}, ["storage must be a database URL like sqlite:///"]),
        ({"data": {"jsb_chorales": {"path": 5}}}, ["data.jsb_chorales.path must be a folder"]),
        ({"data": {"jsb_chorales": {"seed": -1}}}, ["data.jsb_chorales.seed must be an integer"]),
        ({"gpus_per_job": "abc"}, ["gpus_per_job must be a number in (0, 1], got 'abc'"]),
        ({"report": "no"}, ["report must be true or false, got 'no'"]),
        ({"space": {"hidden_size": [4.7, 12]}}, ["space.hidden_size must hold two integers"]),
    ],
)
def test_bad_flags(override, words):
    with pytest.raises(ValueError) as e:
        config.resolve("smoke", override)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "preset: smoke\nspace: {learning_rate: [1.0e-2, 1.0e-6]}\n",
            ["space.learning_rate", "low <= high"],
        ),
        ("preset: smoke\nspace: {hidden_size: 50}\n", ["[low, high] pair"]),
        ("preset: smoke\nspace: {hidden_size_meaning: both}\n", ["per_direction, total"]),
        (
            "preset: smoke\nspace: {momentum: [0, 1]}\n",
            ["unknown space setting(s) 'momentum'", "one_minus_momentum"],
        ),
        ("preset: smoke\ntraining: {patience: 0}\n", ["training.patience"]),
        (
            "preset: smoke\ntrainig: {patience: 3}\n",
            ["unknown study setting(s) 'trainig'", "training"],
        ),
        (  # a misspelt key explains the rest: named first, not the variants it hides
            "preset: smoke\nvaraints: [V]\nvariants: [bogus]\n",
            ["unknown study setting(s) 'varaints'", "variants"],
        ),
        ("preset: smoke\nname: a/b\n", ["study name", "without '/'"]),
        ("preset: smoke\ndata: {jsb_chorales: {source: synthetic}}\n", ["valid: real"]),
        ("preset: smoke\ndata: {jsb: {size: 3}}\n", ["unknown task 'jsb'"]),
        ("preset: tiny\n", ["unknown preset 'tiny'", "demo, smoke, paper"]),
        ("- just\n- a list\n", ["expected a mapping"]),
    ],
)
def test_bad_files(tmp_path, text, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        config.resolve(str(f))
    for w in words:
        assert w in str(e.value)


def test_unknown_spec_names_presets():
    with pytest.raises(ValueError, match="neither a preset .demo, smoke, paper"):
        config.resolve("smok")


def test_existing_study_refuses_a_different_meaning(tmp_path):
    base = config.resolve("smoke", {"results": str(tmp_path)})
    base.study_dir.mkdir(parents=True)
    runner.check_config(base)
    runner.save_config(base)
    assert (base.study_dir / "config.yaml").is_file()
    # allowed: more trials, more variants and tasks, other workers / device / stores
    runner.check_config(
        config.resolve(
            "smoke",
            {
                "results": str(tmp_path),
                "trials": 10,
                "variants": ["V", "NP", "GRU"],
                "workers": 1,
                "tasks": ["jsb_chorales", "timit"],
            },
        )
    )
    for override, key in [
        ({"seed": 1}, "seed"),
        ({"space": {"learning_rate": [1e-5, 1e-1]}}, "space.learning_rate"),
        ({"training": {"max_epochs": 4}}, "training.max_epochs"),
        ({"sampler": "tpe"}, "sampler"),
        ({"data": {"jsb_chorales": {"size": 13}}}, "data.jsb_chorales.size"),
    ]:
        raw, _ = config.raw_config("smoke")
        raw = config._merge(raw, {"name": "smoke", "results": str(tmp_path), **override})
        with pytest.raises(ValueError, match=f"different {key}.*--study NEW_NAME"):
            runner.check_config(config.from_dict(raw))


def _run_args(*argv: str) -> dict:
    from odyssey.cli import build_parser
    from odyssey.commands.run import OVERRIDES

    args = build_parser().parse_args(["run", *argv])
    return args.spec, {k: getattr(args, k) for k in OVERRIDES}


def test_training_flags_set_the_training_section(tmp_path):
    spec, over = _run_args(
        "smoke", "--batch-size", "8", "--max-epochs", "5", "--patience", "3", "--pack", "4"
    )
    t = config.resolve(spec, over).training
    assert (t.batch_size, t.max_epochs, t.patience, t.pack) == (8, 5, 3, 4)
    # not given: the preset's values, and pack chosen per device
    t = config.resolve(*_run_args("smoke", "--patience", "1")).training
    assert (t.batch_size, t.max_epochs, t.patience, t.pack) == (4, 3, 1, None)
    # a flag overrides one key of a file's training section and keeps the others
    f = tmp_path / "mine.yaml"
    f.write_text("preset: smoke\ntraining: {max_epochs: 9, batch_size: 2}\n")
    t = config.resolve(*_run_args(str(f), "--batch-size", "16")).training
    assert (t.batch_size, t.max_epochs, t.patience) == (16, 9, 2)


def test_errors_name_where_the_bad_value_came_from(tmp_path):
    def error(spec, *argv):
        with pytest.raises(ValueError) as e:
            config.resolve(*_run_args(spec, *argv))
        return str(e.value)

    assert error("smoke", "--batch-size", "0").endswith(
        "training.batch_size must be an integer >= 1, got 0 (from --batch-size)"
    )
    assert error("smoke", "--pack", "-2").endswith("(from --pack)")
    assert error("smoke", "--trials", "0").endswith("(from --trials)")
    f = tmp_path / "mine.yaml"
    f.write_text("preset: smoke\ntraining: {patience: 0}\ndata: {jsb_chorales: {path: /no/such}}\n")
    assert error(str(f)).endswith(f"(in {f}, key training.patience)")
    # the file's bad patience is overridden by a flag: then the data path is what is wrong
    msg = error(str(f), "--patience", "3")
    assert (
        msg
        == f"data.jsb_chorales.path /no/such does not exist (in {f}, key data.jsb_chorales.path)"
    )
    assert "--path" not in msg
    # a bad value a preset gives (the file names the preset, sets nothing wrong itself)
    g = tmp_path / "fine.yaml"
    g.write_text("preset: smoke\nvariants: [V]\n")
    import unittest.mock

    bad_smoke = config.preset_text("smoke").replace("max_epochs: 3", "max_epochs: 0")
    with unittest.mock.patch.object(config, "preset_text", lambda name: bad_smoke):
        assert error(str(g)).endswith("(from preset smoke)")
        assert config.resolve(*_run_args(str(g), "--max-epochs", "2")).training.max_epochs == 2


def test_gpus_per_trial_is_read_as_gpus_per_job_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="study.config"):
        cfg = config.resolve("smoke", {"gpus_per_trial": 0.5})
    assert cfg.gpus_per_job == 0.5
    assert [r.getMessage() for r in caplog.records if "gpus_per_trial" in r.getMessage()] == [
        "config key gpus_per_trial is deprecated: it is the GPU fraction of a job (one trial or "
        "a pack of trials); read as gpus_per_job, the key to use"
    ]
    assert "gpus_per_trial" not in cfg.to_dict()

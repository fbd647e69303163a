"""Plug-ins: a user's cell and task declared by import path, by a plug-in module or by an
installed entry point; their identity in the study's fingerprint; a broken one refused before
anything is written; and (integration) a study of the example plug-ins on real Ray workers when
the plug-in exists only beside the study file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
import variants
from study import config, plugins, results
from study.config_schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"


@pytest.fixture
def mylab(tmp_path, monkeypatch):
    """A copy of the example plug-in package in a folder of its own (importable only from
    there), forgotten by the registries and sys.modules afterwards."""
    folder = tmp_path / "lab"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    before_v, before_t = dict(variants.VARIANTS), dict(tasks.TASKS)
    yield folder
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[name]
    for registry, before in ((variants.VARIANTS, before_v), (tasks.TASKS, before_t)):
        for name in set(registry) - set(before):
            del registry[name]
    for origins, before in ((variants.ORIGINS, before_v), (tasks.ORIGINS, before_t)):
        for name in set(origins) - set(before):
            del origins[name]
    for kind in [k for k in variants.CELLS if k.startswith("mylab")]:
        del variants.CELLS[kind]
    sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]


def _study_file(folder: Path, body: str) -> str:
    path = folder / "mine.yaml"
    path.write_text(body)
    return str(path)


def test_import_paths_in_a_study_file_register_the_plugins(mylab, smoke_data):
    spec = _study_file(
        mylab,
        "preset: smoke\n"
        "tasks: [jsb_chorales, {name: recall, task: 'mylab.tasks:RECALL'}]\n"
        "variants: [V, {name: MGU, cell: 'mylab.cells:MGU'}]\n",
    )
    cfg = config.resolve(spec)
    assert cfg.variants == ("V", "MGU") and cfg.tasks == ("jsb_chorales", "recall")
    assert cfg.custom_variants == {"MGU": {"kind": "mylab.cells:MGU"}}
    assert cfg.custom_tasks == {"recall": "mylab.tasks:RECALL"}
    assert cfg.plugin_dirs == (str(mylab.resolve()),)
    ident = cfg.plugin_identity["mylab.cells:MGU"]
    assert ident["version"] == "0.1.0" and len(ident["sha256"]) == 64
    assert variants.ORIGINS["MGU"] == "mylab.cells:MGU"
    assert tasks.ORIGINS["recall"] == "mylab.tasks:RECALL"
    assert (
        cfg.fingerprint()["plugins"]["mylab.tasks:RECALL"]["sha256"]
        == (cfg.plugin_identity["mylab.tasks:RECALL"]["sha256"])
    )
    # the saved config reads back (status, report, doctor) with the same identity
    again = config.from_dict(cfg.to_dict())
    assert again.plugin_identity == cfg.plugin_identity and again.variants == cfg.variants


def test_a_plugin_module_offers_its_variants_and_tasks_by_name(mylab):
    spec = _study_file(
        mylab, "preset: smoke\nplugins: [mylab]\ntasks: [recall]\nvariants: [GRU, MGU]\n"
    )
    cfg = config.resolve(spec)
    assert cfg.custom_variants == {"MGU": {"kind": "mylab:VARIANTS.MGU"}}
    assert cfg.custom_tasks == {"recall": "mylab:TASKS.recall"}


def test_entry_points_make_installed_plugins_known(mylab, monkeypatch):
    # an installed distribution, as pip would leave it: a dist-info folder with entry points
    dist = mylab / "mylab-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1.0\n")
    (dist / "top_level.txt").write_text("mylab\n")
    (dist / "entry_points.txt").write_text(
        "[lstm_odyssey.variants]\nMGU = mylab.cells:MGU\n\n"
        "[lstm_odyssey.tasks]\nrecall = mylab.tasks:RECALL\n"
    )
    monkeypatch.syspath_prepend(str(mylab))
    found, errors = plugins.register_installed()
    assert not errors
    assert {(p.kind, p.name, p.origin) for p in found} == {
        ("cell", "MGU", "entry point"),
        ("task", "recall", "entry point"),
    }
    assert {p.distribution for p in found} == {"mylab"}
    from odyssey.commands.variants import rows

    row = next(r for r in rows() if r["name"] == "MGU")
    assert row["origin"] == "mylab.cells:MGU" and row["params"] > 0
    cfg = config.from_dict({"name": "s", "tasks": ["recall"], "variants": ["V", "MGU"]})
    assert cfg.custom_variants == {"MGU": {"kind": "mylab.cells:MGU"}}


@pytest.mark.parametrize(
    "item,message",
    [
        ("{name: M, cell: 'nosuch.cells:M'}", "cannot import nosuch.cells"),
        ("{name: M, cell: 'mylab.cells:Nope'}", "has no attribute 'Nope'"),
        ("{name: M, cell: 'mylab.cells'}", "expected an import path like"),
        ("{name: M, cell: 'mylab.tasks:RECALL'}", "expected a cell class, got Task"),
        ("{name: GRU, cell: 'mylab.cells:MGU'}", "variant name 'GRU' is the registry's"),
        ("{name: M, cell: 'mylab.cells:MGU', wide: true}", "unknown mylab.cells:MGU flag"),
    ],
)
def test_bad_plugin_declarations_are_one_line_errors(mylab, item, message):
    spec = _study_file(mylab, f"preset: smoke\nvariants: [V, {item}]\n")
    with pytest.raises(ConfigError, match=message) as e:
        config.resolve(spec)
    assert "\n" not in str(e.value) and "key variants" in str(e.value)


def test_a_task_plugin_named_like_a_builtin_is_refused(mylab):
    spec = _study_file(mylab, "preset: smoke\ntasks: [{name: timit, task: 'mylab.tasks:RECALL'}]\n")
    with pytest.raises(ConfigError, match="task name 'timit' is a built-in task's"):
        config.resolve(spec)


def test_a_changed_plugin_cannot_continue_the_study(mylab, smoke_data, tmp_path):
    from study.setup import check_config, save_config

    body = (
        "preset: smoke\ntasks: [{name: recall, task: 'mylab.tasks:RECALL'}]\n"
        f"variants: [V, {{name: MGU, cell: 'mylab.cells:MGU'}}]\nresults: {tmp_path / 'res'}\n"
        "data: {recall: {size: 20}}\n"
    )
    cfg = config.resolve(_study_file(mylab, body))
    cfg.study_dir.mkdir(parents=True)
    save_config(cfg)
    check_config(config.resolve(_study_file(mylab, body)))  # unchanged: fine
    cells = mylab / "mylab" / "cells.py"
    cells.write_text(cells.read_text().replace("(1 - f) * h + f * cand", "f * cand"))
    with pytest.raises(ValueError, match=r"plugins\.mylab\.cells:MGU\.sha256"):
        check_config(config.resolve(_study_file(mylab, body)))


def test_a_plugin_failing_the_contract_is_refused_before_anything_is_written(mylab, tmp_path):
    cells = mylab / "mylab" / "cells.py"
    # the gate of trial k now reads the whole pack's state: trials are no longer independent
    cells.write_text(cells.read_text().replace("h = (1 - f) * h", "h = (1 - f) * h.mean(0)"))
    res = tmp_path / "res"
    spec = _study_file(
        mylab,
        f"preset: smoke\ntasks: [jsb_chorales]\nresults: {res}\n"
        "variants: [V, {name: MGU, cell: 'mylab.cells:MGU'}]\n",
    )
    from odyssey.cli import main

    assert main(["run", spec, "--no-live"]) == 2
    assert not res.exists()


def test_check_commands_pass_the_example_and_name_a_failure(mylab, capsys):
    from odyssey.cli import main

    assert main(["check", "cell", str(mylab / "mylab" / "cells.py") + ":MGU"]) == 0
    assert "all 11 checks passed" in capsys.readouterr().out
    assert main(["check", "task", str(mylab / "mylab" / "tasks.py") + ":RECALL"]) == 0
    tasks_py = mylab / "mylab" / "tasks.py"
    tasks_py.write_text(  # the same task, its loss now a mean over the batch's sequences
        tasks_py.read_text()
        + "\n\ndef mean(logits, batch):\n    s, n = summed(sequence_loss)(logits, batch)\n"
        "    return s / n, n\n\n\nimport dataclasses\n\n"
        "RECALL = dataclasses.replace(RECALL, loss=mean)\n"
    )
    for name in [m for m in sys.modules if m.startswith("mylab")]:
        del sys.modules[name]
    assert main(["check", "task", str(tasks_py) + ":RECALL"]) == 1
    out = capsys.readouterr().out
    assert "task mylab.tasks:RECALL: check 'loss a sum' failed: two copies" in out


@pytest.mark.integration
def test_plugins_beside_the_study_file_run_on_ray_workers(mylab, tmp_path):
    """The example study on a local Ray instance, from a folder where `mylab` is not importable
    except through the study file's folder: workers get it from the job; then status, doctor and
    the report of the plug-in study."""
    res = tmp_path / "res"
    spec = _study_file(
        mylab,
        (EXAMPLE / "study.yaml").read_text()
        + f"results: {res}\nreport: true\ntrials: 1\nworkers: 2\n"
        "training: {batch_size: 4, max_epochs: 2, patience: 2}\n"
        "data: {jsb_chorales: {size: 12}, recall: {size: 24}}\n",
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    cli = [sys.executable, "-m", "odyssey"]
    done = subprocess.run(
        [*cli, "run", spec, "--no-live"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = results.read_trials(res / "mine")
    assert sorted(set(table["variant"])) == ["GRU", "MGU", "V"]
    assert sorted(set(table["task"])) == ["jsb_chorales", "recall"]
    assert (table["status"] == "complete").all()
    data = json.loads((res / "mine" / results.DATA_FILE).read_text())
    assert data["plugins"]["variants"]["MGU"]["path"] == "mylab.cells:MGU"
    assert data["tasks"]["recall"]["source"] == "plugin"
    for command in (["status", "mine"], ["doctor", "mine", "--check"]):
        done = subprocess.run(
            [*cli, *command, "--results", str(res)],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "reports" / "mine" / "index.html").read_text()
    assert "MGU" in page and "recall" in page


def test_a_studys_own_dimension_reaches_the_cell_that_asks_for_it():
    """A cell with `set_hyperparameters(slot, hparams)` gets each trial's hyperparameters,
    its own search dimensions included, when the trial takes its slot."""
    import numpy as np
    import torch
    from torch import nn

    from study.config import TrainConfig
    from study.train import train

    class Asks(nn.Module):  # h = tanh(W x + R h'), asking for the trial's "gain"
        seen: list = []

        def __init__(self, spec, input_size, hidden_size, trials=1, generator=None):
            super().__init__()
            self.W = nn.Parameter(
                0.1 * torch.randn(trials, hidden_size, input_size, generator=generator)
            )
            self.R = nn.Parameter(
                0.1 * torch.randn(trials, hidden_size, hidden_size, generator=generator)
            )

        def hidden_blocks(self):
            return {"W": (1, None), "R": (1, 1)}

        def set_hyperparameters(self, slot, hparams):
            Asks.seen.append((slot, hparams["gain"]))

        def scan(self, x, steps=None, need_cells=True):
            h, out = x.new_zeros(x.shape[0], x.shape[2], self.R.shape[1]), []
            for x_t in x.unbind(1):
                h = torch.tanh(
                    torch.bmm(x_t, self.W.transpose(1, 2)) + torch.bmm(h, self.R.transpose(1, 2))
                )
                out.append(h)
            return torch.stack(out, 1), None

    variants.register_cell("tests.test_plugins:Asks", Asks)
    task = tasks.get("jsb_chorales")
    hp = {"hidden_size": 4, "learning_rate": 1e-3, "momentum": 0.5, "input_noise": 0.0}
    settings = TrainConfig(max_epochs=1, patience=1, batch_size=4)
    spec = variants.CellSpec("tests.test_plugins:Asks")
    splits = task.tiny(np.random.default_rng(0))
    result = train(task, spec, {**hp, "gain": 0.25}, splits, settings, torch.Generator())
    assert result["status"] == "complete" and (0, 0.25) in Asks.seen

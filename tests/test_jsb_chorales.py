"""JSB Chorales: the shipped data, the safe reader, and the NLL metric by hand."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks
from tasks import jsb_chorales as jsb
from tasks.base import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "jsb_chorales.json").is_file(), reason=f"the original files are not at {SHARED}"
)


def test_bundled_split_matches_the_published_counts():
    data = jsb.bundled()
    counts = {s: (len(data[s]), sum(len(c) for c in data[s])) for s in tasks.SPLITS}
    assert counts == {"train": (229, 13807), "valid": (76, 4602), "test": (77, 4725)}


@needs_shared
def test_bundled_equals_the_original_json_and_pickle():
    original = json.loads((SHARED / "jsb_chorales.json").read_text())
    assert jsb.bundled() == original
    assert jsb.read_file(SHARED / "jsb_chorales.pickle") == original


def test_hostile_pickle_is_refused_and_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps({"train": [Evil()], "valid": [], "test": []}))
    with pytest.raises(DataError, match=r"refus.*posix.system|refus.*os.system|refus"):
        jsb.read_file(path)
    assert not marker.exists()


def test_garbled_inputs_name_the_file(tmp_path):
    bad_json = tmp_path / "x.json"
    bad_json.write_text("{not json")
    with pytest.raises(DataError, match="x.json: not valid JSON"):
        jsb.read_file(bad_json)
    wrong = tmp_path / "y.json"
    wrong.write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="y.json: expected a dict with keys train, valid, test"):
        jsb.read_file(wrong)
    high = tmp_path / "z.json"
    high.write_text(json.dumps({s: [[[60], [200]]] for s in tasks.SPLITS}))
    with pytest.raises(DataError, match=r"pitches \[200\] outside MIDI 21-108"):
        jsb.read_file(high)
    trunc = tmp_path / "t.pickle"
    trunc.write_bytes(pickle.dumps({"train": [[[60]]]})[:-5])
    with pytest.raises(DataError, match="t.pickle"):
        jsb.read_file(trunc)


def test_next_step_pairs_and_piano_roll():
    seqs = jsb.to_sequences([[[21, 108], [60], []]], "s")
    x, y = seqs.inputs[0], seqs.targets[0]
    assert x.shape == y.shape == (2, 88)
    assert x[0, 0] == 1 and x[0, 87] == 1 and x[0].sum() == 2
    np.testing.assert_array_equal(y[0], x[1])
    assert y[1].sum() == 0


def test_nll_of_constant_half_is_88_ln2_per_step():
    seqs = jsb.to_sequences([[[60, 64], [62], [65, 67, 69]], [[50], [52]]], "s")
    batch = jsb.collate(list(zip(seqs.inputs, seqs.targets, strict=True)))
    logits = torch.zeros(batch.x.shape[0], 2, 88)  # sigmoid(0) = 0.5 everywhere
    total, count = jsb.errors(logits, batch)["nll"]
    assert count == 3  # 2 + 1 predicted steps; padding not counted
    assert total / count == pytest.approx(88 * math.log(2), rel=1e-6)
    loss, n = jsb.loss(logits, batch)
    assert n == 2 and float(loss) == pytest.approx(3 * 88 * math.log(2), rel=1e-6)


def test_nll_by_hand():
    """One step, two keys on: p = 0.9 for the on keys, 0.2 elsewhere."""
    seqs = jsb.to_sequences([[[60], [60, 72]]], "s")
    batch = jsb.collate(list(zip(seqs.inputs, seqs.targets, strict=True)))
    p = torch.full((1, 1, 88), 0.2)
    p[0, 0, [60 - 21, 72 - 21]] = 0.9
    logits = torch.log(p / (1 - p))
    expected = -(2 * math.log(0.9) + 86 * math.log(0.8))
    total, count = jsb.errors(logits, batch)["nll"]
    assert count == 1 and total == pytest.approx(expected, rel=1e-5)


def test_prepare_and_info(tmp_path):
    out, meta = tasks.prepare("jsb_chorales", data_dir=tmp_path, progress=False)
    assert meta["source"] == "real" and not meta["stand_in"]
    info = tasks.info("jsb_chorales", data_dir=tmp_path)
    assert info["splits"]["train"] == {"sequences": 229, "frames": 13807 - 229}
    assert info["input_size"] == info["output_size"] == 88
    splits, _ = tasks.load("jsb_chorales", data_dir=tmp_path)
    assert len(splits["test"]) == 77 and splits["test"].frames == 4725 - 77
    _, small = tasks.prepare("jsb_chorales", size=10, data_dir=tmp_path, progress=False)
    assert small["splits"]["train"]["sequences"] == 10


def test_prepare_reads_a_users_file(tmp_path):
    data = {s: [[[60], [62], [64]]] * 2 for s in tasks.SPLITS}
    (tmp_path / "mine.json").write_text(json.dumps(data))
    _, meta = tasks.prepare(
        "jsb_chorales",
        source="real",
        path=tmp_path / "mine.json",
        data_dir=tmp_path / "d",
        progress=False,
    )
    assert meta["splits"]["valid"] == {"sequences": 2, "frames": 4}


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(
        ValueError, match="unknown task 'jsb'; known: timit, iam_online, jsb_chorales"
    ):
        tasks.get("jsb")
    with pytest.raises(ValueError, match="has no data source 'synthetic'; valid: real"):
        tasks.prepare("jsb_chorales", source="synthetic", data_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        tasks.prepare("jsb_chorales", path=tmp_path / "nope.pickle", data_dir=tmp_path)


def test_prepared_data_of_an_older_version_is_prepared_again(tmp_path):
    import json as _json

    out, meta = tasks.prepare("jsb_chorales", size=3, data_dir=tmp_path, progress=False)
    assert meta["data_version"] == tasks.get("jsb_chorales").data_version
    stale = {
        **meta,
        "data_version": 0,
        "splits": {s: {"sequences": 0, "frames": 0} for s in tasks.SPLITS},
    }
    (out / "meta.json").write_text(_json.dumps(stale))
    _, again = tasks.prepare("jsb_chorales", size=3, data_dir=tmp_path, progress=False)
    assert again["data_version"] == meta["data_version"] and again["splits"] == meta["splits"]


def test_padding_adds_nothing_even_when_not_finite():
    from tasks.base import Batch

    targets = torch.zeros(3, 2, 88)
    logits = torch.zeros(3, 2, 88)
    logits[2, 1] = float("nan")  # a padded step of the second sequence (length 2)
    batch = Batch(logits.clone(), torch.tensor([3, 2]), targets)
    total, n = jsb.loss(logits, batch)
    assert n == 2 and total.item() == pytest.approx(5 * 88 * math.log(2))
    assert jsb.errors(logits, batch)["nll"] == (pytest.approx(5 * 88 * math.log(2)), 5)


def test_load_refuses_stale_prepared_data(tmp_path):
    import json as _json

    out, meta = tasks.prepare("jsb_chorales", size=3, data_dir=tmp_path, progress=False)
    (out / "meta.json").write_text(_json.dumps({**meta, "data_version": 0}))
    with pytest.raises(tasks.base.DataError, match=r"older version .*data version 0, now 1"):
        tasks.load("jsb_chorales", size=3, data_dir=tmp_path)

"""IAM-OnDB task: reader on hand-written fixtures in the original format, features, CTC, CER,
and the generated corpus read back through the same reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.base import DataError
from tasks.iam_online import TASK
from tasks.iam_online.alphabet import ALPHABET, decode, encode, normalise
from tasks.iam_online.corpus import read_corpus, read_split_lists, read_strokes
from tasks.iam_online.ctc import best_path, collate, edit_errors, errors, loss
from tasks.iam_online.features import point_features
from tasks.iam_online.generate import generate_corpus, plan, split_sizes
from tasks.iam_online.prepare import ctc_min_frames, to_splits

# ----------------------------------------------------------------------------- fixtures


def stroke_xml(strokes: list[list[tuple[int, int, float]]]) -> str:
    body = "".join(
        f'    <Stroke colour="black" start_time="{s[0][2]:.2f}" end_time="{s[-1][2]:.2f}">\n'
        + "".join(f'      <Point x="{x}" y="{y}" time="{t:.2f}"/>\n' for x, y, t in s)
        + "    </Stroke>\n"
        for s in strokes
    )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession>\n'
        '  <WhiteboardDescription>\n    <SensorLocation corner="top_left"/>\n'
        '    <DiagonallyOppositeCoords x="6512" y="1376"/>\n'
        '    <VerticallyOppositeCoords x="966" y="1376"/>\n'
        '    <HorizontallyOppositeCoords x="6512" y="787"/>\n'
        f"  </WhiteboardDescription>\n  <StrokeSet>\n{body}  </StrokeSet>\n"
        "</WhiteboardCaptureSession>\n"
    )


LINE_A = [
    [(100, 200, 10.00), (103, 204, 10.01), (105, 204, 10.02)],
    [(110, 200, 10.50), (110, 202, 10.52)],
    [(120 + i, 210, 11.0 + 0.01 * i) for i in range(40)],
]  # long enough for CTC


def add_form(root: Path, form: str, csr: list[str], line_numbers: list[int]) -> None:
    group, folder = form.split("-")[0], form[:7]
    sdir = root / "lineStrokes" / group / folder
    sdir.mkdir(parents=True, exist_ok=True)
    for n in line_numbers:
        pts = [[(x + 50 * n, y, t + n) for x, y, t in s] for s in LINE_A]
        (sdir / f"{form}-{n:02d}.xml").write_text(stroke_xml(pts), encoding="latin-1")
    adir = root / "ascii" / group / folder
    adir.mkdir(parents=True, exist_ok=True)
    (adir / f"{form}.txt").write_text(
        "OCR:\n\nThe printed text of the whole\nparagraph, broken differently.\n\nCSR:\n\n"
        + "\n".join(csr)
        + "\n",
        encoding="latin-1",
    )


@pytest.fixture
def mini_iam(tmp_path: Path) -> Path:
    root = tmp_path / "IAM-OnDB"
    add_form(root, "a01-000u", ["A MOVE to stop", "Mr. Gaitskell from"], [1, 2])
    add_form(root, "a01-001w", ["first line", "second line", "third line"], [1, 3])  # -02 missing
    add_form(root, "b02-010x", ["valid one"], [1])
    add_form(root, "c03-020", ["valid two  , spaced"], [1])
    add_form(root, "d04-030z", ["test line", "100% sure"], [1, 2])  # '%' is not in the alphabet
    add_form(root, "a08-551z", ["excluded by the paper"], [1])
    (root / "trainset.txt").write_text("a01-000u\n a01-001w\n")
    (root / "testset_v.txt").write_text("b02-010x\n")
    (root / "testset_t.txt").write_text("c03-020\na08-551z\n")
    (root / "testset_f.txt").write_text("d04-030z\n")
    return root


# ----------------------------------------------------------------------------- reader


def test_read_strokes_points_and_stroke_index(mini_iam: Path) -> None:
    points, stroke = read_strokes(mini_iam / "lineStrokes/a01/a01-000/a01-000u-01.xml")
    np.testing.assert_allclose(
        points[:6],
        [
            [150, 200, 11.0],
            [153, 204, 11.01],
            [155, 204, 11.02],
            [160, 200, 11.5],
            [160, 202, 11.52],
            [170, 210, 12.0],
        ],
    )
    assert stroke.tolist() == [0, 0, 0, 1, 1] + [2] * 40 and len(points) == 45


def test_split_lists_merge_validation_sets(mini_iam: Path) -> None:
    lists = read_split_lists(mini_iam)
    assert lists == {
        "train": ["a01-000u", "a01-001w"],
        "valid": ["b02-010x", "c03-020", "a08-551z"],
        "test": ["d04-030z"],
    }


def test_split_lists_in_task1_folder(mini_iam: Path) -> None:
    (mini_iam / "task1").mkdir()
    for name in ("trainset.txt", "testset_v.txt", "testset_t.txt", "testset_f.txt"):
        (mini_iam / name).rename(mini_iam / "task1" / name)
    assert read_split_lists(mini_iam)["test"] == ["d04-030z"]


def test_csr_pairing_exclusion_and_rejection(mini_iam: Path) -> None:
    splits, info = read_corpus(mini_iam, progress=False)
    got = {s: [(r.id, r.text) for r in lines] for s, lines in splits.items()}
    assert got["train"] == [
        ("a01-000u-01", "A MOVE to stop"),
        ("a01-000u-02", "Mr. Gaitskell from"),
        ("a01-001w-01", "first line"),
        ("a01-001w-03", "third line"),
    ]
    assert got["valid"] == [("b02-010x-01", "valid one"), ("c03-020-01", "valid two , spaced")]
    assert got["test"] == [("d04-030z-01", "test line")]
    assert info["excluded_forms"] == ["a08-551z"]
    assert info["rejected_line_ids"] == ["d04-030z-02"] and info["unknown_characters"] == {"%": 1}


def test_missing_transcription_line_names_the_file(mini_iam: Path) -> None:
    add_form(mini_iam, "a01-000u", ["A MOVE to stop", "Mr. Gaitskell from"], [3])
    with pytest.raises(
        DataError, match=r"a01-000u-03\.xml: stroke file of line 3 has no transcription"
    ):
        read_corpus(mini_iam, progress=False)


def test_unreadable_xml_names_the_file(mini_iam: Path) -> None:
    (mini_iam / "lineStrokes/b02/b02-010/b02-010x-01.xml").write_text(
        "<WhiteboardCaptureSession><Stroke>"
    )
    with pytest.raises(DataError, match=r"b02-010x-01\.xml: unreadable stroke XML"):
        read_corpus(mini_iam, progress=False)


def test_form_without_files_and_missing_folder(mini_iam: Path) -> None:
    (mini_iam / "testset_f.txt").write_text("d04-030z\ne05-999q\n")
    with pytest.raises(DataError, match="form e05-999q is in a split list but has no stroke files"):
        read_corpus(mini_iam, progress=False)
    (mini_iam / "ascii").rename(mini_iam / "ascii_moved")
    with pytest.raises(DataError, match="missing folder ascii/"):
        read_corpus(mini_iam, progress=False)


def test_missing_split_list_is_named(mini_iam: Path) -> None:
    (mini_iam / "testset_t.txt").unlink()
    with pytest.raises(DataError, match="testset_t.txt"):
        read_split_lists(mini_iam)


# ----------------------------------------------------------------------------- alphabet, features


def test_alphabet() -> None:
    assert len(ALPHABET) == 81 and TASK.output_size == 82
    ids = encode("Az 0!")
    assert ids.tolist() == [ALPHABET.index(c) + 1 for c in "Az 0!"] and ids.min() >= 1
    assert decode(ids) == "Az 0!"
    assert normalise("\u201cit\u2019s  ok\u201d ") == '"it\'s ok"'
    with pytest.raises(ValueError, match="'%'"):
        encode("5%")


def test_point_features_by_hand() -> None:
    points = np.array(
        [[0, 0, 0.0], [3, 4, 0.01], [5, 4, 0.02], [10, 0, 0.5], [10, 2, 0.52], [9, 9, 0.9]]
    )
    stroke = np.array([0, 0, 0, 1, 1, 2])
    expected = [
        [0, 0, 0, 0.0],
        [3, 4, 0, 0.01],
        [2, 0, 1, 0.02],
        [5, -4, 0, 0.0],
        [0, 2, 1, 0.02],
        [-1, 7, 1, 0.0],
    ]
    np.testing.assert_allclose(point_features(points, stroke), expected, atol=1e-6)


def test_training_normalisation(mini_iam: Path) -> None:
    raw, _ = read_corpus(mini_iam, progress=False)
    splits, info = to_splits(raw)
    train = np.concatenate(splits["train"].inputs)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    assert info["features"] == ["dx", "dy", "pen_lift", "time"]
    assert splits["train"].targets[0].tolist() == encode("A MOVE to stop").tolist()


def test_ctc_min_frames() -> None:
    assert ctc_min_frames(np.array([5, 5, 6, 6, 6])) == 8
    assert ctc_min_frames(np.array([1, 2, 3])) == 3


# ----------------------------------------------------------------------------- CTC and CER


def test_best_path_rules() -> None:
    a, b = 7, 9
    assert best_path([a, a, 0, a]) == [a, a]  # a blank separates a repeated character
    assert best_path([a, a, a]) == [a]
    assert best_path([0, a, a, 0, 0, b, b, 0]) == [a, b]
    assert best_path([0, 0]) == []


def one_hot_logits(paths: list[list[int]], t_max: int, k: int = 82, fill: int = 5) -> torch.Tensor:
    logits = torch.zeros(t_max, len(paths), k)
    logits[:, :, fill] = 10.0  # padding frames decode to `fill`; they must be ignored
    for b, path in enumerate(paths):
        logits[: len(path), b, fill] = 0.0
        for t, lab in enumerate(path):
            logits[t, b, lab] = 10.0
    return logits


def test_character_errors_by_hand() -> None:
    # "kitten" vs reference "sitting": 3 edits; "ab" vs "ab": 0; total reference chars 7 + 2
    kitten = [int(i) for i in encode("kitten")]
    path = [
        kitten[0],
        kitten[0],
        0,
        kitten[1],
        kitten[2],
        kitten[2],
        0,
        kitten[3],
        kitten[4],
        kitten[5],
    ]
    ab = [int(i) for i in encode("ab")]
    logits = one_hot_logits([path, [ab[0], 0, ab[1]]], t_max=12)
    batch = collate(
        [
            (np.zeros((len(path), 4), np.float32), encode("sitting")),
            (np.zeros((3, 4), np.float32), encode("ab")),
        ]
    )
    assert errors(logits, batch) == {"char_error": (3.0, 9)}
    assert edit_errors([[1, 2, 3]], [[1, 3]]) == (1, 2)


def test_collate_layout() -> None:
    batch = collate(
        [
            (np.ones((5, 4), np.float32), np.array([3, 4])),
            (np.ones((2, 4), np.float32), np.array([7, 8, 9])),
        ]
    )
    assert batch.x.shape == (5, 2, 4) and batch.lengths.tolist() == [5, 2]
    assert batch.targets.tolist() == [3, 4, 7, 8, 9] and batch.target_lengths.tolist() == [2, 3]
    assert float(batch.x[2:, 1].abs().sum()) == 0.0


def test_ctc_loss_by_hand_and_against_single_sequences() -> None:
    g = torch.Generator().manual_seed(0)
    # T=2, target [1]: paths (1,1), (0,1), (1,0)
    logits = torch.randn(2, 1, 82, generator=g, dtype=torch.float64)
    p = F.softmax(logits[:, 0], dim=-1)
    hand = -math.log(p[0, 1] * p[1, 1] + p[0, 0] * p[1, 1] + p[0, 1] * p[1, 0])
    batch = collate([(np.zeros((2, 4), np.float32), np.array([1]))])
    total, n = loss(logits, batch)
    assert n == 1 and total.item() == pytest.approx(hand, rel=1e-9)
    # a padded batch sums the losses each sequence has on its own
    items = [
        (np.zeros((6, 4), np.float32), np.array([3, 3, 4])),
        (np.zeros((4, 4), np.float32), np.array([2])),
    ]
    logits = torch.randn(6, 2, 82, generator=g, dtype=torch.float64)
    total, n = loss(logits, collate(items))
    alone = [
        loss(logits[:6, :1], collate(items[:1]))[0],
        loss(logits[:4, 1:], collate(items[1:]))[0],
    ]
    assert n == 2 and torch.isfinite(total)
    assert total.item() == pytest.approx(sum(a.item() for a in alone), rel=1e-9)


# ----------------------------------------------------------------------------- generated corpus


def test_generated_corpus_round_trip(tmp_path: Path) -> None:
    stats = generate_corpus(tmp_path / "c", seed=3, size=12, progress=False, workers=1)
    jobs = plan(3, 12)
    assert {s: sum(len(j.lines) for j in jobs[s]) for s in jobs} == split_sizes(12)
    writers = [{j.writer for j in jobs[s]} for s in jobs]
    assert not (writers[0] & writers[1] or writers[0] & writers[2] or writers[1] & writers[2])
    first = jobs["train"][0]
    assert (
        tmp_path / "c/lineStrokes" / first.form[:3] / first.form[:7] / f"{first.form}-01.xml"
    ).is_file()
    raw, info = read_corpus(tmp_path / "c", progress=False)
    for s in jobs:
        assert [r.text for r in raw[s]] == [t for j in jobs[s] for t in j.lines]
        assert np.mean([len(r.points) for r in raw[s]]) == pytest.approx(
            stats[s]["mean_points_per_line"]
        )
        for r in raw[s]:
            assert np.all(np.diff(r.points[:, 2]) > 0)  # time increases along the line
    assert info["rejected_lines"] == 0
    # deterministic given the seed, whatever the number of processes
    generate_corpus(tmp_path / "d", seed=3, size=12, progress=False, workers=2)
    name = f"lineStrokes/{first.form[:3]}/{first.form[:7]}/{first.form}-01.xml"
    assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()


def test_prepare_and_info_counts(tmp_path: Path) -> None:
    import tasks

    out, meta = tasks.prepare("iam_online", size=20, seed=1, data_dir=tmp_path, progress=False)
    info = tasks.info("iam_online", size=20, seed=1, data_dir=tmp_path)
    sizes = split_sizes(20)
    assert (
        {s: info["splits"][s]["sequences"] for s in sizes}
        == sizes
        == {"train": 20, "valid": 11, "test": 14}
    )
    assert info["source"] == "synthetic" and info["stand_in"] and info["input_size"] == 4
    splits, _ = tasks.load("iam_online", size=20, seed=1, data_dir=tmp_path)
    assert all(
        x.shape[1] == 4 and len(x) >= ctc_min_frames(y)
        for x, y in zip(splits["test"].inputs, splits["test"].targets, strict=True)
    )
    assert 200 < meta["mean_points_per_line"]["train"] < 900


def test_real_source_needs_path(tmp_path: Path, mini_iam: Path) -> None:
    import tasks

    with pytest.raises(DataError, match="needs --path"):
        tasks.prepare("iam_online", source="real", data_dir=tmp_path, progress=False)
    out, meta = tasks.prepare(
        "iam_online", source="real", path=mini_iam, data_dir=tmp_path, progress=False
    )
    assert meta["splits"]["train"]["sequences"] == 4 and meta["excluded_forms"] == ["a08-551z"]


def test_tiny_is_learnable_by_a_small_blstm() -> None:
    torch.manual_seed(0)
    splits = TASK.tiny(np.random.default_rng(0))
    assert len(splits["train"]) == 24 and splits["train"].inputs[0].shape[1] == 4
    lstm = torch.nn.LSTM(4, 24, bidirectional=True)
    head = torch.nn.Linear(48, 82)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.02)
    batch = collate(list(zip(splits["train"].inputs, splits["train"].targets, strict=True)))
    losses = []
    for _ in range(200):
        total, n = loss(head(lstm(batch.x)[0]), batch)
        opt.zero_grad()
        (total / n).backward()
        opt.step()
        losses.append(total.item() / n)
    edits, count = errors(head(lstm(batch.x)[0]), batch)["char_error"]
    assert losses[-1] < 0.2 * losses[0] and edits / count < 0.5, (
        losses[0],
        losses[-1],
        edits / count,
    )


def test_data_notes_say_what_was_dropped():
    notes = TASK.data_notes(
        {
            "excluded_forms": ["a08-551z"],
            "rejected_lines": 3,
            "unknown_characters": {"%": 2, "~": 1},
            "dropped_too_short_for_ctc_count": 1,
        }
    )
    assert notes[0] == "form(s) left out, as in the paper: a08-551z"
    assert "3 line(s) with characters outside the 81-symbol alphabet dropped ('%~')" in notes
    assert "1 line(s) too short for CTC (fewer points than labels) dropped" in notes
    assert "no line dropped" in TASK.data_notes({})

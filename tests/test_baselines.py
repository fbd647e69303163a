"""The ungated baselines (RNN, LEAKY), stacked layers, and the synthetic tasks (adding, counting).

Independent truth: torch.nn.RNN and torch.nn.LSTM(num_layers=2) with copied weights, the leaky
equation written out step by step here, gradcheck in float64, hand-computed scores.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_variants import _run_torch as run_torch
from test_variants import assert_equals_torch_rnn
from torch import nn

import tasks
import variants
from study.config import TrainConfig
from study.model import build_model
from study.pack import PackTrial, train_pack
from study.train import evaluate, train
from tasks import adding, counting
from tasks.base import aggregate, split_metrics

BOTH = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])


def batch(m=5, t=7, lengths=(7, 4, 1), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, len(lengths), m, generator=g, dtype=dtype), torch.tensor(lengths)


# ------------------------------------------------------------------------------------- cells


@BOTH
def test_rnn_equals_torch_rnn(bidirectional):
    ours = variants.build("RNN", 5, 6, bidirectional=bidirectional)
    assert_equals_torch_rnn(ours, nn.RNN(5, 6, bidirectional=bidirectional))  # tanh


def leaky_by_hand(cell, trial: int, seq: torch.Tensor) -> torch.Tensor:
    """h_t = (1 - a) h_{t-1} + a tanh(W x_t + R h_{t-1} + b), a = sigmoid(tau), h_0 = 0, one
    sequence `(T, M)` at a time, unit by unit."""
    w, r, b, tau = (p[trial].detach() for p in (cell.W, cell.R, cell.b, cell.tau))
    n = w.shape[0]
    h = [0.0] * n
    out = []
    for x_t in seq:
        new = []
        for j in range(n):
            pre = float(w[j] @ x_t) + sum(float(r[j, i]) * h[i] for i in range(n)) + float(b[j])
            a = 1.0 / (1.0 + math.exp(-float(tau[j])))
            new.append((1.0 - a) * h[j] + a * math.tanh(pre))
        h = new
        out.append(h)
    return torch.tensor(out, dtype=torch.float64)


@BOTH
def test_leaky_equals_the_equation(bidirectional):
    torch.manual_seed(3)
    ours = variants.build("LEAKY", 3, 4, bidirectional=bidirectional).double()
    with torch.no_grad():  # leak rates far from 0.5, different per unit
        for cell in ours.cells:
            cell.tau.copy_(torch.tensor([[-2.0, -0.5, 0.5, 3.0]]))
    x, lengths = batch(m=3, t=6, lengths=(6, 3), dtype=torch.float64)
    out = ours(x, lengths)
    for b, length in enumerate(lengths.tolist()):
        seq = x[:length, b]
        want = leaky_by_hand(ours.cells[0], 0, seq)
        if bidirectional:
            back = leaky_by_hand(ours.cells[1], 0, seq.flip(0)).flip(0)
            want = torch.cat([want, back], dim=1)
        torch.testing.assert_close(out[:length, b], want, atol=1e-12, rtol=1e-10)


def test_leaky_rate_one_is_the_rnn():
    """a = 1 (tau -> inf) leaves h = tanh(W x + R h' + b): the RNN with b_ih + b_hh = b."""
    leaky = variants.build("LEAKY", 3, 4).double()
    rnn = variants.build("RNN", 3, 4).double()
    with torch.no_grad():
        leaky.cells[0].tau.fill_(100.0)
        rnn.cells[0].W.copy_(leaky.cells[0].W)
        rnn.cells[0].R.copy_(leaky.cells[0].R)
        rnn.cells[0].b_ih.copy_(leaky.cells[0].b)
        rnn.cells[0].b_hh.zero_()
    x, lengths = batch(m=3, dtype=torch.float64)
    torch.testing.assert_close(leaky(x, lengths), rnn(x, lengths), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["RNN", "LEAKY"])
def test_pack_gradcheck_float64(name):
    torch.manual_seed(0)
    pack = variants.build(name, 2, 3, trials=2).double()  # both directions: test_variants
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[4, 2], [3, 3]])
    names = [n for n, _ in pack.named_parameters()]

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            pack, dict(zip(names, ps, strict=True))
        ):
            return pack.forward_packed(x, lengths)

    params = [p.detach().requires_grad_(True) for p in pack.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("name", ["RNN", "LEAKY"])
def test_pack_of_k_equals_k_single_trials(name):
    """Trial k of a pack (ragged lengths, both directions) computes what a single model with
    trial k's weights computes on trial k's data: outputs and gradients."""
    torch.manual_seed(8)
    pack = variants.build(name, 5, 6, bidirectional=True, trials=3).double()
    x = torch.randn(3, 9, 2, 5, dtype=torch.float64)
    lengths = torch.tensor([[9, 4], [3, 1], [6, 6]])
    out = pack.forward_packed(x, lengths)
    out.sin().sum().backward()
    for k in range(3):
        single = variants.build(name, 5, 6, bidirectional=True).double()
        with torch.no_grad():
            for p, q in zip(single.parameters(), pack.parameters(), strict=True):
                p.copy_(q[k : k + 1])
        got = single(x[k], lengths[k])
        got.sin().sum().backward()
        torch.testing.assert_close(got, out[k], atol=1e-12, rtol=1e-10)
        for p, q in zip(single.parameters(), pack.parameters(), strict=True):
            torch.testing.assert_close(p.grad[0], q.grad[k], atol=1e-12, rtol=1e-10)


def test_baselines_run_the_reference_loop_and_refuse_a_forget_bias():
    from variants.fast import supports

    assert not supports(variants.VARIANTS["RNN"]) and not supports(variants.VARIANTS["LEAKY"])
    assert supports(variants.VARIANTS["V"]) and supports(variants.VARIANTS["GRU"])
    with pytest.raises(ValueError, match="forget_bias applies to LSTM variants.*not rnn"):
        variants.build("RNN", 3, 4, forget_bias=1.0)


# ------------------------------------------------------------------------------ stacked layers

JSB = tasks.get("jsb_chorales")


@BOTH
def test_two_layer_np_stack_equals_torch_lstm_two_layers(bidirectional):
    task = tasks.get("timit") if bidirectional else JSB
    model = build_model(task, "NP", 6, torch.Generator().manual_seed(0), layers=2)
    ref = nn.LSTM(task.input_size, 6, num_layers=2, bidirectional=bidirectional)
    with torch.no_grad():
        for layer_k, layer in enumerate(model.rnn.layers):
            for d, cell in enumerate(layer.cells):
                sfx = f"_l{layer_k}" + ("_reverse" if d else "")
                getattr(ref, f"weight_ih{sfx}").copy_(cell.W[0])  # gate order i, f, g, o
                getattr(ref, f"weight_hh{sfx}").copy_(cell.R[0])
                getattr(ref, f"bias_ih{sfx}").copy_(cell.b[0])
                getattr(ref, f"bias_hh{sfx}").zero_()
    x, lengths = batch(m=task.input_size)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = model.rnn(x1, lengths)
    ref_out, _ = run_torch(ref, x2, lengths)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    out.sin().sum().backward()
    ref_out.sin().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    upper = model.rnn.layers[1].cells[0]
    torch.testing.assert_close(upper.W.grad[0], ref.weight_ih_l1.grad, atol=1e-5, rtol=1e-5)


def test_residual_adds_each_upper_layers_input():
    task = tasks.get("timit")
    plain = build_model(task, "GRU", 4, torch.Generator().manual_seed(1), layers=3)
    res = build_model(task, "GRU", 4, torch.Generator().manual_seed(1), layers=3, residual=True)
    x, lengths = batch(m=task.input_size)
    l1, l2, l3 = plain.rnn.layers
    h1 = l1(x, lengths)
    h2 = l2(h1, lengths) + h1
    h3 = l3(h2, lengths) + h2
    torch.testing.assert_close(res.rnn(x, lengths), h3)
    torch.testing.assert_close(plain.rnn(x, lengths), l3(l2(h1, lengths), lengths))
    assert (res.rnn(x, lengths)[4:, 1] == 0).all()  # padding stays zero
    n_one = sum(p.numel() for p in build_model(task, "GRU", 4, torch.Generator()).parameters())
    upper = 2 * (3 * 4 * (8 + 4) + 6 * 4)  # two directions of a GRU reading 2 x 4 units
    assert sum(p.numel() for p in res.parameters()) == n_one + 2 * upper


def test_stack_settings_are_checked():
    with pytest.raises(ValueError, match="residual connections join stacked layers"):
        build_model(JSB, "V", 4, torch.Generator(), residual=True)
    with pytest.raises(ValueError, match="layers must be an integer >= 1"):
        build_model(JSB, "V", 4, torch.Generator(), layers=0)
    from study.config import ConfigError, from_dict

    for bad, key in (({"layers": 4}, "training.layers"), ({"residual": True}, "training.residual")):
        with pytest.raises(ConfigError) as e:
            from_dict({"name": "s", "tasks": ["counting"], "variants": ["V"], "training": bad})
        assert e.value.key == key


HPARAMS = [
    {"hidden_size": 6, "learning_rate": 0.05, "momentum": 0.9, "input_noise": 0.3},
    {"hidden_size": 3, "learning_rate": 0.01, "momentum": 0.0, "input_noise": 0.0},
    {"hidden_size": 5, "learning_rate": 0.2, "momentum": 0.5, "input_noise": 0.1},
]


@pytest.mark.parametrize(
    "task_name,variant,residual", [("counting", "LEAKY", False), ("timit", "V", True)]
)
def test_stacked_pack_trials_equal_single_trials(task_name, variant, residual):
    """Two-layer trials of different sizes in a pack: each equals its single run, epoch by epoch
    (the upper layer's input weights are padded by unit; counting checks the pack's `prefix`
    metric too)."""
    task = tasks.get(task_name)
    settings = TrainConfig(
        batch_size=4, max_epochs=3, patience=3, eval_batch_size=3, layers=2, residual=residual
    )
    splits = task.tiny(np.random.default_rng(0))
    want = []
    for k, hp in enumerate(HPARAMS):
        history: list[dict] = []
        want.append(
            (train(task, variant, hp, splits, settings, 100 + k, report=history.append), history)
        )
    trials = [PackTrial(k, hp, 100 + k) for k, hp in enumerate(HPARAMS)]
    histories: dict = {}
    done = dict(
        train_pack(
            task,
            variant,
            trials,
            splits,
            settings,
            3,
            lambda key, m: histories.setdefault(key, []).append(m),
        )
    )
    for k, (single, history) in enumerate(want):
        assert done[k]["n_params"] == single["n_params"]
        assert done[k]["val_metric"] == pytest.approx(single["val_metric"], rel=1e-4)
        for a, b in zip(history, histories[k], strict=True):
            for name in a:
                if name != "time_s":
                    assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), name


# --------------------------------------------------------------------------- split aggregates


def test_aggregates_by_hand():
    pairs = [(3.0, 4.0), (1.0, 6.0)]
    assert aggregate("ratio", pairs) == 0.4
    assert aggregate("min", pairs) == 1.0 and aggregate("max", pairs) == 3.0
    # prefix: batches (first failure - 1 or inf, largest case)
    assert aggregate("prefix", [(math.inf, 5.0), (math.inf, 9.0)]) == 9.0
    assert aggregate("prefix", [(math.inf, 5.0), (7.0, 9.0)]) == 7.0
    assert aggregate("prefix", [(2.0, 3.0), (7.0, 9.0)]) == 2.0
    assert math.isnan(aggregate("ratio", [])) and math.isnan(aggregate("ratio", [(0.0, 0.0)]))
    with pytest.raises(ValueError, match="unknown aggregate 'median'; valid: ratio, min"):
        aggregate("median", pairs)
    metrics = split_metrics(counting.TASK, {"max_n": [(7.0, 9.0)], "step_error": [(1.0, 4.0)]})
    assert metrics == {"max_n": 7.0, "step_error": 0.25}


# ------------------------------------------------------------------------------------ adding


def test_adding_data_is_the_problem():
    data = adding.generate(np.random.default_rng(0), 50, 12, "x")
    for x, y in zip(data.inputs, data.targets, strict=True):
        marked = np.flatnonzero(x[:, 1])
        assert x.shape == (12, 2) and len(marked) == 2
        assert marked[0] < 6 <= marked[1]  # one in each half
        assert y[0] == pytest.approx(x[marked, 0].sum())


def test_adding_mean_predictor_scores_one_sixth():
    """The stated baseline: predicting 1 (the mean of the sum) on a large sample scores
    Var(U1 + U2) = 1/6; the estimate's standard error is sqrt(7/180 / S) (E (S - 1)^4 = 1/15)."""
    count = 200_000
    data = adding.generate(np.random.default_rng(1), count, 4, "x")
    b = adding.collate(list(zip(data.inputs, data.targets, strict=True)))
    mse, n = adding.errors(torch.ones(4, count, 1), b)["mse"]
    assert n == count
    assert abs(mse / n - adding.MEAN_BASELINE_MSE) < 5 * math.sqrt(7 / 180 / count)
    assert adding.MEAN_BASELINE_MSE == 1 / 6


def test_adding_scores_by_hand():
    """Two sequences (lengths 3 and 2): only each one's last output counts."""
    items = [
        (np.array([[0.5, 1], [0.25, 1], [0.9, 0]], np.float32), np.array([0.75], np.float32)),
        (np.array([[0.1, 1], [0.2, 1]], np.float32), np.array([0.3], np.float32)),
    ]
    b = adding.collate(items)
    logits = torch.tensor([[[9.0], [9.0]], [[9.0], [0.5]], [[1.0], [9.0]]])  # (T, B, 1)
    per_seq = adding.sequence_loss(logits, b)
    torch.testing.assert_close(per_seq, torch.tensor([0.0625, 0.04]))  # 0.25^2, 0.2^2
    assert adding.errors(logits, b)["mse"] == (pytest.approx(0.1025), 2)


@pytest.mark.parametrize("task", [adding.TASK, counting.TASK], ids=["adding", "counting"])
def test_loss_is_a_sum_over_sequences(task):
    split = task.tiny(np.random.default_rng(0))["valid"]
    one = task.collate([(split.inputs[1], split.targets[1])])
    two = task.collate([(split.inputs[1], split.targets[1])] * 2)
    logits = torch.randn(*one.x.shape[:2], task.output_size, generator=torch.Generator())
    loss_one, n_one = task.loss(logits, one)
    loss_two, n_two = task.loss(logits.expand(-1, 2, -1), two)
    assert (n_one, n_two) == (1, 2)
    torch.testing.assert_close(loss_two, 2 * loss_one)


def test_prepare_is_fast_and_stated(tmp_path):
    for name, n_train in (("adding", 40), ("counting", 30)):
        out, meta = tasks.prepare(name, size=n_train, data_dir=tmp_path, progress=False)
        splits, _ = tasks.load(name, size=n_train, data_dir=tmp_path)
        assert len(splits["train"]) == n_train and not meta["stand_in"]
    notes = " ".join(adding.TASK.data_notes(meta | {"steps": 100}))
    assert "0.1667" in notes and "1/6" in notes


# ---------------------------------------------------------------------------------- counting


def perfect_logits(b) -> torch.Tensor:
    """Logits `(T, B, 3)` that predict every determined step right (and 'a' at open steps)."""
    target = torch.where(b.targets == counting.OPEN, counting.A, b.targets)
    return nn.functional.one_hot(target, 3).float() * 5.0


def score(ns, wrong_at=(), batch_size=3, wrong_step=-1):
    """`max_n` and `step_error` over sequences a^n b^n (n in `ns`) in batches of `batch_size`,
    predicted right except at step `wrong_step` of each n in `wrong_at`."""
    data = counting.to_set(list(ns), "t-")
    pairs: dict = {}
    for start in range(0, len(ns), batch_size):
        items = [
            (data.inputs[i], data.targets[i])
            for i in range(start, min(start + batch_size, len(ns)))
        ]
        b = counting.collate(items)
        logits = perfect_logits(b)
        for j, n in enumerate(ns[start : start + batch_size]):
            if n in wrong_at:
                t = 2 * n + wrong_step if wrong_step < 0 else wrong_step
                logits[t, j] = logits[t, j].roll(1)
        for name, pair in counting.errors(logits, b).items():
            pairs.setdefault(name, []).append(pair)
    return split_metrics(counting.TASK, pairs)


def test_counting_targets_by_hand():
    x, y = counting.sequence(3)  # a a a b b b
    assert x.argmax(1).tolist() == [0, 0, 0, 1, 1, 1]
    assert y.tolist() == [-1, -1, -1, 1, 1, 2]  # open, open, open, b, b, end
    assert counting.sequence(1)[1].tolist() == [-1, 2]


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_counting_score_by_hand(batch_size):
    ns = list(range(1, 11))
    assert score(ns, batch_size=batch_size) == {"max_n": 10, "step_error": 0.0}
    got = score(ns, wrong_at=(8,), batch_size=batch_size)  # right up to 7, wrong at 8
    assert got["max_n"] == 7 and got["step_error"] == pytest.approx(1 / 55)  # 55 = 1 + ... + 10
    assert score(ns, wrong_at=(8, 10), batch_size=batch_size)["max_n"] == 7
    assert score(ns, wrong_at=(2,), batch_size=batch_size)["max_n"] == 1  # a training length
    assert score(ns, wrong_at=(1,), batch_size=batch_size)["max_n"] == 0
    # the 'b' steps count, not only the end: wrong at the first determined step of n = 5
    assert score(ns, wrong_at=(5,), wrong_step=5, batch_size=batch_size)["max_n"] == 4
    # a wrong guess where the next symbol is open (reading a's) is not an error
    assert score(ns, wrong_at=(6,), wrong_step=0, batch_size=batch_size)["max_n"] == 10
    # the order of the sequences does not matter
    assert score(ns[::-1], wrong_at=(8,), batch_size=batch_size)["max_n"] == 7


def test_counting_evaluate_uses_the_prefix_score():
    """`study.train.evaluate` combines the batches with the task's aggregate: a model right up
    to n = 7 and wrong at n = 8 scores 7 in any batch size."""

    class Oracle(nn.Module):
        rnn = SimpleNamespace(trials=1)  # a model of one trial, as the engine evaluates it

        def forward_trials(self, x, lengths, trials, own_units):
            return [self(x[0], lengths[0])]

        def forward(self, x, lengths):
            n = (lengths // 2).tolist()
            t = torch.arange(x.shape[0]).unsqueeze(1)
            half = torch.tensor(n).unsqueeze(0)
            target = torch.where(t < half, counting.A, torch.where(t < 2 * half - 1, 1, 2))
            logits = nn.functional.one_hot(target, 3).float()
            for j, nj in enumerate(n):
                if nj == 8:
                    logits[2 * nj - 1, j] = logits[2 * nj - 1, j].roll(1)  # misses the end
            return logits

    data = counting.make_splits(np.random.default_rng(0), 5, 4, 6, 12)["test"]
    for bs in (1, 4, 64):
        got = evaluate(Oracle(), counting.TASK, data, bs, torch.device("cpu"))
        assert got["max_n"] == 7 and got["step_error"] == pytest.approx(1 / 78)

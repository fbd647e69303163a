"""The Triton cell path (variants/fast/triton_*.py) against the reference time loop.

Without a GPU the kernels run under Triton's interpreter on CPU tensors: this module imports
Triton with TRITON_INTERPRET=1 (Triton decides between compiling and interpreting as it defines
its kernels, its own library's included) and sets the variable only while its own tests run. With a CUDA device the same tests run the compiled kernels on it. The reference
loop (`scan_reference`, per-step autograd) is the truth: outputs, final states and every
gradient, in float64 to 1e-10 and float32 to ~1e-5. The `gpu` tests add the default path's choice
on CUDA (skipped without one).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import variants
from variants import VARIANTS, fast
from variants.fast import triton_launch
from variants.spec import GRUSpec, LSTMSpec

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the variants with Triton kernels: the paper's ten (the registry's RNN and LEAKY have none)
FUSED = [n for n, spec in VARIANTS.items() if isinstance(spec, LSTMSpec | GRUSpec)]
assert len(FUSED) >= 10
_BEFORE = os.environ.get("TRITON_INTERPRET")
# Triton's own library decides between compiling and interpreting as it is first imported: import
# it here with the interpreter asked for, then give the variable back at once; the fixture below
# sets it again only while this module's tests run
_READY = (
    DEVICE == "cuda"
    or "triton" not in sys.modules
    or _BEFORE == "1"
    or os.environ.get("ODYSSEY_TRITON_INTERPRETED") == "1"  # tests/conftest.py imported it so
)
if DEVICE == "cpu" and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("triton")
finally:
    if _BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _BEFORE


@pytest.fixture(scope="module", autouse=True)
def _interpreter_while_here():
    with pytest.MonkeyPatch.context() as mp:
        if DEVICE == "cpu":
            mp.setenv("TRITON_INTERPRET", "1")
        yield


@pytest.fixture
def interpret():
    """The kernels can run here: on CUDA, or interpreted on the CPU."""
    if not _READY:
        pytest.skip("Triton was imported before this module could ask for its interpreter")


@pytest.fixture
def on_gpu(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def run_pack(module, x, lengths, path, active=None):
    """Outputs, final states (h, c) and the gradients of x and every parameter."""
    x = x.clone().requires_grad_(True)
    with fast.use(path):
        out, (h, c) = module.forward_packed(x, lengths, return_state=True, active=active)
        loss = out.sin().sum() + h.cos().sum() + (c.pow(2).sum() if c is not None else 0)
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return [out, h] + ([c] if c is not None else []) + list(grads)


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, k=k: f"tensor {k}: {m}")


def pack_data(k=3, t=6, b=2, m=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k, t, b, m, generator=gen, dtype=dtype)
    lengths = torch.tensor([[6, 3], [2, 2], [5, 4], [1, 6]][:k])  # ragged: steps 6, 2, 5, 6
    return x, lengths


@pytest.mark.parametrize("name", FUSED)
def test_triton_pack_equals_reference_float64(name, interpret):
    """A pack of 3 trials with ragged lengths, every variant: all outputs and gradients."""
    torch.manual_seed(1)
    pack = variants.build(name, 3, 5, trials=3).double()
    x, lengths = pack_data()
    want = run_pack(pack, x, lengths, "reference")
    assert_all_close(run_pack(pack, x, lengths, "triton"), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["V", "CIFG"])
def test_training_case_without_cell_states(name, interpret):
    """Training uses the outputs only: no cell states asked for, none of their gradient."""
    torch.manual_seed(9)
    pack = variants.build(name, 3, 5, trials=3).double()
    x, lengths = pack_data()
    got, want = [], []
    for path, into in (("triton", got), ("reference", want)):
        xx = x.clone().requires_grad_(True)
        with fast.use(path):
            out = pack.forward_packed(xx, lengths)
            into += [out, *torch.autograd.grad(out.sin().sum(), [xx, *pack.parameters()])]
    assert_all_close(got, want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["FGR", "GRU"])
def test_triton_bidirectional_float32(name, interpret):
    """float32, both directions (the reversed direction's own steps), N = 37: two unit tiles of
    32, reduction chunks cut by the mask."""
    torch.manual_seed(2)
    pack = variants.build(name, 3, 37, bidirectional=True, trials=2)
    x, lengths = pack_data(k=2, dtype=torch.float32)
    want = run_pack(pack, x, lengths, "reference")
    assert_all_close(run_pack(pack, x, lengths, "triton"), want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["V", "GRU"])
def test_padded_steps_and_units_are_exactly_zero(name, interpret):
    """Past a trial's steps the scan leaves exact zeros; a trial whose extra units have zero
    weights (a smaller trial in a wider pack) outputs exact zeros on them, at every step."""
    torch.manual_seed(3)
    cell = variants.build(name, 3, 6, trials=2).double().cells[0]
    with torch.no_grad():
        for p in cell.parameters():
            blocks = cell.hidden_blocks()[next(n for n, q in cell.named_parameters() if q is p)]
            view = p[1].unflatten(0, (blocks[0], -1)) if blocks[0] else p[1]
            view[:, 4:] = 0.0  # units 4, 5 of trial 1 (rows of every gate block)
            if len(blocks) > 1 and blocks[1]:
                view.unflatten(-1, (blocks[1], -1))[..., 4:] = 0.0  # and their columns
    x = torch.randn(2, 5, 2, 3, dtype=torch.float64)
    steps = torch.tensor([3, 5])
    with fast.use("triton"):
        y, c = cell.scan(x, steps)
    assert (y[0, 3:] == 0).all() and (c is None or (c[0, 3:] == 0).all())
    assert (y[1, ..., 4:] == 0).all() and (c is None or (c[1, ..., 4:] == 0).all())
    assert (y[1, ..., :4] != 0).all()


def test_nan_in_one_trial_never_reaches_another(interpret):
    torch.manual_seed(4)
    for name in ("FGR", "GRU"):
        pack = variants.build(name, 3, 5, trials=3)
        with torch.no_grad():
            pack.cells[0].R[1].fill_(float("nan"))
        x, lengths = pack_data(dtype=torch.float32)
        for t in run_pack(pack, x, lengths, "triton"):
            bad = t[1] if t.shape[0] == 3 else t[:, 1]
            good = [t[0], t[2]] if t.shape[0] == 3 else [t[:, 0], t[:, 2]]
            assert all(torch.isfinite(g).all() for g in good), name
            assert not torch.isfinite(bad).all(), name


@pytest.mark.parametrize("name", ["CIFG", "GRU"])
def test_inactive_slot_is_skipped(name, interpret):
    """An empty slot (steps 0) is never computed: NaN recurrent weights there reach nothing, its
    outputs and gradients are finite (its parameters' exactly zero), and the active trials equal
    the reference."""
    torch.manual_seed(5)
    pack = variants.build(name, 3, 5, trials=3).double()
    x, lengths = pack_data()
    active = torch.tensor([True, False, True])
    want = run_pack(pack, x, lengths, "reference")
    with torch.no_grad():
        for name_p, p in pack.named_parameters():
            if ".W" not in name_p:  # all the time loop reads (W x is outside it)
                p[1].fill_(float("nan"))
    got = run_pack(pack, x, lengths, "triton", active=active)
    for g, w in zip(got, want, strict=True):
        lead = 0 if g.shape[0] == 3 else 1  # outputs, x and parameters: K first; h, c: (D, K)
        live = g.index_select(lead, torch.tensor([0, 2]))
        torch.testing.assert_close(
            live, w.index_select(lead, torch.tensor([0, 2])), atol=1e-10, rtol=1e-9
        )
        dead = g.select(lead, 1)
        assert torch.isfinite(dead).all()
    n_out = len(got) - len(list(pack.parameters()))
    for g in got[n_out:]:  # parameter gradients of the empty slot: exactly zero
        assert (g[1] == 0).all()


@pytest.mark.parametrize("name", ["FGR", "GRU"])
def test_launches_per_time_step(name, interpret):
    """The design: one kernel launch per time step forward and one backward, for the whole pack
    (any K); the weight gradients add none per step."""
    torch.manual_seed(6)
    for trials in (1, 3):
        pack = variants.build(name, 3, 5, trials=trials)
        x = torch.randn(trials, 5, 2, 3)
        lengths = torch.full((trials, 2), 5)
        triton_launch.LAUNCHES.clear()
        run_pack(pack, x, lengths, "triton")
        per_step = sum(triton_launch.LAUNCHES_PER_STEP.values())
        assert per_step == 2
        assert sum(triton_launch.LAUNCHES.values()) <= per_step * 5, dict(triton_launch.LAUNCHES)
        assert sorted(triton_launch.LAUNCHES.values()) == [5, 5]


def test_forced_path_without_interpreter_or_triton_says_what_to_do(monkeypatch):
    cell = variants.build("V", 3, 4).cells[0]
    x = torch.zeros(1, 2, 1, 3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with fast.use("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        cell.scan(x)
    monkeypatch.setattr(triton_launch, "available", lambda: False)
    with (
        fast.use("triton"),
        pytest.raises(RuntimeError, match=r"pip install 'lstm-odyssey\[gpu\]'"),
    ):
        cell.scan(x)
    assert fast.lstm_path(cell, x) == "compiled" or fast.lstm_path(cell, x) == "reference"


def test_every_masked_load_names_its_fill():
    """On a GPU a masked lane of `tl.load` without `other` is undefined (the interpreter reads 0,
    so the tests above cannot see it) and would reach the products through the reduction chunks
    past N: every masked load in the kernels says `other=0.0`."""
    import ast
    from pathlib import Path

    folder = Path(triton_launch.__file__).parent
    for name in ("triton_lstm.py", "triton_gru.py", "triton_noise.py"):
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                words = {k.arg for k in node.keywords}
                assert "mask" not in words or "other" in words, f"{name}:{node.lineno}"


def test_package_imports_without_triton():
    """`variants` never imports Triton until the Triton path runs."""
    code = "import sys, variants, variants.fast; sys.exit('triton' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# compiles the step kernels for an H100 (sm_90) without a GPU: Triton's front end, its GPU passes
# and ptxas, in a process of its own (this one interprets); argv: dtype, variant names
COMPILE = """
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import variants
from variants.fast import triton_gru, triton_lstm
from variants.fast.triton_launch import tiles

def build(kernel, consts, dtype):
    names = list(inspect.signature(kernel.fn).parameters)
    sig = {n: "constexpr" if n in consts else "i32" if n in ("t", "T", "B", "N")
           else "*i32" if n == "steps" else "*" + dtype for n in names}
    src = ASTSource(kernel, sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32))

dtype = sys.argv[1]
for name in sys.argv[2:]:
    common = {**tiles(1, 200), "PREC": "ieee"}
    if name == "GRU":
        kernels = [(triton_gru._gru_forward_step, common), (triton_gru._gru_backward_step, common)]
    else:
        meta = {**triton_lstm._meta(variants.VARIANTS[name]), **common}
        kernels = [(triton_lstm._lstm_forward_step, meta),
                   (triton_lstm._lstm_backward_step, {**meta, "HAS_DY": True, "HAS_DC": True})]
    for kernel, consts in kernels:
        assert "ptx" in build(kernel, consts, dtype).asm
print("compiled")
"""


def _compile_for_sm90(dtype: str, names: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, dtype, *names], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def test_fgr_kernels_compile_for_a_gpu():
    """The interpreter runs Python semantics; this compiles the most involved variant's forward
    and backward kernels for an H100 as the GPU would, so a construct Triton's compiler rejects
    fails here, without a GPU."""
    _compile_for_sm90("fp32", ["FGR"])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_every_variant_compiles_for_a_gpu(dtype):
    _compile_for_sm90(dtype, FUSED)


COMPILE_NOISE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from variants.fast import triton_noise

for per_slot in ("i32", "i64"):
    sig = {"x": "*fp32", "meta": "*i64", "std": "*fp32", "per_slot": per_slot, "BLOCK": "constexpr"}
    src = ASTSource(triton_noise._add_noise, sig, constexprs={(4,): triton_noise.BLOCK})
    assert "ptx" in triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm
print("compiled")
"""


def test_noise_kernel_compiles_for_a_gpu():
    """The noise kernel compiled for an H100 (sm_90) as the GPU would, without one."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_NOISE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def _trial_noise(monkeypatch, k, s, t_len, steps, std=1.0, seed=9, draws=2, b=2, m=3):
    """The noise the trial of generator seed `seed` gets in slot `s` of a pack of `k` (padded
    length `t_len`, its own `steps`) at each of `draws` steps; slot 0 holds a neighbour when
    s != 0. Also checks that nothing lands past its steps."""
    from study import noise

    monkeypatch.setattr(noise, "ON_DEVICE", True)
    pack = noise.PackNoise(k, torch.device(DEVICE))
    assert pack.kernel
    pack.take(s, torch.Generator().manual_seed(seed), {"input_noise": std})
    lengths = {s: steps}
    if s != 0:
        pack.take(0, torch.Generator().manual_seed(seed + 1), {"input_noise": 1.0})
        lengths[0] = t_len
    out = []
    for _ in range(draws):
        x = torch.zeros(k, t_len, b, m, device=DEVICE)
        pack.add(x, lengths)
        assert torch.equal(x[s, steps:], torch.zeros_like(x[s, steps:]))
        out.append(x[s, :steps].cpu())
    return out


def test_noise_of_a_trial_is_its_own_in_any_slot_pack_or_padding(monkeypatch, interpret):
    """Philox noise (`variants.fast.triton_noise`): the same trial draws the same numbers alone,
    in slot 2 of a pack of 3 beside another trial and padded to a longer T; each step's numbers
    are fresh (the counter advanced), and std scales them (0.5: exactly half)."""
    alone = _trial_noise(monkeypatch, 1, 0, 5, 5)
    packed = _trial_noise(monkeypatch, 3, 2, 9, 5)
    half = _trial_noise(monkeypatch, 3, 1, 7, 5, std=0.5)
    for a, p, h in zip(alone, packed, half, strict=True):
        assert torch.equal(a, p) and torch.equal(h, 0.5 * a)
    assert not torch.equal(alone[0], alone[1])
    other = _trial_noise(monkeypatch, 1, 0, 5, 5, seed=10)
    assert not torch.equal(other[0], alone[0])


def test_noise_is_standard_normal_and_one_launch_a_step(monkeypatch, interpret):
    """Two trials of 50 x 4 x 25 numbers a step: mean about 0, std about its std (5 sigma of
    the sample), the two uncorrelated; the whole pack in one launch."""
    from study import noise

    monkeypatch.setattr(noise, "ON_DEVICE", True)
    pack = noise.PackNoise(2, torch.device(DEVICE))
    for s, std in ((0, 1.0), (1, 0.5)):
        pack.take(s, torch.Generator().manual_seed(s), {"input_noise": std})
    x = torch.zeros(2, 50, 4, 25, device=DEVICE)
    triton_launch.LAUNCHES.clear()
    pack.add(x, {0: 50, 1: 50})
    assert dict(triton_launch.LAUNCHES) == {"_add_noise": 1}
    z0, z1 = x[0].flatten().cpu().double(), (x[1].flatten().cpu() / 0.5).double()
    n = z0.numel()
    for z in (z0, z1):
        assert abs(float(z.mean())) < 5 / n**0.5
        assert abs(float(z.std()) - 1.0) < 5 * (0.5 / n) ** 0.5
    assert abs(float(torch.corrcoef(torch.stack([z0, z1]))[0, 1])) < 5 / n**0.5


def test_a_trial_with_device_noise_trains_the_same_in_any_pack(monkeypatch, interpret):
    """The engine with noise drawn by the kernel (forced on the CPU, interpreted): a trial beside
    another gives, bitwise, every epoch's metrics it gives alone (its noise is its own)."""
    import numpy as np

    import tasks
    from study import noise
    from study.config import TrainConfig
    from study.pack import PackTrial, train_pack

    monkeypatch.setattr(noise, "ON_DEVICE", True)
    jsb = tasks.get("jsb_chorales")
    data = jsb.tiny(np.random.default_rng(0))
    splits = {"train": data["train"].subset(range(4)), **{s: data[s] for s in ("valid", "test")}}
    settings = TrainConfig(batch_size=1, max_epochs=2, patience=2, eval_batch_size=4)
    hp = {"hidden_size": 4, "learning_rate": 0.05, "momentum": 0.9, "input_noise": 0.3}
    trials = [PackTrial(0, hp, 1), PackTrial(1, {**hp, "hidden_size": 6, "input_noise": 0.1}, 2)]

    def histories(pack):
        got: dict = {}
        run = train_pack(
            jsb, "V", pack, splits, settings, len(pack),
            lambda key, m: got.setdefault(key, []).append(m), DEVICE,
        )  # fmt: skip
        results = dict(run)
        return {
            k: [{n: v for n, v in m.items() if n != "time_s"} for m in h] for k, h in got.items()
        }, results

    triton_launch.LAUNCHES.clear()
    (together, results), (alone, _) = histories(trials), histories(trials[:1])
    assert triton_launch.LAUNCHES["_add_noise"] == 2 * 2 * 4  # two runs, one launch a step
    assert together[0] == alone[0] and len(alone[0]) == 2
    assert all(r["status"] == "complete" for r in results.values())


@pytest.mark.gpu
@pytest.mark.parametrize("name", FUSED)
def test_cuda_triton_pack_equals_reference(name, on_gpu):
    """The compiled kernels on CUDA, chosen by the default path for a pack, against the
    reference loop on CUDA: float32 (exact products, no TF32) and float64."""
    torch.manual_seed(7)
    for dtype, tol in (
        (torch.float32, {"atol": 2e-5, "rtol": 1e-4}),
        (torch.float64, {"atol": 1e-10, "rtol": 1e-9}),
    ):
        pack = variants.build(name, 3, 37, bidirectional=True, trials=4).to("cuda", dtype)
        x, lengths = pack_data(k=4, dtype=dtype)
        x = x.cuda()
        cell = pack.cells[0]
        path = fast.gru_path(cell, x) if name == "GRU" else fast.lstm_path(cell, x)
        assert path == "triton"
        want = run_pack(pack, x, lengths, "reference")
        assert_all_close(run_pack(pack, x, lengths, "fast"), want, **tol)


@pytest.mark.gpu
def test_cuda_triton_inactive_slot_and_nan(on_gpu):
    torch.manual_seed(8)
    pack = variants.build("V", 3, 40, trials=3).cuda()
    with torch.no_grad():
        pack.cells[0].R[1].fill_(float("nan"))
    x, lengths = pack_data(dtype=torch.float32)
    got = run_pack(pack, x.cuda(), lengths, "fast", active=torch.tensor([True, False, True]))
    assert all(torch.isfinite(t).all() for t in got)

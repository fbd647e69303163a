"""The cell contract, and the conformance checks a cell must pass before a study trains it.

A cell (built-in or a user's plug-in) is an `nn.Module` class with

    __init__(self, spec, input_size, hidden_size, trials=1, generator=None)
        every parameter carries a leading trial dimension K = `trials` (a *pack* trains K
        independent trials at once; a single model is K = 1); weights are drawn from
        `generator` only, so a trial's initial weights are a function of its seed
    scan(self, x, steps=None, need_cells=True) -> (y, c)
        x (K, T, B, M) -> y (K, T, B, N); c is the cell state (K, T, B, N) or None; the initial
        state is zero and nothing is kept between calls. steps (K,) may be ignored: a trial's
        steps past steps[k] are padding, whose outputs the layer discards
    hidden_blocks(self) -> {parameter name: blocks per dimension after K}
        how many blocks of N units each dimension holds (None: not made of units), e.g. an
        LSTM's R (K, 4N, N) is (4, 1). A pack pads a narrower trial with zero units by it, so
        zero units must output exactly zero. In a stack (`training.layers`), a cell above the
        first has its attribute `input_blocks` set to the blocks of units its input holds (the
        directions below it): report it for W's input dimension (e.g. `(4, self.input_blocks)`)
and optionally the class attributes `packable = False` (runs one trial per job), `flags = {...}`
(boolean flags a study file may set, with defaults; the cell reads them from `spec.flag(name)`)
and `parameter_count(input_size, hidden_size)` (checked against the parameters it allocates).

`check_cell` runs the checks on small shapes and returns one `Finding` per check; the same checks
hold for the built-in cells (tests/test_contract.py), so they are the contract, not a wish list.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

M, N, NARROW, K, T, B = 3, 4, 2, 3, 5, 2  # small shapes: the checks take a second or two


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `detail` holds the number that failed (or what was measured)."""

    check: str
    ok: bool
    detail: str = ""


def split_units(t: torch.Tensor, blocks: tuple[int | None, ...]) -> torch.Tensor:
    """One trial's tensor viewed with every dimension of `b` unit blocks split into (b, units)."""
    shape: list[int] = []
    for size, b in zip(t.shape, blocks, strict=True):
        shape += [size] if b is None else [b, size // b]
    return t.view(shape)


def unit_index(blocks: tuple[int | None, ...], units: int) -> tuple[slice, ...]:
    """Index of the first `units` units of every block (in a `split_units` view)."""
    index: list[slice] = []
    for b in blocks:
        index += [slice(None)] if b is None else [slice(None), slice(0, units)]
    return tuple(index)


def _make(kind, spec, hidden: int, trials: int, seed: int, dtype=torch.float32) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    return kind.cell(spec, M, hidden, trials=trials, generator=gen).to(dtype)


def _y(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return cell.scan(x, None, need_cells=False)[0]


def _input(dtype=torch.float32, trials: int = K, seed: int = 1) -> torch.Tensor:
    return torch.randn(trials, T, B, M, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


class _Scan(nn.Module):
    """`cell.scan` as a module's forward, for `functional_call` (a cell need not have one)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell.scan(x, None, need_cells=False)[0]


def _construct(kind, spec) -> Finding:
    cell = _make(kind, spec, N, K, 0)
    params = dict(cell.named_parameters())
    if not params:
        return Finding("construct", False, "the cell has no parameters")
    bad = [n for n, p in params.items() if p.dim() < 1 or p.shape[0] != K]
    if bad:
        return Finding("construct", False, f"parameter {bad[0]} lacks the trial dimension K={K}")
    return Finding("construct", True, f"{len(params)} parameter tensors")


def _shapes(kind, spec) -> Finding:
    y, c = _make(kind, spec, N, K, 0).scan(_input(), None, need_cells=True)
    want = (K, T, B, N)
    if tuple(y.shape) != want:
        return Finding("shapes", False, f"y has shape {tuple(y.shape)}, expected {want}")
    if c is not None and tuple(c.shape) != want:
        return Finding("shapes", False, f"c has shape {tuple(c.shape)}, expected {want} or None")
    return Finding("shapes", True, f"x {(K, T, B, M)} -> y {want}")


def _blocks(kind, spec) -> Finding:
    cell = _make(kind, spec, N, K, 0)
    blocks, params = cell.hidden_blocks(), dict(cell.named_parameters())
    if set(blocks) != set(params):
        return Finding(
            "hidden_blocks",
            False,
            f"names {sorted(blocks)} differ from the parameters {sorted(params)}",
        )
    for name, p in params.items():
        b = blocks[name]
        if len(b) != p.dim() - 1:
            return Finding("hidden_blocks", False, f"{name}: {len(b)} entries for {p.dim() - 1}")
        for size, n_blocks in zip(p.shape[1:], b, strict=True):
            if n_blocks is not None and size != n_blocks * N:
                return Finding(
                    "hidden_blocks", False, f"{name}: a dimension of {size} is not {n_blocks} x N"
                )
    return Finding("hidden_blocks", True)


def _seeded(kind, spec) -> Finding:
    a, b, c = (_make(kind, spec, N, K, s) for s in (7, 7, 8))
    pa, pb, pc = (list(m.parameters()) for m in (a, b, c))
    if not all(torch.equal(u, v) for u, v in zip(pa, pb, strict=True)):
        return Finding("seeded", False, "two cells from the same seed hold different weights")
    if all(torch.equal(u, v) for u, v in zip(pa, pc, strict=True)):
        return Finding("seeded", False, "cells from seeds 7 and 8 hold the same weights")
    x = _input()
    if not torch.equal(_y(a, x), _y(a, x)):
        return Finding("seeded", False, "two runs of the same input differ")
    return Finding("seeded", True)


def _stateless(kind, spec) -> Finding:
    cell, x = _make(kind, spec, N, K, 0), _input()
    first = _y(cell, x)
    later = x.clone()
    later[:, 2:] = torch.randn(later[:, 2:].shape, generator=torch.Generator().manual_seed(5))
    # a tolerance, not equality: a kernel may round differently for another T (its input
    # projection is one matrix product over all steps)
    gap = _gap(_y(cell, later)[:, :2], first[:, :2])
    if gap > 1e-6:
        return Finding(
            "zero initial state, causal", False, f"later inputs moved y(0..1) by {gap:.3g}"
        )
    again = _gap(_y(cell, x), first)
    if again > 0:
        return Finding("zero initial state, causal", False, f"a second call differs by {again:.3g}")
    if _gap(_y(cell, x[:, :1]), first[:, :1]) > 1e-6:
        return Finding("zero initial state, causal", False, "y(0) depends on the sequence length")
    return Finding("zero initial state, causal", True)


def _copy_slot(dst: nn.Module, src: nn.Module, slot: int, units: int) -> None:
    """Trial 0 of `src` (width `units`) into slot `slot` of `dst`, padded with zero units."""
    blocks = dst.hidden_blocks()
    sp = dict(src.named_parameters())
    with torch.no_grad():
        for name, p in dst.named_parameters():
            p[slot].zero_()
            index = unit_index(blocks[name], units)
            split_units(p[slot], blocks[name])[index] = split_units(sp[name][0], blocks[name])


def _pack(kind, spec) -> Finding:
    singles = [_make(kind, spec, N, 1, 10 + k) for k in range(K)]
    pack = _make(kind, spec, N, K, 0)
    for k, s in enumerate(singles):
        _copy_slot(pack, s, k, N)
    x = _input()
    y_pack = _y(pack, x)
    y_pack.square().sum().backward()
    worst_y = worst_g = 0.0
    for k, s in enumerate(singles):
        y = _y(s, x[k : k + 1])
        y.square().sum().backward()
        worst_y = max(worst_y, _gap(y[0], y_pack[k]))
        for (name, p), q in zip(pack.named_parameters(), s.parameters(), strict=True):
            if (p.grad is None) != (q.grad is None):
                return Finding("pack = singles", False, f"{name}: a gradient only on one side")
            if p.grad is not None:
                worst_g = max(worst_g, _gap(p.grad[k], q.grad[0]))
    tol = 1e-5
    if worst_y > tol or worst_g > tol:
        return Finding(
            "pack = singles", False, f"max |difference| y {worst_y:.3g}, gradients {worst_g:.3g}"
        )
    return Finding("pack = singles", True, f"max |difference| {max(worst_y, worst_g):.1e}")


def _padded(kind, spec) -> Finding:
    narrow = _make(kind, spec, NARROW, 1, 3)
    wide = _make(kind, spec, N, 1, 0)
    _copy_slot(wide, narrow, 0, NARROW)
    x = _input(trials=1)
    y_wide, y_narrow = _y(wide, x), _y(narrow, x)
    leak = float(y_wide[..., NARROW:].detach().abs().max())
    if leak != 0.0:
        return Finding("padded units zero", False, f"zero units output up to {leak:.3g}")
    gap = _gap(y_wide[..., :NARROW], y_narrow)
    if gap > 1e-5:
        return Finding("padded units zero", False, f"padding moved the real units by {gap:.3g}")
    return Finding("padded units zero", True)


def _gradcheck(kind, spec) -> Finding:
    scan = _Scan(_make(kind, spec, 2, 2, 0, torch.float64))
    names = [n for n, _ in scan.named_parameters()]
    x = _input(torch.float64, trials=2)[:, :3].requires_grad_(True)

    def f(x, *params):
        return functional_call(scan, dict(zip(names, params, strict=True)), (x,))

    params = [p.detach().clone().requires_grad_(True) for p in scan.parameters()]
    try:
        torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)
    except Exception as e:  # gradcheck raises GradcheckError with the mismatch
        return Finding("gradcheck (float64)", False, str(e).strip().splitlines()[0][:160])
    return Finding("gradcheck (float64)", True)


def _gradients(kind, spec) -> Finding:
    cell = _make(kind, spec, N, K, 0)
    _y(cell, _input()).sum().backward()
    dead = [n for n, p in cell.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if dead:
        return Finding(
            "every parameter learns", False, f"{', '.join(dead)} get(s) no gradient (unused?)"
        )
    return Finding("every parameter learns", True)


def _count(kind, spec) -> Finding:
    cell = _make(kind, spec, N, K, 0)
    per_trial = sum(p.numel() for p in cell.parameters()) // K
    formula = getattr(kind.cell, "parameter_count", None)
    if formula is None:
        return Finding("parameter count", True, f"{per_trial} per trial at M={M}, N={N}")
    want = int(formula(M, N))
    if want != per_trial:
        return Finding("parameter count", False, f"allocates {per_trial}, parameter_count {want}")
    return Finding("parameter count", True, f"{per_trial} per trial")


def _tiny_task(kind, spec) -> Finding:
    """30 SGD steps of the cell and a linear readout on a small regression (the running mean of
    the inputs): the outputs and the loss stay finite."""
    gen = torch.Generator().manual_seed(0)
    cell = _make(kind, spec, N, 1, 0)
    readout = nn.Linear(N, 1)
    opt = torch.optim.SGD([*cell.parameters(), *readout.parameters()], lr=0.05)
    x = torch.randn(1, 20, 8, M, generator=gen)  # (K, T, B, M)
    target = x.mean(-1, keepdim=True).cumsum(1) / torch.arange(1, 21).view(1, -1, 1, 1)
    losses = []
    for _ in range(30):
        loss = (readout(_y(cell, x)) - target).square().mean()
        if not math.isfinite(float(loss.detach())):
            return Finding(
                "finite on a tiny task",
                False,
                f"loss {float(loss.detach())} after {len(losses)} steps",
            )
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Finding("finite on a tiny task", True, f"loss {losses[0]:.3g} -> {losses[-1]:.3g}")


Check = Callable[..., Finding]
# (name, check): the quick ones run before every study that trains a plug-in cell
QUICK: tuple[tuple[str, Check], ...] = (
    ("construct", _construct),
    ("shapes", _shapes),
    ("hidden_blocks", _blocks),
    ("zero initial state, causal", _stateless),
    ("pack = singles", _pack),
    ("padded units zero", _padded),
)
FULL: tuple[tuple[str, Check], ...] = (
    *QUICK,
    ("seeded", _seeded),
    ("every parameter learns", _gradients),
    ("gradcheck (float64)", _gradcheck),
    ("parameter count", _count),
    ("finite on a tiny task", _tiny_task),
)
PACK_ONLY = ("pack = singles", "padded units zero")


def check_cell(spec, quick: bool = False) -> list[Finding]:
    """Run the contract's checks (the quick ones only with `quick`) on variant `spec` of a
    registered kind. A check that raises fails with the exception in one line; a cell that is
    not `packable` skips the pack checks (it runs one trial per job)."""
    from variants.registry import cell_kind

    kind = cell_kind(spec)
    out = []
    for name, check in QUICK if quick else FULL:
        if name in PACK_ONLY and not kind.packable:
            out.append(Finding(name, True, "skipped: not packable"))
            continue
        try:
            out.append(check(kind, spec))
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            out.append(Finding(name, False, f"{type(e).__name__}: {first}"))
    return out

"""What the driver submits: trials one by one, or packs of trials (`study.pack`).

Random search draws every trial's parameters independently of results, so all of a (task,
variant)'s remaining trials can be asked up front and trained together. They are taken in
rounds of `PACK_ROUND` x pack trials by trial number (so that a study stopped part-way has
finished whole rounds of random trials, not the small ones first), and each round is sorted by
hidden size and cut into jobs of `PACK_QUEUE` x pack trials (so that a job's layer, as wide as
its widest trial, pads little), each trained with `pack` slots. On CUDA, where packs are large
(hundreds of trials: a pair's whole sample in one job otherwise), a round is first cut into
buckets of similar width (`width_buckets`) so that padded units waste at most `MAX_PAD_WASTE`
of a job's recurrent arithmetic; each bucket is then cut into jobs. Adaptive samplers (TPE) need
each result before the next ask, so they run one trial per job (pack size 1).

Pack size: `training.pack` when given; otherwise the measured default for the device and the
task's directionality (`DEFAULT_PACK`, `DEFAULT_PACK_BIDIRECTIONAL`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from study import record
from study.config import StudyConfig
from study.record import Pending
from study.space import hyperparameters, stable_seed

log = logging.getLogger(__name__)

# measured with `odyssey bench study --protocol paper` (benchmarks/README.md): on the CPU packs of
# 4 are the fastest for one-direction tasks (JSB Chorales 1.2-1.7x) and slower than single trials
# for the bidirectional ones (TIMIT, IAM-OnDB stand-ins: 0.9x), so those run one at a time there
DEFAULT_PACK = {"cpu": 4, "cuda": 256}
DEFAULT_PACK_BIDIRECTIONAL = {"cpu": 1, "cuda": 256}
PACK_QUEUE = 2  # trials per job = PACK_QUEUE x pack: a stopped trial's slot takes the next
PACK_ROUND = 4  # trials per round = PACK_ROUND x pack, in trial-number order
# on CUDA: the most of a job's recurrent arithmetic (N^2 per gate block and row, at the layer's
# width N) that its narrower trials' padded units may take (`padding_waste`)
MAX_PAD_WASTE = 0.25


def padding_waste(widths: Sequence[int]) -> float:
    """The fraction of a pack's recurrent arithmetic spent on padded units: its layer is as wide
    as its widest trial (N), and a trial of width n uses n^2 of the N^2 multiply-adds of every
    recurrent matrix block, so 1 - sum(n^2) / (K N^2) for K trials (0 for none)."""
    if not widths:
        return 0.0
    top = max(widths)
    return 1.0 - sum(n * n for n in widths) / (len(widths) * top * top)


def width_buckets(
    widths: Sequence[int], max_waste: float = MAX_PAD_WASTE, most: int | None = None
) -> list[list[int]]:
    """Indices of `widths` in buckets of similar width, widest first: each bucket starts at the
    widest trial left and takes the next widest while its `padding_waste` stays within
    `max_waste` and it holds at most `most` trials (None: no limit). Ties keep index order."""
    order = sorted(range(len(widths)), key=lambda k: (-widths[k], k))
    buckets: list[list[int]] = []
    for k in order:
        last = buckets[-1] if buckets else None
        if (
            last is not None
            and (most is None or len(last) < most)
            and padding_waste([widths[j] for j in last] + [widths[k]]) <= max_waste
        ):
            last.append(k)
        else:
            buckets.append([k])
    return buckets


def pack_size(cfg: StudyConfig, device: str, bidirectional: bool = False) -> int:
    """The pack size of a task's trials on `device` (1: one trial per job, as before packs):
    `training.pack` when given, else the measured default for the device and the task's
    directionality; always 1 for an adaptive sampler."""
    if cfg.sampler != "random":
        if (cfg.training.pack or 1) > 1:
            log.info("sampler %s asks after each result: trials run one at a time", cfg.sampler)
        return 1
    defaults = DEFAULT_PACK_BIDIRECTIONAL if bidirectional else DEFAULT_PACK
    return cfg.training.pack or defaults.get(device, 1)


def packable(variant: str) -> bool:
    """Whether the variant's cell kind trains K trials at once (a plug-in may say it does not:
    `packable = False`; its trials then run one per job)."""
    import variants

    spec = variants.VARIANTS.get(variant)
    return spec is None or variants.cell_kind(spec).packable


def variant_name(item: Pending | tuple[str, str]) -> str:
    return item.variant if isinstance(item, Pending) else item[1]


def trial_seed(cfg: StudyConfig, p: Pending) -> int:
    """The trial's torch seed (initial weights, shuffling, noise): from (seed, task, variant, k)."""
    return seed_of(cfg.seed, p.task, p.variant, p.number)


def seed_of(study_seed: int, task: str, variant: str, number: int) -> int:
    """Trial `number`'s torch seed in a study seeded `study_seed` (what results rows record)."""
    return stable_seed(study_seed, task, variant, number, "train")


def _base(cfg: StudyConfig, task: str, variant: str, data_path: str, device: str) -> dict:
    return {
        "task": task,
        "variant": variant,
        "data_path": data_path,
        "training": cfg.training.model_dump(),
        "device": device,
        "hidden_size_meaning": cfg.space.hidden_size_meaning,
        # a variant declared in the study file travels as its flags (None: the registry's)
        "variant_spec": (
            dict(cfg.custom_variants[variant]) if variant in cfg.custom_variants else None
        ),
        # plug-ins travel as import paths: the worker registers them itself
        "plugins": cfg.declared_plugins(),
        "plugin_dirs": list(cfg.plugin_dirs),
    }


def trial_job(cfg: StudyConfig, p: Pending, data_path: str, device: str) -> dict[str, Any]:
    """The job of one trial (`study.worker.run_trial`)."""
    return {
        **_base(cfg, p.task, p.variant, data_path, device),
        "trial": p.number,
        "hparams": hyperparameters(p.params),
        "seed": trial_seed(cfg, p),
    }


def pack_job(
    cfg: StudyConfig, trials: list[Pending], data_path: str, device: str, pack: int
) -> dict[str, Any]:
    """The job of a pack of trials of one (task, variant) (`study.worker.run_pack`)."""
    first = trials[0]
    assert all((p.task, p.variant) == (first.task, first.variant) for p in trials)
    return {
        **_base(cfg, first.task, first.variant, data_path, device),
        "kind": "pack",
        "slots": max(1, min(pack, len(trials))),
        "trials": [
            {"trial": p.number, "hparams": hyperparameters(p.params), "seed": trial_seed(cfg, p)}
            for p in trials
        ],
    }


def width_of(meaning: str, bidirectional: bool) -> Callable[[Pending], int]:
    """A trial's layer width (hidden units per direction)."""
    from study.model import hidden_per_direction  # torch: imported only where packs are cut

    def hidden(p: Pending) -> int:
        return hidden_per_direction(int(p.params["hidden_size"]), meaning, bidirectional)

    return hidden


def cut_into_packs(
    trials: list[Pending], pack: int, meaning: str, bidirectional: bool, device: str = "cpu"
) -> list[list[Pending]]:
    """One (task, variant)'s trials in rounds of PACK_ROUND x pack by trial number, each round
    sorted by hidden size (then number) and cut into jobs of at most PACK_QUEUE x pack trials;
    on CUDA each round is first cut into `width_buckets` (at most `MAX_PAD_WASTE` padding)."""
    size, round_size = max(1, PACK_QUEUE * pack), max(1, PACK_ROUND * pack)
    hidden = width_of(meaning, bidirectional)
    by_number = sorted(trials, key=lambda p: p.number)
    jobs = []
    for r in range(0, len(by_number), round_size):
        ordered = sorted(by_number[r : r + round_size], key=lambda p: (hidden(p), p.number))
        groups = [ordered]
        if device.startswith("cuda"):
            buckets = width_buckets([hidden(p) for p in ordered], MAX_PAD_WASTE)
            groups = [[ordered[k] for k in sorted(b)] for b in buckets[::-1]]
        for group in groups:
            jobs += [group[i : i + size] for i in range(0, len(group), size)]
    return jobs


def interleave(
    per_pair: Sequence[Sequence[Any]],
    done: Sequence[int] | None = None,
    size: Callable[[Any], int] = len,
) -> list[Any]:
    """The pairs' jobs (each pair's in its own order) merged so that the pairs' trial counts stay
    level: the next job is always the lowest pair's, a pair's count being its `done` (recorded)
    trials plus the `size` of its jobs already taken (ties: the pairs' order). A study stopped
    part-way then has as many trials in every group as the run allowed, not the groups that were
    ahead further ahead. Without `done` (all level) this is round-robin."""
    level = list(done) if done is not None else [0] * len(per_pair)
    nxt = [0] * len(per_pair)
    out: list[Any] = []
    while True:
        open_ = [i for i, jobs in enumerate(per_pair) if nxt[i] < len(jobs)]
        if not open_:
            return out
        i = min(open_, key=lambda i: (level[i], i))
        job = per_pair[i][nxt[i]]
        out.append(job)
        nxt[i] += 1
        level[i] += size(job)


def task_of(item) -> str:
    """The task of a queue item: a Pending trial, a (task, variant) pair or a pack."""
    if isinstance(item, list):
        return item[0].task
    return item.task if isinstance(item, Pending) else item[0]


def ask_packs(
    cfg: StudyConfig,
    studies: dict,
    space: dict,
    queue: deque,
    packs: dict[str, int],
    device: str = "cpu",
    done: dict[tuple[str, str], int] | None = None,
) -> deque:
    """Turn the queue (interrupted trials and pairs to ask) into packs where a task's pack size
    is above 1: every remaining trial of such a pair is asked now (random search draws them
    independently of results), then the pair's trials are cut into packs of similar hidden
    size (`cut_into_packs` on `device`), merged over the pairs by `interleave` so that their
    counts (`done`: recorded trials per pair) stay level. Tasks that run one trial per job keep
    their items."""
    import tasks

    by_pair: dict[tuple[str, str], list[Pending]] = {}
    single: deque = deque()
    for item in queue:
        if packs[task_of(item)] == 1 or not packable(variant_name(item)):
            single.append(item)
            continue
        p = item if isinstance(item, Pending) else record.ask(studies[item], space, *item)
        by_pair.setdefault((p.task, p.variant), []).append(p)
    per_pair = [
        cut_into_packs(
            trials,
            packs[task],
            cfg.space.hidden_size_meaning,
            tasks.get(task).bidirectional,
            device,
        )
        for (task, _), trials in by_pair.items()
    ]
    level = [(done or {}).get(pair, 0) for pair in by_pair]
    return deque(interleave(per_pair, level)) + single


def repack(
    first: Pending, queue: deque, width: Callable[[Pending], int] | None = None
) -> list[Pending]:
    """`first` and the other retried trials of its pair waiting in `queue`, as one pack. With
    `width` (on CUDA: `width_of`), only those, nearest in width first, that keep the pack's
    `padding_waste` within `MAX_PAD_WASTE`; the others wait for a pack of their own."""
    pair = (first.task, first.variant)
    same = [q for q in queue if isinstance(q, Pending) and (q.task, q.variant) == pair]
    if width is not None:
        taken, widths = [], [width(first)]
        for q in sorted(same, key=lambda q: abs(width(q) - widths[0])):
            if padding_waste([*widths, width(q)]) <= MAX_PAD_WASTE:
                taken.append(q)
                widths.append(width(q))
        same = [q for q in same if any(q is t for t in taken)]
    for q in same:
        queue.remove(q)
    return [first, *same]

"""IAM-OnDB: online handwriting -> character sequence with CTC (Greff et al. 2017, section IV-B).

Inputs: 4 features per pen point (dx, dy, pen lift, time since stroke start; `features`),
z-normalised with training statistics. Outputs: 82 = 81 characters (`alphabet`) + CTC blank.
Loss: CTC summed over the sequences of a batch. Metric: character error rate of best-path
decodings, total edits / total reference characters (`ctc`). Bidirectional network.

Sources: "real" reads the IAM On-Line Handwriting Database from `--path` in its original layout
(`corpus`); "synthetic" (default, a stand-in) first generates a corpus in that same layout from
Hershey single-stroke fonts and our own sentences (`generate`, `handwriting`, `sentences`), then
reads it with the same reader (`prepare`).
"""

from __future__ import annotations

from tasks.base import Task
from tasks.iam_online import ctc
from tasks.iam_online.alphabet import ALPHABET, NUM_CLASSES
from tasks.iam_online.prepare import prepare, tiny


def data_notes(meta: dict) -> list[str]:
    notes = []
    forms = meta.get("excluded_forms") or []
    if forms:
        notes.append(f"form(s) left out, as in the paper: {', '.join(forms)}")
    rejected = int(meta.get("rejected_lines", 0))
    unknown = "".join(meta.get("unknown_characters", {}))
    if rejected:
        notes.append(
            f"{rejected} line(s) with characters outside the {len(ALPHABET)}-symbol alphabet "
            f"dropped ({unknown!r})"
        )
    short = int(meta.get("dropped_too_short_for_ctc_count", 0))
    if short:
        notes.append(f"{short} line(s) too short for CTC (fewer points than labels) dropped")
    if not rejected and not short:
        notes.append("no line dropped")
    notes.append("CER = edits / reference characters over the set, best-path decoding")
    return notes


TASK = Task(
    name="iam_online",
    title="IAM-OnDB (online handwriting, CTC character error)",
    input_size=4,
    output_size=NUM_CLASSES,
    bidirectional=True,
    metric="char_error",
    metric_direction="minimize",
    loss_name="CTC (summed over sequences)",
    sources=("synthetic", "real"),
    default_source="synthetic",
    stand_in=("synthetic",),
    description=f"5355/2956/3859 handwritten lines, 4 inputs per pen point, {len(ALPHABET)} "
    "characters + blank; synthetic: Hershey-font handwriting in the IAM-OnDB layout",
    prepare=prepare,
    collate=ctc.collate,
    loss=ctc.loss,
    sequence_loss=ctc.sequence_loss,
    errors=ctc.errors,
    tiny=tiny,
    data_notes=data_notes,
)

__all__ = ["TASK"]

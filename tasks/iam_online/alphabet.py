"""The 81-symbol character set of the IAM-OnDB task and its CTC label ids (paper section IV-B).

Greff et al. train 82 softmax outputs: 81 characters plus the CTC blank. The paper does not list
the characters, so this set is our reconstruction, in ASCII order:

    space ! " # & ' ( ) * + , - . / 0-9 : ; ? A-Z [ ] a-z          (1 + 18 + 10 + 26 + 26 = 81)

Evidence: the IAM-OnDB line label file `t2_labels.mlf` (shipped with the database's recognition
task) names 82 labels: the 62 letters and digits plus `sp ex qu ga do am ti sl lb rb ls rs sr cm
mi pl pt cl sc qm` (space ! " #-garbage ? & ' / ( ) [ ] * , - + . : ; ?). All but `do`, whose
character we could not identify, are in the set above. `%` is not: the paper removed board
a08-551z because of untranscribed `%` characters (see `corpus.EXCLUDED_FORMS`).

Label ids: 0 is the CTC blank, character k of `ALPHABET` has id k + 1 (ids 1..81).
"""

from __future__ import annotations

import numpy as np

ALPHABET = " !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz"
BLANK = 0
NUM_CLASSES = len(ALPHABET) + 1  # 82 = 81 characters + blank

_ID = {c: i + 1 for i, c in enumerate(ALPHABET)}

# Typographic variants written as their plain ASCII form; anything else outside ALPHABET is
# unknown and the line is rejected (see `corpus.read_corpus`).
MAPPED = {"\u2018": "'", "\u2019": "'", "`": "'", "\u201c": '"', "\u201d": '"', "\t": " "}

assert len(ALPHABET) == 81 and len(set(ALPHABET)) == 81


def normalise(text: str) -> str:
    """Apply `MAPPED`, collapse runs of whitespace to one space and strip the ends."""
    return " ".join("".join(MAPPED.get(c, c) for c in text).split())


def unknown_chars(text: str) -> set[str]:
    return {c for c in text if c not in _ID}


def encode(text: str) -> np.ndarray:
    """Characters -> int64 label ids 1..81; raises ValueError naming an unknown character."""
    try:
        return np.array([_ID[c] for c in text], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the 81-symbol alphabet") from None


def decode(ids) -> str:
    """Label ids (no blanks) -> text."""
    return "".join(ALPHABET[int(i) - 1] for i in ids)

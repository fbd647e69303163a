"""Our own English-like sentences for the generated IAM-OnDB stand-in (not IAM's LOB texts).

Sentences come from templates over word lists written for this project; punctuation, digits and
capitals appear at rates loosely like newspaper prose, and every one of the 81 alphabet symbols
can occur. `paragraph` joins sentences and `wrap` breaks a paragraph into handwritten lines.
"""

from __future__ import annotations

import numpy as np

NAMES = """Adams Baker Carter Dawson Ellis Fisher Grant Hughes Irwin Jones Kelly Lawson Morgan
Nash Owen Palmer Quinn Reed Shaw Turner Upton Vaughan Walsh Young Brooks Clarke Doyle Evans
Foster Gibson Harper Jenkins Knight Lloyd Mason Norris Porter Russell Spencer Tucker Webb
Zola Xenos Fox Cox""".split()
FIRST = """Anne Bill Clara David Edith Frank Grace Henry Irene James Kate Leonard Mary Neil Olive
Peter Rose Simon Tom Vera Walter Alice George Helen Arthur Joan Robert Susan Paul Martha
Xavier Zoe Max Liz""".split()
PLACES = """London Leeds York Bristol Dover Oxford Bath Derby Exeter Glasgow Hull Kent Lincoln
Norwich Perth Reading Salisbury Wells Durham Chester Brighton Cardiff Dublin Paris Geneva
Zurich Essex Oxted""".split()
NOUNS = """board committee council member party report meeting letter house garden river road
village station market school church window table money price plan island harbour office
doctor teacher farmer minister museum bridge engine machine summer winter morning evening
question answer example picture story paper journey holiday family friend neighbour officer
result figure number problem method surface weight light water fire power voice music colour
field hill forest valley island county street corner wall door book chapter record evidence
account reason season treaty vote budget factory company worker union strike trade contract
size prize zone quiz puzzle box tax axe""".split()
ADJS = """new old young large small long short early late public private local national
great little whole certain different important possible simple strong quiet sudden bright dark
cold warm heavy narrow broad careful fair final free full general good happy high low main
modern natural open plain poor real rich rough serious short social special strange usual
lazy frozen exact complex""".split()
VERBS = """agreed asked believed brought called carried changed decided described expected
explained found gave held hoped kept left lost made met moved noticed offered opened paid passed
placed played promised raised reached received remembered reported seemed sent showed signed
spoke started stopped suggested supported told took turned used visited waited walked wanted
watched wrote built chose followed joined""".split()
ADVS = """quickly slowly quietly clearly nearly simply certainly probably suddenly finally
recently already perhaps almost often seldom rarely gladly""".split()
PREPS = (
    "in on at near behind beside under over across through from into towards after before".split()
)
DETS = "the the the a a this that every each another some no their his her our".split()
MONTHS = """January February March April May June July August September October November
December""".split()
CONJ = "and but so yet while because although since when".split()


class _Words:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, words: list[str]) -> str:
        return words[int(self.rng.integers(len(words)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def number(self) -> str:
        kind = self.rng.random()
        if kind < 0.35:
            return str(int(self.rng.integers(2, 100)))
        if kind < 0.6:
            return str(int(self.rng.integers(1850, 1990)))
        if kind < 0.8:
            return f"{int(self.rng.integers(1, 13))}:{int(self.rng.integers(0, 60)):02d}"
        return f"{int(self.rng.integers(1, 50))},{int(self.rng.integers(0, 1000)):03d}"

    def noun_phrase(self) -> str:
        parts = [self.pick(DETS)]
        if self.chance(0.45):
            parts.append(self.pick(ADJS))
        parts.append(self.pick(NOUNS))
        phrase = " ".join(parts)
        if phrase.startswith("a ") and phrase[2] in "aeiou":
            phrase = "an" + phrase[1:]
        return phrase

    def person(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"{self.pick(['Mr.', 'Mrs.', 'Dr.', 'Miss'])} {self.pick(NAMES)}"
        if r < 0.7:
            return f"{self.pick(FIRST)} {self.pick(NAMES)}"
        return self.pick(FIRST)

    def subject(self) -> str:
        return self.person() if self.chance(0.4) else self.noun_phrase()

    def clause(self) -> str:
        parts = [self.subject()]
        if self.chance(0.2):
            parts.append(self.pick(ADVS))
        parts.append(self.pick(VERBS))
        parts.append(self.noun_phrase())
        if self.chance(0.5):
            parts.append(
                f"{self.pick(PREPS)} "
                f"{self.pick(PLACES) if self.chance(0.4) else self.noun_phrase()}"
            )
        return " ".join(parts)


def sentence(rng: np.random.Generator) -> str:
    """One sentence, capitalised and punctuated."""
    w = _Words(rng)
    r = rng.random()
    if r < 0.45:
        s = w.clause()
        if w.chance(0.35):
            s += f", {w.pick(CONJ)} {w.clause()}"
        end = "." if w.chance(0.9) else w.pick(["!", "?"])
    elif r < 0.58:
        s = f"On {int(rng.integers(1, 29))} {w.pick(MONTHS)} {w.number()} {w.clause()}"
        end = "."
    elif r < 0.68:
        quote = w.clause()
        s = f'"{quote[0].upper()}{quote[1:]}," said {w.person()}'
        end = "."
    elif r < 0.76:
        s = f"{w.clause()} ({w.number()} {w.pick(NOUNS)}s)"
        end = "."
    elif r < 0.83:
        s = f"{w.clause()}; {w.clause()}"
        end = "."
    elif r < 0.88:
        s = (
            f"Why {w.pick(['did', 'should', 'would'])} {w.subject()} "
            f"{w.pick(['wait', 'leave', 'stay', 'agree'])}"
        )
        end = "?"
    elif r < 0.92:
        s = (
            f"{w.pick(NAMES)} & {w.pick(NAMES)} {w.pick(VERBS)} {w.number()} "
            f"{w.pick(NOUNS)}s: {w.pick(ADJS)} and {w.pick(ADJS)}"
        )
        end = "."
    elif r < 0.95:
        s = (
            f"Item #{int(rng.integers(1, 99))} {w.pick(VERBS)} {w.number()} + {w.number()} "
            f"{w.pick(NOUNS)}s [{w.pick(PLACES)}]"
        )
        end = "."
    elif r < 0.98:
        s = (
            f"The {w.pick(ADJS)}-{w.pick(ADJS)} {w.pick(NOUNS)}/{w.pick(NOUNS)} was "
            f"{w.pick(ADVS)} {w.pick(VERBS)}*"
        )
        end = "."
    else:
        s = f"'{w.pick(ADJS).capitalize()} {w.pick(NOUNS)}s' {w.pick(VERBS)} {w.noun_phrase()}"
        end = "!"
    return s[0].upper() + s[1:] + end


def paragraph(rng: np.random.Generator, min_chars: int) -> str:
    """Sentences joined by spaces until the text has at least `min_chars` characters."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < min_chars:
        parts.append(sentence(rng))
    return " ".join(parts)


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap into lines of at most `width` characters (longer words stand alone)."""
    lines: list[str] = []
    cur = ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(cur)
    return lines

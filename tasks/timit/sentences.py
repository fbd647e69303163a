"""Prompts for the generated TIMIT stand-in: sentences built combinatorially from our own word lists.

Not TIMIT's prompts. The lists are chosen to cover English phones broadly (including rarer ones
such as zh in "measure", oy in "voyage", ng, th/dh, ch/jh, and the glottal stop q
with syllabic en in "button"), and each template gives a sentence of
roughly TIMIT's length (about 7-12 words, 2-4 seconds of speech).
"""

from __future__ import annotations

import numpy as np

ADJ = (
    "quiet heavy bright yellow ancient gentle frozen tiny enormous smooth rough hungry clever noisy "
    "purple ordinary usual strange thick shiny muddy careful cheerful lazy precious modern wooden "
    "gloomy sharp juicy rusty golden pleasant awkward eager foolish vivid royal loyal sober casual "
    "humble fragile thirsty"
).split()
NOUN = (
    "farmer bag orange teacher window garden river engine treasure vision table pencil cabbage "
    "bicycle monkey kitchen blanket ladder jacket voyage cowboy oyster mountain pocket bottle "
    "chimney basket feather village judge sheriff puzzle shadow camera lizard coin fountain rabbit "
    "violin ship truck pillow tower cushion sailor needle hammer leather mirror button kitten "
    "mitten cotton"
).split()
VERB_PAST = (
    "carried painted dropped washed noticed borrowed pushed measured fixed watched counted buried "
    "chased found lifted cleaned hid bought moved sold broke stole threw caught brought enjoyed "
    "chose polished"
).split()
VERB = (
    "carry paint drop wash notice borrow push measure fix watch count bury chase find lift clean "
    "hide buy move sell break throw catch bring enjoy choose polish"
).split()
PREP = "near under behind beside across inside beyond toward along above".split()
ADV = "slowly quickly gently loudly easily rarely happily badly smoothly thoroughly".split()
TIME = (
    "yesterday|last winter|every morning|at midnight|on Thursday|in the evening|before lunch|"
    "after the storm|this year|all summer|during the show|on the weekend"
).split("|")
NAME = (
    "Joseph Martha Gregory Sheila Vincent Judith Oliver Ruth Thomas Agnes Charles Yvonne Zachary "
    "Eugene Harriet Walter"
).split()
NUM = "two three four five six seven eight nine ten twelve".split()
PLACE = "valley harbor city forest market hallway desert village".split()

TEMPLATES = (
    "The {adj} {noun} {verb_past} {prep} the {noun2}.",
    "{name} {verb_past} {num} {adj} {noun}s {time}.",
    "Did the {noun} {verb} the {adj} {noun2} {time}?",
    "A {adj} {noun} can {verb} the {noun2} {adv}.",
    "We {verb_past} the {noun} and the {adj} {noun2} {time}.",
    "{name} said the {noun} was {adj}, but nobody {verb_past} it.",
    "Please {verb} the {adj} {noun} {prep} the {noun2}.",
    "Every {noun} in the {place} looked {adj} {time}.",
    "The {noun} {verb_past} {adv} while {name} {verb_past2} the {noun2}.",
    "Why would {name} {verb} a {adj} {noun} {prep} the {place}?",
)


def sentence(rng: np.random.Generator) -> str:
    """One prompt drawn from the templates and word lists."""

    def pick(words: list[str] | tuple[str, ...]) -> str:
        return str(words[int(rng.integers(len(words)))])

    template = pick(TEMPLATES)
    noun = pick(NOUN)
    noun2 = pick([n for n in NOUN if n != noun])
    return template.format(
        adj=pick(ADJ),
        noun=noun,
        noun2=noun2,
        verb_past=pick(VERB_PAST),
        verb_past2=pick(VERB_PAST),
        verb=pick(VERB),
        prep=pick(PREP),
        adv=pick(ADV),
        time=pick(TIME),
        name=pick(NAME),
        num=pick(NUM),
        place=pick(PLACE),
    )


def unique_sentences(
    n: int, rng: np.random.Generator, exclude: set[str] | None = None
) -> list[str]:
    """`n` distinct prompts, none of them in `exclude` (which is updated)."""
    seen = exclude if exclude is not None else set()
    out: list[str] = []
    while len(out) < n:
        s = sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out

"""Fast-mapping's text channel: the vocabulary (function words, familiar category names, nonsense
names), encoding and decoding, the sentences each phase shows, and the `fastmap/instruction` step
selector."""
from __future__ import annotations

import numpy as np

from embodied.tasks.registry import register_step_selector
from embodied.world import OBJECT_CATEGORIES

TEXT_LENGTH = 6
FUNCTION_WORDS = ("this", "is", "a", "lift", "put", "the", "on", "near", "go", "to", "bed", "tray")
NAME_POOL_SIZE = 400


def _nonsense_words(n: int) -> tuple[str, ...]:
    """`n` pronounceable nonsense words (CVCV / CVC shapes), fixed order, none a real category name."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    words = [c1 + v1 + c2 + v2 for c1 in cons for v1 in vows for c2 in cons for v2 in vows]
    words += [c1 + v1 + c2 for c1 in cons for v1 in vows for c2 in "xkptg"]
    words = [w for w in words if w not in OBJECT_CATEGORIES and w not in FUNCTION_WORDS]
    order = np.random.default_rng(20201101).permutation(len(words))
    return tuple(words[i] for i in order[:n])


NONSENSE_WORDS = _nonsense_words(NAME_POOL_SIZE)
VOCABULARY = ("<pad>",) + FUNCTION_WORDS + OBJECT_CATEGORIES + NONSENSE_WORDS
TOKEN = {w: i for i, w in enumerate(VOCABULARY)}


def encode_text(words: list[str] | tuple[str, ...]) -> np.ndarray:
    """Token ids [TEXT_LENGTH], left-aligned, 0-padded."""
    if len(words) > TEXT_LENGTH:
        raise ValueError(f"text {' '.join(words)!r} is longer than {TEXT_LENGTH} tokens")
    out = np.zeros(TEXT_LENGTH, np.int64)
    for i, w in enumerate(words):
        if w not in TOKEN:
            raise ValueError(f"word {w!r} is not in the fastmap vocabulary")
        out[i] = TOKEN[w]
    return out


@register_step_selector("fastmap/instruction")
def instruction_steps(obs):
    """[..., L] token ids of `obs["text"]` -> [...] bool: the step is in the instruction phase (its text
    starts with "lift" or "put"). These steps are ~20% of an expert episode and the only ones where
    the name matters, so behaviour cloning weights them up (trainer.upweight)."""
    first = obs["text"][..., 0]
    return (first == TOKEN["lift"]) | (first == TOKEN["put"])


def decode_text(tokens) -> str:
    """The words of a token array (padding dropped)."""
    return " ".join(VOCABULARY[int(t)] for t in np.asarray(tokens).reshape(-1) if int(t) != 0)


def naming_text(name: str) -> np.ndarray:
    """Discovery, while an object is held: "this is a <name>"."""
    return encode_text(["this", "is", "a", name])


def distractor_text(fixture: str) -> np.ndarray:
    """A distractor phase: "go to the <fixture>"."""
    return encode_text(["go", "to", "the", fixture])


def instruction_text(kind: str, name: str, fixture: str | None) -> np.ndarray:
    """The instruction: "lift the <name>" or "put the <name> on / near the <fixture>"."""
    if kind == "lift":
        return encode_text(["lift", "the", name])
    return encode_text(["put", "the", name, "on" if kind == "put_on" else "near", "the", fixture])

"""Final answers: extract them from model text and compare them with a reference.

Pure string functions shared by the pilot's rewards (:mod:`anglecurate.rewards.registry`) and
validate's RL-style target (:mod:`anglecurate.evidence.gradients`), so training, held-out
evaluation and validation grade an answer alike.

``boxed_match``   the last ``\\boxed{...}`` equals the reference (its own ``\\boxed{}`` when it
                  has one, as MATH solutions do) after MATH-style normalisation;
``number_match``  the last number in the text equals the reference as a number.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """A number written as ``1,234``, ``-7``, ``0.50`` or ``.5``; None if it is not one."""
    cleaned = text.strip().replace(",", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def last_number(text: str) -> float | None:
    matches = NUMBER.findall(text)
    return parse_number(matches[-1]) if matches else None


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


_STRIP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$", "^\\circ", "^{\\circ}", "\\%", "%")


def normalize_answer(answer: str) -> str:
    """MATH-style normalisation of a final answer (after Hendrycks et al.'s grader)."""
    s = answer.strip()
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    for token in _STRIP:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace(" ", "")
    s = s.rstrip(".")
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)  # .5 -> 0.5
    if re.fullmatch(r"-?\d+\.0+", s):  # 2.0 -> 2
        s = s.split(".")[0]
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    if re.fullmatch(r"\d+/\d+", s):
        num, den = s.split("/")
        s = f"\\frac{{{num}}}{{{den}}}"
    return s


def boxed_match(text: str, reference: str) -> bool:
    got = last_boxed(text)
    want = last_boxed(reference) or reference
    return got is not None and normalize_answer(got) == normalize_answer(want)


def number_match(text: str, reference: str) -> bool:
    got, want = last_number(text), parse_number(reference)
    return got is not None and want is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want))

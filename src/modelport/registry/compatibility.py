"""Whether a version can take an alias's traffic (docs/releases.md, "Compatible signatures").

An alias's clients send what its current version accepts and read what it returns. Another version
*can take that traffic* when every such request is accepted in the same form and answered in the same
form:

- the same input names in the same order — every input is required (a request must carry every
  feature), so an added input breaks every request as a removed one does, and the one-tensor
  ``[rows, n]`` form reads features by position;
- each input of the same kind: numeric (``float64``, ``int64`` and ``bool`` are all read as numbers)
  or text;
- the same outputs: the same task and, for classifiers, the same classes in the same order (the label
  values and the probability columns clients read).

What a version *learned* about values — ranges, categories, whether values may be missing — does not
change the form of a request: a narrower bound means more values flagged (refused under the model's
``reject`` policy), so it is reported beside the verdict, never a refusal on its own. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelport.signature import Feature, Signature

__all__ = ["Differences", "compare"]

_SHOWN = 20  # names listed per difference; the rest are counted


@dataclass(frozen=True, slots=True)
class Differences:
    """How a candidate version's signature differs from the current one's, as phrases for people.

    ``breaking``: why the candidate cannot take the traffic (empty: it can). ``narrower``: values the
    current version takes without a flag that the candidate flags."""

    breaking: tuple[str, ...]
    narrower: tuple[str, ...]

    @property
    def compatible(self) -> bool:
        return not self.breaking


def compare(current: Signature, candidate: Signature) -> Differences:
    """The differences that matter to the traffic ``current`` takes today if ``candidate`` took it."""
    breaking: list[str] = []
    names, new_names = current.names, candidate.names
    dropped = [n for n in names if n not in new_names]
    added = [n for n in new_names if n not in names]
    if dropped:
        breaking.append(f"requests send {_listed(dropped)}, which it does not take")
    if added:
        breaking.append(f"it requires {_listed(added)}, which requests do not send (every input is required)")
    if not dropped and not added and names != new_names:
        breaking.append(
            f"it takes the inputs in another order ({_listed(new_names)}), so the one-tensor "
            "[rows, n] form would feed values to the wrong features"
        )
    by_name = {f.name: f for f in candidate.features}
    for feature in current.features:
        other = by_name.get(feature.name)
        if other is not None and feature.numeric != other.numeric:
            breaking.append(f"{feature.name!r} is {_kind(feature)} today and {_kind(other)} in it")
    old, new = current.outputs, candidate.outputs
    if old.task != new.task:
        breaking.append(f"it answers {new.task} ({_answer(new.task)}) where clients read {old.task}")
    elif old.classes != new.classes or [type(c) for c in old.classes] != [type(c) for c in new.classes]:
        breaking.append(f"its classes are {_classes(new.classes)} where clients read {_classes(old.classes)}")
    narrower = [
        phrase
        for feature in current.features
        if (other := by_name.get(feature.name)) is not None and feature.numeric == other.numeric
        for phrase in _narrower(feature, other)
    ]
    return Differences(tuple(breaking), tuple(narrower))


def _narrower(current: Feature, candidate: Feature) -> list[str]:
    found = []
    if current.numeric:
        if candidate.minimum is not None and (current.minimum is None or candidate.minimum > current.minimum):
            found.append(f"{current.name!r} below {candidate.minimum:g}")
        if candidate.maximum is not None and (current.maximum is None or candidate.maximum < current.maximum):
            found.append(f"{current.name!r} above {candidate.maximum:g}")
    elif candidate.categories is not None:
        if current.categories is None:
            found.append(f"{current.name!r} values other than its {len(candidate.categories)} categories")
        else:
            unknown = [c for c in current.categories if c not in set(candidate.categories)]
            if unknown:
                found.append(f"{current.name!r} categories {_listed(unknown)}")
    if current.missing_rate > 0 and candidate.missing_rate == 0:
        found.append(f"{current.name!r} missing")
    return found


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} and {len(names) - _SHOWN} more"


def _kind(feature: Feature) -> str:
    return "numeric" if feature.numeric else "text"


def _answer(task: str) -> str:
    return "label and probabilities" if task == "classification" else "a number per row"


def _classes(classes: list[Any]) -> str:
    # JSON keeps 1 and "1" apart: a label that changes type breaks a client as a new class does.
    return _listed([json.dumps(c) for c in classes]) if classes else "none"

"""A stratified train/validation split of a small labelled set (`ferlab adapt` without --val).

Without groups each class is split on its own: round(fraction x its count) of it, chosen at random
with the seed, goes to validation. With groups (a person, a session, a video: the `group` column of
a CSV), whole groups go to one side, so near-identical frames of one person never sit on both: groups
are taken in a random order (largest first among equals drawn at random) and each joins validation
while that brings the validation counts of its classes closer to their targets.
"""

import numpy as np


def stratified_split(labels, fraction: float, seed: int = 0, groups=None) -> np.ndarray:
    """A boolean mask, True for the items that go to validation.

    labels: one label per item (any hashable); fraction: the share of each class to validate on,
    in (0, 1); groups: one group per item, or None (every item its own group)."""
    labels = np.asarray(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    if groups is None:
        for label in sorted(set(labels.tolist())):
            members = np.flatnonzero(labels == label)
            take = int(round(fraction * len(members)))
            val[rng.permutation(members)[:take]] = True
        return val
    groups = np.asarray(groups)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} labels")
    classes = sorted(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    names = sorted(set(groups.tolist()))
    row = {name: k for k, name in enumerate(names)}
    counts = np.zeros((len(names), len(classes)))
    member_of: dict = {name: [] for name in names}
    for i, (g, c) in enumerate(zip(groups.tolist(), labels.tolist())):
        counts[row[g], index[c]] += 1
        member_of[g].append(i)
    target = fraction * counts.sum(axis=0)
    taken = np.zeros(len(classes))
    # large groups first (they are the hard ones to place), ties in a random order
    order = sorted(range(len(names)), key=lambda k: (-counts[k].sum(), rng.random()))
    for k in order:
        before = np.sum((taken - target) ** 2)
        after = np.sum((taken + counts[k] - target) ** 2)
        if after < before:
            taken += counts[k]
            val[member_of[names[k]]] = True
    return val

"""What evaluation and separation do differently per challenge edition (``config.task``).

One code path serves both years; these values are the whole difference (docs/dcase2026.md):

* the estimate file names — 2025 ``<soundscape>_<Label>.wav`` (the 2025 baseline's
  ``generate_waveform.py``; s5jax adds ``_2``, ``_3`` for a class estimated twice), 2026
  ``<soundscape>_<i>_<Label>.wav`` with ``i`` the output slot (the 2026 ``generate_waveform.py``
  and ``evaluate.py``: ``enumerate`` over the three slots, silence slots last and not written);
* whether a soundscape may have no reference and no estimate (2026: mixtures without any target
  are part of the data; 2025: a missing reference file would silently change the score);
* the names of the class-aware metric and of the label accuracy in ``results.json``;
* the submission folder: 2025 the wavs themselves; 2026 the folder the official
  ``generate_waveform.py`` writes and ``generate_waveform.sh`` zips, ``eval_out/`` with the wavs
  and ``eval_results.json`` with each estimate's file name, label and tagger probability.

The edition is ``--task`` when given; otherwise 2026 if the tagger has the slot head (which
exists only in 2026) or the test set's references are named ``<name>_<i>_<Label>.wav`` (only
in 2026), else 2025.
"""

from __future__ import annotations

import dataclasses

from s5jax.data.synth import TASKS

DCASE2025, DCASE2026 = "dcase2025", "dcase2026"


@dataclasses.dataclass(frozen=True)
class Edition:
    task: str
    slotted_names: bool  # estimates <name>_<i>_<Label>.wav
    empty_mixtures: bool  # soundscapes without references / estimates are legitimate
    sdri_key: str  # results.json key of the class-aware SDRi
    si_sdri_key: str
    accuracy_key: str  # results.json key of the mixture (label-set) accuracy
    sdri_name: str  # as the challenge names it
    submission_wavs: str  # sub-folder of --submission DIR for the wavs ("" = DIR itself)
    submission_json: str | None  # file in DIR listing the estimates, or None


EDITIONS = {
    DCASE2025: Edition(DCASE2025, slotted_names=False, empty_mixtures=False,
                       sdri_key="ca_sdri", si_sdri_key="ca_si_sdri",
                       accuracy_key="label_accuracy", sdri_name="CA-SDRi",
                       submission_wavs="", submission_json=None),
    DCASE2026: Edition(DCASE2026, slotted_names=True, empty_mixtures=True,
                       sdri_key="capi_sdri", si_sdri_key="capi_si_sdri",
                       accuracy_key="mixture_accuracy", sdri_name="CAPI-SDRi",
                       submission_wavs="eval_out", submission_json="eval_results.json"),
}
assert set(EDITIONS) == set(TASKS)


def edition(task: str) -> Edition:
    """The ``Edition`` of ``task``; ``ValueError`` for an unknown one."""
    if task not in EDITIONS:
        raise ValueError(f"task {task!r}: expected one of {', '.join(EDITIONS)}")
    return EDITIONS[task]


def infer_task(task: str | None, tagger_head: str | None = None,
               slotted_references: bool = False) -> str:
    """``task`` if given; else ``dcase2026`` for a slot-head tagger or references named
    ``<name>_<i>_<Label>.wav``; else ``dcase2025``."""
    if task is not None:
        return edition(task).task
    if tagger_head == "slots" or slotted_references:
        return DCASE2026
    return DCASE2025

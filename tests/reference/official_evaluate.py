"""The DCASE 2026 baseline's scoring of estimate files, written here from the official
``src/evaluation/evaluate.py`` (``Evaluator`` with ``estimate_target_dir``),
``src/datamodules/dataset.py`` (``DatasetS3`` waveform mode) and ``generate_waveform.py``
(``verify_output_filename``). Used only by tests.

What it reproduces: soundscapes are ``soundscape_dir/*.wav`` sorted by name; the references and
estimates of soundscape ``n`` are the files of their folder whose name *starts with* ``n``,
sorted by name, each parsed with ``^n(?:_(\\d+))?_(.+)\\.wav$`` for its label; label lists are
padded with ``"silence"`` (and zero waveforms) to 3; the mixture reference is channel 0; the
metrics are ``S5ClassAwareMetric`` (CAPI-SDRi, mean over the mixtures that are not None) and
``LabelMetric`` (``tests/reference/capi_metric.py``).
"""

from __future__ import annotations

import os
import re

import numpy as np
import soundfile as sf
import torch

from tests.reference.capi_metric import SILENCE, capi_sdri, label_metrics

N_SOURCES = 3
SR = 32000


def _sources(names_in_dir: list[str], soundscape: str, labels: set[str]):
    """``(labels, file names)`` of one soundscape, as ``DatasetS3._get_data_waveform``."""
    out_labels, out_files = [], []
    for source in sorted(w for w in names_in_dir if w.startswith(soundscape)):
        match = re.match(rf"^{re.escape(soundscape)}(?:_(\d+))?_(.+)\.wav$", source)
        assert match, f"{source} does not match the expected pattern"
        label = match.group(2)
        assert label in labels, f'"{source}" is not a valid filename of the estimates'
        out_labels.append(label)
        out_files.append(source)
    return out_labels, out_files


def _padded(folder: str, files: list[str], labels: list[str], wlen: int):
    waves = []
    for f in files:
        w, sr = sf.read(os.path.join(folder, f), dtype="float32")
        assert sr == SR
        waves.append(w)
    waves += [np.zeros(wlen, np.float32)] * (N_SOURCES - len(waves))
    return labels + [SILENCE] * (N_SOURCES - len(labels)), torch.from_numpy(np.stack(waves))


def evaluate_estimates(soundscape_dir: str, oracle_dir: str, estimate_dir: str,
                       classes: list[str]) -> dict:
    """``{"CAPI-SDRi", "accuracy_mix", "accuracy_src", "per_mixture"}`` of the estimate
    folder, as the official ``Evaluator`` computes them."""
    labels = set(classes)
    names = sorted(f[:-4] for f in os.listdir(soundscape_dir) if f.endswith(".wav"))
    ref_files = [f for f in os.listdir(oracle_dir) if f.endswith(".wav")]
    est_files = [f for f in os.listdir(estimate_dir) if f.endswith(".wav")]
    values, est_sets, ref_sets = [], [], []
    for n in names:
        mix, sr = sf.read(os.path.join(soundscape_dir, n + ".wav"), dtype="float32")
        assert sr == SR
        mix0 = torch.from_numpy(np.ascontiguousarray(mix[:, 0]))
        rl, rf = _sources(ref_files, n, labels)
        el, ef = _sources(est_files, n, labels)
        ref_lab, ref_wf = _padded(oracle_dir, rf, rl, mix.shape[0])
        est_lab, est_wf = _padded(estimate_dir, ef, el, mix.shape[0])
        values.append(capi_sdri(est_lab, est_wf, ref_lab, ref_wf, mix0))
        est_sets.append(est_lab)
        ref_sets.append(ref_lab)
    scored = [v for v in values if v is not None]
    acc_mix, acc_src = label_metrics(est_sets, ref_sets)
    return {"CAPI-SDRi": sum(scored) / len(scored), "accuracy_mix": acc_mix,
            "accuracy_src": acc_src, "per_mixture": dict(zip(names, values, strict=True))}


def verify_output_filenames(soundscape_dir: str, output_dir: str, classes: list[str]) -> None:
    """The official ``verify_output_filename``: every estimate belongs to exactly one soundscape
    by prefix and carries a valid label."""
    names = [f[:-4] for f in os.listdir(soundscape_dir) if f.endswith(".wav")]
    assert len(set(names)) == len(names)
    for est in (f for f in os.listdir(output_dir) if f.endswith(".wav")):
        owners = [s for s in names if est.startswith(s)]
        assert len(owners) == 1, est
        match = re.match(rf"^{re.escape(owners[0])}(?:_(\d+))?_(.+)\.wav$", est)
        assert match, est
        assert match.group(2) in classes, est


def verify_json(eval_results_json: str, output_dir: str) -> None:
    """The official ``verify_json``: ``eval_results.json`` lists every wav of ``eval_out/``
    exactly once, and nothing else."""
    import json

    with open(eval_results_json) as f:
        listed = [e["filename"] for m in json.load(f)["probabilities"] for e in m["estimate"]]
    assert len(set(listed)) == len(listed), "duplicated wav filename in eval_results.json"
    assert set(listed) == {f for f in os.listdir(output_dir) if f.endswith(".wav")}

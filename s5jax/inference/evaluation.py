"""Scoring a labelled test set (spec §6): run an ``S5Pipeline`` on every soundscape, or read
estimate files, and compute the class-aware SDRi (DCASE 2025 CA-SDRi, DCASE 2026 CAPI-SDRi: one
metric, ``metrics.class_aware_sdri``), its SI variant, mixture and source accuracy and the
oracle-label SDRi. What differs between the editions (file names, empty mixtures, key names) is
``s5jax.inference.editions``.

Mixtures are read ahead on threads, batched (equal lengths together), and every batch is sharded
over all local devices along the 1-D ``data`` mesh.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from s5jax import metrics
from s5jax.atomic import write_atomic
from s5jax.audio import wav
from s5jax.cli import first_few
from s5jax.data.testset import ORACLE_DIR, TestSet, slotted
from s5jax.inference.editions import Edition, edition, infer_task
from s5jax.inference.files import (
    check_submission,
    output_names,
    read_estimates,
    resampled_frames,
)
from s5jax.inference.pipeline import S5Pipeline, check_length
from s5jax.inference.report import empty_per_class
from s5jax.labels import CLASSES, EMPTY, MAX_SOURCES, class_index, to_slots
from s5jax.mesh import batch_sharding, make_mesh
from s5jax.models.tagger import slot_decision


def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive indices, at most ``batch_size`` per batch, equal lengths within a batch."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        if out and len(out[-1]) < batch_size and lengths[out[-1][0]] == n:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class Scores:
    """Per-mixture results, accumulated."""

    def __init__(self):
        self.names: list[str] = []
        self.ref_labels: list[list[int]] = []
        self.est_labels: list[list[int]] = []
        self.ca: list[metrics.ClassAwareResult] = []
        self.ca_si: list[metrics.ClassAwareResult] = []
        self.oracle: list[list[tuple[int, float, float]]] = []  # (class, SDRi, SI-SDRi) per ref
        # The scaled-mixture floor: every reference's class queried, each answered with mixture
        # channel 0 scaled by its least-squares gain (metrics.scaled_mixture).
        self.floor: list[metrics.ClassAwareResult] = []
        self.floor_si: list[metrics.ClassAwareResult] = []

    def add(self, name, ref_labels, refs, est_labels, ests, mix0, oracle_ests=None):
        """``oracle_ests``: the separator's outputs for the true labels, row k for reference k;
        with a repeated class they are paired with its references as the metric pairs them."""
        self.names.append(name)
        self.ref_labels.append(list(ref_labels))
        self.est_labels.append(list(est_labels))
        self.ca.append(metrics.class_aware_sdri(est_labels, ests, ref_labels, refs, mix0, "snr"))
        self.ca_si.append(
            metrics.class_aware_sdri(est_labels, ests, ref_labels, refs, mix0, "si_snr"))
        floor = metrics.scaled_mixture(mix0, refs)
        self.floor.append(metrics.class_aware_sdri(ref_labels, floor, ref_labels, refs, mix0))
        self.floor_si.append(
            metrics.class_aware_sdri(ref_labels, floor, ref_labels, refs, mix0, "si_snr"))
        if oracle_ests is not None:
            n = len(ref_labels)
            snr_i = metrics.class_aware_sdri(ref_labels, oracle_ests[:n], ref_labels, refs, mix0,
                                             "snr").improvements
            si_i = metrics.class_aware_sdri(ref_labels, oracle_ests[:n], ref_labels, refs, mix0,
                                            "si_snr").improvements
            self.oracle.append([(c, a, b) for c in sorted(snr_i)
                                for a, b in zip(snr_i[c], si_i[c], strict=True)])

    def summary(self, ed: Edition) -> dict:
        orc = [x for rows in self.oracle for x in rows]
        return {
            "task": ed.task,
            ed.sdri_key: metrics.mean_value(self.ca),
            ed.si_sdri_key: metrics.mean_value(self.ca_si),
            "floor_" + ed.sdri_key: metrics.mean_value(self.floor),
            "floor_" + ed.si_sdri_key: metrics.mean_value(self.floor_si),
            ed.accuracy_key: metrics.label_accuracy(self.est_labels, self.ref_labels),
            "source_accuracy": metrics.source_accuracy(self.est_labels, self.ref_labels),
            "oracle_sdri": float(np.mean([x[1] for x in orc])) if orc else None,
            "oracle_si_sdri": float(np.mean([x[2] for x in orc])) if orc else None,
            "tp": sum(r.tp for r in self.ca),
            "fp": sum(r.fp for r in self.ca),
            "fn": sum(r.fn for r in self.ca),
            "n_mixtures": len(self.names),
            "n_references": sum(len(r) for r in self.ref_labels),
            "n_empty_mixtures": sum(math.isnan(r.value) for r in self.ca),
            "n_without_references": sum(not r for r in self.ref_labels),
        }

    def per_class(self) -> list[dict]:
        rows = empty_per_class()
        snr_pc = metrics.per_class(self.ca)
        si_pc = metrics.per_class(self.ca_si)
        for lab in self.ref_labels:
            for c in lab:
                rows[c]["n_references"] += 1
        orc: dict[int, list[float]] = {}
        for x in (x for rs in self.oracle for x in rs):
            orc.setdefault(x[0], []).append(x[1])
        for r in rows:
            name = r["class"]
            if name in snr_pc:
                s = snr_pc[name]
                r.update(tp=s["tp"], fp=s["fp"], fn=s["fn"], sdri_tp=s["tp_improvement"],
                         ca_sdri=s["ca_sdri"], si_sdri_tp=si_pc[name]["tp_improvement"])
                tp, fp, fn = s["tp"], s["fp"], s["fn"]
                r["precision"] = tp / (tp + fp) if tp + fp else None
                r["recall"] = tp / (tp + fn) if tp + fn else None
                r["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
            if r["index"] in orc:
                r["oracle_sdri"] = float(np.mean(orc[r["index"]]))
        return rows

    def per_mixture_csv(self, ed: Edition) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["soundscape", "ref_labels", "est_labels", ed.sdri_key, ed.si_sdri_key,
                    "tp", "fp", "fn", "oracle_sdri"])
        for i, n in enumerate(self.names):
            orc = self.oracle[i] if self.oracle else []
            w.writerow([
                n, " ".join(CLASSES[c] for c in self.ref_labels[i]),
                " ".join(CLASSES[c] for c in self.est_labels[i]),
                _num(self.ca[i].value), _num(self.ca_si[i].value),
                self.ca[i].tp, self.ca[i].fp, self.ca[i].fn,
                _num(float(np.mean([x[1] for x in orc]))) if orc else "",
            ])
        return buf.getvalue()


def prepare(test_root: str | os.PathLike, allow_empty: bool = False, task: str | None = None,
            tagger_head: str | None = None) -> tuple[TestSet, list[int], list[str], str]:
    """Every check of a test set that needs no audio, before any work: the layout, each
    file's header (``TestSet.check_files``), lengths the models take, and soundscapes without
    references. Those are part of DCASE 2026 (mixtures without any target); for DCASE 2025 they
    are refused unless ``allow_empty`` (a missing ``oracle_target`` file would otherwise
    silently change the score). The edition is ``task``, or inferred from ``tagger_head`` and
    the reference names (``editions.infer_task``).

    Returns:
      ``(test set, lengths at 32 kHz, notes, task)``; the notes (resampling, soundscapes scored
      without references) are for the user.
    """
    ts = TestSet(test_root)
    infos = ts.check_files()
    for it, info in zip(ts, infos, strict=True):
        check_length(resampled_frames(info), it.path)
    task = infer_task(task, tagger_head, slotted(ts))
    notes = []
    empty = [it.name for it in ts if not it.references]
    if empty and not edition(task).empty_mixtures:
        shown = first_few(empty)
        if not allow_empty:
            raise ValueError(
                f"{ts.root / ORACLE_DIR}: {len(empty)} soundscape(s) have no reference "
                f"<name>_<Label>.wav: {shown} (pass --allow-empty if these mixtures have no "
                "target source, or --task dcase2026 for a DCASE 2026 test set)")
        notes.append(f"{len(empty)} soundscape(s) without any reference ({shown}) are scored as "
                     "mixtures with no target source: a detection there is a false positive, "
                     "no detection is excluded from CA-SDRi (n_empty_mixtures)")
    rates = sorted({i.sample_rate for i in infos if i.sample_rate != wav.SAMPLE_RATE})
    if rates:
        n = sum(i.sample_rate != wav.SAMPLE_RATE for i in infos)
        notes.append(f"{n} soundscape(s) and their references at {', '.join(map(str, rates))} Hz"
                     f" are resampled to {wav.SAMPLE_RATE} Hz with soxr")
    return ts, [resampled_frames(i) for i in infos], notes, task


def _check_estimates_found(folder: Path, ts: TestSet, found: dict[str, list], ed: Edition,
                           ) -> None:
    """``ValueError`` if ``folder`` holds no estimate of the test set at all (a wrong folder
    would otherwise score as a system that separates nothing); a note on stderr naming the
    soundscapes with references but no estimate, as the official reader warns of each."""
    pattern = "<soundscape>_<i>_<Label>.wav" if ed.slotted_names else "<soundscape>_<Label>.wav"
    if not any(found.values()) and any(it.references for it in ts):
        hint = ""
        if ed.submission_wavs and (folder / ed.submission_wavs).is_dir():
            hint = f" (a submission folder: its estimates are in {folder / ed.submission_wavs})"
        raise ValueError(f"{folder}: no estimate {pattern} of the {len(ts)} soundscape(s) of "
                         f"{ts.root}{hint}")
    missing = [it.name for it in ts if it.references and not found[it.name]]
    if missing:
        print(f"note: {folder}: no estimate for {len(missing)} soundscape(s) with references "
              f"({first_few(missing)}): their references count as missed", file=sys.stderr)


def _num(v: float) -> str:
    """A CSV cell: 6 decimals, empty for a missing value; ``0.000000`` for a tiny negative
    value, not ``-0.000000``."""
    return "" if v is None or not math.isfinite(v) else f"{round(v, 6) + 0.0:.6f}"


def evaluate(
    test_root: str | os.PathLike,
    *,
    pipeline: S5Pipeline | None = None,
    estimates: str | os.PathLike | None = None,
    oracle_labels: bool = False,
    oracle_pass: bool = True,
    batch_size: int = 4,
    wav_dir: str | os.PathLike | None = None,
    submission_dir: str | os.PathLike | None = None,
    allow_empty: bool = False,
    task: str | None = None,
    progress: bool = True,
) -> tuple[dict, list[dict], str]:
    """Score a test set.

    Either ``pipeline`` (an ``S5Pipeline``) runs on every soundscape — with its tagger, or with
    the true labels if ``oracle_labels`` — or the wavs in ``estimates`` are scored. With a
    pipeline and ``oracle_pass`` the separator also runs with the true labels for the
    class-agnostic SDRi. ``task`` (None: inferred, ``editions.infer_task``) sets the estimate
    file names, whether soundscapes without references are expected, the summary's keys and
    the layout of ``submission_dir`` (2026: ``eval_out/`` + ``eval_results.json``, whose
    probability is the tagger's winning softmax per slot — with an 18-sigmoid tagger its
    probability of the slot's class —, 1.0 with oracle labels as the official ``Evaluator``,
    null for estimates read from files).

    Returns:
      ``(summary, per_class rows, per-mixture CSV text)``.
    """
    if (pipeline is None) == (estimates is None):
        raise ValueError("give exactly one of a pipeline or an estimates folder")
    head = None
    if pipeline is not None and pipeline.tagger_model is not None and not oracle_labels:
        head = pipeline.tagger_model.config.get("head")
    ts, lengths, _, task = prepare(test_root, allow_empty, task, head)
    ed = edition(task)
    est_files = None
    if estimates is not None:
        est_files = read_estimates(Path(estimates), [it.name for it in ts], ed.slotted_names)
        _check_estimates_found(Path(estimates), ts, est_files, ed)
    n_dev = jax.device_count()
    batch_size = max(n_dev, -(-batch_size // n_dev) * n_dev)  # a multiple of the device count
    sharding = batch_sharding(make_mesh())
    sub_json = None
    if submission_dir is not None:
        if ed.submission_json is not None:
            sub_json = Path(submission_dir) / ed.submission_json
        submission_dir = Path(submission_dir) / ed.submission_wavs
    for d in (wav_dir, submission_dir):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)
    listing: list[dict] = []  # eval_results.json "probabilities"

    def load(i):
        mix, refs = ts.load(i)
        if est_files is None:
            return mix, refs, None
        labs = [class_index(lab) for lab, _ in est_files[ts[i].name]]
        ests = np.zeros((len(labs), mix.shape[1]), np.float32)
        for k, (_, p) in enumerate(est_files[ts[i].name]):
            e = wav.read(p, channels=1)[0]
            if e.shape[0] != mix.shape[1]:
                raise ValueError(f"{p}: {e.shape[0]} samples, expected {mix.shape[1]} (the "
                                 f"length of soundscape {ts[i].name} at 32 kHz)")
            ests[k] = e
        return mix, refs, (labs, ests)

    scores = Scores()
    groups = batches(lengths, batch_size)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool, \
            tqdm(total=len(ts), unit="mix", disable=not progress, file=sys.stderr) as bar:
        pending = [pool.map(load, b) for b in groups[:2]]  # read ahead one batch
        for bi, idx in enumerate(groups):
            loaded = list(pending[bi])
            if bi + 2 < len(groups):
                pending.append(pool.map(load, groups[bi + 2]))
            mixes = np.stack([x[0] for x in loaded])
            ref_labels = [[class_index(lab) for lab in ts[i].labels] for i in idx]
            oracle_out = orc_waves = None
            if pipeline is not None:
                pad = (-len(idx)) % n_dev  # repeat the last mixture to fill every device
                mix_dev = jax.device_put(np.concatenate([mixes] + [mixes[-1:]] * pad), sharding)
                slots = to_slots(ref_labels + [ref_labels[-1]] * pad, MAX_SOURCES)
                if oracle_labels:
                    out = pipeline(mix_dev, slots)
                    oracle_out = out
                else:
                    out = pipeline(mix_dev)
                    if oracle_pass:
                        oracle_out = pipeline(mix_dev, slots)
                est_slots = np.asarray(out["labels"])[: len(idx)]
                est_waves = np.asarray(out["waveforms"])[: len(idx)]
                est_probs = np.ones(est_slots.shape, np.float32)  # oracle labels: the official 1
                if out["probabilities"] is not None and np.ndim(out["probabilities"]) == 3:
                    est_probs = np.asarray(slot_decision(out["probabilities"])[1])[: len(idx)]
                elif out["probabilities"] is not None:  # a sigmoid tagger: its class's probability
                    p18 = np.asarray(out["probabilities"])[: len(idx)]
                    est_probs = np.take_along_axis(p18, np.maximum(est_slots, 0), axis=1)
                orc_waves = None if oracle_out is None else \
                    np.asarray(oracle_out["waveforms"])[: len(idx)]
            for j, i in enumerate(idx):
                mix, refs, est = loaded[j]
                if est is None:
                    row = [int(c) for c in est_slots[j]]  # output slots, empty ones last
                    keep = [k for k, c in enumerate(row) if c != EMPTY]
                    labs, ests = [row[k] for k in keep], est_waves[j][keep]
                else:
                    labs, ests = est
                    row = labs
                    est_probs = None
                scores.add(ts[i].name, ref_labels[j], refs, labs, ests, mix[0],
                           None if orc_waves is None else orc_waves[j])
                for d, subtype in ((wav_dir, "FLOAT"), (submission_dir, "PCM_16")):
                    if d is not None:
                        names = output_names(ts[i].name, row, ed.slotted_names)
                        for n, e in zip(names, ests, strict=True):
                            wav.write(Path(d) / n, e, subtype=subtype)
                if sub_json is not None:
                    names = output_names(ts[i].name, row, ed.slotted_names)
                    probs = [None] * len(names) if est_probs is None else \
                        [float(est_probs[j][k]) for k, c in enumerate(row) if c != EMPTY]
                    listing.append({"soundscape": ts[i].name, "estimate": [
                        {"filename": n, "label": CLASSES[c], "probability": q}
                        for n, c, q in zip(names, labs, probs, strict=True)]})
            bar.update(len(idx))
    seconds = time.perf_counter() - t0
    if submission_dir is not None and not allow_empty and not ed.empty_mixtures:
        check_submission(submission_dir, [it.name for it in ts])
    if sub_json is not None:
        write_atomic(sub_json, json.dumps({"probabilities": listing}, indent=4) + "\n")
    summary = scores.summary(ed)
    summary["seconds"] = seconds
    summary["mixtures_per_second"] = len(ts) / seconds if seconds > 0 else None
    return summary, scores.per_class(), scores.per_mixture_csv(ed)

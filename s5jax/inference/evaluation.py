"""Scoring a labelled test set (spec §6): run an ``S5Pipeline`` on every soundscape, or read
estimate files, and compute CA-SDRi, CA-SI-SDRi, label accuracy and the oracle-label SDRi.

Mixtures are read ahead on threads, batched (equal lengths together), and every batch is sharded
over all local devices along the 1-D ``data`` mesh.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
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
from s5jax.audio import wav
from s5jax.data.testset import ORACLE_DIR, TestSet
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
            rows = []
            for k, c in enumerate(ref_labels):
                e, r = oracle_ests[k], refs[k]
                rows.append((c,
                             float(metrics.snr(e, r)) - float(metrics.snr(mix0, r)),
                             float(metrics.si_snr(e, r)) - float(metrics.si_snr(mix0, r))))
            self.oracle.append(rows)

    def summary(self) -> dict:
        orc = [x for rows in self.oracle for x in rows]
        return {
            "ca_sdri": metrics.mean_value(self.ca),
            "ca_si_sdri": metrics.mean_value(self.ca_si),
            "floor_ca_sdri": metrics.mean_value(self.floor),
            "floor_ca_si_sdri": metrics.mean_value(self.floor_si),
            "label_accuracy": metrics.label_accuracy(self.est_labels, self.ref_labels),
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

    def per_mixture_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["soundscape", "ref_labels", "est_labels", "ca_sdri", "ca_si_sdri",
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


def prepare(test_root: str | os.PathLike, allow_empty: bool = False,
            ) -> tuple[TestSet, list[int], list[str]]:
    """Every check of a test set that needs no audio, before any work: the layout, each
    file's header (``TestSet.check_files``), lengths the models take, and soundscapes without
    references — refused unless ``allow_empty`` (a missing ``oracle_target`` file would
    otherwise silently change the score; DCASE 2026 has mixtures with no target source).

    Returns:
      ``(test set, lengths at 32 kHz, notes)``; the notes (resampling, soundscapes scored without
      references) are for the user.
    """
    ts = TestSet(test_root)
    infos = ts.check_files()
    for it, info in zip(ts, infos, strict=True):
        check_length(resampled_frames(info), it.path)
    notes = []
    empty = [it.name for it in ts if not it.references]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        if not allow_empty:
            raise ValueError(
                f"{ts.root / ORACLE_DIR}: {len(empty)} soundscape(s) have no reference "
                f"<name>_<Label>.wav: {shown} (pass --allow-empty if these mixtures have no "
                "target source)")
        notes.append(f"{len(empty)} soundscape(s) without any reference ({shown}) are scored as "
                     "mixtures with no target source: a detection there is a false positive, "
                     "no detection is excluded from CA-SDRi (n_empty_mixtures)")
    rates = sorted({i.sample_rate for i in infos if i.sample_rate != wav.SAMPLE_RATE})
    if rates:
        n = sum(i.sample_rate != wav.SAMPLE_RATE for i in infos)
        notes.append(f"{n} soundscape(s) and their references at {', '.join(map(str, rates))} Hz"
                     f" are resampled to {wav.SAMPLE_RATE} Hz with soxr")
    return ts, [resampled_frames(i) for i in infos], notes


def _num(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6f}"


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
    progress: bool = True,
) -> tuple[dict, list[dict], str]:
    """Score a test set.

    Either ``pipeline`` (an ``S5Pipeline``) runs on every soundscape — with its tagger, or with
    the true labels if ``oracle_labels`` — or the wavs in ``estimates`` are scored. With a
    pipeline and ``oracle_pass`` the separator also runs with the true labels for the
    class-agnostic SDRi.

    Returns:
      ``(summary, per_class rows, per-mixture CSV text)``.
    """
    if (pipeline is None) == (estimates is None):
        raise ValueError("give exactly one of a pipeline or an estimates folder")
    ts, lengths, _ = prepare(test_root, allow_empty)
    est_files = read_estimates(Path(estimates), [it.name for it in ts]) if estimates else None
    n_dev = jax.device_count()
    batch_size = max(n_dev, -(-batch_size // n_dev) * n_dev)  # a multiple of the device count
    sharding = batch_sharding(make_mesh())
    for d in (wav_dir, submission_dir):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)

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
                orc_waves = None if oracle_out is None else \
                    np.asarray(oracle_out["waveforms"])[: len(idx)]
            for j, i in enumerate(idx):
                mix, refs, est = loaded[j]
                if est is None:
                    keep = [k for k, c in enumerate(est_slots[j]) if c != EMPTY]
                    labs, ests = [int(est_slots[j][k]) for k in keep], est_waves[j][keep]
                else:
                    labs, ests = est
                scores.add(ts[i].name, ref_labels[j], refs, labs, ests, mix[0],
                           None if orc_waves is None else orc_waves[j])
                for d, subtype in ((wav_dir, "FLOAT"), (submission_dir, "PCM_16")):
                    if d is not None:
                        for n, e in zip(output_names(ts[i].name, labs), ests, strict=True):
                            wav.write(Path(d) / n, e, subtype=subtype)
            bar.update(len(idx))
    seconds = time.perf_counter() - t0
    if submission_dir is not None and not allow_empty:
        check_submission(submission_dir, [it.name for it in ts])
    summary = scores.summary()
    summary["seconds"] = seconds
    summary["mixtures_per_second"] = len(ts) / seconds if seconds > 0 else None
    return summary, scores.per_class(), scores.per_mixture_csv()

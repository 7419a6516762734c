"""Validation on held-out test soundscapes (``config.data.valid_split = "test"``).

The training run scores the labelled test set that ``python -m s5jax.evaluate`` reads
(``soundscape/`` + ``oracle_target/``, :class:`s5jax.data.testset.TestSet`) the way ``evaluate``
does. Separators: queried with the true labels (reference ``k`` in slot ``k``,
``labels.to_slots``), each mixture scored with ``metrics.class_aware_sdri`` against mixture
channel 0 (CA-SDRi, CA-SI-SDRi), the oracle-label SDRi the mean over all references, and the
scaled-mixture floor (``metrics.scaled_mixture``) reported beside them, as ``evaluate
--oracle-labels``. Taggers (the 18-sigmoid head): the mixture accuracy of ``evaluate``'s decision
rule (``models.tagger.predict``: threshold 0.5, at least one class), the mAP and the BCE. So the
value a run logs at a step and the value ``evaluate`` gives for that step's exported model are
the same computation on the same data (tests/test_learning.py and tests/test_tagger_heldout.py
check it).

For the embedded datasets this is the held-out split: its soundscapes are drawn from the
``valid`` sounds, interferers, noise and rooms, which the training split never uses.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from s5jax import labels as labels_lib
from s5jax import mesh as mesh_lib
from s5jax import metrics
from s5jax.audio import wav
from s5jax.data.testset import TestSet
from s5jax.models.tagger import predict
from s5jax.training import steps

# Logged names (besides the loader validation's valid/loss, valid/snr, valid/ca_sdri).
EXTRA_METRICS = ("valid/ca_si_sdri", "valid/sdri", "valid/floor_ca_sdri",
                 "valid/floor_ca_si_sdri")


def check_test_set(root: str | Path) -> TestSet:
    """The test set at ``root``; ``ValueError`` unless every soundscape is 32 kHz, of one length
    (one compiled shape) and has at least one reference."""
    ts = TestSet(root)
    infos = ts.check_files()
    if not len(ts):
        raise ValueError(f"{root}: no soundscapes to validate on")
    rates = {i.sample_rate for i in infos}
    frames = {i.frames for i in infos}
    if rates != {wav.SAMPLE_RATE} or len(frames) != 1:
        raise ValueError(f"{root}: validating on a test set needs {wav.SAMPLE_RATE}-Hz soundscapes"
                         f" of one length; found rates {sorted(rates)}, lengths {sorted(frames)}")
    empty = [it.name for it in ts if not it.references]
    if empty:
        raise ValueError(f"{root}: soundscape(s) without references: {', '.join(empty[:3])}")
    return ts


def tagger_metrics(probs: np.ndarray, labels: np.ndarray, bce: np.ndarray) -> dict[str, float]:
    """Validation metrics of the 18-sigmoid tagger from ``probs (N, 18)``, the true slot labels
    ``(N, S)`` and the per-mixture BCE ``(N,)``: mean BCE, mixture accuracy of the decision rule
    ``evaluate`` applies (``models.tagger.predict``), mAP."""
    pred = np.asarray(predict(jnp.asarray(probs)))
    return {
        "valid/loss": float(np.mean(bce)),
        "valid/accuracy": metrics.label_accuracy(pred.tolist(), labels.tolist()),
        "valid/map": metrics.average_precision(probs, np.asarray(labels_lib.multi_hot(labels))),
    }


class HeldOutEvaluator:
    """Runs the test soundscapes through the eval step; metrics on the host.

    ``task``: ``steps.SEPARATOR`` (oracle labels as queries) or ``steps.TAGGER`` (18 sigmoids).
    Same call signature as ``loop.Evaluator``: ``(state, logger, step) → {name: value}``.
    """

    def __init__(self, task: str, model, mesh, test_set: TestSet, *, batch_size: int,
                 limit=None, audio_examples: int = 0):
        self.task, self.model, self.mesh, self.ts = task, model, mesh, test_set
        self.batch_size, self.audio_examples = batch_size, audio_examples
        n = len(test_set) if limit is None else min(limit, len(test_set))
        self.groups = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        self.eval_step = steps.make_eval_step(task, model, mesh, render=None)

    def _batch(self, idx: list[int]):
        if self.task == steps.TAGGER:  # the references are not needed
            loaded = [(self.ts.load_mixture(i), None) for i in idx]
        else:
            loaded = [self.ts.load(i) for i in idx]
        pad = self.batch_size - len(idx)
        loaded += [loaded[-1]] * pad  # repeat the last mixture; its rows are not scored
        ref_labels = [[labels_lib.class_index(x) for x in self.ts[i].labels] for i in idx]
        slots = labels_lib.to_slots(ref_labels + [ref_labels[-1]] * pad, labels_lib.MAX_SOURCES)
        mix = np.stack([m for m, _ in loaded])
        if self.task == steps.TAGGER:
            return {"mixture": mix, "labels": slots}, loaded, ref_labels
        dry = np.zeros((len(loaded), slots.shape[1], mix.shape[-1]), np.float32)
        for b, (_, refs) in enumerate(loaded):
            dry[b, : len(refs)] = refs
        return {"mixture": mix, "labels": slots, "dry": dry}, loaded, ref_labels

    def _batches(self, variables):
        """``(batch, loaded, ref_labels, outputs)`` per group; the next group is read while the
        device works on this one."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(self._batch, self.groups[0]) if self.groups else None
            for gi in range(len(self.groups)):
                batch, loaded, ref_labels = ahead.result()
                if gi + 1 < len(self.groups):
                    ahead = pool.submit(self._batch, self.groups[gi + 1])
                out = self.eval_step(variables, mesh_lib.put_batch(batch, self.mesh))
                yield batch, loaded, ref_labels, out

    def _tagger(self, variables) -> dict[str, float]:
        probs, labels, bce = [], [], []
        for batch, _, ref_labels, out in self._batches(variables):
            n = len(ref_labels)  # rows past n repeat the last mixture
            probs.append(np.asarray(out["probabilities"])[:n])
            bce.append(np.asarray(out["bce"])[:n])
            labels.append(batch["labels"][:n])
        return tagger_metrics(np.concatenate(probs), np.concatenate(labels), np.concatenate(bce))

    def __call__(self, state, logger=None, step: int = 0) -> dict[str, float]:
        if self.task == steps.TAGGER:
            return self._tagger(state.variables)
        ca, ca_si, floor, floor_si, oracle, snr_active, per_loss = [], [], [], [], [], [], []
        shown = 0
        for batch, loaded, ref_labels, out in self._batches(state.variables):
            est = np.asarray(out["estimate"])
            snr = np.asarray(out["snr"])
            for j, labs in enumerate(ref_labels):
                mix0, refs = loaded[j][0][0], loaded[j][1]
                k = len(labs)
                ests = est[j, :k]
                ca.append(metrics.class_aware_sdri(labs, ests, labs, refs, mix0, "snr"))
                ca_si.append(metrics.class_aware_sdri(labs, ests, labs, refs, mix0, "si_snr"))
                fl = metrics.scaled_mixture(mix0, refs)
                floor.append(metrics.class_aware_sdri(labs, fl, labs, refs, mix0, "snr"))
                floor_si.append(metrics.class_aware_sdri(labs, fl, labs, refs, mix0,
                                                         "si_snr"))
                oracle += [float(metrics.snr(ests[r], refs[r]))
                           - float(metrics.snr(mix0, refs[r])) for r in range(k)]
                snr_active += [float(v) for v in snr[j, :k]]
                # The training loss of the mixture (ResUNetK: mean over all slots).
                per_loss.append(-float(np.sum(snr[j, :k])) / (
                    k if self.model.slots == 1 else snr.shape[1]))
                if logger is not None and shown < self.audio_examples:
                    self._audio(logger, step, shown, batch["mixture"][j, 0], labs, ests,
                                refs)
                    shown += 1
        return {
            "valid/loss": float(np.mean(per_loss)),
            "valid/snr": float(np.mean(snr_active)),
            "valid/ca_sdri": metrics.mean_value(ca),
            "valid/ca_si_sdri": metrics.mean_value(ca_si),
            "valid/sdri": float(np.mean(oracle)),
            "valid/floor_ca_sdri": metrics.mean_value(floor),
            "valid/floor_ca_si_sdri": metrics.mean_value(floor_si),
        }

    @staticmethod
    def _audio(logger, step, n, mixture, labs, ests, refs) -> None:
        logger.audio(step, f"valid/{n}/mixture", mixture)
        for s, lab in enumerate(labs):
            name = labels_lib.CLASSES[lab]
            logger.audio(step, f"valid/{n}/{s}_{name}/estimate", ests[s])
            logger.audio(step, f"valid/{n}/{s}_{name}/reference", refs[s])

"""``python -m s5jax.separate``: separate 4-channel soundscapes into one wav per class.

    python -m s5jax.separate --tagger TAGGER --separator SEPARATOR IN.wav [IN2.wav | DIR ...]
        --out DIR [--labels Speech,Doorbell] [--overwrite] [--submission] [--allow-empty]
        [--batch-chunks N] [--task dcase2025|dcase2026]

For each input ``<name>.wav`` it writes one wav per detected (or given) source (32 kHz float32;
16-bit PCM with ``--submission``, the challenge layout) and ``DIR/<name>.json`` with the tagger's
probabilities (not in ``--submission`` mode, which writes only the wavs). The names follow the
edition (``--task``; default ``dcase2026`` for a slot-head tagger or a separator trained for
DCASE 2026, else ``dcase2025``): DCASE
2025 ``DIR/<name>_<Label>.wav``, a class given twice ``<name>_Speech.wav``,
``<name>_Speech_2.wav``; DCASE 2026 ``DIR/<name>_<i>_<Label>.wav`` with ``i`` the output slot
(``<name>_0_Speech.wav``, ``<name>_1_Speech.wav``; silence slots are last and write nothing), as
the official 2026 ``generate_waveform.py``. A DCASE 2026 input may yield no source at all, and
its ``--submission`` is the folder the official writes: ``DIR/eval_out/`` with the wavs and
``DIR/eval_results.json`` listing file, label and tagger probability of every estimate.

Inputs must be 4-channel first-order ambisonics (FOA); any sample rate (44.1 kHz, 48 kHz, …) is
resampled to 32 kHz with soxr. All inputs and the output folder are checked, and the models
loaded, before any work; the run is all-or-nothing: outputs are written to a temporary folder and
moved into ``DIR`` at the end, so a failure leaves ``DIR`` as it was. An existing output is never
replaced unless ``--overwrite`` is given, and nothing else in ``DIR`` is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax import hostmem
from s5jax.atomic import Staging, check_free_space, write_atomic
from s5jax.audio import wav
from s5jax.cli import ArgumentParser, fail, first_few
from s5jax.data.synth import TASKS
from s5jax.data.testset import match_soundscape
from s5jax.inference.editions import DCASE2025, DCASE2026, Edition, edition
from s5jax.inference.files import (
    check_soundscape,
    output_names,
    read_soundscape,
    resampled_frames,
)
from s5jax.inference.loading import load_pipeline, trained_task
from s5jax.inference.pipeline import check_threshold, chunk_samples
from s5jax.labels import CLASSES, EMPTY, MAX_SOURCES, SILENCE, class_index
from s5jax.models.tagger import slot_decision

JSON_BYTES = 2048  # upper bound of one <name>.json, for the free-space estimate


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a directory stands for its ``*.wav`` files, sorted by name."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".wav"
                           and not q.name.startswith(".") and q.is_file())
            if not found:
                raise ValueError(f"{p}: directory holds no .wav files")
            out += found
        else:
            out.append(p)
    stems: dict[str, Path] = {}
    for p in out:
        if p.stem in stems:
            raise ValueError(f"{p} and {stems[p.stem]}: two inputs named {p.stem!r} would write "
                             "the same outputs")
        stems[p.stem] = p
    return out


def parse_labels(text: str, max_sources: int = MAX_SOURCES) -> list[int]:
    """``"Speech,Doorbell"`` → class indices (order kept, repeats allowed)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("--labels: no class names given")
    if len(items) > max_sources:
        raise ValueError(f"--labels: {len(items)} classes, at most {max_sources}")
    try:
        return [class_index(t) for t in items]
    except ValueError as e:
        raise ValueError(f"--labels: {e}") from None


def merge_listing(out: Path, ed: Edition, listing: list[dict]) -> list[dict]:
    """The ``eval_results.json`` entries for a 2026 submission folder ``out`` that already holds
    one (``--overwrite``): the earlier entries of other inputs are kept, those of the inputs of
    this run replaced, so that the file lists every wav of ``eval_out/`` (the official
    ``verify_json``). An earlier estimate of an input of this run that this run does not rewrite
    would be left unlisted: ``ValueError`` naming it."""
    path = out / ed.submission_json
    if not path.is_file():
        return listing
    mine = {m["soundscape"] for m in listing}
    try:
        old = json.loads(path.read_text())
        entries = old["probabilities"] if isinstance(old, dict) else None
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and "soundscape" in e for e in entries):
            raise ValueError('expected {"probabilities": [{"soundscape": …}, …]}')
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path}: not an eval_results.json ({e}); refusing to merge into it"
                         ) from None
    kept = [e for e in entries if e["soundscape"] not in mine]
    written = {e["filename"] for m in listing for e in m["estimate"]}
    stale = []
    wavs = out / ed.submission_wavs
    for n in sorted(os.listdir(wavs)) if wavs.is_dir() else []:
        try:
            if match_soundscape(n, mine) and n not in written:
                stale.append(n)
        except ValueError:
            continue
    if stale:
        raise ValueError(f"{wavs / stale[0]}: an earlier estimate of an input of this run, which "
                         "this run does not rewrite, would stay unlisted in "
                         f"{ed.submission_json}; remove it (or write to a new folder)")
    return kept + listing


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m s5jax.separate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="4-channel FOA wav files (any sample rate), or "
                        "folders of them")
    parser.add_argument("--tagger", help="tagger: s5jax model dir, work dir, or official .ckpt/.pth"
                        " (not needed with --labels)")
    parser.add_argument("--separator", required=True,
                        help="separator: s5jax model dir, work dir, or official .ckpt")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--labels", help="comma-separated classes to extract from every input "
                        "instead of the tagger's decision, e.g. Speech,Doorbell")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--submission", action="store_true",
                        help="challenge layout: 16-bit PCM wavs only (DCASE 2025: ≥1 estimate "
                        "per input)")
    parser.add_argument("--allow-empty", action="store_true",
                        help="DCASE 2025: allow no detected class (default: the arg-max class is "
                        "kept)")
    parser.add_argument("--task", choices=TASKS,
                        help="challenge edition, for the output names (default: dcase2026 for a "
                        "slot-head tagger or a separator trained for DCASE 2026, else "
                        "dcase2025)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--batch-chunks", type=int, default=1,
                        help="separator chunks per call for inputs longer than --chunk-seconds "
                        "(memory grows with it, not with the input length; default 1)")
    args = parser.parse_args(argv)
    try:
        written = run(args)
    except (ValueError, OSError) as e:
        return fail(e)
    print(f"wrote {written} file(s) to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Check everything, load the models, separate into a staging folder, move the outputs
    into place; returns the number of files written."""
    if not args.out:
        raise ValueError("--out: expected a folder name")
    given = parse_labels(args.labels) if args.labels is not None else None
    if given is None and not args.tagger:
        raise ValueError("--tagger is required unless --labels is given")
    if args.batch_chunks < 1:
        raise ValueError(f"--batch-chunks {args.batch_chunks}: expected ≥ 1")
    chunk_samples(args.chunk_seconds, args.overlap_seconds)  # before any work
    check_threshold(args.threshold)
    paths = expand_inputs(args.inputs)
    infos = [check_soundscape(p) for p in paths]  # headers of every input before any work
    out = Path(args.out)
    with Staging() as staging:
        tmp = staging.stage(out, overwrite=args.overwrite)  # folder usable: before any work
        pipe = load_pipeline(tagger=args.tagger, separator=args.separator,
                             threshold=args.threshold, allow_empty=args.allow_empty,
                             chunk_seconds=args.chunk_seconds,
                             overlap_seconds=args.overlap_seconds, batch_chunks=args.batch_chunks)
        head = None if pipe.tagger_model is None else pipe.tagger_model.config.get("head")
        task = args.task or (DCASE2026 if head == "slots" else None)
        if task is None and trained_task(args.separator) == DCASE2026:
            task = DCASE2026  # the separator's training run was DCASE 2026's
            print(f"note: --task dcase2026: {args.separator} was trained for it (as its "
                  "training run recorded)", file=sys.stderr)
        ed = edition(task or DCASE2025)
        sub_wavs = ed.submission_wavs if args.submission else ""
        names = [] if args.submission else [f"{p.stem}.json" for p in paths]
        if args.submission and ed.submission_json:
            names.append(ed.submission_json)
        if given is not None:
            names += [str(Path(sub_wavs) / n) for p in paths
                      for n in output_names(p.stem, given, ed.slotted_names)]
        staging.require_absent(out, names, args.overwrite)
        sample_bytes = 2 if args.submission else 4
        at_least_one = not (args.allow_empty or ed.empty_mixtures)
        wavs = len(given) if given is not None else int(at_least_one)
        check_free_space(out, sum(
            wavs * (44 + sample_bytes * resampled_frames(i)) for i in infos)
            + (0 if args.submission else JSON_BYTES * len(paths)))
        resampled = [(p, i.sample_rate) for p, i in zip(paths, infos, strict=True)
                     if i.sample_rate != wav.SAMPLE_RATE]
        if resampled:
            shown = first_few([f"{p.name} ({r} Hz)" for p, r in resampled])
            print(f"note: {len(resampled)} input(s) resampled to {wav.SAMPLE_RATE} Hz with soxr: "
                  f"{shown}; outputs are at {wav.SAMPLE_RATE} Hz", file=sys.stderr)
        (tmp / sub_wavs).mkdir(exist_ok=True)
        count, listing = 0, []
        for p, info in zip(paths, infos, strict=True):
            n, entry = _separate_one(args, ed, pipe, given, p, info, tmp / sub_wavs)
            count += n
            listing.append(entry)
        if args.submission and ed.submission_json:  # the official eval_results.json
            listing = merge_listing(out, ed, listing)
            write_atomic(tmp / ed.submission_json,
                         json.dumps({"probabilities": listing}, indent=4) + "\n")
            count += 1
        staging.commit()
    return count


def _separate_one(args, ed, pipe, given, path: Path, info: wav.WavInfo, tmp: Path,
                  ) -> tuple[int, dict]:
    """Separate one input into the staging folder ``tmp``; returns the number of files written
    and its entry of the 2026 ``eval_results.json`` (file, label and probability per estimate:
    the tagger's winning softmax, an 18-sigmoid tagger's probability of the class, 1.0 for
    given labels as the official oracle-label mode)."""
    x = read_soundscape(path)
    res = pipe(x[None], None if given is None else [given])
    labels = [int(v) for v in np.asarray(res["labels"])[0]]
    wave = np.asarray(res["waveforms"])[0]
    probs = res["probabilities"]
    if probs is None and pipe.tagger_model is not None:
        probs = pipe.tag(x[None])
    kept = [(k, lab) for k, lab in enumerate(labels) if lab != EMPTY]
    if args.submission and not kept and not (args.allow_empty or ed.empty_mixtures):
        raise ValueError(f"{path}: no class detected (the challenge expects at least one)")
    names = output_names(path.stem, labels, ed.slotted_names)
    slot_probs = np.ones(len(labels))  # given labels: the official 1
    if given is None and probs is not None and np.ndim(probs) == 3:
        slot_probs = np.asarray(slot_decision(probs)[1])[0]
    elif given is None and probs is not None:  # an 18-sigmoid tagger: its class's probability
        slot_probs = np.asarray(probs)[0][np.maximum(labels, 0)]
    entry = {"soundscape": path.stem, "estimate": [
        {"filename": n, "label": CLASSES[lab], "probability": float(slot_probs[k])}
        for (k, lab), n in zip(kept, names, strict=True)]}
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        print(f"note: {path}: samples reach ±{peak:.3g}, beyond full scale ±1 (a float WAV "
              "written at integer scale?); the models expect audio within ±1", file=sys.stderr)
    for (k, lab), n in zip(kept, names, strict=True):
        if not np.isfinite(wave[k]).all():
            why = (f"the input reaches ±{peak:.3g}, far beyond full scale ±1" if peak > 1.0
                   else "check the separator's weights")
            raise ValueError(f"{path}: the separated {CLASSES[lab]} is not finite (NaN or inf); "
                             f"{why}")
        wav.write(tmp / n, wave[k], subtype="PCM_16" if args.submission else "FLOAT")
    if args.submission:
        return len(names), entry
    meta = {
        "input": str(path),
        "input_sample_rate": info.sample_rate,
        "sample_rate": wav.SAMPLE_RATE,
        "labels": [CLASSES[lab] for _, lab in kept],
        "outputs": names,
        "oracle_labels": given is not None,
        "task": ed.task,
        "probabilities": None,
    }
    if probs is not None and np.ndim(probs) == 3:  # slot head: each slot's decision
        slot_labels, slot_probs = (np.asarray(a)[0] for a in slot_decision(probs))
        meta["slots"] = [{"label": SILENCE if lab == EMPTY else CLASSES[lab],
                          "probability": float(q)} for lab, q in zip(slot_labels, slot_probs,
                                                                     strict=True)]
    elif probs is not None:
        meta["probabilities"] = {c: float(v) for c, v in zip(CLASSES, np.asarray(probs)[0],
                                                             strict=True)}
    write_atomic(tmp / f"{path.stem}.json", json.dumps(meta, indent=2) + "\n")
    return len(names) + 1, entry


if __name__ == "__main__":
    # Only where s5jax owns the process (not when main() is called from other code): the
    # allocator settings are process-wide. Before JAX starts its threads (s5jax/hostmem.py).
    hostmem.keep_freed_memory()
    sys.exit(main())

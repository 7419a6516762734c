"""``python -m s5jax.evaluate``: score the S5 system on a labelled test set (spec §6).

    python -m s5jax.evaluate --tagger TAGGER --separator SEPARATOR [--data ROOT]
        [--oracle-labels] --out DIR [--write-wavs] [--submission DIR] [--batch-size N]
        [--task dcase2025|dcase2026]
    python -m s5jax.evaluate --estimates DIR [--data ROOT] --out DIR     # score files on disk

ROOT is a dataset root holding ``test/`` (DCASE 2025) or ``synthesized/test/`` (DCASE 2026), or a
test folder itself, with ``soundscape/`` and ``oracle_target/``; default: the embedded dataset of
the edition (generated on first use). TAGGER/SEPARATOR are s5jax model directories, training work
directories or official PyTorch checkpoints. Soundscapes at another sample rate (with their
references) are resampled to 32 kHz; references must be mono.

The edition (``--task``; by default ``dcase2026`` for a slot-head tagger or references named
``<name>_<i>_<Label>.wav``, else ``dcase2025``) decides the rest: DCASE 2025 refuses a soundscape
without any reference unless ``--allow-empty``, names estimates ``<soundscape>_<Label>.wav`` and
reports ``ca_sdri``/``label_accuracy``; DCASE 2026 scores mixtures without targets (unscored
when nothing is estimated either, as the official CAPI-SDRi), names estimates
``<soundscape>_<i>_<Label>.wav`` (``i`` the output slot, as the official ``generate_waveform.py``)
and reports ``capi_sdri``/``mixture_accuracy``. Both report ``source_accuracy``.

Writes ``DIR/results.json`` (class-aware SDRi and SI-SDRi, mixture and source accuracy, SDRi with
oracle labels, TP/FP/FN counts, mixture count, set-up), ``DIR/per_class.csv``,
``DIR/per_mixture.csv``, ``DIR/report.md``, ``DIR/per_class.png`` and ``DIR/fp_fn.png``; with
``--write-wavs`` the float32 estimates in ``DIR/estimates/``; with ``--submission`` the challenge
layout (16-bit PCM, named as above; 2026: the folder the official ``generate_waveform.py``
writes, ``eval_out/`` with the wavs and ``eval_results.json`` listing file, label and tagger
probability of every estimate). Everything is checked (test set headers, output folders,
models) before any work, and written all-or-nothing: a failure leaves the output folders as they
were. The work is ``s5jax.inference.evaluation.evaluate``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import jax

from s5jax import hostmem
from s5jax.atomic import Staging, check_free_space, write_atomic
from s5jax.cli import ArgumentParser, fail
from s5jax.data.catalog import find_test_dir
from s5jax.data.embedded import ensure_embedded
from s5jax.data.synth import TASKS
from s5jax.data.testset import SOUNDSCAPE_DIR, match_soundscape
from s5jax.inference.editions import DCASE2025, DCASE2026, Edition, edition
from s5jax.inference.evaluation import evaluate, prepare
from s5jax.inference.loading import load_pipeline, trained_task
from s5jax.inference.pipeline import check_threshold, chunk_samples
from s5jax.inference.report import (
    CHART_PNG,
    COUNTS_PNG,
    PER_CLASS_CSV,
    PER_MIXTURE_CSV,
    REPORT_MD,
    RESULTS_JSON,
    write_report,
)
from s5jax.labels import MAX_SOURCES


def resolve_test_root(root: str | os.PathLike, task: str | None = None) -> Path:
    """``root`` if it holds ``soundscape/``, else ``root/test`` or ``root/synthesized/test``
    (the layout of ``task`` first, where a root holds both)."""
    root = Path(root)
    if (root / SOUNDSCAPE_DIR).is_dir():
        return root
    found = find_test_dir(root, task)
    if found is not None:
        return found
    raise ValueError(f"{root}: neither {root}/{SOUNDSCAPE_DIR}/ nor {root}/test/{SOUNDSCAPE_DIR}/ "
                     f"nor {root}/synthesized/test/{SOUNDSCAPE_DIR}/ exists (expected a dataset "
                     "root or a test folder)")


REPORT_FILES = (RESULTS_JSON, PER_CLASS_CSV, PER_MIXTURE_CSV, REPORT_MD, CHART_PNG, COUNTS_PNG)


def estimates_only(names: set[str]):
    """For ``Staging.stage(replace=…)``: a folder may be replaced only if it holds nothing but
    estimate wavs of soundscapes in ``names`` (what an earlier run wrote)."""

    def check(folder: Path) -> str | None:
        for p in sorted(folder.iterdir()):
            try:
                ok = p.is_file() and p.suffix == ".wav" and bool(match_soundscape(p.name, names))
            except ValueError:
                ok = False
            if not ok:
                return f"holds {p.name}, which is not an estimate of this test set"
        return None

    return check


def submission_only(names: set[str], ed: Edition):
    """For ``Staging.stage(replace=…)`` of ``--submission DIR``: what an earlier run wrote there
    (2025: estimate wavs; 2026: ``eval_out/`` of estimate wavs and ``eval_results.json``)."""
    wavs = estimates_only(names)
    if not ed.submission_wavs:
        return wavs

    def check(folder: Path) -> str | None:
        for p in sorted(folder.iterdir()):
            if p.name == ed.submission_json and p.is_file():
                continue
            if p.name == ed.submission_wavs and p.is_dir():
                reason = wavs(p)
                if reason is not None:
                    return f"{p.name}/ {reason}"
                continue
            return f"holds {p.name}, which is not part of a submission of this test set"
        return None

    return check


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m s5jax.evaluate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tagger", help="tagger: s5jax model dir, work dir or official .ckpt/.pth")
    parser.add_argument("--separator",
                        help="separator: s5jax model dir, work dir or official .ckpt")
    parser.add_argument("--estimates", help="score the <soundscape>_<Label>.wav files in this "
                        "folder instead of running models")
    parser.add_argument("--data", help="dataset root (with test/) or test folder; default: the "
                        "embedded dataset")
    parser.add_argument("--oracle-labels", action="store_true",
                        help="query the separator with the true labels (no tagger needed)")
    parser.add_argument("--no-oracle-pass", action="store_true",
                        help="skip the extra separator pass with true labels (oracle SDRi)")
    parser.add_argument("--out", required=True, help="folder for results.json and the report")
    parser.add_argument("--write-wavs", action="store_true",
                        help="also write the float32 estimates to OUT/estimates/")
    parser.add_argument("--submission", metavar="DIR",
                        help="write the challenge layout: 16-bit PCM estimates (2026: in "
                        "DIR/eval_out/, with DIR/eval_results.json)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--allow-empty", action="store_true",
                        help="DCASE 2025: allow an empty label set (default: the arg-max class is "
                        "kept) and soundscapes without references (DCASE 2026 has both anyway)")
    parser.add_argument("--task", choices=TASKS,
                        help="challenge edition (default: dcase2026 for a slot-head tagger, a "
                        "separator trained for DCASE 2026 or references named "
                        "<name>_<i>_<Label>.wav, else dcase2025)")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--batch-chunks", type=int, default=1,
                        help="separator chunks per call for soundscapes longer than "
                        "--chunk-seconds (memory grows with it, not with their length)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except (ValueError, OSError) as e:
        return fail(e)
    ed = edition(summary["task"])
    si_name = ed.sdri_name.replace("SDR", "SI-SDR")
    print(f"{ed.sdri_name} {_fmt(summary[ed.sdri_key])} dB | {si_name} "
          f"{_fmt(summary[ed.si_sdri_key])} dB (scaled-mixture floor "
          f"{_fmt(summary['floor_' + ed.sdri_key])} / {_fmt(summary['floor_' + ed.si_sdri_key])} "
          f"dB) | mixture accuracy {_fmt(summary[ed.accuracy_key], 2)} % | source accuracy "
          f"{_fmt(summary['source_accuracy'], 2)} % | oracle-label SDRi "
          f"{_fmt(summary['oracle_sdri'])} dB | {summary['n_mixtures']} mixtures → {args.out}")
    return 0


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_outputs_apart(inputs: dict[str, Path | None], outputs: dict[str, Path | None],
                        ) -> None:
    """``ValueError`` if an estimates folder that may be replaced as a whole (``--submission``,
    ``--write-wavs``' ``OUT/estimates``) is, holds or lies inside an input folder (the test set,
    ``--estimates``): a test set's references are named like estimates, so ``--overwrite``
    would replace them. The report files of ``--out`` are never wavs, so ``--out RUN
    --estimates RUN/estimates`` (rescoring a run's own wavs) is fine."""
    for iname, i in inputs.items():
        for oname, o in outputs.items():
            if i is not None and o is not None and _overlap(o, i):
                raise ValueError(f"{oname} {o} and {iname} {i} overlap: estimates must not be "
                                 "written into, or around, a folder that is read")


def run(args: argparse.Namespace) -> dict:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected ≥ 1")
    if args.batch_chunks < 1:
        raise ValueError(f"--batch-chunks {args.batch_chunks}: expected ≥ 1")
    chunk_samples(args.chunk_seconds, args.overlap_seconds)  # before any work
    check_threshold(args.threshold)
    if args.estimates:
        if args.tagger or args.separator or args.oracle_labels:
            raise ValueError("--estimates scores files on disk: drop --tagger/--separator/"
                             "--oracle-labels")
    elif not args.separator:
        raise ValueError("--separator is required (or --estimates DIR)")
    elif not args.tagger and not args.oracle_labels:
        raise ValueError("--tagger is required unless --oracle-labels is given")
    if not args.out:
        raise ValueError("--out: expected a folder name")
    out = Path(args.out)
    sub = Path(args.submission) if args.submission else None
    if sub is not None and _overlap(sub, out):
        raise ValueError(f"--submission {sub} and --out {out}: expected two separate folders")
    test_root = resolve_test_root(args.data, args.task) if args.data else None
    estimates = Path(args.estimates) if args.estimates else None

    def apart(test_root):
        check_outputs_apart(
            {"--data": test_root, "--estimates": estimates},
            {"--submission": sub, "--write-wavs folder": out / "estimates" if args.write_wavs
             else None})

    apart(test_root)  # before the models
    with Staging() as staging:
        out_tmp = staging.stage(out, overwrite=args.overwrite)  # before the models
        staging.require_absent(out, REPORT_FILES, args.overwrite)
        pipeline = head = None
        if not args.estimates:  # before the test set: a slot-head tagger means DCASE 2026
            pipeline = load_pipeline(
                tagger=None if args.oracle_labels else args.tagger, separator=args.separator,
                threshold=args.threshold, allow_empty=args.allow_empty,
                chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
                batch_chunks=args.batch_chunks)
            if pipeline.tagger_model is not None:
                head = pipeline.tagger_model.config.get("head")
        hint = args.task or (DCASE2026 if head == "slots" else None)
        if hint is None and not args.estimates and trained_task(args.separator) == DCASE2026:
            # The separator's run was DCASE 2026's: its test set (the embedded one, or the 2026
            # layout of a root that holds both); the references then decide the edition.
            hint = DCASE2026
            if test_root is None:
                print(f"note: the embedded DCASE 2026 test set: {args.separator} was trained "
                      "for DCASE 2026 (as its training run recorded)", file=sys.stderr)
        if test_root is None:
            test_root = resolve_test_root(ensure_embedded(progress=not args.no_progress,
                                                          task=hint or DCASE2025))
        elif hint != args.task:  # a slot-head tagger: the 2026 layout first
            test_root = resolve_test_root(args.data, hint)
        apart(test_root)
        # headers, before any work
        ts, lengths, notes, task = prepare(test_root, args.allow_empty, args.task, head)
        args.task = task
        ed = edition(task)
        names = {it.name for it in ts}
        wav_dir = sub_dir = None
        if args.write_wavs:
            wav_dir = staging.stage(out / "estimates", overwrite=args.overwrite,
                                    replace=estimates_only(names))
        if sub is not None:
            sub_dir = staging.stage(sub, overwrite=args.overwrite,
                                    replace=submission_only(names, ed))
        per_wav = (4 if args.write_wavs else 0) + (2 if sub is not None else 0)
        at_least_one = not (args.allow_empty or ed.empty_mixtures)
        check_free_space(out, per_wav * sum(lengths) if at_least_one else 0, "the estimates")
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        summary, per_class, per_mixture = evaluate(
            test_root, pipeline=pipeline, estimates=args.estimates,
            oracle_labels=args.oracle_labels, oracle_pass=not args.no_oracle_pass,
            batch_size=args.batch_size, wav_dir=wav_dir, submission_dir=sub_dir,
            allow_empty=args.allow_empty, task=task, progress=not args.no_progress)
        _finish(args, summary, per_class, per_mixture, test_root, out_tmp)
        staging.commit()
    return summary


def _finish(args, summary, per_class, per_mixture, test_root: Path, out_tmp: Path) -> None:
    """The set-up in ``summary``; the report files into ``out_tmp``."""
    summary["setup"] = {
        "task": args.task,
        "data": str(test_root),
        "tagger": None if args.estimates or args.oracle_labels else str(args.tagger),
        "separator": None if args.estimates else str(args.separator),
        "estimates": args.estimates,
        "labels": "oracle" if args.oracle_labels else ("files" if args.estimates else "tagger"),
        "threshold": args.threshold,
        "max_sources": MAX_SOURCES,
        "allow_empty": args.allow_empty,
        "chunk_seconds": args.chunk_seconds,
        "overlap_seconds": args.overlap_seconds,
        "batch_chunks": args.batch_chunks,
        "batch_size": args.batch_size,
        "devices": f"{jax.device_count()} × {jax.devices()[0].platform}",
        "jax": jax.__version__,
    }
    write_report(out_tmp, summary, per_class)
    write_atomic(out_tmp / PER_MIXTURE_CSV, per_mixture)


if __name__ == "__main__":
    # Only where s5jax owns the process (not when main() is called from other code): the
    # allocator settings are process-wide. Before JAX starts its threads (s5jax/hostmem.py).
    hostmem.keep_freed_memory()
    sys.exit(main())

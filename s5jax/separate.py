"""``python -m s5jax.separate``: separate 4-channel 32 kHz soundscapes into one wav per class.

    python -m s5jax.separate --tagger TAGGER --separator SEPARATOR IN.wav [IN2.wav | DIR ...]
        --out DIR [--labels Speech,Doorbell] [--overwrite] [--submission] [--allow-empty]

For each input ``<name>.wav`` it writes ``DIR/<name>_<Label>.wav`` per detected (or given) class
(float32; 16-bit PCM with ``--submission``, the challenge layout) and ``DIR/<name>.json`` with the
tagger's probabilities (not in ``--submission`` mode, which writes only the wavs). A class given
twice (allowed from DCASE 2026 on) gets distinct names: ``<name>_Speech.wav``,
``<name>_Speech_2.wav``.

All inputs are validated (4 channels, 32 kHz — there is no resampler —, finite, not truncated)
and all outputs computed before anything is written; an existing output is never replaced unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s5jax.atomic import write_atomic
from s5jax.audio import wav
from s5jax.inference.files import output_names
from s5jax.inference.loading import load_pipeline
from s5jax.labels import CLASSES, EMPTY, MAX_SOURCES, class_index

CHANNELS = 4


def read_input(path: str | os.PathLike) -> np.ndarray:
    """A soundscape ``(4, samples)`` float32; ``ValueError`` naming the file if unusable."""
    try:
        return wav.read(path, channels=CHANNELS)
    except ValueError as e:
        msg = str(e)
        if "sample rate" in msg:
            msg += " (s5jax does not resample: convert the file to 32 kHz first, e.g. with sox)"
        raise ValueError(msg) from None


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a directory stands for its ``*.wav`` files, sorted by name."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".wav")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5jax.separate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="4-ch 32 kHz wav files (or folders of them)")
    parser.add_argument("--tagger", help="tagger: s5jax model dir, work dir, or official .ckpt/.pth"
                        " (not needed with --labels)")
    parser.add_argument("--separator", required=True,
                        help="separator: s5jax model dir, work dir, or official .ckpt")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--labels", help="comma-separated classes to extract from every input "
                        "instead of the tagger's decision, e.g. Speech,Doorbell")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--submission", action="store_true",
                        help="challenge layout: 16-bit PCM wavs only, ≥1 estimate per input")
    parser.add_argument("--allow-empty", action="store_true",
                        help="allow no detected class (default: the arg-max class is kept)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        written = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {written} file(s) to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate everything, separate, then write; returns the number of files written."""
    given = parse_labels(args.labels) if args.labels else None
    if given is None and not args.tagger:
        raise ValueError("--tagger is required unless --labels is given")
    paths = expand_inputs(args.inputs)
    audio = [read_input(p) for p in paths]  # validates every input before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")

    pipe = load_pipeline(tagger=args.tagger, separator=args.separator,
                         threshold=args.threshold, allow_empty=args.allow_empty,
                         chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds)
    files: list[tuple[Path, object]] = []  # (path, waveform array or JSON text)
    for p, x in zip(paths, audio, strict=True):
        res = pipe(x[None], None if given is None else [given])
        labels = [int(v) for v in np.asarray(res["labels"])[0]]
        wave = np.asarray(res["waveforms"])[0]
        probs = res["probabilities"]
        if probs is None and pipe.tagger_model is not None:
            probs = pipe.tag(x[None])
        kept = [(k, lab) for k, lab in enumerate(labels) if lab != EMPTY]
        names = output_names(p.stem, [lab for _, lab in kept])
        for (k, _), n in zip(kept, names, strict=True):
            files.append((out / n, wave[k]))
        if args.submission and not kept and not args.allow_empty:
            raise ValueError(f"{p}: no class detected (the challenge expects at least one)")
        if not args.submission:
            info = {
                "input": str(p),
                "labels": [CLASSES[lab] for _, lab in kept],
                "outputs": names,
                "oracle_labels": given is not None,
                "probabilities": None if probs is None else
                {c: float(v) for c, v in zip(CLASSES, np.asarray(probs)[0], strict=True)},
            }
            files.append((out / f"{p.stem}.json", json.dumps(info, indent=2) + "\n"))

    existing = [f for f, _ in files if f.exists()]
    if existing and not args.overwrite:
        shown = ", ".join(str(f) for f in existing[:3]) + (" …" if len(existing) > 3 else "")
        raise ValueError(f"{len(existing)} output(s) already exist: {shown} (pass --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if args.submission else "FLOAT"
    for f, data in files:
        if isinstance(data, str):
            write_atomic(f, data)
        else:
            wav.write(f, data, subtype=subtype)
    return len(files)


if __name__ == "__main__":
    sys.exit(main())

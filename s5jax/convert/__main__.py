"""``python -m s5jax.convert {separator,tagger} IN OUT_DIR``: convert official weights.

Reads the PyTorch file without torch (``s5jax.torch_io``), converts it, checks every key, shape
and that every weight is finite, and writes an s5jax model directory (``s5jax.modeldir``)
atomically. ``--overwrite`` replaces OUT_DIR only if it is an s5jax model directory (exactly
``config.json`` and ``variables/``); any other folder is refused and left as it is.
``--num-heads`` (tagger only) sets the attention head count, which the weights do not store; the
default is D // 64 (64-wide heads, as in the official ViTs).
"""

from __future__ import annotations

import sys

from s5jax.cli import ArgumentParser, fail
from s5jax.convert import separator, tagger


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m s5jax.convert", description=__doc__)
    parser.add_argument("kind", choices=["separator", "tagger"])
    parser.add_argument("input", help="official .ckpt (Lightning) or .pth (M2D) file")
    parser.add_argument("output", help="model directory to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (only an s5jax model directory)")
    parser.add_argument("--num-heads", type=int, default=None, metavar="N",
                        help="tagger: attention heads (default: embedding width // 64)")
    args = parser.parse_args(argv)
    if args.num_heads is not None and (args.kind != "tagger" or args.num_heads < 1):
        parser.error("--num-heads takes a positive head count, and only for `tagger`")
    try:
        if args.kind == "separator":
            out = separator.convert_file(args.input, args.output, overwrite=args.overwrite)
        else:
            out = tagger.convert_file(args.input, args.output, overwrite=args.overwrite,
                                      num_heads=args.num_heads)
    except (ValueError, OSError) as e:
        return fail(e)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

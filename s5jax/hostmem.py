"""Host memory: make glibc keep freed memory, so that XLA:CPU steps stop page-faulting.

XLA:CPU allocates the buffers of every execution afresh (a train step's temporaries are one
block of gigabytes) and frees them at its end. glibc's ``malloc`` serves blocks above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and returns them with ``munmap`` at ``free``, and
threads other than the main one take their memory from arenas that do the same for blocks above
64 MB. So every step maps its temporaries again and the kernel faults and zeroes them page by
page. Measured on a 2-core CPU, ResUNetK (official widths) forward + backward at 1 × 4 s: about
540 000 page faults per call, 6.1 s per call; with :func:`keep_freed_memory` 4.6 s, and the peak
resident memory was lower (5.2 against 5.5 GB), not higher (docs/benchmarks.md).

:func:`keep_freed_memory` sets three ``mallopt`` parameters of the running process: one arena for
all threads (``M_ARENA_MAX`` 1), no ``mmap`` for large blocks (``M_MMAP_MAX`` 0: they come from
the heap, where freed ones are reused), and no trimming of the heap's top (``M_TRIM_THRESHOLD``
"never"). The price: the process keeps its peak heap until it exits (freed memory is reused,
not returned to the system), and all threads share one arena's lock, which XLA's few large
allocations do not contend for. ``python -m s5jax.train`` (``evaluate``, ``separate``) calls it
before JAX starts its threads; threads that have allocated already keep their arena. Elsewhere than
glibc (macOS, musl) it does nothing, and so it does where JAX will run on an accelerator
(:func:`jax_runs_on_cpu`): there XLA's temporaries live in device memory, so the settings would
buy nothing, and one arena's lock would be shared by the host threads that do work there (the
loader's readers, XLA's compiler).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Mapping, Sequence

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt takes an int; glibc stores the trim threshold as a size_t, so −1 reads as SIZE_MAX:
# never trim (the largest positive int, 2 GiB, would still trim after a larger temporary).
_NEVER = -1

_applied = False


def accelerator_plugins() -> list[str]:
    """JAX's accelerator back-ends installed here, found as JAX finds them (PJRT plugins: the
    ``jax_plugins`` entry points and namespace package, e.g. CUDA, ROCm; and ``libtpu``),
    without importing them or starting JAX."""
    names = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
    try:
        # Deferred to the call, and optional: the namespace package exists only where a plugin
        # is installed; importing it imports no plugin.
        import jax_plugins
    except ImportError:
        pass
    else:
        names += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
    if importlib.util.find_spec("libtpu") is not None:
        names.append("libtpu")
    return sorted(set(names))


def jax_runs_on_cpu(environ: Mapping[str, str] = os.environ,
                    plugins: Sequence[str] | None = None) -> bool:
    """Whether JAX's default back-end will be the CPU: ``JAX_PLATFORMS`` names it first, or
    (unset) no accelerator plugin is installed (``plugins``, default
    :func:`accelerator_plugins`). Decided before JAX starts, from what JAX itself reads."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not (accelerator_plugins() if plugins is None else plugins)


def keep_freed_memory() -> bool:
    """Configure glibc's ``malloc`` to reuse freed memory instead of returning it (see above),
    where JAX will run on the CPU.

    Returns:
      whether the settings are in effect (``False`` where the C library is not glibc, or JAX
      will run on an accelerator).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or not jax_runs_on_cpu():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NEVER)))
    _applied = ok
    return ok

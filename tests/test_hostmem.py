"""s5jax.hostmem: with it, a large block freed and allocated again is not page-faulted again."""

import subprocess
import sys

import pytest

# In a fresh process: a 256 MiB block is malloc'ed, written and freed, then again, in a thread
# other than the main one (XLA allocates from its worker threads); prints the minor page faults
# of the second round, counted for that thread.
_CYCLE = """
import ctypes, resource, runpy, sys, threading
from s5jax import hostmem
if sys.argv[1] == "1":
    assert hostmem.keep_freed_memory()
elif sys.argv[1] != "0":  # a command, run as `python -m <module> --help`
    sys.argv = [sys.argv[1], "--help"]
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 256 << 20
def cycle():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
out = []
def work():
    cycle()
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    cycle()
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0)
t = threading.Thread(target=work)
t.start()
t.join()
print(out[0])
"""


def _second_round_faults(mode: str) -> int:
    """``mode``: "0" glibc's defaults, "1" keep_freed_memory(), else a module run as a command."""
    done = subprocess.run([sys.executable, "-c", _CYCLE, mode], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_block_is_reused_without_page_faults():
    plain = _second_round_faults("0")
    kept = _second_round_faults("1")
    # glibc's default maps the block afresh: 65 536 faults with 4-KiB pages (128 with
    # transparent huge pages); kept, the second round reuses the first one's pages.
    assert kept < 100, (kept, plain)
    assert plain > 10 * kept, (kept, plain)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
@pytest.mark.parametrize("module", ["s5jax.train", "s5jax.evaluate", "s5jax.separate"])
def test_commands_keep_freed_memory(module):
    # `python -m <module>` sets the allocator up before anything else (here: before --help).
    assert _second_round_faults(module) < 100


def test_only_where_jax_runs_on_the_cpu():
    from s5jax import hostmem

    assert hostmem.jax_runs_on_cpu({}, plugins=[])
    assert not hostmem.jax_runs_on_cpu({}, plugins=["cuda"])
    assert hostmem.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu"}, plugins=["cuda"])
    assert not hostmem.jax_runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"}, plugins=["cuda"])
    assert hostmem.jax_runs_on_cpu({"JAX_PLATFORMS": " CPU "}, plugins=[])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_left_alone_where_jax_will_run_on_an_accelerator():
    # On an accelerator XLA's temporaries are in device memory: the settings would buy nothing
    # and put every host thread behind one arena's lock, so they are not applied.
    import os

    code = "from s5jax import hostmem; print(hostmem.keep_freed_memory())"
    for platforms, expected in (("cuda", "False"), ("cpu", "True")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env=dict(os.environ, JAX_PLATFORMS=platforms))
        assert done.stdout.strip() == expected, (platforms, done.stdout, done.stderr)

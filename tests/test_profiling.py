"""scripts/profiling.py: a trace of a compiled program summarised by what its ops compute."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import profiling  # noqa: E402


def test_busy_time_is_the_union_of_the_intervals():
    assert profiling._busy_ns([(0, 10), (5, 10), (20, 5), (21, 1)]) == 20
    assert profiling._busy_ns([]) == 0


def test_kernel_names_without_an_op():
    kind = profiling._kernel_kind
    assert kind("sm90_xmma_fprop_implicit_gemm_bf16f32_nhwckrsc") == "convolution"
    assert kind("loop_convert_fusion_3") == "elementwise"  # not a convolution
    assert kind("cutlass_80_tensorop_s1688gemm") == "matmul"
    assert kind("input_reduce_fusion") == "reduction"
    assert kind("MemcpyD2D") == "data movement"


@pytest.fixture(scope="module")
def program():
    def f(x, w, m):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        spec = jnp.abs(jnp.fft.rfft(jnp.tanh(y), axis=2))
        loop = jax.lax.fori_loop(0, 3, lambda i, c: c @ m, m)  # a while loop around a dot
        return spec.sum() + loop.sum()

    args = (jnp.ones((2, 64, 64, 8)), jnp.ones((3, 3, 8, 8)), jnp.eye(128) * 0.5)
    compiled = jax.jit(f).lower(*args).compile()
    return compiled, args


def test_kinds_of_the_ops_from_the_hlo(program):
    compiled, _ = program
    ops = profiling.hlo_ops(compiled.as_text())
    kinds = {info["opcode"]: info["kind"] for info in ops.values()}
    assert kinds.get("convolution") == "convolution" and kinds.get("fft") == "fft"
    assert "while" in kinds  # known, so that its event is not counted on top of its body's
    assert any(info["kind"] == "matmul" for info in ops.values())


def test_profile_of_a_program(program, tmp_path):
    compiled, args = program
    compiled(*args).block_until_ready()
    s = profiling.profile(lambda: compiled(*args).block_until_ready(), compiled.as_text(),
                          tmp_path, steps=2, step_seconds=1.0)
    assert (tmp_path / "profile.json").exists()
    xplane = next(tmp_path.glob("**/*.xplane.pb"))
    module = compiled.as_text().split(",")[0].removeprefix("HloModule ")
    assert {e[4] for e in profiling._events(xplane)} == {module}  # only this module ran
    assert s["matched"] == 1.0  # every event names an op of this module
    for kind in ("convolution", "fft", "matmul"):
        assert s["kinds"].get(kind, 0) > 0, s["kinds"]
    assert 0 < s["busy_ms"] <= s["op_ms"] + 1e-9
    assert s["busy_ms"] <= s["traced_step_ms"]  # the union of the ops within the traced calls
    text = profiling.report(s)
    assert "device busy" in text and "convolution" in text
    # A GPU program's trace without its GPU (no CUPTI) is refused, not read from the host.
    with pytest.raises(ValueError, match="no GPU in the trace"):
        profiling.summarise(xplane, compiled.as_text(), 2, 1.0, 1.0, backend="gpu")

"""What a compiled program costs: collectives read from HLO text, the roofline step time, the TPU compiler's refusal."""

import importlib.util

import pytest

from neo.parallel.compiled import CompileReport, collective_bytes, compiler_oom, estimate_step_time

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install libtpu, Linux x86-64): the TPU compiler cannot run here",
)


def test_collective_bytes_reads_hlo():
    hlo = (
        "%ar = f32[128,4]{1,0} all-reduce(f32[128,4]{1,0} %p), replica_groups={}\n"
        "%ag = (bf16[8]{0}, bf16[8]{0}) all-gather-start(%q)"
    )
    assert collective_bytes(hlo) == 128 * 4 * 4 + 2 * 8 * 2
    assert collective_bytes(hlo, ("all-reduce",)) == 128 * 4 * 4


def test_collectives_in_a_scanned_loop_count_once_per_iteration():
    hlo = """%body (p: f32[4]) -> f32[4] {
  %ar = f32[4]{0} all-reduce(f32[4]{0} %p), replica_groups={}
}

%tpu_body (p: f32[4]) -> f32[4] {
  %ag = f32[8]{0} all-gather(f32[4]{0} %p), dimensions={0}
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %w = f32[4]{0} while(f32[4]{0} %a), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  %v = f32[4]{0} while(f32[4]{0} %w), condition=%cond, body=%tpu_body
  %r = f32[4]{0} all-reduce(f32[4]{0} %v), replica_groups={}
}
"""
    # 12 iterations recorded by the compiler; the TPU-style loop without a count takes `loop_trips`
    assert collective_bytes(hlo, ("all-reduce",)) == (12 + 1) * 16
    assert collective_bytes(hlo, ("all-gather",), loop_trips=5) == 5 * 32


def test_step_time_estimate_is_a_roofline_plus_communication():
    report = CompileReport(0, 0, 0, flops=2e12, bytes_accessed=1e9, collective_bytes=3e9, compile_s=0.0)
    report.all_reduce_bytes = 1e9  # a ring moves all-reduce bytes twice: 4e9 bytes on the wire
    # compute-bound: 2e12 / 1e12 = 2 s > 1e9 / 1e12; then 4e9 / 1e9 = 4 s of communication
    assert estimate_step_time(report, 1e12, (1e12, 1e9)) == pytest.approx(6.0)
    # the analytic FLOPs floor a loop-blind compiler count (and scales its bytes by the same shortfall)
    assert estimate_step_time(report, 1e12, (1e12, 1e9), min_flops=6e12) == pytest.approx(6.0 + 4.0)
    # memory-bound when the bytes dominate
    assert estimate_step_time(report, 1e15, (1e9, 1e12)) == pytest.approx(1.0 + 4e-3)


def test_compiler_oom_reads_the_tpu_compilers_refusal():
    exc = RuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (22.46G) "
        "exceeds available HBM (15.48G)."
    )
    needed, line = compiler_oom(exc)
    assert needed == int(22.46 * 2**30) and line.startswith("Ran out of memory")
    assert compiler_oom(ValueError("something else")) is None

"""Extrapolating compile reports from reduced-depth proxies, and the search that ranks on them."""

import pytest

from neo.parallel.config import MeshConfig
from neo.parallel.proxy import extrapolate, proxy_trips
from neo.parallel.search import Candidate, CompileReport, search
from tests.parallel.test_search import toy_factory


def _report(memory: int, flops: float, seconds: float) -> CompileReport:
    return CompileReport(memory, memory // 4, memory // 2, flops, 10 * flops, 3 * flops, seconds, flops)


def test_extrapolate_follows_the_line_through_two_proxies():
    low, high = _report(1000, 5.0, 2.0), _report(1300, 6.0, 3.0)
    full = extrapolate(low, high, (2, 3), 12)  # nine more iterations than the deeper proxy, 300 bytes each
    assert full.memory_bytes == 1000 + 10 * 300 and full.argument_bytes == 250 + 10 * 75
    assert full.flops == pytest.approx(15.0) and full.collective_bytes == pytest.approx(45.0)
    assert full.all_reduce_bytes == pytest.approx(15.0)
    assert full.compile_s == 5.0  # what the proxies cost, not a guess at the full compile
    assert extrapolate(low, high, (2, 3), 2).memory_bytes == 1000  # at a proxy's depth: that proxy
    with pytest.raises(ValueError, match="different depth"):
        extrapolate(low, high, (2, 2), 12)


def test_only_stacks_deeper_than_the_proxies_use_them():
    assert proxy_trips(12) == (2, 3)
    assert proxy_trips(3) is None and proxy_trips(1) is None


def test_budget_bounds_proxy_compiles_and_the_full_check(tmp_path, monkeypatch):
    """Every compile counts against the budget; a leader whose full compile would overrun keeps its extrapolation."""
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path / "first"))
    clock = [0.0]
    monkeypatch.setattr("neo.parallel.search.time.perf_counter", lambda: clock[0])

    def slow_factory(*args):  # every compile "takes" 10 s
        clock[0] += 10
        return toy_factory(*args)

    proxies = [({"heads": 4, "mlp": 128}, 2), ({"heads": 4, "mlp": 192}, 3)]
    cands = [Candidate("x:8", "batch:x"), Candidate("x:8", "batch:x,embd:x")]
    mesh_cfg = MeshConfig(name="cpu", platform="cpu")
    results = search({"heads": 4}, mesh_cfg, slow_factory, cands, budget_s=25, proxies=proxies, loop_trips=6)
    by = {r.candidate: r for r in results}
    first, second = by[cands[0]], by[cands[1]]
    assert first.source == "extrapolated" and first.report.compile_s == 20  # two proxies, 10 s each
    assert second.skipped and "budget" in second.error  # 20 s spent + 10 s more > 25 s
    assert first.proxy_error is None  # its full compile would overrun too: the figures stay marked extrapolated
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path / "small"))
    # a budget smaller than one compile still ranks the first candidate: both its proxies run
    results = search({"heads": 4}, mesh_cfg, slow_factory, cands, budget_s=5, proxies=proxies, loop_trips=6)
    assert results[0].source == "extrapolated" and results[1].skipped
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path / "fresh"))
    # with room for everything, both are ranked and the leader is compiled in full to check the extrapolation
    results = search({"heads": 4}, mesh_cfg, slow_factory, cands, budget_s=100, proxies=proxies, loop_trips=6)
    sources = sorted(r.source for r in results)
    assert sources == ["compiled", "extrapolated"] and results[0].source == "compiled"
    assert results[0].proxy_memory is not None and results[0].proxy_error is not None


def test_an_extrapolated_no_fit_is_checked_in_full(tmp_path, monkeypatch):
    """ "Nothing fits" is an answer too: it comes from full compiles, not from the line through two proxies."""
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    proxies = [({"heads": 4, "mlp": 128}, 2), ({"heads": 4, "mlp": 192}, 3)]
    cands = [Candidate("x:8", "batch:x"), Candidate("x:8", "batch:x,embd:x")]
    tiny = MeshConfig(name="tiny", memory_per_device=1000)
    results = search({"heads": 4}, tiny, toy_factory, cands, proxies=proxies, loop_trips=6)
    lead = results[0]  # leads on step time among the candidates that do not fit
    assert lead.source == "compiled" and not lead.fits and lead.proxy_error is not None
    assert not any(r.fits for r in results)

"""The suite runs as ``pytest -n 2 --dist loadgroup``: tests marked ``xdist_group`` share one
worker, and with it their module fixtures (the learning run, the documented commands' runner).
pytest-xdist tells its scheduler by suffixing the node id with ``@group``; when a pytest release
stops honouring that (9.2, pytest-dev/pytest-xdist#1386), nothing fails, the groups just spread
over the workers and their fixtures are built once per worker. This test notices."""

import pytest


@pytest.mark.xdist_group("xdist_check")
def test_xdist_group_reaches_the_scheduler(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run under pytest -n N --dist loadgroup")
    assert request.node.nodeid.endswith("@xdist_check"), request.node.nodeid

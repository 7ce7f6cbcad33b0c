"""The test process itself stays unpatched: Locust runs in its own processes, never imported here.

Importing locust calls gevent's monkey.patch_all(), which turns this process's sockets, sleeps and subprocesses
cooperative; the servers other tests start and stop then hang or misbehave. This test runs after every module has
been imported (collection), so a test file that imports locust makes it fail.
"""
import sys


def test_no_module_monkey_patched_the_test_process_for_gevent():
    if "gevent.monkey" not in sys.modules:
        return  # nothing could have patched anything
    from gevent import monkey

    patched = [m for m in ("socket", "time", "subprocess", "thread", "ssl") if monkey.is_module_patched(m)]
    assert patched == [], f"patched by gevent: {patched} (was locust imported in a test module?)"
    assert "locust" not in sys.modules

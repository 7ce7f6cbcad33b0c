"""Free loopback ports for the servers the project starts on this machine."""
from serving.local import Ports

DRAWS = 20_000  # one draw in about 10,000 repeated a port before (2 in 20,000 measured here)


def test_a_servers_three_free_ports_are_never_the_same_port():
    # Seen in CI: tritonserver refused --http-port and --metrics-port being one port, and the fixture's server never
    # started. Three ports drawn one after another can repeat, since each is released before the next is drawn.
    repeats = [p for p in (Ports.free() for _ in range(DRAWS)) if len({p.http, p.grpc, p.metrics}) < 3]
    assert repeats == []

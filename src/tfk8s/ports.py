"""Free loopback ports: the one place that picks them, for the model server, the local TFJob replicas and tests."""
import socket


def free_ports(count):
    """`count` distinct free ports on 127.0.0.1, held open together while they are picked, then released.

    Another process may take one before its user listens on it; users listen at once, and a server
    that cannot listen says so in one line.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port():
    """One free port on 127.0.0.1 (see free_ports)."""
    (port,) = free_ports(1)
    return port

"""Free loopback ports: the one place that picks them, for the model server, the local TFJob replicas and tests."""
import errno
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


def in_use(address, port):
    """Whether a server listens on address:port, found by binding it as a server would (SO_REUSEADDR, never
    SO_REUSEPORT, so a gRPC server sharing ports is seen). Any other failure (an address that is not this
    machine's, a port below 1024) is left to the server's own bind to report."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
        return False

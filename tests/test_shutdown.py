"""serve.py beside idle, dripping and keep-alive clients, and stopped under load: a real server process, real
sockets on loopback, real signals.

To have requests in flight when the signal comes, the server batches with a batch that waits HOLD_S seconds
for more requests (batch_timeout_micros): every request sent is held in the queue that long, then answered.
The signal is sent once the server's debug log shows every request queued (the kernel alone would have taken
the connections). No speed is asserted: each wait has a deadline that catches a hang, nothing more.
"""
import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from support import assert_one_line_error, run_script, wait_for
from tfk8s.serving import process
from tfk8s.serving.tensors import apis, to_ndarray, to_tensor_proto

HOLD_S = 4
GRACE_S = 20
# A hang-catcher, not a speed figure: exits measured 4 to 5 s after SIGTERM here (the held batch), the bound is
# the grace period plus the second drain() allows, plus a margin for a loaded machine.
EXIT_DEADLINE_S = GRACE_S + 15


@pytest.fixture
def held(half_plus_two_exports, tmp_path):
    """Flags for a server whose every request waits HOLD_S s in the batch queue."""
    parameters = tmp_path / "batching.config"
    parameters.write_text(f"max_batch_size {{ value: 1000 }} batch_timeout_micros {{ value: {HOLD_S * 10**6} }} "
                          "max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }")
    return ["--enable_batching", "--batching_parameters_file", parameters, "--shutdown_grace_seconds", GRACE_S]


def grpc_predict(port, x):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(to_tensor_proto(np.array([x], np.float32)))
    return channel, apis.prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request,
                                                                                                  timeout=60)


def wait_queued(server, count):
    """Until the server has read `count` requests and queued them for a batch (its debug log says each)."""
    wait_for(lambda: server.log().count("queued a task") >= count, f"{count} request(s) queued", 60, server.log)


def accepted(pid, port, clients):
    """The local ports among `clients` whose connection to `port` the process `pid` has accepted: it holds the
    server side's socket (/proc/net/tcp names the socket of each end, /proc/<pid>/fd the sockets it holds)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            pass  # closed while we looked
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, remote, inode = line.split()[1], line.split()[2], line.split()[9]
            client = int(remote.split(":")[1], 16)
            if int(local.split(":")[1], 16) == port and client in clients and f"socket:[{inode}]" in held:
                found.add(client)
    return found


def wait_accepted(server, clients):
    """Until the server has accepted every connection from `clients` (once each: a later drop does not undo it)."""
    seen = set()

    def every():
        seen.update(accepted(server.process.pid, server.rest_port, clients))
        return seen >= set(clients)

    wait_for(every, f"the server accepting {len(clients)} connection(s)", 60, server.log, interval=0.05)


def rest_predict(connection, x):
    """y for x over an open (keep-alive) connection; raises OSError or http.client's errors when it is closed."""
    connection.request("POST", "/v1/models/m:predict", body=json.dumps({"instances": [x]}).encode())
    response = connection.getresponse()
    assert response.status == 200
    return json.loads(response.read())["predictions"][0]


def stopped(server, deadline=EXIT_DEADLINE_S):
    """Wait for the process to exit (failing after `deadline` s): (exit code, seconds it took)."""
    began = time.monotonic()
    wait_for(lambda: server.process.poll() is not None, "serve.py exiting", deadline, server.log)
    return server.process.returncode, time.monotonic() - began


@pytest.mark.slow
def test_sigterm_under_load_answers_every_request_in_flight_then_exits(half_plus_two_exports, held):
    with process.running(half_plus_two_exports, "m", held, debug=True) as server:
        # In flight at the signal: 8 gRPC calls and 8 REST requests on keep-alive connections.
        calls = [grpc_predict(server.grpc_port, float(i)) for i in range(8)]
        connections = [http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60) for _ in range(8)]
        answers, errors = {}, []

        def keep_asking(i):
            """One request, then the same again on the same connection until the server closes it."""
            try:
                while True:
                    answers.setdefault(i, []).append(rest_predict(connections[i], float(i)))
            except (OSError, http.client.HTTPException) as err:
                errors.append(err)

        threads = [threading.Thread(target=keep_asking, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        wait_queued(server, 16)  # the server read them all; the batch holds them HOLD_S s
        server.process.send_signal(signal.SIGTERM)
        code, seconds = stopped(server)
        for thread in threads:
            thread.join(60)
        # Every gRPC call in flight answered.
        assert [to_ndarray(c[1].result().outputs["y"])[0] for c in calls] == [0.5 * i + 2 for i in range(8)]
        # Every REST request in flight answered once; the next one on the same connection got no answer.
        assert answers == {i: [0.5 * i + 2] for i in range(8)}, server.log()
        assert len(errors) == 8
        # New connections are refused.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=10).close()
        assert code == 0 and "stopped in" in server.log() and "Traceback" not in server.log()
        assert "cut off" not in server.log()
        print(f"exit {seconds:.1f} s after SIGTERM")
        for channel, _ in calls:
            channel.close()


@pytest.mark.slow
def test_idle_and_dripping_clients_cost_nothing_and_are_dropped_at_the_request_deadline(half_plus_two_exports):
    deadline_s = 4
    flags = ["--rest_api_num_threads", 1, "--rest_api_read_timeout_seconds", deadline_s]
    with process.running(half_plus_two_exports, "m", flags) as server:
        idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) for _ in range(16)]
        request = b"GET /v1/models/m HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"
        dropped, stop, clients = [], threading.Event(), [s.getsockname()[1] for s in idle]

        def drip():
            """A byte every second: 230 bytes would take minutes; each byte resets no clock."""
            with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as s:
                clients.append(s.getsockname()[1])
                began = time.monotonic()
                try:
                    for byte in request:
                        s.sendall(bytes([byte]))
                        if stop.wait(1.0):
                            return
                except OSError:
                    pass
                dropped.append(time.monotonic() - began)

        drippers = [threading.Thread(target=drip) for _ in range(12)]
        for thread in drippers:
            thread.start()
        wait_for(lambda: len(clients) == 28, "the dripping clients connected", 60, server.log)
        wait_accepted(server, list(clients))  # the server holds all 28
        # A normal client is answered beside them (one worker, 28 connections held open).
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        connection.request("GET", "/v1/models/m")
        assert connection.getresponse().status == 200
        assert rest_predict(http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30), 1.0) == 2.5
        # Each dripper is dropped once its request is late: a per-read timeout would never drop it.
        wait_for(lambda: len(dropped) == 12, "every dripping client dropped", 60, server.log)
        for s in idle:
            assert s.recv(1024) == b""  # closed by the server: a connection that sends nothing is dropped too
            s.close()
        # Stopping with dripping clients connected: they are closed at once, the server exits.
        del clients[:]
        drippers = [threading.Thread(target=drip) for _ in range(4)]
        for thread in drippers:
            thread.start()
        wait_for(lambda: len(clients) == 4, "the dripping clients connected", 60, server.log)
        wait_accepted(server, list(clients))
        server.process.send_signal(signal.SIGTERM)
        code, _ = stopped(server)
        stop.set()
        for thread in drippers:
            thread.join(60)
        assert code == 0 and "Traceback" not in server.log()


@pytest.mark.slow
def test_a_second_signal_exits_at_once_without_a_traceback(half_plus_two_exports, held):
    with process.running(half_plus_two_exports, "m", held, debug=True) as server:
        channel, _ = grpc_predict(server.grpc_port, 1.0)  # held in the batch queue: the drain would wait
        wait_queued(server, 1)
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM: stopping" in server.log(), "the first signal noticed", 30, server.log)
        server.process.send_signal(signal.SIGINT)
        code, _ = stopped(server, deadline=HOLD_S + 30)
        assert code == 128 + signal.SIGINT
        assert "SIGINT again: exiting now" in server.log() and "Traceback" not in server.log()
        channel.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_the_grace_period_is_a_finite_number_of_seconds(value, tmp_path):
    result = run_script("serve.py", "--model_base_path", tmp_path, "--shutdown_grace_seconds", value, timeout=60)
    assert_one_line_error(result, "--shutdown_grace_seconds")

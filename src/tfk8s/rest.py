"""JSON over HTTP, for the tools that read a server's REST API (TensorFlow Serving's, TensorBoard's).

One request, one answer: (HTTP status, the parsed JSON body). An HTTP error
status is an answer too (with its JSON error body, or {"error": reason}); what
is not an answer raises: nothing listening or no answer in time
(UnreachableError), something that does not speak HTTP/1.1 there, a gRPC port for
one (NotHttpError), a body that is not JSON (NotJsonError). Each caller turns these
into its own one-line message.
"""
import http.client
import json
import urllib.error
import urllib.request


class UnreachableError(Exception):
    """Nothing answered at the address in time; the message is the reason."""


class NotHttpError(Exception):
    """Something answered, but not in HTTP/1.1 (a gRPC port, for one)."""


class NotJsonError(Exception):
    """The answer's body is not JSON."""


def call(url, body=None, timeout=10.0):
    """GET `url` (POST `body` as JSON when given): (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, {"error": err.reason}
    except http.client.HTTPException:  # BadStatusLine, RemoteDisconnected: not an HTTP/1 server
        raise NotHttpError(url) from None
    except (urllib.error.URLError, OSError) as err:
        raise UnreachableError(str(getattr(err, "reason", err))) from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise NotJsonError(url) from None

"""A fault-injecting HTTP proxy for the tests' GCS emulator (127.0.0.1 only).

Every client of the emulator (google-cloud-storage, Beam's gs:// filesystem) reaches it through
this proxy via STORAGE_EMULATOR_HOST. With ``rate`` r, a share r of the requests that match
``only(method, path, body)`` fails in one of the ways object stores fail: HTTP 429 (rate limited), HTTP 503 (backend
unavailable), a reset connection (the request was read, the socket is closed with RST and no
response), or a delay before the request is passed on. Which request fails is drawn from a seeded
random generator, so a run can be repeated. ``faults`` counts what was injected, ``requests``
what went through.
"""
from __future__ import annotations

import collections
import http.client
import http.server
import random
import socket
import struct
import threading
import time

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}
KINDS = ("429", "503", "reset", "delay")


class FaultProxy:
    def __init__(self, upstream_port: int, rate: float = 0.0, seed: int = 0, kinds=KINDS, delay_s: float = 0.2):
        self.upstream_port, self.rate, self.kinds, self.delay_s = upstream_port, rate, tuple(kinds), delay_s
        self.only = lambda method, path, body: True
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.faults = collections.Counter()
        self.requests = collections.Counter()
        self.failed_paths = []
        # The emulator serves one connection at a time from a listen queue of 5: with dozens of
        # client threads retrying at once its queue overflows and connects stall for seconds
        # (SYNs dropped, retried at 1, 3, 7 s ...). One upstream request at a time keeps its queue
        # empty; it could not serve two at once anyway.
        self.upstream_lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                        if size == 0:
                            return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                fault = proxy.draw(self.command, self.path, body)
                if fault in ("429", "503"):
                    message = b'{"error": {"code": %s, "message": "injected fault"}}' % fault.encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                self._forward(body)

            def _forward(self, body: bytes):
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                with proxy.upstream_lock:
                    upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                    upstream.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT")
                                     else None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    upstream.close()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            # socketserver's default listen queue is 5: a burst of reconnects after injected
            # resets would overflow it and the clients' connects would stall as above.
            request_queue_size = 256

            def handle_error(self, request, client_address):  # a client that gave up: not news
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self, method: str, path: str, body: bytes = b""):
        with self.lock:
            self.requests[method] += 1
            if not self.only(method, path, body) or self.random.random() >= self.rate:
                return None
            fault = self.random.choice(self.kinds)
            self.faults[fault] += 1
            self.failed_paths.append((method, path))
            return fault

    def configure(self, rate: float, seed: int = 0, kinds=KINDS, only=None):
        with self.lock:
            self.rate, self.kinds, self.random = rate, tuple(kinds), random.Random(seed)
            self.only = only or (lambda method, path, body: True)
            self.faults.clear()
            self.requests.clear()
            self.failed_paths.clear()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

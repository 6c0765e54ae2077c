"""An HTTP proxy on 127.0.0.1 in front of the moto server that injects faults: S3 error
responses (500, 503, throttling), dropped connections and slow answers."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from static_server import BackgroundServer

ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
}


class FaultProxy(BackgroundServer):
    def __init__(self, upstream_port: int, slow_seconds: float = 2.0):
        self.plan: list[str] = []  # faults for the next requests, one each, in order ("ok" passes)
        self.always: dict[str, str] = {}  # method -> fault for every request of that method
        self.seen: list[tuple[str, str, str]] = []  # (method, path, fault)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    fault = proxy.always.get(self.command) or (proxy.plan.pop(0) if proxy.plan else "ok")
                    proxy.seen.append((self.command, self.path, fault))
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "slow":
                    time.sleep(slow_seconds)
                if fault in ERRORS:
                    status, code, message = ERRORS[fault]
                    payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                               f"<Message>{message}</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        super().__init__(Handler)

    def faults_hit(self) -> list[str]:
        with self.lock:
            return [fault for _, _, fault in self.seen if fault != "ok"]

"""A local HTTP server that plays the Hugging Face hub for huggingface_hub's download code:
`HEAD`/`GET /<repo>/resolve/<revision>/<file>` with the headers the real hub sends. LFS files
carry their sha256 as the linked ETag, as on the hub, so the cache names blobs by content."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes], lfs_min_size: int = 1024):
        """files: (repo_id, path in repo) -> content."""
        self.files = files
        self.lfs_min_size = lfs_min_size
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _lookup(self):
                with hub.lock:
                    hub.requests.append((self.command, self.path))
                path = self.path.split("?")[0].lstrip("/")
                for (repo, name), data in hub.files.items():
                    if path in (f"{repo}/resolve/main/{name}", f"{repo}/resolve/{COMMIT}/{name}"):
                        return data
                return None

            def _headers(self, data):
                self.send_header("X-Repo-Commit", COMMIT)
                if len(data) >= hub.lfs_min_size:
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_HEAD(self):
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self._headers(data)

            def do_GET(self):
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self._headers(data)
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def downloads(self) -> list[str]:
        with self.lock:
            return [path for method, path in self.requests if method == "GET"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

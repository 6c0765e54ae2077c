"""A local HTTP server that plays the Hugging Face hub for huggingface_hub's download code:
`HEAD`/`GET /<repo>/resolve/<revision>/<file>` with the headers the real hub sends. LFS files
carry their sha256 as the linked ETag, as on the hub, so the cache names blobs by content."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes], lfs_min_size: int = 1024):
        """files: (repo_id, path in repo) -> content."""
        self.files = files
        self.lfs_min_size = lfs_min_size
        self.corrupt_gets = 0  # the next N downloads of an LFS file send flipped bytes
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

            def _api(self) -> bool:
                """Repository info and file tree, which snapshot_download asks for."""
                path = self.path.split("?")[0]
                for repo in {r for r, _ in hub.files}:
                    names = sorted(n for r, n in hub.files if r == repo)
                    if path == f"/api/models/{repo}/revision/main":
                        body = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": n} for n in names]}
                    elif path == f"/api/models/{repo}/tree/{COMMIT}":
                        body = []
                        for n in names:
                            data = hub.files[(repo, n)]
                            entry = {"type": "file", "path": n, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                            if len(data) >= hub.lfs_min_size:
                                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                "pointerSize": 134}
                            body.append(entry)
                    else:
                        continue
                    raw = json.dumps(body).encode()
                    with hub.lock:
                        hub.requests.append(("API", self.path))
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return True
                return False

            def do_GET(self):
                if self.path.startswith("/api/") and self._api():
                    return
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self._headers(data)
                with hub.lock:
                    corrupt = len(data) >= hub.lfs_min_size and hub.corrupt_gets > 0
                    hub.corrupt_gets -= corrupt
                self.wfile.write(bytes(b ^ 0xFF for b in data[:64]) + data[64:] if corrupt else data)

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


def place_in_hub_cache(hub: Path, repo_id: str, filename: str, data: bytes) -> Path:
    """Write a file the way huggingface_hub lays out its cache: blob, snapshot link, ref."""
    repo_dir = hub / f"models--{repo_id.replace('/', '--')}"
    digest = hashlib.sha256(data).hexdigest()
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs" / digest).write_bytes(data)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    link = repo_dir / "snapshots" / COMMIT / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(repo_dir / "blobs" / digest, link.parent))
    return link


def place_folder_in_hub_cache(hub: Path, repo_id: str, folder: Path) -> Path:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            place_in_hub_cache(hub, repo_id, str(path.relative_to(folder)), path.read_bytes())
    return hub / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT

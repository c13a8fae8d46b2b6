"""A local web site of sample news pages (the demo's "internet"), served on 127.0.0.1.

Pages live in ``pipelines/demo_site/``; the placeholder ``{{BASE}}`` in them is replaced by
the server's base URL at serve time, so canonical links point back at this server.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def site_root() -> Path:
    return Path(__file__).resolve().parent / "demo_site"


class _Handler(SimpleHTTPRequestHandler):
    base_url = ""

    def log_message(self, format: str, *args) -> None:  # quiet: the demo prints its own summary
        pass

    def do_GET(self) -> None:
        path = self.translate_path(self.path)
        p = Path(path)
        if p.is_dir():
            p = p / "index.html"
        if p.suffix in (".html", ".htm") and p.is_file():
            body = p.read_text("utf-8").replace("{{BASE}}", self.base_url).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


class SiteServer:
    """Serve a folder on 127.0.0.1 (free port) in a background thread."""

    def __init__(self, root: Path | None = None, port: int = 0) -> None:
        self.root = Path(root or site_root())
        handler = type("Handler", (_Handler,), {})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(self.root)))
        self.httpd.daemon_threads = True
        handler.base_url = self.base_url
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="copydesk-site", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def start(self) -> "SiteServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "SiteServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

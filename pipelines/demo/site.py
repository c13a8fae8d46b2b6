"""A local web site of sample news pages (the demo's "internet"), served on 127.0.0.1.

Pages live in ``pipelines/demo/demo_site/``, one folder per outlet; the placeholder ``{{BASE}}``
in them is replaced at serve time by the base URL the page was asked for (``http://`` + the
request's Host header), so canonical links point back at the same site.

Each outlet is also a virtual host (``OUTLETS``: ``continental-news.test`` serves the
``continental/`` folder at its root, and so on). The demo pins those names to 127.0.0.1 with
the fetcher's ``--resolve`` (no DNS, no change to the machine), so the outlets are separate
sites with their own domains, politeness and robots.txt, as on the web.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


# virtual host -> the outlet's folder under demo_site/
OUTLETS = {
    "continental-news.test": "continental",
    "morning-ledger.test": "morning-ledger",
    "riverside-gazette.test": "riverside-gazette",
    "courrier-du-matin.test": "courrier-du-matin",
    "berliner-tagesblatt.test": "berliner-tagesblatt",
}


def site_root() -> Path:
    return Path(__file__).resolve().parent / "demo_site"


class _Handler(SimpleHTTPRequestHandler):
    base_url = ""

    def _vhost(self) -> tuple[str, str | None]:
        """(base URL asked for, the outlet folder when the Host header names an outlet)."""
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0].lower() if host else ""
        if name in OUTLETS:
            return f"http://{host}", OUTLETS[name]
        return self.base_url, None

    def log_message(self, format: str, *args) -> None:  # quiet: the demo prints its own summary
        pass

    def do_GET(self) -> None:
        base, folder = self._vhost()
        if folder is not None:
            self.path = f"/{folder}{self.path if self.path.startswith('/') else '/' + self.path}"
        path = self.translate_path(self.path)
        p = Path(path)
        if p.is_dir():
            p = p / "index.html"
        if p.suffix in (".html", ".htm") and p.is_file():
            body = p.read_text("utf-8").replace("{{BASE}}", base).encode("utf-8")
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

    def outlet_url(self, path: str) -> str:
        """The URL of a page under its outlet's own host name ("/continental/world/x.html" ->
        "http://continental-news.test:PORT/world/x.html"); needs ``resolve_pins()`` to fetch."""
        folder, _, rest = path.lstrip("/").partition("/")
        host = next((h for h, f in OUTLETS.items() if f == folder), None)
        if host is None:
            return self.url(path)
        return f"http://{host}:{self.httpd.server_address[1]}/{rest}"

    @staticmethod
    def resolve_pins() -> str:
        """The ``--resolve`` value that sends every outlet's host name to this server."""
        return ",".join(f"{h}=127.0.0.1" for h in OUTLETS)

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

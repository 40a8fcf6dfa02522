"""The webhook listener's Flask app on one of three WSGI servers, to compare them side by side.

``python bench/listener_servers.py SERVER SECRET`` prints the webhook URL, then serves until
SIGTERM:

- ``waitress``: the listener as the package runs it (``WebhookListener.start()``);
- ``werkzeug``: the same app on werkzeug's threaded development server (what the listener ran on
  before);
- ``cheroot``: the same app on cheroot's thread-pool server (4 threads, as waitress).

Each runs in its own process, so that ``bench/run.py`` can read the server's CPU time alone.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiledesk_tutorial.listener import WebhookListener

SERVERS = ("werkzeug", "waitress", "cheroot")


def main(server: str, secret: str) -> None:
    """Serve the listener's app on ``server`` until SIGTERM."""
    listener = WebhookListener(secret=secret, max_events=100_000)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if server == "waitress":
        listener.start()
        print(listener.url, flush=True)
        stop.wait()
        listener.stop()
    elif server == "werkzeug":
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: object) -> None:
                pass

        httpd = make_server("127.0.0.1", 0, listener.app, threaded=True, request_handler=Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print(f"http://127.0.0.1:{httpd.port}{listener.path}", flush=True)
        stop.wait()
        httpd.shutdown()
    elif server == "cheroot":
        try:
            from cheroot.wsgi import Server
        except ImportError:  # not a dependency of the package: bench/run.py skips it
            print("", flush=True)
            print("cheroot is not installed: its column is left out", file=sys.stderr)
            return

        httpd = Server(("127.0.0.1", 0), listener.app, numthreads=4)
        httpd.prepare()
        threading.Thread(target=httpd.serve, daemon=True).start()
        print(f"http://127.0.0.1:{httpd.bind_addr[1]}{listener.path}", flush=True)
        stop.wait()
        httpd.stop()
    else:
        raise SystemExit(f"unknown server {server!r}: one of {', '.join(SERVERS)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

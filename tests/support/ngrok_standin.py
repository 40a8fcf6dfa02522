"""An ngrok agent stand-in for tests: pyngrok drives it exactly as it drives the real binary.

Tests write a tiny executable ``ngrok`` that runs this script (see ``install_standin``) and pass its
path to pyngrok. It speaks what pyngrok 9 uses (from pyngrok's source):

- ``ngrok start --none --log stdout [--config F] [--authtoken T] [--region R]``: start the local
  API on a free port, *then* print the three logfmt lines pyngrok waits for;
- ``GET/POST /api/endpoints``, ``GET/DELETE /api/endpoints/<name>`` (and the v2 ``/api/tunnels``).

Each endpoint is a real reverse proxy: its ``public_url`` is ``http://127.0.0.1:<port>`` and
whatever is sent there reaches the upstream (the listener), so a test can go through the tunnel.

Like the real agent, it refuses to start without an authtoken (ERR_NGROK_4018). Environment
switches for the failure paths:

- ``NGROK_STANDIN_FAIL=108|4018|105``: print the real agent's error line for that code and exit 1;
- ``NGROK_STANDIN_FAIL=offline``: print a "no such host" error and keep retrying (never healthy);
- ``NGROK_STANDIN_RECORD=<file>``: append each invocation's arguments as a JSON line.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}

# The real agent's messages (v3), with the escaped newlines it prints inside err="...".
_ERRORS = {
    "108": (
        "authentication failed: Your account is limited to 1 simultaneous ngrok agent sessions."
        "\\nYou can run multiple simultaneous tunnels from a single agent session by defining the "
        "tunnels in your agent configuration file and starting them with the command `ngrok start "
        "--all`.\\nYou can view your current agent sessions in the dashboard:\\n"
        "https://dashboard.ngrok.com/agents\\r\\n\\r\\nERR_NGROK_108\\r\\n"
    ),
    "4018": (
        "authentication failed: Usage of ngrok requires a verified account and authtoken.\\n\\n"
        "Sign up for an account: https://dashboard.ngrok.com/signup\\nInstall your authtoken: "
        "https://dashboard.ngrok.com/get-started/your-authtoken\\r\\n\\r\\nERR_NGROK_4018\\r\\n"
    ),
    "105": (
        "authentication failed: The authtoken you specified does not look like a proper ngrok "
        "tunnel authtoken.\\nYour authtoken: {token}\\nInstructions to install your authtoken are "
        "on your ngrok dashboard:\\nhttps://dashboard.ngrok.com/get-started/your-authtoken"
        "\\r\\n\\r\\nERR_NGROK_105\\r\\n"
    ),
    "offline": (
        'failed to dial ngrok server with address \\"connect.ngrok-agent.com:443\\": dial tcp: '
        "lookup connect.ngrok-agent.com: no such host"
    ),
}


def log(level: str, msg: str, **fields: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    extra = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f't={stamp} lvl={level} msg="{msg}" {extra}'.rstrip(), flush=True)


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


class Endpoint:
    """One tunnel: a reverse proxy from a local "public" port to the upstream URL."""

    def __init__(self, name: str, upstream: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.upstream = upstream if "://" in upstream else f"http://localhost:{upstream}"
        self.id = f"ep_{uuid.uuid4().hex[:24]}"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_proxy_handler(self.upstream))
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.public_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "uri": f"/api/{self.kind}/{quote(self.name, safe='')}",
            "public_url": self.public_url,
            "url": self.public_url,
            "proto": "http",
            "upstream": {"url": self.upstream, "protocol": "http1"},
            "config": {"addr": self.upstream, "inspect": True},
            "metrics": {},
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_proxy_handler(upstream: str) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["X-Forwarded-For"] = self.client_address[0]
            headers["X-Forwarded-Proto"] = "https"
            try:
                upstream_conn = http.client.HTTPConnection(
                    target.hostname, target.port or 80, timeout=30
                )
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                payload = response.read()
            except OSError as exc:
                message = (
                    f"The endpoint is online but the agent failed to connect to {upstream}: "
                    f"{exc}\nERR_NGROK_8012\n"
                ).encode()
                self.send_response(502)
                self.send_header("ngrok-error-code", "ERR_NGROK_8012")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP | {"content-length", "server", "date"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            upstream_conn.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = forward

    return Proxy


class Api(BaseHTTPRequestHandler):
    endpoints: ClassVar[dict[str, Endpoint]] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self) -> tuple[str, str | None] | None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "api" and parts[1] in ("endpoints", "tunnels"):
            return parts[1], (unquote("/".join(parts[2:])) if len(parts) > 2 else None)
        return None

    def not_found(self) -> None:
        self.reply(404, {"error_code": 100, "status_code": 404, "msg": "Tunnel not found"})

    def do_GET(self) -> None:
        route = self.route()
        if route is None:
            return self.not_found()
        kind, name = route
        if name is None:
            listed = [e.as_json() for e in self.endpoints.values()]
            return self.reply(200, {kind: listed, "uri": f"/api/{kind}"})
        if name not in self.endpoints:
            return self.not_found()
        return self.reply(200, self.endpoints[name].as_json())

    def do_POST(self) -> None:
        route = self.route()
        if route is None or route[1] is not None:
            return self.not_found()
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        upstream = (request.get("upstream") or {}).get("url") or str(request.get("addr", "80"))
        name = request.get("name") or f"endpoint-{uuid.uuid4().hex[:8]}"
        endpoint = Endpoint(name, upstream, route[0])
        self.endpoints[name] = endpoint
        log("info", "started tunnel", obj="tunnels", name=name, url=endpoint.public_url)
        self.reply(201, endpoint.as_json())

    def do_DELETE(self) -> None:
        route = self.route()
        if route is None or route[1] not in self.endpoints:
            return self.not_found()
        self.endpoints.pop(route[1]).close()
        self.reply(204)


def authtoken_in_config(config: str | None) -> bool:
    if not config or not Path(config).is_file():
        return False
    return "authtoken:" in Path(config).read_text(encoding="utf-8")


def start(args: list[str]) -> int:
    failure = os.environ.get("NGROK_STANDIN_FAIL", "")
    token = option(args, "--authtoken")
    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    api.daemon_threads = True
    threading.Thread(target=api.serve_forever, daemon=True).start()
    # Only now, with the API listening, may the startup lines be printed (pyngrok probes it).
    log("info", "no configuration paths supplied", obj="config")
    log("info", "starting web service", obj="web", addr=f"127.0.0.1:{api.server_address[1]}")
    if not failure and not token and not authtoken_in_config(option(args, "--config")):
        failure = "4018"
    if failure == "offline":
        while True:  # the real agent keeps retrying; pyngrok gives up after startup_timeout
            log("eror", "failed to reconnect session", obj="csess", err=f'"{_ERRORS["offline"]}"')
            time.sleep(0.2)
    if failure:
        text = _ERRORS[failure].replace("{token}", token or "")
        log("eror", "failed to reconnect session", obj="tunnels.session", err=f'"{text}"')
        log("crit", "command failed", err=f'"{text}"')
        return 1
    log("info", "tunnel session started", obj="tunnels.session")
    log("info", "client session established", obj="csess", id=uuid.uuid4().hex[:12])
    threading.Event().wait()  # serve until killed, like the real agent
    return 0


def main(args: list[str]) -> int:
    record = os.environ.get("NGROK_STANDIN_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"argv": args, "pid": os.getpid()}) + "\n")
    if args[:1] == ["start"]:
        return start(args)
    if args[:2] == ["config", "add-authtoken"]:
        print(f"Authtoken saved to configuration file: {option(args, '--config')}", flush=True)
        return 0
    if args[:1] in (["--version"], ["version"]):
        print("ngrok version 3.99.0-standin", flush=True)
        return 0
    print(f"ngrok stand-in: unsupported command {args!r}", file=sys.stderr)
    return 2


def install_standin(directory: Path) -> Path:
    """Write an executable ``ngrok`` into ``directory`` that runs this stand-in; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ngrok"
    path.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n', encoding="utf-8"
    )
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

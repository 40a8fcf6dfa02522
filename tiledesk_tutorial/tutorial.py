"""What a notebook's first cell calls: find the Tiledesk to talk to, and carry the tutorial along.

    from tiledesk_tutorial import tutorial
    tt = tutorial.start()        # the sandbox (found or started), or your Tiledesk in live mode
    agent = tt.agent()           # signed in as the tutorial's account, with its project

**Which server.** With ``TILEDESK_API_URL`` set (environment, ``.env`` or Colab secrets) the
tutorial runs in *live* mode against that Tiledesk. Otherwise it runs on the embedded sandbox,
found or started as :mod:`tiledesk_tutorial.sandbox_discovery` describes.

**What carries over between notebooks.** The account and the project, in the small state file of
:mod:`tiledesk_tutorial.state`. A real Tiledesk password is never written anywhere: in live mode it
comes from the environment, ``.env``, Colab's secrets or a ``getpass`` prompt, every time. A
notebook opened out of order creates what is missing (an account, a project) with a one-line note,
so every notebook also runs on its own.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import requests

from tiledesk_tutorial.client import TiledeskClient
from tiledesk_tutorial.config import (
    Config,
    agent_console_url_for,
    import_colab_secrets,
    load_config,
    set_default,
)
from tiledesk_tutorial.errors import (
    AuthenticationError,
    CallContext,
    TiledeskError,
    TiledeskTutorialError,
    error_for_transport_failure,
)
from tiledesk_tutorial.models import Project
from tiledesk_tutorial.sandbox_discovery import DEFAULT_SANDBOX_PORT, find_sandbox
from tiledesk_tutorial.state import Account, TutorialState, new_local_account

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.sandbox import SandboxHandle

__all__ = ["Tutorial", "TutorialError", "check_server_answers", "start"]

log = logging.getLogger("tiledesk_tutorial.tutorial")

AGENT_FIRSTNAME = "Ada"
AGENT_LASTNAME = "Lovelace"
DEFAULT_PROJECT_NAME = "Tiledesk tutorial"

Mode = Literal["sandbox", "live"]

# The live-mode credentials asked for once per kernel (never written to disk).
_asked: dict[str, str] = {}


class TutorialError(TiledeskTutorialError):
    """The tutorial cannot go on; the message says what is wrong, the hint what to do."""


# -- the tutorial --------------------------------------------------------------------------------
class Tutorial:
    """The tutorial's context in one notebook: which server, which account, which project.

    Attributes:
        mode: ``"sandbox"`` or ``"live"``.
        api_url: the API's base URL.
        config: the :class:`~tiledesk_tutorial.config.Config` read at start.
        home: the tutorial's folder.
        state: the :class:`TutorialState` shared by the notebooks.
        sandbox: the sandbox this kernel runs, when it started one (else ``None``).
        where: one line saying how the server was found.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        api_url: str,
        config: Config,
        home: Path,
        state: TutorialState,
        sandbox: SandboxHandle | None = None,
        where: str = "",
        ask: Callable[[str, bool], str] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.mode: Mode = mode
        self.api_url = api_url.rstrip("/")
        self.config = config
        self.home = home
        self.state = state
        self.sandbox = sandbox
        self.where = where
        self._ask = ask if ask is not None else _ask
        self._say = say
        self._account: Account | None = None
        self._agent: TiledeskClient | None = None
        self._clients: list[TiledeskClient] = []

    @classmethod
    def live(
        cls,
        config: Config,
        *,
        home: Path | None = None,
        ask: Callable[[str, bool], str] | None = None,
        say: Callable[[str], None] = print,
    ) -> Tutorial:
        """The tutorial on the real Tiledesk of ``config.api_url`` (``TILEDESK_API_URL``).

        Its state file is ``<home>/state.json`` (``home`` defaults to ``config.tutorial_home``).
        """
        if not config.api_url:
            raise TutorialError("live mode needs TILEDESK_API_URL: the API of your Tiledesk.")
        folder = home if home is not None else config.tutorial_home
        return cls(
            mode="live",
            api_url=config.api_url,
            config=config,
            home=folder,
            state=TutorialState(folder / "state.json"),
            where="TILEDESK_API_URL",
            ask=ask,
            say=say,
        )

    @classmethod
    def on_sandbox(
        cls,
        url: str,
        config: Config,
        *,
        home: Path,
        sandbox: SandboxHandle | None = None,
        where: str = "",
        shared: bool = True,
        say: Callable[[str], None] = print,
    ) -> Tutorial:
        """The tutorial on the sandbox at ``url``.

        ``shared``: the notebooks' state file, ``<home>/state.json``, so that the next notebook
        finds the account and the project; otherwise a state kept in memory (a private sandbox
        that goes away with its run, as the walkthrough's).
        """
        return cls(
            mode="sandbox",
            api_url=url,
            config=config,
            home=home,
            state=TutorialState(home / "state.json" if shared else None),
            sandbox=sandbox,
            where=where,
            say=say,
        )

    # -- what the notebooks read --------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        """True when the tutorial talks to a real Tiledesk (``TILEDESK_API_URL`` is set)."""
        return self.mode == "live"

    @property
    def account(self) -> Account:
        """The account the tutorial signs in with.

        Sandbox: the throw-away account from the state file, or a new one (saved at once).
        Live: ``TILEDESK_EMAIL`` and ``TILEDESK_PASSWORD`` (environment, ``.env``, Colab
        secrets), else asked with ``getpass`` once per kernel.
        """
        if self._account is None:
            self._account = self._live_account() if self.is_live else self._local_account()
        return self._account

    @property
    def project_id(self) -> str:
        """The tutorial's PROJECT_ID (signs in and creates the project when needed)."""
        pid = self.agent().project_id
        assert pid is not None  # agent() always sets it
        return pid

    @property
    def console_url(self) -> str | None:
        """Where the agent sees the conversations: the sandbox's agent console, Tiledesk cloud's
        dashboard, or ``None`` (a self-hosted Tiledesk: its dashboard is wherever you installed it).
        """
        return agent_console_url_for(self.api_url, sandbox=not self.is_live)

    def listener_port(self, default: int) -> int:
        """The port for this notebook's webhook listener: ``default``, unless
        ``TILEDESK_LISTENER_PORT`` names another (for test runs, or when the port is taken).

        A fixed port matters: re-running the listener's cell then replaces the listener.
        """
        port = self.config.listener_port
        return default if port is None else port

    def describe(self) -> str:
        """Where the tutorial runs and what it knows, secrets hidden."""
        entry = self.state.get(self.api_url)
        lines = [
            f"Mode:       {self.mode}",
            f"API:        {self.api_url}" + (f"  ({self.where})" if self.where else ""),
            f"Account:    {entry.get('email') or self.config.email or '(none yet)'}",
            f"PROJECT_ID: {self.config.project_id or entry.get('project_id') or '(none yet)'}",
            f"State file: {self.state.path or '(kept in memory)'}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Tutorial {self.mode} {self.api_url}>"

    # -- clients ------------------------------------------------------------------------------
    def client(self, **options: Any) -> TiledeskClient:
        """A new client for this server, holding the account's email and password (no call yet).

        ``options`` go to :class:`~tiledesk_tutorial.client.TiledeskClient` (e.g.
        ``show_curl=True``). The tutorial closes it in :meth:`close`.
        """
        account = self.account
        options.setdefault("email", account.email)
        options.setdefault("password", account.password)
        client = TiledeskClient(self.api_url, **options)
        self._clients.append(client)
        return client

    def agent(self) -> TiledeskClient:
        """A client signed in as the tutorial's account, with ``project_id`` set.

        What notebook 01 does by hand, done quietly for the later notebooks: on a sandbox that
        does not know the account yet, it signs up first; without a known project it creates one.
        Each is announced in one line.
        """
        if self._agent is not None:
            return self._agent
        agent = self.client()
        self._sign_in(agent)
        agent.project_id = self.ensure_project(agent)
        self._agent = agent
        return agent

    def visitor(self, firstname: str = "John", **options: Any) -> TiledeskClient:
        """A new anonymous visitor (end user) of the tutorial's project, signed in."""
        return self.agent().as_visitor(firstname=firstname, **options)

    def remember(self, project: Project | str) -> None:
        """Make ``project`` the tutorial's project for the next notebooks (saved in the state)."""
        pid = project.id if isinstance(project, Project) else str(project)
        name = project.name if isinstance(project, Project) else None
        self.state.update(
            self.api_url,
            live=self.is_live,
            email=self.account.email,
            project_id=pid,
            project_name=name,
        )
        if self._agent is not None:
            self._agent.project_id = pid
        if self.config.project_id and self.config.project_id != pid:
            self._say(
                f"Note: TILEDESK_PROJECT_ID is set, so the next notebooks use "
                f"{self.config.project_id}, not {pid}."
            )

    def close(self) -> None:
        """Release the clients' connections; the sandbox, listeners and tunnels stay as they are."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._agent = None

    # -- internals ----------------------------------------------------------------------------
    def _local_account(self) -> Account:
        entry = self.state.get(self.api_url)
        if entry.get("email") and entry.get("password"):
            return Account(email=entry["email"], password=entry["password"], local=True)
        account = new_local_account()
        self.state.update(
            self.api_url,
            live=False,
            email=account.email,
            password=account.password,
            project_id=None,
            project_name=None,
        )
        return account

    def _live_account(self) -> Account:
        email = self.config.email or _asked.get(f"{self.api_url} email")
        password = self.config.password or _asked.get(f"{self.api_url} password")
        if not email:
            email = self._ask(f"Tiledesk account email for {self.api_url}: ", False).strip()
        if not password:
            password = self._ask(f"Password for {email} (not shown, not stored): ", True)
        if not email or "@" not in email or not password:
            raise TutorialError(
                f"live mode ({self.api_url}) needs your Tiledesk account.",
                hint="set TILEDESK_EMAIL and TILEDESK_PASSWORD in a .env file next to the "
                "notebooks (or in Colab's secrets), or type them when asked. To use the sandbox "
                "instead, unset TILEDESK_API_URL.",
            )
        _asked[f"{self.api_url} email"] = email
        _asked[f"{self.api_url} password"] = password
        return Account(email=email.strip(), password=password, local=False)

    def _sign_in(self, agent: TiledeskClient) -> None:
        account = self.account
        try:
            agent.sign_in()
            return
        except AuthenticationError:
            if self.is_live:
                _asked.pop(f"{self.api_url} password", None)
                raise TutorialError(
                    f"{self.api_url} refused to sign in {account.email}.",
                    hint="check TILEDESK_EMAIL and TILEDESK_PASSWORD (or sign up first: notebook "
                    "01 does it).",
                ) from None
        # A sandbox that does not know the account: its data folder is new, or another sandbox
        # answers on this port. Sign the same throw-away account up again.
        agent.sign_up(account.email, account.password, AGENT_FIRSTNAME, AGENT_LASTNAME)
        agent.sign_in()
        self._say(
            f"Note: this sandbox had no tutorial account yet, so {account.email} was signed up "
            "now (notebook 01 shows how)."
        )

    def remembered_project(self, agent: TiledeskClient) -> Project | None:
        """The project the tutorial remembers for this server and account, if it still answers.

        ``None`` when none is remembered, or when it is gone (a new sandbox data folder, a project
        deleted in the dashboard): re-running notebook 01, or running 03 before it, then reuses
        the one project instead of piling up projects of the same name.
        """
        entry = self.state.get(self.api_url)
        pid = entry.get("project_id")
        if not pid or entry.get("email") != self.account.email:
            return None
        try:
            return agent.get_project(pid)
        except TiledeskError as exc:
            log.info("the remembered project %s is not usable: %s", pid, exc)
            return None

    def ensure_project(self, agent: TiledeskClient) -> str:
        """The tutorial's project id for the signed-in ``agent``, creating a project if needed.

        ``TILEDESK_PROJECT_ID`` when set; else the project remembered for this server and account,
        if it still answers; else a new project (remembered, and announced in one line).
        """
        if self.config.project_id:
            return self.config.project_id
        remembered = self.remembered_project(agent)
        if remembered is not None:
            return remembered.id
        pid = self.state.get(self.api_url).get("project_id")
        project = agent.create_project(DEFAULT_PROJECT_NAME)
        self.remember(project)
        why = "the one remembered is gone" if pid else "none was made yet"
        self._say(
            f"Note: created the project {project.name!r} ({project.id}) because {why} "
            "(notebook 01 shows how)."
        )
        return project.id


#: Seconds ``start()`` waits for the server of ``TILEDESK_API_URL`` to answer at all.
SERVER_CHECK_TIMEOUT = 10.0


def check_server_answers(config: Config, *, timeout: float = SERVER_CHECK_TIMEOUT) -> None:
    """Raise :class:`TutorialError` naming ``TILEDESK_API_URL`` when nothing answers there.

    Any HTTP answer will do (an API root may well say 404): what matters is that a server is
    reached, before the tutorial says "Live mode" and the learner's first call fails further on.
    """
    url = config.api_url or ""
    try:
        requests.get(url, timeout=timeout, allow_redirects=False).close()
    except requests.RequestException as exc:
        failure = error_for_transport_failure(
            exc, method="GET", url=url, context=CallContext(operation="check TILEDESK_API_URL")
        )
        origin = config.sources.get("api_url")
        where = f" (set in {'the environment' if origin == 'environment' else origin})"
        raise TutorialError(
            f"TILEDESK_API_URL is {url}{where if origin else ''}, but {failure.summary}",
            hint="check TILEDESK_API_URL: it must be the API of a Tiledesk that is running, such "
            "as https://api.tiledesk.com/v3; or unset it to use the embedded sandbox instead.",
        ) from None


def _ask(prompt: str, secret: bool) -> str:
    """Ask the person at the keyboard; raise :class:`TutorialError` when nobody can answer."""
    try:
        return getpass.getpass(prompt) if secret else input(prompt)
    except (EOFError, KeyboardInterrupt):
        raise TutorialError(
            "no answer was given.", hint="set TILEDESK_EMAIL and TILEDESK_PASSWORD instead."
        ) from None
    except Exception as exc:  # StdinNotImplementedError in a kernel that cannot prompt
        raise TutorialError(
            f"cannot ask for the Tiledesk credentials here ({type(exc).__name__}).",
            hint="set TILEDESK_EMAIL and TILEDESK_PASSWORD in the environment or a .env file.",
        ) from None


# -- start ---------------------------------------------------------------------------------------
def start(
    *,
    sandbox_port: int = DEFAULT_SANDBOX_PORT,
    home: str | os.PathLike[str] | None = None,
    env_file: str | None = ".env",
    quiet: bool = False,
) -> Tutorial:
    """Find the Tiledesk to use, say which in one line, and return the :class:`Tutorial`.

    Live mode when ``TILEDESK_API_URL`` is set; otherwise the sandbox, found or started as the
    module's docstring describes. Re-running it reuses the sandbox this kernel started.
    """
    say: Callable[[str], None] = (lambda _: None) if quiet else print
    imported = import_colab_secrets()
    if imported:
        say(f"Read {', '.join(imported)} from Colab's secrets.")
    try:
        config = load_config(env_file)
    except ValueError as exc:
        raise TutorialError(str(exc)) from None
    set_default(config)  # so that the tunnel and the client see the same file
    folder = Path(home).expanduser() if home is not None else config.tutorial_home
    if config.api_url:
        check_server_answers(config)
        tutorial = Tutorial.live(config, home=folder, say=say)
        say(f"Live mode: your Tiledesk at {config.api_url}.")
        return tutorial
    url, handle, where = find_sandbox(config.sandbox_url, folder, sandbox_port, say)
    say(f"Sandbox mode: the embedded Tiledesk at {url} ({where}).")
    return Tutorial.on_sandbox(url, config, home=folder, sandbox=handle, where=where, say=say)

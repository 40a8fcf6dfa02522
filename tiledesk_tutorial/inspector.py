"""The delivery inspector: every request that reached a webhook listener, and its replay.

    inspector = DeliveryInspector(listener, client=agent)    # display it: the last line of a cell
    inspector.beside(view)                                    # or next to a ConversationView

What ngrok's inspector (http://127.0.0.1:4040) and the Stripe CLI's event log give their users,
inside the notebook: the requests the listener received, newest first, each with its verdict
(kept, duplicate, refused and why), when it came, its headers (secrets hidden) and its body
pretty-printed (tokens hidden). For a delivery the listener accepted, three buttons:

- **Run callbacks again**: hand it to the listener's ``on_event`` callbacks once more (after fixing
  one: re-run the cell that defines it, then replay; :meth:`WebhookListener.replay`);
- **Re-POST**: send it byte for byte, ``x-hook-secret`` included, to any URL, e.g. your own Flask
  handler (:meth:`WebhookListener.replay_to`);
- **Resend from Tiledesk** (with ``client=``, an admin of the project, on the sandbox): ask the
  server to deliver it again, which makes a new attempt in its history
  (:meth:`TiledeskClient.resend_delivery`).

The list follows the listener from a thread of the inspector's own, which waits for new requests
and redraws at most every ``min_interval`` seconds; like the conversation view it only assigns
widget traits, and a re-run cell's inspector replaces the earlier one of the same listener.
:func:`render_delivery` is the pure part (a record in, HTML out), every string escaped.
"""

from __future__ import annotations

import html
import threading
import weakref
from typing import TYPE_CHECKING, Any

from tiledesk_tutorial.delivery_log import DeliveryRecord
from tiledesk_tutorial.errors import InvalidInputError, TiledeskTutorialError

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.client import TiledeskClient
    from tiledesk_tutorial.listener import WebhookListener
    from tiledesk_tutorial.widgets import ConversationView

__all__ = ["CSS_CLASS", "DeliveryInspector", "render_delivery"]

#: The CSS class of the inspector's outer box (for browser tests and custom styles).
CSS_CLASS = "tiledesk-inspector"

_MAX_BODY_CHARS = 20_000
_VERDICT_COLOURS = {
    "kept": "#1a7f37",
    "duplicate": "#9a6700",
    "refused": "#cf222e",
    "status": "#6e7781",
}
_DETAIL_STYLE = (
    "border:1px solid #d0d7de;border-radius:6px;padding:6px 8px;background:#fff;"
    "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px;color:#1f2328;"
    "max-height:420px;overflow:auto;"
)
_PRE_STYLE = (
    "white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0;padding:6px;background:#f6f8fa;"
    "border-radius:4px;font-size:11px;"
)
#: The inspector currently following each listener's log: a re-run cell replaces it.
_FOLLOWING: weakref.WeakKeyDictionary[Any, DeliveryInspector] = weakref.WeakKeyDictionary()
_FOLLOWING_LOCK = threading.Lock()


def row_label(record: DeliveryRecord) -> str:
    """The one-line label of a record in the inspector's list (plain text, not HTML)."""
    clock = record.received_at.astimezone().strftime("%H:%M:%S")
    what = ""
    event = record.event
    if event is not None:
        what = event.event
        if event.is_message:
            who = event.sender_fullname or event.sender or "?"
            text = (event.text or "").replace("\n", " ")
            what += f" · {who}: {text[:40]}{'…' if len(text) > 40 else ''}"
    elif record.reason:
        what = record.reason[:60]
    else:
        what = f"{record.method} {record.path}"
    return f"#{record.number}  {clock}  {record.verdict:<9} {record.status}  {what}"


def render_delivery(record: DeliveryRecord | None) -> str:
    """One record as HTML: verdict, time, request line, headers, body; every string escaped."""
    if record is None:
        return (
            f'<div class="tiledesk-inspector-detail" style="{_DETAIL_STYLE}color:#57606a;">'
            "Nothing has reached the listener yet. Each request it receives (kept, a repeat, or "
            "refused) appears here, newest first.</div>"
        )
    colour = _VERDICT_COLOURS.get(record.verdict, "#6e7781")
    badge = (
        f'<span class="tiledesk-verdict tiledesk-verdict-{record.verdict}" '
        f'style="background:{colour};color:#fff;border-radius:8px;padding:0 6px;">'
        f"{html.escape(record.verdict)}</span>"
    )
    why = f" · {html.escape(record.reason)}" if record.reason else ""
    when = record.received_at.astimezone()
    lines = [
        f"<div><b>#{record.number}</b> {badge} <b>{record.status}</b>{why}</div>",
        f"<div>received {html.escape(when.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3])} "
        f"{html.escape(when.strftime('%Z'))} from {html.escape(record.remote or '?')}: "
        f"<code>{html.escape(record.method)} {html.escape(record.path)}</code></div>",
    ]
    if record.event is not None:
        event = record.event
        facts = [f"event <code>{html.escape(event.event)}</code>"]
        if event.request_id:
            facts.append(f"conversation <code>{html.escape(event.request_id)}</code>")
        if event.role:
            facts.append(f"role {html.escape(event.role)}")
        if event.sent_at is not None:
            facts.append(f"sent {html.escape(event.sent_at.astimezone().strftime('%H:%M:%S'))}")
        lines.append(f"<div>{' · '.join(facts)}</div>")
    header_rows = "".join(
        f"<tr><td style='padding-right:8px;color:#57606a;'>{html.escape(name)}</td>"
        f"<td style='overflow-wrap:anywhere;'>{html.escape(value)}</td></tr>"
        for name, value in record.headers
    )
    lines.append(
        "<details open><summary>Headers</summary>"
        f"<table class='tiledesk-inspector-headers'>{header_rows}</table></details>"
    )
    body = record.body_text() if record.body_size else "(no body)"
    if len(body) > _MAX_BODY_CHARS:
        body = body[:_MAX_BODY_CHARS] + f"\n… ({len(body)} characters in all)"
    lines.append(
        f"<details open><summary>Body ({record.body_size} bytes)</summary>"
        f"<pre class='tiledesk-inspector-body' style=\"{_PRE_STYLE}\">{html.escape(body)}</pre>"
        "</details>"
    )
    return f'<div class="tiledesk-inspector-detail" style="{_DETAIL_STYLE}">{"".join(lines)}</div>'


class DeliveryInspector:
    """A notebook view of every request a webhook listener received, with replay.

    Args:
        listener: the :class:`~tiledesk_tutorial.listener.WebhookListener` to inspect.
        client: an admin of the project (the agent who subscribed); with one, the inspector has a
            "Resend from Tiledesk" button (a sandbox extension: see the README).
        replay_url: the URL the Re-POST box starts with (e.g. your own handler's).
        rows: how many lines the list shows at once.
        max_rows: how many of the newest requests the list holds (the listener may keep more).
        min_interval: at most one list update per this many seconds during a burst.

    Display it by making it the last expression of a cell (or ``display(inspector)``);
    :meth:`beside` puts it next to a :class:`~tiledesk_tutorial.widgets.ConversationView`.
    """

    def __init__(
        self,
        listener: WebhookListener,
        client: TiledeskClient | None = None,
        *,
        replay_url: str = "",
        rows: int = 8,
        max_rows: int = 100,
        min_interval: float = 0.2,
    ) -> None:
        import ipywidgets as w

        if not hasattr(listener, "delivery_log"):
            raise InvalidInputError(
                f"DeliveryInspector needs a WebhookListener, got {type(listener).__name__}"
            )
        if not isinstance(max_rows, int) or max_rows < 1:
            raise InvalidInputError(f"max_rows must be a whole number of 1 or more: {max_rows!r}")
        self.listener = listener
        self.client = client
        self.max_rows = max_rows
        self.min_interval = max(0.0, float(min_interval))
        self._log = listener.delivery_log
        self._lock = threading.RLock()
        self._records: dict[int, DeliveryRecord] = {}
        self._drawn_version = -1
        self._closed = threading.Event()
        self._updating = False

        self._title = w.HTML("<b>Deliveries</b>")
        self._title.add_class("tiledesk-inspector-title")
        self._list = w.Select(options=[], rows=rows, layout=w.Layout(width="100%"))
        self._list.add_class("tiledesk-inspector-list")
        self._list.observe(self._on_select, names="value")
        self._detail = w.HTML(render_delivery(None), layout=w.Layout(width="100%"))
        self._detail.add_class("tiledesk-inspector-detail-box")
        self._rerun = w.Button(description="Run callbacks again", icon="redo", disabled=True)
        self._rerun.add_class("tiledesk-inspector-rerun")
        self._rerun.on_click(lambda _b: self.replay())
        self._url = w.Text(
            value=replay_url,
            placeholder="http://127.0.0.1:5000/webhook",
            layout=w.Layout(flex="1 1 auto", width="auto"),
        )
        self._url.add_class("tiledesk-inspector-url")
        self._post = w.Button(description="Re-POST", icon="paper-plane", disabled=True)
        self._post.add_class("tiledesk-inspector-post")
        self._post.on_click(lambda _b: self.replay_to())
        buttons: list[Any] = [self._rerun, self._url, self._post]
        self._resend: Any = None
        if client is not None:
            self._resend = w.Button(description="Resend from Tiledesk", icon="retweet")
            self._resend.disabled = True
            self._resend.add_class("tiledesk-inspector-resend")
            self._resend.on_click(lambda _b: self.resend())
            buttons.append(self._resend)
        self._status = w.Label("")
        self._status.add_class("tiledesk-inspector-status")
        action_row = w.HBox(buttons, layout=w.Layout(width="100%", flex_flow="row wrap"))
        children = [self._title, self._list, self._detail, action_row, self._status]
        self.widget = w.VBox(children, layout=w.Layout(width="100%", min_width="0"))
        self.widget.add_class(CSS_CLASS)
        self._widgets = [self.widget, *children, *buttons]

        self.refresh()
        with _FOLLOWING_LOCK:
            earlier = _FOLLOWING.get(self._log)
            _FOLLOWING[self._log] = self
        if earlier is not None:
            earlier.close()
        port = getattr(listener, "_port", None) or "new"
        self._thread = threading.Thread(
            target=self._follow, name=f"tiledesk-inspector-{port}", daemon=True
        )
        self._thread.start()

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<DeliveryInspector {len(self._records)} request(s) of {self.listener!r}>"

    def beside(self, view: ConversationView) -> Any:
        """A box with the conversation view on the left and this inspector on the right."""
        import ipywidgets as w

        for part in (view.widget, self.widget):
            part.layout.flex = "1 1 0"
            part.layout.min_width = "0"
            part.layout.width = "auto"
        return w.HBox([view.widget, self.widget], layout=w.Layout(width="100%", grid_gap="12px"))

    # -- what tests and notebooks read ----------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """The list's lines as shown now, newest first."""
        return [label for label, _ in self._list.options]

    @property
    def selected(self) -> DeliveryRecord | None:
        """The record shown in the detail pane."""
        with self._lock:
            return self._records.get(self._list.value) if self._list.value is not None else None

    @property
    def detail_html(self) -> str:
        """The detail pane as shown now."""
        return str(self._detail.value)

    @property
    def title_text(self) -> str:
        """The title line as shown now (the counts by verdict)."""
        return str(self._title.value)

    @property
    def status_text(self) -> str:
        """The status line under the buttons: what the last button did."""
        return str(self._status.value)

    # -- acting ---------------------------------------------------------------------------------
    def select(self, number: int) -> DeliveryRecord:
        """Show request ``number`` in the detail pane (what clicking its line does)."""
        with self._lock:
            if number not in self._records:
                self.refresh()
            if number not in self._records:
                self.listener.delivery(number)  # raises the clear "no longer kept" error
                raise InvalidInputError(f"request #{number} is not in the inspector's list")
            self._list.value = number
            return self._records[number]

    def replay(self) -> bool:
        """Run the listener's callbacks again for the selected delivery (the first button)."""
        record = self._selected_or_say()
        if record is None:
            return False
        try:
            outcome = self.listener.replay(record)
        except TiledeskTutorialError as exc:
            return self._say(f"Not replayed: {_first_line(exc)}")
        if not outcome.callbacks:
            return self._say(f"#{record.number}: no on_event callback is registered to run.")
        if not outcome.finished:
            return self._say(f"#{record.number}: the callbacks are still running.")
        if outcome.errors:
            return self._say(f"#{record.number}: a callback failed: {outcome.errors[0]}")
        return self._say(f"#{record.number}: ran {outcome.callbacks} callback(s), no error.", True)

    def replay_to(self, url: str | None = None) -> bool:
        """POST the selected delivery to ``url`` (default: the URL box), say what came back."""
        record = self._selected_or_say()
        if record is None:
            return False
        target = (url if url is not None else self._url.value).strip()
        if not target:
            return self._say("Type the URL of your handler first, e.g. http://127.0.0.1:5000/hook")
        try:
            answer = self.listener.replay_to(record, target)
        except TiledeskTutorialError as exc:
            return self._say(f"Not sent: {_first_line(exc)}")
        text = answer.text.strip().replace("\n", " ")
        said = f": {text[:80]}{'…' if len(text) > 80 else ''}" if text else ""
        return self._say(f"#{record.number} POSTed to {target}: {answer.status_code}{said}", True)

    def resend(self) -> bool:
        """Ask the server to deliver the selected delivery again (needs ``client``, an admin)."""
        if self.client is None:
            raise InvalidInputError("this inspector has no client: pass client=agent (an admin)")
        record = self._selected_or_say()
        if record is None:
            return False
        if not record.replayable or record.event is None:
            return self._say(f"Not resent: request #{record.number} was {record.verdict}.")
        try:
            self.client.resend_delivery(record.event)
        except TiledeskTutorialError as exc:
            return self._say(f"Not resent: {_first_line(exc)}")
        return self._say(
            f"#{record.number}: the server sends it again (a new attempt in its history); it "
            "arrives as a duplicate if the listener kept it already.",
            True,
        )

    def refresh(self) -> None:
        """Read the listener's log again and redraw the list (call it from a cell)."""
        version = self._log.version
        records = self._log.records()[: self.max_rows]
        counts = self._log.counts()
        with self._lock:
            self._records = {record.number: record for record in records}
            chosen = self._list.value
            before = [value for _, value in self._list.options]
            options = [(row_label(record), record.number) for record in records]
            if before != [n for _, n in options]:
                # Reading the newest (or nothing): follow the newest; reading an older one: stay.
                follow = chosen is None or not before or chosen == before[0]
                self._updating = True
                try:
                    self._list.options = options
                    if records:
                        stay = not follow and chosen in self._records
                        self._list.value = chosen if stay else records[0].number
                finally:
                    self._updating = False
            self._drawn_version = version
            self._title.value = _title(counts, self._log)
            self._show(self._records.get(self._list.value))

    def close(self) -> None:
        """Stop following the listener and close the widgets."""
        self._closed.set()
        with _FOLLOWING_LOCK:
            if _FOLLOWING.get(self._log) is self:
                del _FOLLOWING[self._log]
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        for widget in self._widgets:
            widget.close()

    # -- internals ------------------------------------------------------------------------------
    def _follow(self) -> None:
        """The inspector's thread: wait for new requests, redraw, at most every min_interval."""
        version = self._drawn_version
        while not self._closed.is_set():
            newer = self._log.wait_newer(version, 0.5)
            if self._closed.is_set():
                return
            if newer != version:
                version = newer
                try:
                    self.refresh()
                except Exception:  # a closed widget, a kernel going away: stop quietly
                    return
                self._closed.wait(self.min_interval)

    def _on_select(self, _change: Any) -> None:
        if self._updating:
            return
        with self._lock:
            self._show(self._records.get(self._list.value))

    def _show(self, record: DeliveryRecord | None) -> None:
        page = render_delivery(record)
        if self._detail.value != page:
            self._detail.value = page
        replayable = record is not None and record.replayable
        self._rerun.disabled = not replayable
        self._post.disabled = not replayable
        if self._resend is not None:
            self._resend.disabled = not replayable

    def _selected_or_say(self) -> DeliveryRecord | None:
        record = self.selected
        if record is None:
            self._say("Select a request in the list first.")
        return record

    def _say(self, text: str, ok: bool = False) -> bool:
        self._status.value = text
        return ok


def _title(counts: dict[str, int], log: Any) -> str:
    shown = sum(counts.values())
    parts = [f"{counts[v]} {v}" for v in ("kept", "duplicate", "refused") if counts[v]]
    summary = ", ".join(parts) if parts else "none yet"
    return (
        f"<b>Deliveries</b> · {shown} request{'' if shown == 1 else 's'} "
        f"(the last {log.max_records} are kept): {html.escape(summary)}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__

"""A live conversation view for notebooks: live messages shown as a chat, with a reply box.

    view = ConversationView(listener, client=agent)   # display it: the last line of a cell
    # ... every message.create the listener keeps appears here as it arrives ...
    view.reply("Hi John, how can I help?")            # what the Send button does

The view follows any :class:`~tiledesk_tutorial.event_hub.EventSource` (the webhook listener, or
the realtime feed) through its public interface only: ``source.on_events(..., key=...)`` hands it
the new events in batches, and ``source.events`` the ones kept before it.

How it stays safe and quick in a kernel:

- Updates come from the source's single worker thread and only *assign widget traits*
  (``HTML.value``, ``Label.value``): never ``print``, ``with out:`` or ``clear_output()`` from a
  thread, which drop output or exhaust the kernel's sockets (docs/webhooks.md).
- The view keeps the newest ``max_messages`` messages and renders only those; the source hands a
  burst over in batches at most every ``min_interval`` seconds, with one more for the last event,
  so the view redraws a few times per burst and thousands of messages cost what the window costs.
- Every string that comes from a message (text, names, ids) is HTML-escaped: nothing a visitor
  types can become markup or script in the notebook.

:func:`render_conversations` is the pure part (events in, HTML out), usable on its own, e.g. with
events read back from a JSON Lines file.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tiledesk_tutorial.errors import InvalidInputError
from tiledesk_tutorial.event_hub import EventHub
from tiledesk_tutorial.images import ImageInliner, image_size
from tiledesk_tutorial.models import Event
from tiledesk_tutorial.wire import STATUS_CLOSED, UPLOAD_TYPES

if TYPE_CHECKING:  # pragma: no cover
    from tiledesk_tutorial.client import TiledeskClient
    from tiledesk_tutorial.event_hub import EventSource
    from tiledesk_tutorial.models import Message

__all__ = ["CSS_CLASS", "ConversationView", "render_conversations", "safe_src"]

#: The CSS class of the view's outer box (for browser tests and custom styles).
CSS_CLASS = "tiledesk-conversation"

_MAX_TEXT_CHARS = 4000
_MAX_SRC_CHARS = 1_500_000  # a data: image under the 1 MB upload limit, base64-encoded
_DATA_IMAGE_PREFIXES = (
    "data:image/png;base64,",
    "data:image/jpeg;base64,",
    "data:image/gif;base64,",
)
_KEPT_CONVERSATION_STATES = 2000

# Inline styles: the notebook's HTML widget keeps them, and they need no stylesheet.
_BADGE_COLOURS = {
    "visitor": "#0b5cad",
    "agent": "#1a7f37",
    "bot": "#8250df",
    "system": "#6e7781",
}
_BUBBLE = {
    "visitor": "background:#eaf2fc;margin-right:20%;",
    "agent": "background:#e9f6ec;margin-left:20%;",
    "bot": "background:#f3eefc;margin-left:20%;",
    "system": "background:transparent;margin:0 10%;text-align:center;color:#57606a;",
}
_LOG_STYLE = (
    "display:flex;flex-direction:column-reverse;max-height:420px;overflow-y:auto;"
    "border:1px solid #d0d7de;border-radius:6px;padding:6px;background:#fff;"
    "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;color:#1f2328;"
)
_HEADER_STYLE = (
    "margin:8px 0 4px;padding-bottom:2px;border-bottom:1px solid #eaeef2;"
    "font-size:12px;color:#57606a;"
)
_MESSAGE_STYLE = "border-radius:8px;padding:4px 8px;margin:3px 0;"
_META_STYLE = "font-size:11px;color:#57606a;"
_TEXT_STYLE = "white-space:pre-wrap;overflow-wrap:anywhere;"


def _badge(label: str, colour: str, css: str) -> str:
    return (
        f'<span class="{css}" style="background:{colour};color:#fff;border-radius:8px;'
        f'padding:0 6px;margin:0 4px;font-size:10px;">{html.escape(label)}</span>'
    )


def _short_id(request_id: str) -> str:
    return request_id if len(request_id) <= 28 else f"{request_id[:14]}…{request_id[-10:]}"


def _clock(event: Event) -> str:
    moment: datetime = event.created_at or event.received_at
    return moment.astimezone().strftime("%H:%M:%S")


def _written_at(event: Event) -> datetime:
    return event.created_at or event.received_at


def safe_src(value: Any, *, image: bool) -> str | None:
    """``value`` when it is an address a view may load: http(s), or (images) a data: PNG, JPEG or
    GIF. Anything else (``javascript:``, ``data:text/html``, relative paths) gives ``None``."""
    if not isinstance(value, str) or len(value) > _MAX_SRC_CHARS:
        return None
    src = value.strip()
    if src.lower().startswith(("https://", "http://")):
        return src
    if image and src.lower().startswith(_DATA_IMAGE_PREFIXES):
        return src
    return None


def _attachment_html(
    kind: str,
    metadata: dict[str, Any],
    fallback_name: str | None,
    inline_image: Callable[[str], str] | None = None,
) -> str:
    """An image as an image (a link with its name if it cannot load), a file as a link."""
    name = str(metadata.get("name") or fallback_name or kind)[:200]
    src = safe_src(metadata.get("src"), image=kind == "image")
    shown_name = html.escape(name)
    if src is None:
        return f'<span class="tiledesk-attachment-refused">{shown_name} (no safe address)</span>'
    href = html.escape(src, quote=True)
    link = (
        f'<a class="tiledesk-file" href="{href}" target="_blank" '
        f'rel="noopener noreferrer nofollow">📎 {shown_name}</a>'
    )
    if kind != "image":
        return link
    # No script: an image that fails to load shows its alt text (the name) inside the link, and
    # the named link under it stays, so nothing is ever a broken frame.
    loaded = safe_src(inline_image(src), image=True) if inline_image is not None else src
    shown_src = html.escape(loaded or src, quote=True)
    return (
        f'<a href="{href}" target="_blank" rel="noopener noreferrer nofollow">'
        f'<img class="tiledesk-image" src="{shown_src}" alt="{shown_name}" '
        f'style="max-width:240px;max-height:240px;display:block;" referrerpolicy="no-referrer">'
        f"</a>{link}"
    )


def _message_html(event: Event, inline_image: Callable[[str], str] | None = None) -> str:
    role = event.role or "agent"
    name = event.sender_fullname or event.sender or "?"
    text = event.text
    kind = event.payload.get("type")
    metadata = event.payload.get("metadata")
    if kind in ("image", "file") and isinstance(metadata, dict):
        body = _attachment_html(kind, metadata, text, inline_image)
    elif text is None:
        kind = event.payload.get("type")
        body = f"<i>({html.escape(str(kind or 'no text'))} message)</i>"
    else:
        if len(text) > _MAX_TEXT_CHARS:
            text = text[:_MAX_TEXT_CHARS] + f"… ({len(event.text or '')} characters in all)"
        body = html.escape(text)
    return (
        f'<div class="tiledesk-message tiledesk-role-{role}" '
        f'style="{_MESSAGE_STYLE}{_BUBBLE.get(role, "")}">'
        f'<div class="tiledesk-meta" style="{_META_STYLE}">'
        f'<span class="tiledesk-sender" style="font-weight:600;color:#1f2328;">'
        f"{html.escape(name)}</span>"
        f"{_badge(role, _BADGE_COLOURS.get(role, '#6e7781'), 'tiledesk-badge')}"
        f'<span class="tiledesk-time">{html.escape(_clock(event))}</span></div>'
        f'<div class="tiledesk-text" style="{_TEXT_STYLE}">{body}</div></div>'
    )


def render_conversations(
    events: Iterable[Event],
    *,
    max_messages: int = 200,
    request_id: str | None = None,
    inline_image: Callable[[str], str] | None = None,
) -> str:
    """Render live events as conversations: an HTML string, every message string escaped.

    Messages (``message.create``) are grouped by conversation (``request_id``), in the order they
    were written (``createdAt``), newest last, the most recently active conversation last; only the
    newest ``max_messages`` messages to arrive are shown.
    Request events (``request.update``, ``request.close``) mark a conversation open or closed.
    With ``request_id`` only that conversation is shown. ``inline_image`` maps a safe image
    address to the one loaded (:class:`~tiledesk_tutorial.images.ImageInliner`: a ``data:`` URL
    for the server's own chat files, which an ``<img>`` cannot read without a token).
    """
    if max_messages < 1:
        raise InvalidInputError("max_messages must be at least 1")
    window: deque[Event] = deque(maxlen=max_messages)
    closed: dict[str, bool] = {}
    leads: dict[str, str] = {}
    for event in events:
        rid = event.request_id
        if request_id is not None and rid != request_id:
            continue
        if event.is_message:
            window.append(event)
        elif rid and event.event in ("request.close", "request.update", "request.create"):
            status = event.payload.get("status")
            closed[rid] = event.event == "request.close" or status == STATUS_CLOSED
            lead = event.lead_name
            if lead:
                leads[rid] = lead

    if not window:
        waiting = "this conversation" if request_id else "this project"
        inner = (
            '<div class="tiledesk-empty" style="color:#57606a;padding:12px;text-align:center;">'
            f"No messages yet. New messages in {waiting} appear here as they arrive.</div>"
        )
        return (
            f'<div class="tiledesk-conversation-log" style="{_LOG_STYLE}"><div>{inner}</div></div>'
        )

    groups: OrderedDict[str, list[Event]] = OrderedDict()
    for event in window:
        rid = event.request_id or "(no conversation)"
        if rid in groups:
            groups.move_to_end(rid)  # the conversation with the newest message goes last
        else:
            groups[rid] = []
        groups[rid].append(event)
        if rid not in leads:
            lead = event.lead_name
            if lead:
                leads[rid] = lead

    parts = []
    for rid, messages in groups.items():
        # Deliveries can overtake each other (senders use several connections): order each
        # conversation by when its messages were written; ties keep their arrival order.
        messages.sort(key=_written_at)
        state = "closed" if closed.get(rid) else "open"
        colour = "#6e7781" if state == "closed" else "#1a7f37"
        who = leads.get(rid)
        title = f"Conversation with {who}" if who else "Conversation"
        parts.append(
            f'<div class="tiledesk-conversation-block" data-request-id="{html.escape(rid)}">'
            f'<div class="tiledesk-conversation-header" style="{_HEADER_STYLE}" '
            f'title="{html.escape(rid)}"><b>{html.escape(title)}</b> · '
            f"<code>{html.escape(_short_id(rid))}</code>"
            f"{_badge(state, colour, 'tiledesk-state')}</div>"
        )
        parts.extend(_message_html(m, inline_image) for m in messages)
        parts.append("</div>")
    return (
        f'<div class="tiledesk-conversation-log" style="{_LOG_STYLE}">'
        f"<div>{''.join(parts)}</div></div>"
    )


class ConversationView:
    """A notebook view of the conversations a live event source receives.

    Args:
        source: what to follow: a :class:`~tiledesk_tutorial.WebhookListener`, or any other
            :class:`~tiledesk_tutorial.event_hub.EventSource` (the realtime feed). The view shows
            the events it kept already, then takes new ones through
            ``source.on_events(..., key=...)``; a new view of the same source and ``request_id``
            replaces the old one's callback, so re-running a cell does not update twice.
            ``None``: feed it with :meth:`add` and :meth:`extend`.
        client: a signed-in client (the agent); with one, the view has a reply box and a Send
            button that call ``client.send_message``, an Attach button that uploads a file and
            sends it, and it shows the server's own chat images (read with the client's token).
        max_messages: how many of the newest messages to show.
        request_id: show (and reply to) only this conversation. Without it, replies go to the
            conversation of the newest message.
        min_interval: at most one screen update per this many seconds during a burst (the source
            gathers the events meanwhile; the last one is always drawn).

    Display it by making it the last expression of a cell (or ``display(view)``).
    """

    def __init__(
        self,
        source: EventSource | None = None,
        client: TiledeskClient | None = None,
        *,
        max_messages: int = 200,
        request_id: str | None = None,
        min_interval: float = 0.1,
    ) -> None:
        import ipywidgets as w

        if not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidInputError(
                f"max_messages must be a whole number of 1 or more: {max_messages!r}"
            )
        self.source = source
        self.client = client
        self.request_id = request_id
        self.max_messages = max_messages
        self.min_interval = max(0.0, float(min_interval))
        self._lock = threading.RLock()
        self._render_lock = threading.Lock()
        self._drawn = threading.Condition(self._render_lock)
        self._messages: deque[Event] = deque(maxlen=max_messages)
        self._states: OrderedDict[str, Event] = OrderedDict()
        self._seam: dict[int, Event] = {}
        self._seen = 0
        self._taken = 0
        # Events given by hand (add, extend) go through a hub of the view's own, which drops
        # repeats the way every source does; a source's events come deduplicated already.
        self._by_hand = EventHub(max(1000, max_messages), name="tiledesk-view")
        #: One callback per source and conversation filter: a re-run cell's view replaces it.
        self._key = ("ConversationView", request_id)
        self._callback = self._on_batch  # one bound method, so that close() removes this one
        self._following = False

        heading = "Live conversation" if request_id else "Live conversations"
        suffix = f" · <code>{html.escape(_short_id(request_id))}</code>" if request_id else ""
        self._title = w.HTML(f"<b>{heading}</b>{suffix}")
        self._count = w.Label("")
        self._count.add_class("tiledesk-count")
        self._log = w.HTML(render_conversations((), request_id=request_id))
        self._log.layout.width = "100%"
        self._log.add_class("tiledesk-log")
        children: list[Any] = [w.HBox([self._title, self._count]), self._log]
        self._text: Any = None
        self._status: Any = None
        self._attach: Any = None
        self._inline: ImageInliner | None = None
        if client is not None:
            self._inline = ImageInliner(client)
            who = client.user.full_name if client.user and client.user.full_name else "the agent"
            self._text = w.Text(
                placeholder=f"Reply as {who}…",
                layout=w.Layout(flex="1 1 auto", width="auto"),
            )
            self._text.add_class("tiledesk-reply-text")
            # Enter in the box: the page sends {"event": "submit"} (Text.on_submit is deprecated).
            self._text.on_msg(self._on_text_message)
            send = w.Button(description="Send", button_style="primary", icon="paper-plane")
            send.add_class("tiledesk-reply-send")
            send.on_click(self._on_click)
            self._attach = w.FileUpload(
                accept=",".join(UPLOAD_TYPES), multiple=False, description="Attach"
            )
            self._attach.add_class("tiledesk-reply-attach")
            self._attach.observe(self._on_attach, names="value")
            self._status = w.Label("")
            self._status.add_class("tiledesk-status")
            children += [w.HBox([self._text, send, self._attach]), self._status]
        self.widget = w.VBox(children, layout=w.Layout(width="100%"))
        self.widget.add_class(CSS_CLASS)
        self._widgets = [self.widget, *children, *(c for b in children for c in _kids(b))]
        if source is not None:
            source.on_events(self._callback, key=self._key, min_interval=self.min_interval)
            self._following = True
        self.refresh()

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        source = repr(self.source) if self.source is not None else "no source"
        return f"<ConversationView {self.messages_seen} message(s), {source}>"

    # -- what tests and notebooks read ----------------------------------------------------------
    @property
    def html(self) -> str:
        """The conversation log as shown now (the HTML widget's value)."""
        return str(self._log.value)

    @property
    def count_text(self) -> str:
        """The counter line as shown now, e.g.
        ``"12 messages in 1 conversation · 12 updates received"``."""
        return str(self._count.value)

    @property
    def status_text(self) -> str:
        """The reply box's status line (``""`` without a client)."""
        return str(self._status.value) if self._status is not None else ""

    @property
    def messages_seen(self) -> int:
        """How many messages the view has taken in (shown or scrolled out of its window)."""
        with self._lock:
            return self._seen

    def wait_until_shown(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until a message containing ``text`` is on screen; False after ``timeout`` s.

        ``listener.wait_for`` returns as soon as an event is kept, a moment before the view has
        drawn it: a cell that checks the view (or a headless run that saves the widget's state)
        waits with this.
        """
        needle = html.escape(text)
        deadline = time.monotonic() + timeout
        with self._drawn:
            while needle not in self._log.value:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drawn.wait(remaining)
        return True

    # -- feeding it -----------------------------------------------------------------------------
    def add(self, event: Event) -> None:
        """Take one event and redraw (for many at once, :meth:`extend` redraws once). A repeat of
        an event taken already (the same ``dedupe_key``) is dropped."""
        self.extend([event])

    def extend(self, events: Iterable[Event]) -> None:
        """Take many events and update the screen once; repeats are dropped, as by a source."""
        with self._lock:
            for event in events:
                if self._by_hand.add(event):
                    self._take(event)
        self._render()

    def refresh(self) -> None:
        """Rebuild the view from the source's kept events and redraw (call it from a cell)."""
        with self._lock:
            self._messages.clear()
            self._states.clear()
            self._seen = self._taken = 0
            kept = self.source.events if self.source is not None else []
            for event in kept:
                self._take(event)
            # The source may hand over again, in its next batch, the newest of these (kept after
            # the callback was registered but read here first): the same objects, skipped once.
            self._seam = {id(event): event for event in kept} if self._following else {}
        self._render()

    def reply(self, text: str | None = None) -> Message | None:
        """Send ``text`` (default: the reply box's text) as the client, into the conversation.

        The conversation is ``request_id`` when the view has one, else the newest conversation.
        Returns the sent message, or ``None`` when nothing was sent; the reason is shown in the
        status line, never raised (this runs from the Send button). A view whose source is stopped
        sends nothing: the reply would never come back to it.
        """
        if self.client is None:
            raise InvalidInputError("this view has no client to reply with: pass client=agent")
        if self._source_stopped():
            return None
        typed = self._text.value if text is None else text
        if not isinstance(typed, str) or not typed.strip():
            self._show_status("Type a message first.")
            return None
        target = self._reply_target()
        if target is None:
            self._show_status(
                "No conversation yet: wait for a visitor's message, or make the view with "
                "request_id=..."
            )
            return None
        rid, project_id = target
        self._follow(rid)
        try:
            message = self.client.send_message(rid, typed, project_id=project_id)
        except Exception as exc:  # shown to the person at the button, never raised from it
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._show_status(f"Not sent: {first_line}")
            return None
        if text is None:
            self._text.value = ""
        when = datetime.now().strftime("%H:%M:%S")
        self._show_status(
            f"Sent at {when} to {_short_id(rid)}; it shows above when its webhook arrives."
        )
        return message

    def attach(self, data: bytes, name: str) -> Message | None:
        """Upload a file as the client and send it into the conversation (the Attach button).

        A PNG, GIF or JPEG goes as an ``image`` message with its size, anything else as a
        ``file`` message. Returns the sent message, or ``None`` with the reason in the status line.
        """
        if self.client is None:
            raise InvalidInputError("this view has no client to attach with: pass client=agent")
        if self._source_stopped():
            return None
        target = self._reply_target()
        if target is None:
            self._show_status("No conversation yet: wait for a visitor's message first.")
            return None
        rid, project_id = target
        self._follow(rid)
        try:
            uploaded = self.client.upload_file(bytes(data), name=name, project_id=project_id)
            size = image_size(bytes(data))
            if size is not None and uploaded.content_type.startswith("image/"):
                message = self.client.send_image(
                    rid, uploaded, width=size[0], height=size[1], project_id=project_id
                )
            else:
                message = self.client.send_file(rid, uploaded, project_id=project_id)
        except Exception as exc:  # shown to the person at the button, never raised from it
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._show_status(f"Not sent: {first_line}")
            return None
        self._show_status(f"Sent {uploaded.name} to {_short_id(rid)}.")
        return message

    def close(self) -> None:
        """Stop following the source and close the widgets."""
        if self.source is not None and self._following:
            self.source.remove_callback(self._callback)
            self._following = False
        for widget in self._widgets:
            widget.close()
        if self._inline is not None:
            self._inline.close()

    # -- internals ------------------------------------------------------------------------------
    def _on_batch(self, events: list[Event]) -> None:
        """The source's batch callback (its worker thread): take the new events, redraw once."""
        with self._lock:
            for event in events:
                if self._seam:
                    if self._seam.pop(id(event), None) is event:
                        continue
                    self._seam = {}  # past the seam: everything from here on is new
                self._take(event)
        self._render()

    def _take(self, event: Event) -> None:
        self._taken += 1
        rid = event.request_id
        if self.request_id is not None and rid != self.request_id:
            return
        if event.is_message:
            self._messages.append(event)
            self._seen += 1
        elif rid and event.event in ("request.close", "request.update", "request.create"):
            self._states[rid] = event
            self._states.move_to_end(rid)
            if len(self._states) > _KEPT_CONVERSATION_STATES:
                self._states.popitem(last=False)

    def _render(self) -> None:
        with self._lock:
            events = [*self._states.values(), *self._messages]
            seen, taken = self._seen, self._taken
            conversations = len({e.request_id for e in self._messages})
        page = render_conversations(
            events,
            max_messages=self.max_messages,
            request_id=self.request_id,
            inline_image=self._inline,
        )
        count = _count_text(taken, seen, min(seen, self.max_messages), conversations)
        with self._render_lock:
            # Trait assignments only: safe from the source's worker thread.
            if self._log.value != page:
                self._log.value = page
            if self._count.value != count:
                self._count.value = count
            self._drawn.notify_all()

    def _reply_target(self) -> tuple[str, str | None] | None:
        with self._lock:
            newest = None
            for event in reversed(self._messages):
                if self.request_id is None or event.request_id == self.request_id:
                    newest = event
                    break
        if self.request_id is not None:
            return self.request_id, newest.project_id if newest is not None else None
        if newest is None or newest.request_id is None:
            return None
        return newest.request_id, newest.project_id

    def _source_stopped(self) -> bool:
        """True, with the reason in the status line, when the view's source is stopped."""
        if self.source is not None and not self.source.running:
            # What is sent would never come back to this view: refuse, and say why.
            self._show_status(
                f"Not sent: the {_source_name(self.source)} this view follows is stopped, so your "
                "reply would never show here. Start it again (.start()) or re-run the notebook."
            )
            return True
        return False

    def _follow(self, request_id: str) -> None:
        # A source that follows conversations one by one (the realtime feed stops following a
        # closed one after a while) is told first, so that what is sent comes back here.
        follow = getattr(self.source, "follow_conversation", None)
        if callable(follow):
            follow(request_id)

    def _show_status(self, text: str) -> None:
        if self._status is not None:
            self._status.value = text

    def _on_click(self, _button: Any) -> None:
        self.reply()

    def _on_attach(self, change: dict[str, Any]) -> None:
        files = change.get("new") or ()
        if not files:
            return
        chosen = files[0]
        self.attach(bytes(chosen["content"]), str(chosen["name"]))
        self._attach.value = ()  # ready for the next file

    def _on_text_message(self, _text: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self.reply()


def _count_text(received: int, seen: int, shown: int, conversations: int) -> str:
    """The header's counter in plain words: what the view holds, what it shows, what came in."""
    text = f"{_plural(seen, 'message')} in {_plural(conversations, 'conversation')}"
    if shown < seen:
        text += f" (the newest {shown} shown)"
    return f"{text} · {_plural(received, 'update')} received"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _source_name(source: Any) -> str:
    """What the source is, in words: ``WebhookListener`` -> ``webhook listener``."""
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in type(source).__name__)
    return words.strip() or "source"


def _kids(widget: Any) -> list[Any]:
    return list(getattr(widget, "children", ()))

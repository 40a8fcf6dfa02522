"""How long the conversation view takes to draw, with many messages kept.

    python bench/widget_render.py

The view renders only its window (the newest ``max_messages``), so the cost of a redraw should not
grow with the number of messages received. Prints one line per case, then a JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiledesk_tutorial.webhooks import make_delivery, make_message_payload, parse_delivery
from tiledesk_tutorial.widgets import ConversationView, render_conversations

SECRET = "bench-secret-0123456789abcdef0123456789"  # noqa: S105 (a made-up test value)


def events(count: int, conversations: int = 20) -> list:
    """``count`` parsed message.create deliveries spread over ``conversations`` requests."""
    made = []
    for i in range(count):
        payload = make_message_payload(
            f"message {i} <b>with markup</b> & text to escape",
            role="visitor" if i % 2 else "agent",
            request_id=f"support-group-bench-{i % conversations}",
        )
        made.append(parse_delivery(make_delivery(payload, SECRET).body))
    return made


def timed(function, repeat: int = 7) -> float:
    """Median seconds of ``function()``."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    """Measure and print."""
    results = {}
    for count in (200, 1000, 5000):
        data = events(count)
        seconds = timed(lambda data=data: render_conversations(data, max_messages=200))
        results[f"render_{count}_ms"] = round(seconds * 1000, 2)
        print(f"render_conversations, {count:5d} events, window 200: {seconds * 1000:7.2f} ms")
    data = events(5000)

    def fresh_view_takes_all() -> None:
        fresh = ConversationView(max_messages=200)
        fresh.extend(data)
        fresh.close()

    seconds = timed(fresh_view_takes_all, repeat=3)
    results["view_new_and_extend_5000_ms"] = round(seconds * 1000, 2)
    print(f"new ConversationView + extend, 5000 events:    {seconds * 1000:7.2f} ms")
    view = ConversationView(max_messages=200)
    view.extend(data)
    single = events(1)[0]
    seconds = timed(lambda: view.add(single), repeat=50)
    results["view_add_one_ms"] = round(seconds * 1000, 2)
    print(f"ConversationView.add, one event (full redraw): {seconds * 1000:7.2f} ms")
    view.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()

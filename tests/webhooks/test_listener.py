"""The webhook listener, driven over real HTTP on 127.0.0.1 as Tiledesk (or a learner) would."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from support.listener import listener_threads, post, recorded_deliveries

from tiledesk_tutorial.jsonl import read_jsonl
from tiledesk_tutorial.listener import (
    ListenerError,
    PortInUseError,
    WebhookListener,
    WebhookTimeout,
    running_listeners,
    stop_all_listeners,
)
from tiledesk_tutorial.webhooks import (
    make_delivery,
    make_hook,
    make_message_payload,
    sign_delivery,
)

SECRET = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
OTHER_SECRET = "16fd2706-8baf-433b-82eb-8c7fada847da"
RECORDED = recorded_deliveries()


def _delivery(text: str = "hello", secret: str = SECRET, **kwargs):
    return make_delivery(make_message_payload(text, **kwargs), secret)


def _send(listener: WebhookListener, delivery, session=None) -> requests.Response:
    return post(listener.url, delivery.data(), delivery.headers, session=session)


# -- recorded deliveries ----------------------------------------------------------------------
def test_recorded_deliveries_are_accepted_kept_and_parsed(make_listener):
    listener = make_listener(secret=RECORDED[0].secret, verify_token=True)

    for delivery in RECORDED:
        response = post(listener.url, delivery.data(), delivery.headers)
        assert response.status_code == 200
        assert response.json() == {"ok": True, "kept": True, "event": "message.create"}

    events = listener.events
    assert [e.text for e in events] == [d.body["payload"].get("text") for d in RECORDED]
    assert [e.role for e in events] == [
        "visitor",
        "agent",
        "visitor",
        "system",
        "visitor",
        "visitor",
    ]
    assert events[0].raw == RECORDED[0].body
    assert listener.stats["kept"] == 6
    assert listener.stats["rejected"] == 0


def test_a_retried_delivery_is_kept_once_and_still_answered_200(make_listener):
    listener = make_listener(secret=RECORDED[0].secret)
    delivery = RECORDED[0]

    first = post(listener.url, delivery.data(), delivery.headers)
    retry = post(listener.url, delivery.data(), delivery.headers)

    assert (first.status_code, first.json()["kept"]) == (200, True)
    assert (retry.status_code, retry.json()["kept"]) == (200, False)  # 200: no more retries
    assert len(listener.events) == 1
    assert listener.stats["duplicates"] == 1


def test_request_updates_and_a_re_close_of_one_request_are_all_kept(make_listener):
    listener = make_listener(secret=SECRET)
    request = {
        "_id": "6b0690d20ed30d16ca8ddd2f",
        "id_project": "p",
        "request_id": "support-group-x",
    }
    bodies = [
        ("request.update", {**request, "status": 200, "updatedAt": "2026-11-25T07:40:03.600Z"}, 1),
        ("request.update", {**request, "status": 1000, "updatedAt": "2026-11-25T07:40:03.670Z"}, 2),
        ("request.close", {**request, "status": 1000, "updatedAt": "2026-11-25T07:40:03.670Z"}, 3),
        ("request.close", {**request, "status": 1000, "updatedAt": "2026-11-25T07:40:03.670Z"}, 9),
    ]
    for event, payload, timestamp in bodies:
        delivery = make_delivery(payload, SECRET, event=event, timestamp=timestamp)
        assert _send(listener, delivery).json()["kept"] is True
        assert _send(listener, delivery).json()["kept"] is False  # its retry

    kept = listener.events
    assert [e.event for e in kept] == ["request.update"] * 2 + ["request.close"] * 2
    assert {e.request_id for e in kept} == {"support-group-x"}


# -- secrets and tokens ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing x-hook-secret header"),
        ({"x-hook-secret": ""}, "missing x-hook-secret header"),
        ({"x-hook-secret": OTHER_SECRET}, "wrong x-hook-secret"),
        ({"x-hook-secret": SECRET[:-1]}, "wrong x-hook-secret"),
    ],
)
def test_a_missing_or_wrong_secret_is_refused_with_401(make_listener, headers, reason):
    listener = make_listener(secret=SECRET)
    delivery = _delivery()

    response = post(listener.url, delivery.data(), {"Content-Type": "application/json", **headers})

    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert reason in response.json()["error"]
    assert SECRET not in response.text
    assert listener.events == []
    assert reason in listener.stats["last_rejection"]


def test_secrets_added_later_and_several_subscriptions_are_accepted(make_listener):
    listener = make_listener()
    assert _send(listener, _delivery("before any secret", OTHER_SECRET)).status_code == 200

    listener.add_secret(SECRET)
    assert _send(listener, _delivery("other", OTHER_SECRET)).status_code == 401
    listener.add_secret(OTHER_SECRET)
    assert _send(listener, _delivery("first", SECRET)).status_code == 200
    assert _send(listener, _delivery("second", OTHER_SECRET)).status_code == 200

    assert [e.text for e in listener.events] == ["before any secret", "first", "second"]
    assert listener.secrets_configured == 2


def test_verify_token_refuses_a_body_whose_token_is_not_for_its_subscription(make_listener):
    listener = make_listener(secret=SECRET, verify_token=True)
    good = _delivery("signed")
    assert _send(listener, good).status_code == 200

    # The body says subscription B, the token was issued for subscription A.
    swapped = dict(good.body, hook=make_hook(), payload=make_message_payload("swapped"))
    tampered_token = dict(good.body, token=good.body["token"][:-2] + "xx")
    no_token = {k: v for k, v in good.body.items() if k != "token"}
    signed_elsewhere = dict(good.body, token=sign_delivery(good.body["hook"], OTHER_SECRET))
    for body, reason in [
        (swapped, "token rejected"),
        (tampered_token, "token rejected"),
        (no_token, "no 'token'"),
        (signed_elsewhere, "token rejected"),
    ]:
        response = post(listener.url, json.dumps(body), good.headers)
        assert response.status_code == 401
        assert reason in response.json()["error"]
    assert [e.text for e in listener.events] == ["signed"]


def test_verify_token_without_any_secret_refuses_everything(make_listener):
    listener = make_listener(verify_token=True)
    response = _send(listener, _delivery())
    assert response.status_code == 401
    assert "no subscription secret" in response.json()["error"]


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 400, "empty body"),
        (b"this is not json", 400, "not valid JSON"),
        (b"[1, 2, 3]", 400, "JSON array"),
        (b"42", 400, "JSON number"),
        (b'{"hook": {"event": "message.create"}, "timestamp": 1}', 400, "no 'payload'"),
        (b'{"payload": "text"}', 400, "'payload' is a JSON string"),
        (b"{" + b" " * (1024 * 1024) + b"}", 413, "larger than 1048576 bytes"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ],
)
def test_bad_bodies_get_a_4xx_with_a_short_json_reason_and_nothing_is_kept(
    make_listener, capfd, body, status, reason
):
    listener = make_listener(secret=SECRET)

    response = post(listener.url, body, {"x-hook-secret": SECRET})

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"ok": False, "error": response.json()["error"]}
    assert reason in response.json()["error"]
    assert listener.events == []
    listener.stop()
    assert capfd.readouterr() == ("", "")  # no traceback, no access log in the notebook


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_than_post_get_405_in_json(make_listener, capfd, method):
    listener = make_listener(secret=SECRET)

    response = requests.request(method, listener.url, data=_delivery().data(), timeout=10)

    assert response.status_code == 405
    assert "POST" in response.json()["error"]
    assert "POST" in response.headers["Allow"]
    assert listener.events == []
    listener.stop()
    assert capfd.readouterr() == ("", "")


def test_a_wrong_path_gets_a_404_that_names_the_right_one(make_listener):
    listener = make_listener(path="/tiledesk")
    response = post(listener.url.replace("/tiledesk", "/hook"), _delivery().data())
    assert response.status_code == 404
    assert "the webhook path is /tiledesk" in response.json()["error"]
    assert listener.stats["last_rejection"].startswith("404")


def test_get_on_the_path_shows_a_small_status_without_secrets(make_listener):
    listener = make_listener(secret=SECRET)
    _send(listener, _delivery())

    response = requests.get(listener.url, timeout=10)

    assert response.status_code == 200
    status = response.json()
    assert status["events_kept"] == 1
    assert status["secrets_configured"] == 1
    assert status["path"] == "/webhook"
    assert SECRET not in response.text
    assert requests.head(listener.url, timeout=10).status_code == 200


def test_a_delivery_without_content_type_is_still_read(make_listener):
    listener = make_listener()
    response = post(listener.url, _delivery("curl -d").data(), {"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert listener.events[0].text == "curl -d"


# -- concurrency --------------------------------------------------------------------------------
def test_eight_concurrent_senders_and_thousands_of_deliveries_are_all_kept(make_listener):
    clients, per_client = 8, 250
    listener = make_listener(secret=SECRET, max_events=clients * per_client)
    seen_on_worker: list[str] = []
    listener.on_event(lambda event: seen_on_worker.append(event.text))

    def send_all(client: int) -> list[int]:
        with requests.Session() as session:
            return [
                _send(listener, _delivery(f"{client}-{n}"), session=session).status_code
                for n in range(per_client)
            ]

    with ThreadPoolExecutor(clients) as pool:
        statuses = [code for codes in pool.map(send_all, range(clients)) for code in codes]

    expected = {f"{c}-{n}" for c in range(clients) for n in range(per_client)}
    assert statuses == [200] * len(expected)
    assert {e.text for e in listener.events} == expected
    listener.wait_for(count=len(expected), timeout=30)
    listener.stop()  # drains the callback queue before returning
    assert sorted(seen_on_worker) == sorted(expected)
    assert seen_on_worker == [e.text for e in listener.events]  # callbacks in arrival order
    assert listener.stats["rejected"] == 0


def test_one_keep_alive_session_can_send_many_deliveries(make_listener):
    listener = make_listener(secret=SECRET)
    with requests.Session() as session:
        codes = [_send(listener, _delivery(str(n)), session=session).status_code for n in range(50)]
    assert codes == [200] * 50
    assert len(listener.events) == 50


# -- callbacks and waiting ---------------------------------------------------------------------
def test_callbacks_run_on_one_worker_thread_never_on_the_request_thread(make_listener):
    listener = make_listener(secret=SECRET)
    state = {"texts": [], "threads": set()}
    done = threading.Event()

    @listener.on_event
    def update(event):
        state["texts"].append(event.text)
        state["threads"].add(threading.current_thread().name)
        if len(state["texts"]) == 3:
            done.set()

    for text in ["one", "two", "three"]:
        _send(listener, _delivery(text))

    assert done.wait(10)
    assert state["texts"] == ["one", "two", "three"]
    assert state["threads"] == {f"tiledesk-listener-{listener.port}-callbacks"}


def test_re_registering_a_function_of_the_same_name_replaces_it(make_listener):
    listener = make_listener(secret=SECRET)
    calls = []
    done = threading.Event()

    for run in ("first run", "re-run"):  # the same notebook cell, run twice

        def show(event, run=run):
            calls.append((run, event.text))
            done.set()

        listener.on_event(show)
    listener.on_event(lambda event: calls.append(("lambda", event.text)))

    _send(listener, _delivery("once"))
    listener.stop()  # runs the queued callbacks first

    assert done.is_set()
    assert calls == [("re-run", "once"), ("lambda", "once")]


def test_a_failing_callback_is_counted_and_does_not_stop_the_others(make_listener, caplog):
    listener = make_listener(secret=SECRET)
    received = []
    done = threading.Event()

    def broken(event):
        raise KeyError("text")

    listener.on_event(broken)
    listener.on_event(
        lambda event: (received.append(event.text), len(received) == 2 and done.set())
    )
    assert _send(listener, _delivery("a")).status_code == 200
    assert _send(listener, _delivery("b")).status_code == 200
    assert done.wait(10)

    assert received == ["a", "b"]
    assert listener.stats["callback_errors"] == 2
    assert "broken: KeyError" in listener.stats["last_callback_error"]
    assert caplog.text.count("webhook callback") == 1  # the first failure only, then counted

    listener.remove_callback(broken)
    _send(listener, _delivery("c"))
    listener.stop()
    assert listener.stats["callback_errors"] == 2


def test_a_callback_may_stop_the_listener(make_listener):
    listener = make_listener(secret=SECRET)
    stopped = threading.Event()

    @listener.on_event
    def stop_after_first(event):
        listener.stop()
        stopped.set()

    assert _send(listener, _delivery("last one")).status_code == 200
    assert stopped.wait(10)
    for thread in listener_threads():
        thread.join(10)
    assert not listener.running
    assert [e.text for e in listener.events] == ["last one"]


def test_wait_for_wakes_when_a_matching_event_arrives(make_listener):
    listener = make_listener(secret=SECRET)
    _send(listener, _delivery("noise"))
    sender = threading.Timer(0.2, lambda: _send(listener, _delivery("the one", role="agent")))
    sender.start()
    try:
        found = listener.wait_for(lambda e: e.role == "agent", timeout=10)
    finally:
        sender.join()
    assert [e.text for e in found] == ["the one"]
    assert len(listener.wait_for(count=2, timeout=1)) == 2  # events kept before the call count


def test_wait_for_times_out_with_a_clear_message(make_listener):
    listener = make_listener(secret=SECRET)
    post(listener.url, _delivery(secret=OTHER_SECRET).data(), {"x-hook-secret": OTHER_SECRET})

    with pytest.raises(WebhookTimeout) as caught:
        listener.wait_for(lambda e: e.text == "never", timeout=0.2)

    message = str(caught.value)
    assert "got 0" in message
    assert "refused 1 request(s)" in message
    assert "wrong x-hook-secret" in message
    assert caught.value.events == []
    assert isinstance(caught.value, TimeoutError)


def test_clear_forgets_events_but_still_recognises_their_retries(make_listener):
    listener = make_listener(secret=SECRET)
    delivery = _delivery("once")
    _send(listener, delivery)
    listener.clear()
    assert listener.events == []
    assert _send(listener, delivery).json()["kept"] is False


# -- storage ------------------------------------------------------------------------------------
def test_the_store_is_bounded_and_the_jsonl_file_keeps_everything(make_listener, tmp_path):
    store_file = tmp_path / "nested" / "events.jsonl"
    listener = make_listener(secret=SECRET, max_events=3, store_file=store_file, fsync=True)
    deliveries = [_delivery(f"m{n}") for n in range(5)]
    for delivery in deliveries:
        _send(listener, delivery)
    _send(listener, deliveries[0])  # a retry is not written twice

    assert [e.text for e in listener.events] == ["m2", "m3", "m4"]
    assert listener.stats["evicted"] == 2
    listener.stop()
    assert [e.text for e in read_jsonl(store_file)] == [f"m{n}" for n in range(5)]
    assert SECRET not in store_file.read_text(encoding="utf-8").replace(
        deliveries[0].body["token"], ""
    )

    listener.start()  # appends to the same file after a restart
    _send(listener, _delivery("after restart"))
    listener.stop()
    assert read_jsonl(store_file)[-1].text == "after restart"


def test_a_store_file_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    listener = WebhookListener(store_file=blocker / "events.jsonl")
    with pytest.raises(ListenerError, match="cannot append events to"):
        listener.start()
    assert not listener.running
    assert listener_threads() == []


# -- lifecycle ----------------------------------------------------------------------------------
def test_start_is_idempotent_and_stop_frees_the_port_and_threads(make_listener):
    listener = make_listener()
    assert listener.start() is listener
    port = listener.port
    assert [t.name for t in listener_threads()] == [
        f"tiledesk-listener-{port}-callbacks",
        f"tiledesk-listener-{port}",
    ]

    listener.stop()
    listener.stop()

    assert not listener.running
    assert listener_threads() == []
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass


def test_a_re_run_cell_on_the_same_port_replaces_the_earlier_listener(make_listener):
    first = make_listener(secret=SECRET)
    port = first.port
    _send(first, _delivery("to the first"))

    second = make_listener(secret=SECRET, port=port)  # the same cell, run again

    assert not first.running
    assert second.running and second.url == first.url
    assert running_listeners() == [second]
    assert _send(second, _delivery("to the second")).status_code == 200
    assert [e.text for e in second.events] == ["to the second"]
    for _ in range(5):
        make_listener(port=port)
    assert len(running_listeners()) == 1
    assert len(listener_threads()) == 2


def test_a_port_held_by_another_program_is_a_one_line_error(capfd):
    with socket.create_server(("127.0.0.1", 0)) as other_program:
        port = other_program.getsockname()[1]
        listener = WebhookListener(port=port)
        with pytest.raises(PortInUseError) as caught:
            listener.start()
    message = str(caught.value)
    assert f"port {port}" in message and "another program" in message
    # One line saying what, one hint saying what to do: no traceback soup.
    assert message == f"{caught.value.summary}\nHint: {caught.value.hint}"
    assert "\n" not in caught.value.summary and "\n" not in (caught.value.hint or "\n")
    assert "port=0" in caught.value.hint
    assert not listener.running
    assert capfd.readouterr() == ("", "")  # werkzeug would have printed and called sys.exit


def test_a_restarted_listener_gets_its_port_back(make_listener):
    listener = make_listener()
    port = listener.port
    listener.stop()
    listener.start()
    assert listener.port == port


def test_a_listener_is_a_context_manager():
    with WebhookListener(secret=SECRET) as listener:
        assert _send(listener, _delivery("inside")).status_code == 200
        url = listener.url
    assert not listener.running
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    assert listener_threads() == []


def test_stop_all_listeners_stops_every_listener_of_the_process():
    listeners = [WebhookListener().start() for _ in range(3)]
    assert stop_all_listeners() == 3
    assert not any(listener.running for listener in listeners)
    assert listener_threads() == []


def test_a_listener_on_all_interfaces_gives_a_loopback_url(make_listener):
    listener = make_listener(host="0.0.0.0")
    assert listener.url.startswith("http://127.0.0.1:")
    assert _send(listener, _delivery()).status_code == 200


def test_repr_and_errors_before_start_say_what_to_do():
    listener = WebhookListener(secret=SECRET)
    assert SECRET not in repr(listener)
    assert "stopped" in repr(listener)
    with pytest.raises(ListenerError, match="call start"):
        _ = listener.url
    with pytest.raises(ValueError, match="port"):
        WebhookListener(port=70000)
    with pytest.raises(ValueError, match="secret"):
        WebhookListener(secret="")
    with pytest.raises(TypeError, match="on_event"):
        listener.on_event("not a function")

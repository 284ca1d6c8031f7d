"""relay.js in chromium against a scripted server (``fake_socket.js``): every rule, fast and exact.

The page is served by Playwright itself (``http://relay.test/``, no network): relay.js as the
app ships it, and the FakeSocket harness. The tests against a real daphne are in
``test_browser.py``; these pin down what a real server cannot be made to do on cue (a gap, a
new epoch, a lost pong, a refusal).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from .browser import RELAY_JS, collect_console

HERE = Path(__file__).resolve().parent
RELAY_DTS = RELAY_JS.with_name("relay.d.ts")
PAGE = """<!doctype html><title>relay.js</title>
<script type="module">
import * as relay from "/relay.js";
import * as fake from "/fake_socket.js";
Object.assign(window, fake, { relay, make: (options) => fake.harness(relay, options) });
window.harnessReady = true;
</script>"""


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page()
    files = {
        "/": (PAGE, "text/html"),
        "/relay.js": (RELAY_JS.read_text(), "text/javascript"),
        "/fake_socket.js": ((HERE / "fake_socket.js").read_text(), "text/javascript"),
    }

    def serve(route):
        path = "/" + route.request.url.split("/", 3)[3].split("?")[0]
        if path in files:
            body, content_type = files[path]
            route.fulfill(status=200, body=body, content_type=content_type)
        else:
            route.fulfill(status=404, body="not found")

    page.route("http://relay.test/**", serve)
    page.goto("http://relay.test/")
    page.wait_for_function("window.harnessReady === true")
    yield page
    page.close()


@pytest.fixture
def run(page):
    """``run(js)``: evaluate an async function body in the page (harness globals in scope), return its value."""
    problems = collect_console(page)

    def evaluate(body: str):
        return page.evaluate(f"async () => {{ {body} }}")

    yield evaluate
    assert not problems, problems


def test_the_first_connection_asks_for_its_position_and_speaks_relay_v1(run):
    result = run("""
        const { client, next, of } = make({ id: 7 });
        const opened = client.open();
        const socket = await next();
        socket.accept();
        await opened;
        return { url: socket.url, query: socket.query, protocol: socket.requested, state: client.state,
                 connecting: of("connecting"), open: of("open").length };
    """)
    assert result["protocol"] == "relay.v1"
    assert result["query"] == {"id": "7", "since": ""}
    assert re.fullmatch(r"ws://relay\.test/ws\?id=7&since=", result["url"])
    assert result["state"] == "open"
    assert (result["connecting"], result["open"]) == ([{"attempt": 0}], 1)


def test_resume_uses_the_last_position_and_keeps_it_per_page_in_session_storage(run):
    result = run("""
        sessionStorage.clear();
        const { client, next, of } = make({ id: "alice", storage: sessionStorage });
        client.open();
        let socket = await next();
        socket.accept();
        socket.receive({ type: "recovered", recovered: false, reason: "no_position", epoch: "e1", offset: 4 });
        socket.receive({ type: "message", from: "bob", offset: 5, epoch: "e1", payload: "five" });
        socket.serverClose(1001, "going away");
        socket = await next();
        const resumed = socket.query.since;
        socket.accept();
        socket.receive({ type: "message", from: "bob", offset: 5, epoch: "e1", payload: "five again" });
        socket.receive({ type: "message", from: "bob", offset: 6, epoch: "e1", payload: "six" });
        socket.receive({ type: "recovered", recovered: true, replayed: 1, epoch: "e1", offset: 6 });
        client.close();
        // A new client in the same page (a reload) resumes where this one stopped.
        const again = make({ id: "alice", storage: sessionStorage });
        again.client.open();
        const third = await again.next();
        const other = make({ id: "bob", storage: sessionStorage });
        other.client.open();
        const fourth = await other.next();
        again.client.close(); other.client.close();
        return { resumed, messages: of("message").map((m) => [m.payload, m.offset]), recovered: of("recovered"),
                 reload: third.query.since, otherId: fourth.query.since, position: client.position };
    """)
    assert result["resumed"] == "e1:5"
    assert result["messages"] == [["five", 5], ["six", 6]], "the replayed duplicate is dropped by its offset"
    assert [r["recovered"] for r in result["recovered"]] == [False, True]
    assert result["recovered"][1] == {
        "recovered": True, "replayed": 1, "reason": None, "epoch": "e1", "offset": 6, "live": False,
    }  # fmt: skip
    assert (result["reload"], result["otherId"]) == ("e1:6", ""), "positions are kept per id"
    assert result["position"] == {"epoch": "e1", "offset": 6}


def test_a_gap_on_a_live_connection_reconnects_to_resume_from_the_last_offset(run):
    result = run("""
        const { client, next, of } = make({ id: "a", backoffMin: 1 });
        client.open();
        let socket = await next();
        socket.accept();
        socket.receive({ type: "recovered", recovered: false, reason: "no_position", epoch: "e", offset: 0 });
        socket.receive({ type: "message", from: "b", offset: 1, epoch: "e", payload: 1 });
        socket.receive({ type: "message", from: "b", offset: 3, epoch: "e", payload: 3 });
        const gapSocket = socket;
        socket = await next();
        const since = socket.query.since;
        socket.accept();
        socket.receive({ type: "message", from: "b", offset: 2, epoch: "e", payload: 2 });
        socket.receive({ type: "message", from: "b", offset: 3, epoch: "e", payload: 3 });
        socket.receive({ type: "recovered", recovered: true, replayed: 2, epoch: "e", offset: 3 });
        client.close();
        return { since, payloads: of("message").map((m) => m.payload), reconnecting: of("reconnecting"),
                 gapClosed: gapSocket.closedWith !== null };
    """)
    assert result["since"] == "e:1"
    assert result["payloads"] == [1, 2, 3], "the gapped delivery is not shown out of order"
    assert result["reconnecting"][0]["reason"] == "gap: offset 3 after 1"
    assert result["gapClosed"]


def test_a_new_epoch_on_a_live_connection_is_recovered_false_and_delivered(run):
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        socket.receive({ type: "recovered", recovered: true, replayed: 0, epoch: "old", offset: 9 });
        socket.receive({ type: "message", from: null, offset: 1, epoch: "new", payload: "after a flush" });
        socket.receive({ type: "message", from: null, offset: 2, epoch: "new", payload: "next" });
        const state = client.state;
        client.close();
        return { state, recovered: of("recovered"), messages: of("message"), reconnects: of("reconnecting").length };
    """)
    assert result["state"] == "open" and result["reconnects"] == 0
    assert result["recovered"][1] == {
        "recovered": False, "replayed": 0, "reason": "epoch_changed", "epoch": "new", "offset": 1, "live": True,
    }  # fmt: skip
    assert result["messages"] == [
        {"from": None, "payload": "after a flush", "offset": 1, "epoch": "new"},
        {"from": None, "payload": "next", "offset": 2, "epoch": "new"},
    ]


def test_deliveries_without_history_pass_as_they_come(run):
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        socket.receive({ type: "recovered", recovered: false, replayed: 0, reason: "history_off" });
        socket.receive({ type: "message", from: "b", payload: { n: 1 } });
        socket.receive({ type: "message", from: "b", payload: { n: 1 } });
        client.close();
        return { messages: of("message"), position: client.position };
    """)
    assert result["messages"] == [{"from": "b", "payload": {"n": 1}, "offset": None, "epoch": None}] * 2
    assert result["position"] is None


def test_send_resolves_on_its_ack_with_the_offsets(run):
    result = run("""
        const { client, next } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        const sent = client.send(["b", 2, "2"], { hi: true });
        const frame = socket.frames()[0];
        socket.receive({ type: "ack", ref: frame.id, offsets: { b: 4, "2": 9 } });
        const answer = await sent;
        client.close();
        return { frame, answer };
    """)
    assert result["frame"] == {"targets": ["b", 2, "2"], "payload": {"hi": True}, "id": result["frame"]["id"]}
    assert result["answer"] == {"offsets": {"b": 4, "2": 9}, "forbidden": [], "unavailable": []}


def test_send_with_some_targets_forbidden_resolves_on_the_ack_with_their_errors(run):
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        const sent = client.send(["a", "b", 2, "2"], "x");
        const { id } = socket.frames()[0];
        socket.receive({ type: "error", code: "forbidden", detail: "You may not send to b.", ref: id });
        socket.receive({ type: "error", code: "forbidden", detail: "You may not send to 2.", ref: id });
        let settled = false;
        sent.then(() => { settled = true; });
        await sleep(20);
        const early = settled;
        socket.receive({ type: "ack", ref: id, offsets: { a: 3 } });
        const answer = await sent;
        client.close();
        return { early, answer, errors: of("error") };
    """)
    assert result["early"] is False, "three distinct targets, two refused: the ack for the third is awaited"
    assert result["answer"] == {
        "offsets": {"a": 3},
        "forbidden": [
            {"code": "forbidden", "detail": "You may not send to b."},
            {"code": "forbidden", "detail": "You may not send to 2."},
        ],
        "unavailable": [],
    }
    assert result["errors"] == []


def test_send_with_some_targets_unavailable_resolves_on_the_ack_with_their_errors(run):
    """With shards, the targets on a Redis that is down miss the frame; the others have it."""
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        const sent = client.send(["x", "y", "z"], "x");
        const { id } = socket.frames()[0];
        const detail = "The relay cannot reach the Redis of y now; the message was not delivered to it.";
        socket.receive({ type: "error", code: "unavailable", detail, ref: id, target: "y" });
        let settled = false;
        sent.then(() => { settled = true; });
        await sleep(20);
        const early = settled;
        socket.receive({ type: "ack", ref: id, offsets: { x: 2, z: 7 } });
        const answer = await sent;
        const none = client.send(["v", "w"], "x");
        const second = socket.frames()[1].id;
        socket.receive({ type: "error", code: "forbidden", detail: "You may not send to v.", ref: second });
        socket.receive({ type: "error", code: "unavailable", detail, ref: second, target: "w" });
        const error = await none.catch((e) => e);
        const whole = client.send(["v", "w"], "x");
        const third = socket.frames()[2].id;
        socket.receive({ type: "error", code: "unavailable", detail: "reached this process only", ref: third });
        const frameError = await whole.catch((e) => e);
        client.close();
        return { early, answer, errors: of("error"), none: [error.code, error.errors.map((e) => e.code)],
                 whole: [frameError.code, frameError.detail, frameError.errors.length] };
    """)
    assert result["early"] is False, "one target missed it: the ack for the others is awaited"
    detail = "The relay cannot reach the Redis of y now; the message was not delivered to it."
    assert result["answer"] == {
        "offsets": {"x": 2, "z": 7},
        "forbidden": [],
        "unavailable": [{"code": "unavailable", "detail": detail, "target": "y"}],
    }
    assert result["none"] == ["unavailable", ["forbidden", "unavailable"]]  # no target got it: rejected
    assert result["whole"] == ["unavailable", "reached this process only", 0]  # about the frame: at once
    assert result["errors"] == []


def test_send_with_every_target_forbidden_rejects_without_an_ack(run):
    result = run("""
        const { client, next } = make({ id: "a", timeout: 5000 });
        client.open();
        const socket = await next();
        socket.accept();
        const sent = client.send([2, "2", "bob"], "x");
        const { id } = socket.frames()[0];
        socket.receive({ type: "error", code: "forbidden", detail: "You may not send to 2.", ref: id });
        socket.receive({ type: "error", code: "forbidden", detail: "You may not send to bob.", ref: id });
        const error = await sent.catch((e) => e);
        client.close();
        return { name: error.name, code: error.code, errors: error.errors.length, ref: error.ref, id,
                 instance: error instanceof relay.RelayError };
    """)
    assert result == {"name": "RelayError", "code": "forbidden", "errors": 2, "ref": result["id"], "id": result["id"],
                      "instance": True}  # fmt: skip


def test_an_error_for_the_frame_rejects_and_other_errors_are_events(run):
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        const sent = client.send(["b"], "x");
        const { id } = socket.frames()[0];
        socket.receive({ type: "error", code: "rate_limited", detail: "slow down", ref: 99999 });
        socket.receive({ type: "error", code: "invalid_json", detail: "not json" });
        socket.receive({ type: "error", code: "empty_message", detail: "Write something first.", ref: id });
        const error = await sent.catch((e) => e);
        client.close();
        return { code: error.code, detail: error.detail, events: of("error") };
    """)
    assert (result["code"], result["detail"]) == ("empty_message", "Write something first.")
    assert result["events"] == [
        {"code": "rate_limited", "detail": "slow down", "ref": 99999},
        {"code": "invalid_json", "detail": "not json", "ref": None},
    ]


def test_call_resolves_with_the_reply_and_rejects_with_the_error(run):
    result = run("""
        const { client, next } = make({ id: "a" });
        client.open();
        const socket = await next();
        socket.accept();
        const history = client.call("chat.history", { room: "lobby" });
        const missing = client.call("nope");
        const [first, second] = socket.frames();
        socket.receive({ type: "error", code: "unknown_call", detail: "No call named 'nope'.", ref: second.id });
        socket.receive({ type: "reply", ref: first.id, payload: [{ text: "hi" }] });
        const reply = await history;
        const error = await missing.catch((e) => e.code);
        client.close();
        return { first, second, reply, error };
    """)
    assert result["first"] == {"call": "chat.history", "payload": {"room": "lobby"}, "id": result["first"]["id"]}
    assert result["second"]["payload"] is None
    assert result["reply"] == [{"text": "hi"}]
    assert result["error"] == "unknown_call"


def test_sends_while_disconnected_wait_in_a_bounded_queue_and_go_out_on_reconnect(run):
    result = run("""
        const { client, next } = make({ id: "a", queueSize: 2, backoffMin: 1 });
        const first = client.send(["b"], 1);  // before open(): queued too
        client.open();
        let socket = await next();
        socket.refuse();
        const second = client.send(["b"], 2);
        const third = client.send(["b"], 3).catch((e) => e.code);
        socket = await next();
        socket.accept();
        const frames = socket.frames();
        for (const frame of frames) socket.receive({ type: "ack", ref: frame.id, offsets: {} });
        const answers = await Promise.all([first, second, third]);
        client.close();
        return { payloads: frames.map((f) => f.payload), answers };
    """)
    assert result["payloads"] == [1, 2]
    assert result["answers"] == [{"offsets": {}, "forbidden": [], "unavailable": []}] * 2 + ["queue_full"]


def test_timeouts_and_lost_connections_reject_and_a_timed_out_queued_frame_is_never_sent(run):
    result = run("""
        const { client, next } = make({ id: "a", backoffMin: 50, timeout: 30 });
        client.open();
        let socket = await next();
        socket.accept();
        const unanswered = client.send(["b"], "lost?").catch((e) => [e.code, e.detail]);
        const pending = client.call("slow", null, { timeout: 5000 }).catch((e) => e.code);
        await sleep(60);
        socket.serverClose(1011);
        const queued = client.send(["b"], "never").catch((e) => [e.code, e.detail]);
        const lost = await pending;
        const timedOut = await queued;
        socket = await next();
        socket.accept();
        await sleep(10);
        const sent = socket.frames();
        client.close();
        return { unanswered: await unanswered, lost, timedOut, sent };
    """)
    assert result["unanswered"] == ["timeout", "no answer within 30 ms: it may still have been relayed"]
    assert result["lost"] == "disconnected"
    assert result["timedOut"] == ["timeout", "no answer within 30 ms: it was never sent"]
    assert result["sent"] == []


def test_reconnect_delays_are_full_jitter_exponential_capped_and_reset_after_a_stable_connection(run):
    result = run("""
        let draws = [0.999, 0.999, 0.999, 0.999, 0.999, 0.999, 0.5, 0.25];
        const unreachable = async () => { throw new TypeError("Failed to fetch"); };
        const { client, next, of } = make({ id: "a", backoffMin: 4, backoffMax: 40, stableAfter: 60,
                                            random: () => draws.shift() ?? 0.5, fetch: unreachable });
        client.open();
        for (let i = 0; i < 6; i++) (await next()).refuse();   // down: 1006 before open, and probes fail
        const socket = await next();
        socket.accept();
        await sleep(80);                                         // up longer than stableAfter
        socket.serverClose(1006);
        await next();
        client.close();
        return of("reconnecting").map((r) => [Math.round(r.delay * 1000) / 1000, r.attempt, r.code]);
    """)
    caps = [4, 8, 16, 32, 40, 40]
    assert [delay for delay, _, _ in result[:6]] == [round(cap * 0.999, 3) for cap in caps]
    assert [attempt for _, attempt, _ in result] == [1, 2, 3, 4, 5, 6, 1]
    assert result[6] == [2.0, 1, 1006], "after a stable connection the backoff starts again at backoffMin"
    unit = run("return [0, 1, 5, 20].map((n) => relay.backoffDelay(n, 500, 20000, () => 1));")
    assert unit == [500, 1000, 16000, 20000]


def test_the_token_callback_is_called_before_every_connection_and_null_stops(run):
    result = run("""
        let calls = 0;
        const { client, next, of } = make({ backoffMin: 1, token: async () => (++calls < 3 ? `t${calls}` : null) });
        client.open();
        let socket = await next();
        const first = socket.query.token;
        socket.accept();
        socket.serverClose(1001);
        socket = await next();
        const second = socket.query.token;
        socket.accept();
        socket.serverClose(1001);
        await waitFor(() => client.state === "closed");
        return { first, second, calls, closed: of("closed") };
    """)
    assert (result["first"], result["second"], result["calls"]) == ("t1", "t2", 3)
    assert result["closed"] == [{"code": None, "reason": "the token callback gave no token", "refused": True}]


def test_a_logout_forgets_the_position_for_whoever_logs_in_next(run):
    """The session's identity is the cookie's: the next user of the tab must not resume this one's stream."""
    result = run("""
        sessionStorage.clear();
        const first = make({ storage: sessionStorage });
        first.client.open();
        const socket = await first.next();
        socket.accept();
        socket.receive({ type: "message", from: null, offset: 3, epoch: "e1", payload: "for user 1" });
        socket.serverClose(4401, "logged out");
        const next = make({ storage: sessionStorage });
        next.client.open();
        const since = (await next.next()).query.since;
        next.client.close();
        return { since, position: first.client.position };
    """)
    assert result == {"since": "", "position": None}


@pytest.mark.parametrize("code", [1008, 4401])
def test_no_reconnect_after_1008_or_a_logout(run, code):
    result = run(f"""
        const {{ client, next, of }} = make({{ id: "a", backoffMin: 1 }});
        const opened = client.open();
        const socket = await next();
        socket.accept();
        await opened;
        socket.serverClose({code}, "");
        await sleep(30);
        const later = await client.send(["b"], 1).catch((e) => e.code);
        return {{ closed: of("closed"), reconnecting: of("reconnecting").length, later }};
    """)
    assert result["closed"] == [{"code": code, "reason": "", "refused": False}]
    assert result["reconnecting"] == 0
    assert result["later"] == "closed"


def test_closed_before_open_twice_with_a_server_that_answers_http_is_a_refusal(run):
    result = run("""
        const probes = [];
        const fetch = async (url, init) => { probes.push([url, init.mode]); return { type: "basic", status: 404 }; };
        const { client, next, of } = make({ id: "a", backoffMin: 1, fetch, url: "ws://relay.test/ws?x=1" });
        const opened = client.open().catch((e) => [e.code, e.detail]);
        (await next()).refuse();
        (await next()).refuse();
        const error = await opened;
        await sleep(20);
        return { probes, error, closed: of("closed"), reconnecting: of("reconnecting").length };
    """)
    assert result["probes"] == [["http://relay.test/ws", "no-cors"]], "one probe, without the query (tokens)"
    assert result["error"] == ["refused", "the server refused the handshake"]
    assert result["closed"] == [{"code": 1006, "reason": "the server refused the handshake", "refused": True}]
    assert result["reconnecting"] == 1


def test_a_relay_of_another_origin_whose_answer_cannot_be_read_is_not_a_refusal(run):
    """Cross-origin, the probe's answer is opaque: a proxy's 502 (the server down) looks like a 404."""
    result = run("""
        let probes = 0;
        const fetch = async () => { probes += 1; return { type: "opaque", status: 0 }; };
        const { client, next, of } = make({ id: "a", backoffMin: 1, fetch, url: "ws://relay.other.test/ws" });
        client.open();
        for (let i = 0; i < 4; i++) (await next()).refuse();
        (await next()).accept();
        const state = client.state;
        client.close();
        return { probes, state, refused: of("closed").filter((c) => c.refused).length };
    """)
    assert result["probes"] == 3, "probed after each close before open from the second on"
    assert (result["state"], result["refused"]) == ("open", 0)


def test_closed_before_open_while_the_server_is_unreachable_or_going_away_keeps_reconnecting(run):
    result = run("""
        let probes = 0, answer = "down";
        const fetch = async () => {
          probes += 1;
          if (answer === "down") throw new TypeError("Failed to fetch");
          return { type: "basic", status: 502 };   // a gateway whose server is down
        };
        const { client, next, of } = make({ id: "a", backoffMin: 1, fetch });
        client.open();
        for (let i = 0; i < 3; i++) (await next()).refuse();
        answer = "gateway";
        for (let i = 0; i < 2; i++) (await next()).refuse();
        let socket = await next();
        socket.accept();
        socket.serverClose(1001);              // draining: its refusals are not counted
        const before = probes;
        for (let i = 0; i < 4; i++) (await next()).refuse();
        socket = await next();
        socket.accept();
        const state = client.state;
        client.close();
        return { probes, before, state, closed: of("closed") };
    """)
    assert result["before"] == 4, "probed from the second close before open on"
    assert result["probes"] == 4, "no probe while the server is going away (1001)"
    assert result["state"] == "open"
    assert result["closed"] == [{"code": 1000, "reason": "", "refused": False}]


def test_a_missing_pong_is_a_dead_connection_and_a_pong_keeps_it(run):
    result = run("""
        const { client, next, of } = make({ id: "a", pingInterval: 30, pongTimeout: 40, backoffMin: 1 });
        client.open();
        let socket = await next();
        socket.accept();
        await waitFor(() => socket.sent.some((f) => f.type === "ping"));
        const ping = socket.sent.find((f) => f.type === "ping");
        socket.receive({ type: "pong", ref: ping.id });
        await sleep(60);
        const alive = client.state;
        const pings = socket.sent.filter((f) => f.type === "ping").length;
        const dead = socket;
        socket = await next();               // no more pongs: given up, reconnected
        socket.accept();
        client.close();
        return { ping, alive, pings, reconnecting: of("reconnecting"), closedDead: dead.closedWith !== null };
    """)
    assert result["ping"] == {"type": "ping", "id": "ping-1"}
    assert result["alive"] == "open" and result["pings"] >= 2
    assert result["reconnecting"][0]["reason"] == "no pong within 40 ms"
    assert result["closedDead"]


def test_a_server_that_does_not_speak_relay_v1_is_not_used(run):
    result = run("""
        const { client, next, of } = make({ id: "a" });
        client.open();
        (await next()).accept("");
        return { errors: of("error"), state: client.state };
    """)
    assert result["errors"] == [{"code": "protocol", "detail": "the server did not accept relay.v1", "ref": None}]
    assert result["state"] == "closed"


def test_drop_reconnects_and_a_failing_listener_breaks_nothing(page):
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    result = page.evaluate("""async () => {
        const { client, next, of } = make({ id: "a", backoffMin: 1 });
        client.on("open", () => { throw new Error("a listener's bug"); });
        client.open();
        (await next()).accept();
        client.drop();
        (await next()).accept();
        const state = client.state;
        client.close();
        return { state, opens: of("open").length, reconnecting: of("reconnecting").map((r) => r.reason) };
    }""")
    assert result == {"state": "open", "opens": 2, "reconnecting": ["dropped by drop()"]}
    page.wait_for_timeout(50)
    assert errors == ["a listener's bug"] * 2


def test_ids_are_read_as_the_server_reads_them(run):
    assert run("""return [2, "2", "a-b_c.9", "x".repeat(64), "x".repeat(65), "a b", true, 1.5, null, -1, 2 ** 60]
                    .map(relay.normalizeClientId);""") == [
        "2",
        "2",
        "a-b_c.9",
        "x" * 64,
        None,
        None,
        None,
        None,
        None,
        "-1",
        None,
    ]


def test_the_type_declarations_name_what_the_module_exports(run):
    exported = run("""
        const names = Object.keys(relay).sort();
        const methods = Object.getOwnPropertyNames(relay.RelayClient.prototype)
            .filter((name) => name !== "constructor").sort();
        return { names, methods, defaults: Object.keys(relay.DEFAULTS).sort() };
    """)
    declarations = RELAY_DTS.read_text()
    declared = sorted(set(re.findall(r"^export declare (?:const|class|function) (\w+)", declarations, re.M)))
    assert declared == exported["names"]
    client = declarations.split("export declare class RelayClient", 1)[1].split("\n}", 1)[0]
    members = sorted(set(re.findall(r"^  (?:readonly )?(\w+)[<(:]", client, re.M)) - {"constructor"})
    assert members == exported["methods"]
    tunables = declarations.split("export interface Tunables", 1)[1].split("\n}", 1)[0]
    assert sorted(re.findall(r"^  (\w+):", tunables, re.M)) == exported["defaults"]


def test_the_type_declarations_compile_with_typescript(tmp_path):
    tsc = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail("TypeScript is not installed: run `npm ci` (make test does it).", pytrace=False)
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "target": "es2022",
                    "module": "es2022",
                    "moduleResolution": "bundler",
                    "lib": ["es2022", "dom"],
                    "types": [],
                    "paths": {"relay": [str(RELAY_DTS)]},
                },
                "files": [str(HERE / "relay_usage.ts"), str(RELAY_DTS)],
            }
        )
    )
    result = subprocess.run([str(tsc), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

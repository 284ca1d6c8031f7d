"""relay.js and the demo in chromium, against real daphne processes and the real Redis.

The README's "Try it" recipe as written; the demo chatting, showing who is online and
resuming a client that went offline (a screenshot is saved as
``tests/e2e/artifacts/demo.png``); and relay.js through what a real server does to it: a
refused handshake, a frozen server, a killed and restarted one, a SIGTERM drain (with the
reconnect delays it reports: jittered, within the cap).
"""

import json
import signal
import time

import pytest

from .browser import collect_console, screenshot
from .conftest import run_manage_sync

#: The README's "Try it", as a user pastes it into the console of http://127.0.0.1:8000/
#: (only the port is the test server's).
TRY_IT = """\
const { RelayClient } = await import("/static/relay/relay.js")
const a = new RelayClient({ id: 1 }), b = new RelayClient({ id: 2 })
b.on("message", (m) => console.log("2 got", JSON.stringify(m.payload), "from", m.from))
await Promise.all([a.open(), b.open()])
await a.send([2], { hello: "world" })
"""
TRY_IT_RAW = """\
const ws = new WebSocket("ws://127.0.0.1:8000/ws?id=3", "relay.v1")
ws.onmessage = (e) => console.log("3 got", e.data)
ws.onopen = () => ws.send(JSON.stringify({ targets: [3], payload: { hello: "me" }, id: 1 }))
"""

#: Loads relay.js into a page of the server's origin, with helpers that record every event.
INSTALL = """async () => {
    window.relay = await import("/static/relay/relay.js");
    window.events = [];
    window.clients = {};
    window.connect = (name, options) => {
        const client = new relay.RelayClient(options);
        for (const type of ["connecting", "open", "reconnecting", "closed", "message", "recovered", "error"]) {
            client.on(type, (detail) => events.push({ name, type, ...detail }));
        }
        clients[name] = client;
        return client.open().then(() => true, (error) => error.code);
    };
    window.count = (type, name) => events.filter((e) => e.type === type && (!name || e.name === name)).length;
}"""


@pytest.fixture(scope="module")
def make_run(start_server):
    """The site as ``make run`` serves it: DEBUG on, the in-memory layer, the example chat."""
    return start_server(redis=False, name="make-run", env={"RELAY_EXAMPLES": "1"})


@pytest.fixture(scope="module")
def with_redis(start_server):
    """The site with Redis (delivery history), without the example chat."""
    return start_server(name="browser")


def relay_page(browser, server, path="/relay/healthz"):
    """A page of ``server``'s origin with relay.js loaded (``INSTALL``)."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}{path}")
    page.evaluate(INSTALL)
    return page


def demo_names(uid):
    """Two demo names unique to this test (the demo's ids are demo-<name>, in a shared Redis)."""
    tag = uid().split("-")[1]
    return f"a{tag}", f"b{tag}"


def panel(name):
    return f'[data-client="{name}"]'


def say(page, name, text):
    page.fill(f"{panel(name)} input.text", text)
    page.press(f"{panel(name)} input.text", "Enter")


def test_make_run_serves_the_demo_at_the_root_and_the_try_it_recipe_works(browser, make_run):
    page = browser.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    problems = collect_console(page)
    page.goto(f"http://127.0.0.1:{make_run.port}/")
    assert page.title() == "relay demo"
    page.wait_for_selector(f'{panel("alice")} .state[data-state="open"]')
    for recipe in (TRY_IT, TRY_IT_RAW):
        page.evaluate("async () => {\n" + recipe.replace("127.0.0.1:8000", f"127.0.0.1:{make_run.port}") + "\n}")
    deadline = time.monotonic() + 5
    while len([line for line in console if line.startswith(("2 got", "3 got"))]) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert '2 got {"hello":"world"} from 1' in console
    assert [line for line in console if line.startswith("3 got")] == [
        '3 got {"type":"message","from":"3","payload":{"hello":"me"}}',
        '3 got {"type":"ack","ref":1,"offsets":{}}',
    ]
    assert problems == []
    page.close()


def test_the_demo_chats_shows_who_is_online_and_resumes_a_client_that_went_offline(browser, with_redis, uid):
    alice, bob = demo_names(uid)
    page = browser.new_page()
    problems = collect_console(page)
    page.goto(f"http://127.0.0.1:{with_redis.port}/relay/demo/?names={alice},{bob}")
    for name in (alice, bob):
        page.wait_for_selector(f'{panel(name)} .state[data-state="open"]')
    say(page, alice, f"hello {bob}")
    page.wait_for_selector(f'{panel(bob)} .message[data-from="demo-{alice}"]:has-text("hello {bob}")')
    page.wait_for_selector(f'{panel(alice)} .message:has-text("hello {bob}")')  # the sender's own stream too
    online = f"document.querySelector('{panel(alice)} .online').textContent"
    page.wait_for_function(f"() => {online}.includes('{alice} ×1') && {online}.includes('{bob} ×1')")

    page.click(f"{panel(bob)} button.toggle")  # Go offline
    page.wait_for_selector(f'{panel(bob)} .state[data-state="closed"]')
    say(page, alice, "while you were away")
    page.wait_for_selector(f'{panel(alice)} .message:has-text("while you were away")')
    assert page.locator(f'{panel(bob)} .message:has-text("while you were away")').count() == 0
    page.click(f"{panel(bob)} button.toggle")  # Go online: relay.js resumes with ?since=
    page.wait_for_selector(f'{panel(bob)} .message:has-text("while you were away")')
    page.wait_for_selector(f'{panel(bob)} .note:has-text("1 missed message(s) replayed")')

    page.click(f"{panel(alice)} button.drop")
    page.wait_for_selector(f'{panel(alice)} .note:has-text("reconnecting in")')
    page.wait_for_selector(f'{panel(alice)} .note:has-text("0 missed message(s) replayed")')
    messages = page.locator(f"{panel(bob)} .message").all_inner_texts()
    assert messages == [f"#1{alice}: hello {bob}", f"#2{alice}: while you were away"]
    path = screenshot(page, "demo")
    assert path.stat().st_size > 10_000
    assert problems == []
    page.close()


def test_the_demo_without_history_reloads_the_room_from_the_example_chat(browser, make_run, uid):
    alice, bob = demo_names(uid)
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{make_run.port}/?names={alice},{bob}")
    for name in (alice, bob):
        page.wait_for_selector(f'{panel(name)} .state[data-state="open"]')
    page.click(f"{panel(bob)} button.toggle")
    page.wait_for_selector(f'{panel(bob)} .state[data-state="closed"]')
    say(page, alice, f"saved for {bob}")
    page.wait_for_selector(f'{panel(alice)} .message:has-text("saved for {bob}")')
    page.click(f"{panel(bob)} button.toggle")
    page.wait_for_selector(f'{panel(bob)} .message:has-text("saved for {bob}")')
    notes = page.locator(f"{panel(bob)} .note").all_inner_texts()
    assert notes[-1] == (
        "this relay keeps no delivery history (run it with REDIS_URL for resume); "
        "the room was reloaded from chat.history"
    )
    page.close()


def test_a_refused_handshake_is_not_retried(browser, with_redis, uid):
    page = relay_page(browser, with_redis)
    result = page.evaluate("() => connect('bad', { token: 'not-a-token' })")
    assert result == "refused"
    closed = page.evaluate("() => events.filter((e) => e.type === 'closed')")
    assert closed == [
        {"name": "bad", "type": "closed", "code": 1006, "reason": "the server refused the handshake", "refused": True}
    ]
    page.wait_for_timeout(700)
    assert page.evaluate("() => count('connecting')") == 2, "two attempts, then the probe said: refused"
    assert len(with_redis.events("refused", reason="invalid_token")) >= 2
    page.close()


def test_a_frozen_server_is_noticed_by_the_ping_and_left(browser, start_server, uid):
    server = start_server(name="frozen")
    page = relay_page(browser, server)
    client_id = uid("frozen")
    options = json.dumps({"id": client_id, "pingInterval": 300, "pongTimeout": 300, "backoffMax": 1000})
    assert page.evaluate(f"() => connect('frozen', {options})") is True
    server.process.send_signal(signal.SIGSTOP)
    try:
        page.wait_for_function("() => count('reconnecting') >= 1", timeout=5000)
    finally:
        server.process.send_signal(signal.SIGCONT)
    reconnecting = page.evaluate("() => events.find((e) => e.type === 'reconnecting')")
    assert (reconnecting["code"], reconnecting["reason"]) == (1006, "no pong within 300 ms")
    page.wait_for_function("() => count('open') >= 2", timeout=10000)
    page.close()


def test_relay_js_resumes_after_the_server_is_killed_and_started_again_on_its_port(browser, start_server, uid):
    server = start_server(name="killed")
    page = relay_page(browser, server)
    client_id = uid("restart")
    assert page.evaluate(f"() => connect('x', {json.dumps({'id': client_id, 'backoffMax': 1000})})") is True
    page.wait_for_function("() => count('recovered') === 1")
    server.process.kill()  # SIGKILL: no drain, the sockets just drop (1006)
    server.process.wait()
    page.wait_for_function("() => count('reconnecting') >= 1")
    pushed = run_manage_sync(server, "relay_send", client_id, "--payload", '{"sent": "while it was down"}')
    assert pushed.returncode == 0, pushed.stderr
    start_server(name="killed-again", port=server.port)
    page.wait_for_function("() => count('message') === 1", timeout=15000)
    message, recovered = page.evaluate(
        "() => [events.find((e) => e.type === 'message'), events.filter((e) => e.type === 'recovered')[1]]"
    )
    assert (message["payload"], message["from"], message["offset"]) == ({"sent": "while it was down"}, None, 1)
    assert (recovered["recovered"], recovered["replayed"], recovered["offset"]) == (True, 1, 1)
    page.close()


def test_a_drain_sends_every_client_back_with_jittered_delays_and_they_resume(browser, start_server, uid):
    server = start_server(name="drained")
    page = relay_page(browser, server)
    ids = [uid(f"drain{n}") for n in range(20)]
    opened = page.evaluate("""(ids) => Promise.all(ids.map((id) => connect(id, { id, backoffMax: 2000 })))""", ids)
    assert opened == [True] * 20
    page.wait_for_function("() => count('recovered') === 20")
    server.stop()  # SIGTERM: the relay closes every socket with 1001, then daphne stops
    page.wait_for_function("() => count('reconnecting') >= 20")
    pushed = run_manage_sync(server, "relay_send", ids[0], "--payload", '"sent during the restart"')
    assert pushed.returncode == 0, pushed.stderr
    first = page.evaluate(
        """() => Object.values(Object.groupBy(events.filter((e) => e.type === 'reconnecting'), (e) => e.name))
                  .map((list) => list[0])"""
    )
    assert {event["code"] for event in first} == {1001}
    delays = [event["delay"] for event in first]
    assert all(0 <= delay <= 500 for delay in delays), delays  # attempt 0: [0, backoffMin]
    assert len(set(delays)) == 20 and max(delays) - min(delays) > 100, f"not jittered: {sorted(delays)}"
    later = page.evaluate("() => events.filter((e) => e.type === 'reconnecting').map((e) => e.delay)")
    assert all(0 <= delay <= 2000 for delay in later), "every delay within [0, backoffMax]"
    start_server(name="drained-again", port=server.port)
    page.wait_for_function("() => count('open') === 40", timeout=15000)
    page.wait_for_function(f"() => count('message', {json.dumps(ids[0])}) === 1")
    message = page.evaluate(f"() => events.find((e) => e.type === 'message' && e.name === {json.dumps(ids[0])})")
    assert message["payload"] == "sent during the restart"
    page.close()


def test_a_page_of_another_port_of_the_same_host_cannot_open_a_socket(browser, make_run, with_redis, uid):
    """Issue 12, finding 1, as found: a page served from another port of an allowed host (the
    same site to the browser, so SameSite cookies go along) opened a socket and sent as the victim."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{make_run.port}/relay/healthz")  # the other origin: another port
    victim = uid("victim")
    outcome = page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url, "relay.v1");
            ws.onopen = () => resolve("open");
            ws.onclose = (event) => resolve(`closed ${event.code}`);
        })""",
        f"ws://127.0.0.1:{with_redis.port}/ws?id={victim}",
    )
    assert outcome == "closed 1006"  # the handshake was refused: the page never had a socket
    refused = with_redis.events("refused", reason="origin")
    assert any(f"http://127.0.0.1:{make_run.port}" in event.get("detail", "") for event in refused), refused
    assert not with_redis.events("connect", client=victim)
    page.close()

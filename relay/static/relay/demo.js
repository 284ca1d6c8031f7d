// The relay demo (templates/relay/demo.html): one relay.js client per panel, chatting in one room.
//
// It uses relay.js and nothing else. When the site has a "chat.history" call (the example chat
// app), a client that could not resume reloads the room from it; without one, it says what was
// missed. "Who is online" comes from the demo's own call, relay.demo.online.

const ONLINE_EVERY = 2000;

export function startDemo(RelayClient, config) {
  const container = document.getElementById("clients");
  const roster = new Set(config.names.map((name) => config.prefix + name));
  const panels = config.names.map((name) => createPanel(RelayClient, config, name, roster));
  for (const panel of panels) container.append(panel.root);
  for (const panel of panels) panel.client.open();
  return { roster, clients: Object.fromEntries(panels.map((panel) => [panel.name, panel.client])) };
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function createPanel(RelayClient, config, name, roster) {
  const clientId = config.prefix + name;
  const state = element("span", { class: "state", "data-state": "idle" }, "idle");
  const online = element("div", { class: "online" }, "");
  const log = element("div", { class: "log" });
  const drop = element("button", { type: "button", class: "drop" }, "Drop");
  const toggle = element("button", { type: "button", class: "toggle" }, "Go offline");
  const input = element("input", { class: "text", placeholder: `Say something as ${name}`, autocomplete: "off" });
  const form = element("form", {}, input, element("button", { class: "send" }, "Send"));
  const root = element(
    "section",
    { class: "client", "data-client": name },
    element("header", {}, element("strong", {}, name), element("code", {}, clientId), state),
    online,
    log,
    element("div", { class: "controls" }, drop, toggle),
    form,
  );

  const client = new RelayClient({
    // Called before every connection: each reconnect gets a fresh token.
    token: async () => {
      const response = await fetch(`${config.tokenUrl}?name=${encodeURIComponent(name)}`, {
        cache: "no-store",
        credentials: "same-origin",
      });
      if (response.status === 403 || response.status === 404) return null; // not allowed: stop
      if (!response.ok) throw new Error(`the token endpoint answered ${response.status}`);
      return (await response.json()).token;
    },
  });

  const seen = new Set(); // ids of saved chat messages: history and live deliveries overlap
  let hasHistory = true;

  const scroll = () => { log.scrollTop = log.scrollHeight; };
  const note = (text, kind = "note") => { log.append(element("div", { class: kind }, text)); scroll(); };
  const setState = (value, text = value) => {
    state.dataset.state = value;
    state.textContent = text;
  };

  function showChat(payload, delivery) {
    if (payload.id !== undefined) {
      if (seen.has(payload.id)) return;
      seen.add(payload.id);
    }
    const from = payload.from ?? delivery?.from ?? "server";
    if (typeof from === "string" && from.startsWith(config.prefix)) roster.add(from);
    const line = element(
      "div",
      { class: "message", "data-from": String(from) },
      element("span", { class: "offset" }, delivery?.offset != null ? `#${delivery.offset}` : ""),
      element("b", {}, String(from).replace(config.prefix, "")),
      `: ${payload.text}`,
    );
    if (payload.id !== undefined) {
      line.dataset.id = payload.id;
      const later = [...log.querySelectorAll(".message[data-id]")].find((other) => Number(other.dataset.id) > payload.id);
      if (later) {
        log.insertBefore(line, later);
        return;
      }
    }
    log.append(line);
    scroll();
  }

  async function loadHistory(why) {
    if (!hasHistory) {
      if (why) note(why);
      return;
    }
    try {
      const rows = await client.call("chat.history", { room: config.room });
      if (why) note(`${why}; the room was reloaded from chat.history`);
      for (const row of rows) showChat(row, null);
    } catch (error) {
      if (error.code === "unknown_call") {
        hasHistory = false;
        if (why) note(why);
      } else {
        note(`chat.history failed: ${error.code}`, "problem");
      }
    }
  }

  async function refreshOnline() {
    if (client.state !== "open") return;
    try {
      const counts = await client.call("relay.demo.online");
      for (const id of Object.keys(counts)) roster.add(id);
      const names = Object.entries(counts).map(([id, n]) => `${id.replace(config.prefix, "")} ×${n}`);
      online.textContent = `online: ${names.join(", ") || "nobody"}`;
    } catch (error) {
      online.textContent = `who is online: ${error.code}`;
    }
  }

  client.on("connecting", ({ attempt }) => setState("connecting", attempt ? `connecting (${attempt})` : "connecting"));
  client.on("open", () => {
    setState("open");
    toggle.textContent = "Go offline";
    refreshOnline();
  });
  client.on("reconnecting", ({ delay, code, reason }) => {
    setState("reconnecting", `reconnecting in ${Math.round(delay)} ms`);
    note(`connection lost (${code ?? "no code"}${reason ? `: ${reason}` : ""}), reconnecting in ${Math.round(delay)} ms`);
  });
  client.on("closed", ({ refused, reason }) => {
    setState("closed", refused ? "refused" : "offline");
    toggle.textContent = "Go online";
    note(refused ? `refused: ${reason}` : "offline: messages sent to it now are kept only with delivery history");
  });
  client.on("recovered", (recovered) => {
    if (recovered.recovered) {
      note(`resumed at #${recovered.offset}: ${recovered.replayed} missed message(s) replayed`);
    } else if (recovered.reason === "no_position") {
      loadHistory(recovered.epoch ? `connected; the stream of ${clientId} is at #${recovered.offset}` : "");
    } else if (recovered.reason === "history_off") {
      loadHistory("this relay keeps no delivery history (run it with REDIS_URL for resume)");
    } else {
      loadHistory(`could not resume (${recovered.reason})`);
    }
  });
  client.on("message", (message) => {
    const payload = message.payload;
    if (payload && payload.type === "chat" && payload.room === config.room) showChat(payload, message);
    else note(`${message.from ?? "server"} pushed ${JSON.stringify(payload)}`);
  });
  client.on("error", ({ code, detail }) => note(`${code}: ${detail}`, "problem"));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    if (client.state === "connecting" || client.state === "reconnecting") {
      note(`queued until ${name} is connected again: "${text}"`);
    }
    try {
      await client.send([...roster], { type: "chat", room: config.room, text });
    } catch (error) {
      note(`not sent (${error.code}): ${error.detail}`, "problem");
    }
  });
  drop.addEventListener("click", () => client.drop());
  toggle.addEventListener("click", () => {
    if (client.state === "closed") client.open();
    else client.close(1000, "went offline");
  });
  setInterval(refreshOnline, ONLINE_EVERY);

  return { name, root, client };
}

// The README's uses of relay.js, type-checked against relay.d.ts (test_relay_js.py runs tsc on it).
import { RelayClient, RelayError, type Delivery, type Recovered, type Sent } from "relay";

const relay = new RelayClient({
  token: async () => (await (await fetch("/token")).json()).token as string,
  pingInterval: 25_000,
  queueSize: 100,
});
relay.on("message", (message: Delivery) => console.log(message.from, message.payload, message.offset));
relay.on("recovered", (recovered: Recovered) => {
  if (!recovered.recovered) console.log("reload the state:", recovered.reason);
});
relay.on("reconnecting", ({ delay, attempt, code }) => console.log(`again in ${delay} ms (${attempt}, ${code})`));
relay.on("closed", ({ refused }) => console.log(refused ? "refused" : "closed"));
await relay.open();

const sent: Sent = await relay.send([2, "bob"], { text: "hi" });
const offset: number | undefined = sent.offsets["bob"];
const refused: number = sent.forbidden.length;
const sendAgainTo: string[] = sent.unavailable.map((error) => error.target); // their Redis was down
try {
  const history = await relay.call<{ text: string }[]>("chat.history", { room: "lobby" }, { timeout: 5000 });
  console.log(history.map((entry) => entry.text), offset, refused, sendAgainTo);
} catch (error) {
  if (error instanceof RelayError) console.log(error.code, error.detail, error.errors.length);
}
const dev = new RelayClient({ url: "ws://127.0.0.1:8000/ws", id: "1" });
dev.drop();
dev.close(1000, "bye");
export { dev };

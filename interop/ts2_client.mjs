// Interop check: the official TypeScript SDK 2.x client against our server on
// the 2026-07-28 ("modern", sessionless) revision.
//
// Usage: node ts2_client.mjs URL MODE
//   MODE `2026-07-28`: pinned (`server/discover` must offer it, no fallback);
//   MODE `auto`: probe with `server/discover`, fall back to `initialize`.
//
// Asserts the modern era was negotiated, lists and calls tools (with
// progress), mints a counter handle, continues it, and checks that a bogus
// handle is a tool error. Prints one JSON line; exits 1 on failure.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [url, mode] = process.argv.slice(2);
if (mode !== 'auto' && mode !== '2026-07-28') {
  console.error('usage: node ts2_client.mjs URL 2026-07-28|auto');
  process.exit(2);
}
const problems = [];
const check = (ok, what) => { if (!ok) problems.push(what); };

const client = new Client({ name: 'ts2-interop', version: '1.0.0' }, {
  versionNegotiation: { mode: mode === 'auto' ? 'auto' : { pin: mode } },
});
const transport = new StreamableHTTPClientTransport(new URL(url));
try {
  await client.connect(transport);
} catch (error) {
  console.error(`FAIL: connect in mode ${mode}: ${error}`);
  process.exit(1);
}
const protocol = client.getNegotiatedProtocolVersion();
const era = client.getProtocolEra();
check(protocol === '2026-07-28' && era === 'modern', `negotiated ${protocol} (${era}), expected 2026-07-28`);
check(transport.sessionId === undefined, `modern connection got session id ${transport.sessionId}`);

const tools = (await client.listTools()).tools.map((t) => t.name);
check(['echo', 'counter', 'slow'].every((n) => tools.includes(n)), `tools ${tools}`);
const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello from ts2' } });
check(echo.content[0]?.text === 'hello from ts2', `echo ${JSON.stringify(echo)}`);

const counter = async (args) => (await client.callTool({ name: 'counter', arguments: args })).structuredContent ?? {};
const minted = await counter({ by: 2 });
const handle = minted.counter_id;
check(typeof handle === 'string' && handle.length > 0, `counter minted no counter_id: ${JSON.stringify(minted)}`);
const next = await counter({ counter_id: handle });
const last = await counter({ by: 5, counter_id: handle });
const counters = [minted.counter, next.counter, last.counter];
check(counters.join(',') === '2,3,8', `counter handle did not keep state: ${counters}`);
check(next.counter_id === handle && last.counter_id === handle, `counter_id changed: ${next.counter_id} ${last.counter_id}`);
const bogus = await client.callTool({ name: 'counter', arguments: { counter_id: 'no-such-counter' } });
check(bogus.isError === true, `bogus counter_id was not a tool error: ${JSON.stringify(bogus)}`);

const progress = [];
const slow = await client.callTool(
  { name: 'slow', arguments: { steps: 3, delay_ms: 5 } },
  { onprogress: (p) => progress.push(p.progress) },
);
check(progress.join(',') === '1,2,3', `progress ${progress}`);
check(slow.content[0]?.text === 'completed 3 steps', `slow ${JSON.stringify(slow)}`);
await client.close();

console.log(JSON.stringify({
  sdk: '@modelcontextprotocol/client', mode, protocol, era, tools, counter_id: handle, counters,
  bogus: bogus.content[0]?.text, progress,
}));
if (problems.length > 0) {
  console.error(`FAIL: ${problems.join('; ')}`);
  process.exit(1);
}

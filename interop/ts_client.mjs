// Interop check: the official TypeScript SDK client against our server.
//
// Usage: node ts_client.mjs URL
//
// Connects, lists and calls tools (with progress), keeps state across calls,
// terminates the session, then checks that a client resuming the old session
// id gets the 404 the spec requires. Prints one JSON line; exits 1 on failure.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const url = new URL(process.argv[2]);
const problems = [];
const check = (ok, what) => { if (!ok) problems.push(what); };

const client = new Client({ name: 'ts-interop', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(url);
await client.connect(transport);
const session = transport.sessionId;
check(typeof session === 'string' && session.length > 0, 'no session id');

const tools = (await client.listTools()).tools.map((t) => t.name);
check(['echo', 'counter', 'slow'].every((n) => tools.includes(n)), `tools ${tools}`);
const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello from ts' } });
check(echo.content[0].text === 'hello from ts', `echo ${JSON.stringify(echo)}`);
const first = await client.callTool({ name: 'counter', arguments: { by: 2 } });
const second = await client.callTool({ name: 'counter', arguments: {} });
const counters = [first.structuredContent.counter, second.structuredContent.counter];
check(counters[0] === 2 && counters[1] === 3, `counter did not keep state: ${counters}`);
const progress = [];
const slow = await client.callTool(
  { name: 'slow', arguments: { steps: 3, delay_ms: 5 } },
  undefined,
  { onprogress: (p) => progress.push(p.progress) },
);
check(progress.join(',') === '1,2,3', `progress ${progress}`);
check(slow.content[0].text === 'completed 3 steps', `slow ${JSON.stringify(slow)}`);

await transport.terminateSession();
await client.close();

// A second client resuming the terminated session must be told it is gone.
const resumed = new Client({ name: 'ts-interop-resume', version: '1.0.0' });
const again = new StreamableHTTPClientTransport(url, { sessionId: session });
await resumed.connect(again);
let afterClose = 'no error';
try {
  await resumed.listTools();
} catch (error) {
  afterClose = error instanceof StreamableHTTPError ? error.code : String(error);
}
check(afterClose === 404, `old session id got ${afterClose}, expected 404`);
await resumed.close();

console.log(JSON.stringify({
  sdk: '@modelcontextprotocol/sdk', protocol: transport.protocolVersion, session, tools,
  counters, progress, after_close: afterClose,
}));
if (problems.length > 0) {
  console.error(`FAIL: ${problems.join('; ')}`);
  process.exit(1);
}

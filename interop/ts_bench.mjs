// Client-side cost of the official TypeScript SDK client: N sequential
// tools/call of `echo`, then N spread over C concurrent callers. Prints one
// JSON line with wall time and this process's CPU time per call.
// Usage: node ts_bench.mjs URL N C [legacy|2026-07-28]
//   legacy (default): the 1.x SDK in a session;
//   2026-07-28: the 2.x client pinned to that revision (no session).
const [url, n = '2000', c = '64', era = 'legacy'] = process.argv.slice(2);
const modern = era === '2026-07-28';
const { Client, StreamableHTTPClientTransport } = modern
  ? await import('@modelcontextprotocol/client')
  : {
      ...(await import('@modelcontextprotocol/sdk/client/index.js')),
      ...(await import('@modelcontextprotocol/sdk/client/streamableHttp.js')),
    };
const calls = Number(n);
const callers = Number(c);
const client = modern
  ? new Client({ name: 'ts2-bench', version: '1.0.0' },
    { versionNegotiation: { mode: { pin: '2026-07-28' } } })
  : new Client({ name: 'ts-bench', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);
const call = () => client.callTool({ name: 'echo', arguments: { text: 'benchmark' } });
for (let i = 0; i < 200; i++) await call(); // warm up

const latencies = [];
let cpu = process.cpuUsage();
let start = process.hrtime.bigint();
for (let i = 0; i < calls; i++) {
  const t = process.hrtime.bigint();
  await call();
  latencies.push(Number(process.hrtime.bigint() - t) / 1e3);
}
const sequentialWall = Number(process.hrtime.bigint() - start) / 1e3 / calls;
let used = process.cpuUsage(cpu);
const sequentialCpu = (used.user + used.system) / calls;

cpu = process.cpuUsage();
start = process.hrtime.bigint();
const per = Math.ceil(calls / callers);
await Promise.all(Array.from({ length: callers }, async () => {
  for (let i = 0; i < per; i++) await call();
}));
const concurrentWall = Number(process.hrtime.bigint() - start) / 1e3 / (per * callers);
used = process.cpuUsage(cpu);
const concurrentCpu = (used.user + used.system) / (per * callers);

latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.round((latencies.length - 1) * p))];
console.log(JSON.stringify({
  sequential_us: sequentialWall, sequential_cpu_us: sequentialCpu,
  p50_us: pct(0.5), p99_us: pct(0.99), max_us: latencies[latencies.length - 1],
  concurrent_us: concurrentWall, concurrent_cpu_us: concurrentCpu,
}));
if (!modern) await transport.terminateSession();
await client.close();

// Client-side cost of the official TypeScript SDK 2.x client pinned to the
// 2026-07-28 era: N sequential tools/call of `echo`, then N spread over C
// concurrent callers. Prints one JSON line with wall time and this
// process's CPU time per call. Usage: node ts2_bench.mjs URL N C
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [url, n = '2000', c = '64'] = process.argv.slice(2);
const calls = Number(n);
const callers = Number(c);
const client = new Client({ name: 'ts2-bench', version: '1.0.0' },
  { versionNegotiation: { mode: { pin: '2026-07-28' } } });
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
await client.close();

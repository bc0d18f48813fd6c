// Interop/benchmark peer: an official TypeScript SDK 2.x server. It serves the
// 2026-07-28 ("modern", sessionless) revision on /mcp through the SDK's own
// `createMcpHandler` (one fresh McpServer per request, single JSON responses
// unless a tool emits progress), and the 2025 revisions through the SDK's
// stateless legacy fallback (no sessions: GET/DELETE answer 405).
//
// Tools: `echo {text}`; `counter {by?, counter_id?}` with durable handles in
// an in-memory Map (the same contract as our server's modern path);
// `slow {steps, delay_ms}` with progress notifications; `greet`, which asks
// the user's name through an `input_required` result (multi round-trip).
//
// Usage: node ts2_server.mjs PORT   (0 picks a free port)
// Prints `listening on http://127.0.0.1:PORT/mcp` on stdout once ready.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { localhostHostValidation, localhostOriginValidation, toNodeHandler } from '@modelcontextprotocol/node';
import {
  acceptedContent, createMcpHandler, fromJsonSchema, inputRequired, McpServer,
} from '@modelcontextprotocol/server';

const counters = new Map(); // counter_id -> count
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Schemas are compiled once; the factory below runs once per request.
const echoInput = fromJsonSchema({
  type: 'object', properties: { text: { type: 'string' } }, required: ['text'],
});
const counterInput = fromJsonSchema({
  type: 'object', properties: { by: { type: 'integer' }, counter_id: { type: 'string' } },
});
const nameSchema = fromJsonSchema({
  type: 'object', properties: { name: { type: 'string' } }, required: ['name'],
});
const noInput = fromJsonSchema({ type: 'object', properties: {} });
const slowInput = fromJsonSchema({
  type: 'object',
  properties: { steps: { type: 'integer' }, delay_ms: { type: 'integer' } },
  required: ['steps', 'delay_ms'],
});

function factory() {
  const server = new McpServer({ name: 'ts2-peer', version: '1.0.0' });
  server.registerTool('echo', { description: 'Returns the text it is given.', inputSchema: echoInput },
    async ({ text: t }) => text(t));
  server.registerTool('counter', {
    description: 'Adds `by` (default 1) to the count behind `counter_id`; without one, starts a new count.',
    inputSchema: counterInput,
  }, async ({ by = 1, counter_id: given }) => {
    if (given !== undefined && !counters.has(given)) {
      return { ...text(`unknown or expired counter_id ${given}: call counter again without counter_id`), isError: true };
    }
    const id = given ?? randomUUID();
    const counter = (counters.get(id) ?? 0) + by;
    counters.set(id, counter);
    return { ...text(String(counter)), structuredContent: { counter, counter_id: id } };
  });
  server.registerTool('slow', { description: 'Reports progress for each step.', inputSchema: slowInput },
    async ({ steps, delay_ms: delay }, ctx) => {
      const progressToken = ctx.mcpReq._meta?.progressToken;
      for (let step = 1; step <= steps; step++) {
        await sleep(delay);
        if (progressToken !== undefined) {
          await ctx.mcpReq.notify({
            method: 'notifications/progress', params: { progressToken, progress: step, total: steps },
          });
        }
      }
      return text(`completed ${steps} steps`);
    });
  server.registerTool('greet', { description: "Greets the user, whose name it asks.", inputSchema: noInput },
    async (_args, ctx) => {
      const answer = acceptedContent(ctx.mcpReq.inputResponses, 'name', nameSchema);
      if (answer?.name === undefined) {
        return inputRequired({
          inputRequests: { name: inputRequired.elicit({ message: 'Your name?', requestedSchema: nameSchema }) },
        });
      }
      return text(`Hello, ${answer.name}!`);
    });
  return server;
}

const handler = createMcpHandler(factory, { onerror: (error) => console.error('ts2_server:', error) });
const serve = toNodeHandler(handler);
// Plain node:http has no middleware: the SDK's DNS-rebinding guards go first.
const validHost = localhostHostValidation();
const validOrigin = localhostOriginValidation();
const http = createServer((req, res) => {
  if (!validHost(req, res) || !validOrigin(req, res)) return;
  if (new URL(req.url, 'http://localhost').pathname !== '/mcp') {
    res.writeHead(404).end();
    return;
  }
  serve(req, res);
});
http.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${http.address().port}/mcp`);
});

import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { CommandService } from '../../commands/command-service.js';
import { abortWhenClientGone } from './client-gone.js';
import { commandIdParams, commandView, errorBody, getCommandQuery, listCommandsQuery, sendCommandBody } from './schemas.js';

export function commandRoutes(commands: CommandService): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.post(
      '/v1/commands',
      {
        schema: {
          tags: ['commands'],
          summary: 'Send a Run Command document to hosts',
          description: 'Creates one invocation per target host. With `wait`, answers when the command is done or the wait ends.',
          body: sendCommandBody,
          response: { 201: commandView, '4xx': errorBody },
        },
      },
      async (request, reply) => {
        const { wait, ...req } = request.body;
        const createdBy = request.principal ? { createdBy: { tokenId: request.principal.tokenId, name: request.principal.tokenName } } : {};
        const view = await commands.send(request.tenantId, req, wait ? { waitMs: wait * 1000, signal: abortWhenClientGone(reply.raw), ...createdBy } : createdBy);
        return reply.status(201).send(view);
      },
    );
    app.get(
      '/v1/commands',
      { schema: { tags: ['commands'], summary: 'List recent commands', querystring: listCommandsQuery, response: { 200: z.object({ commands: z.array(commandView) }) } } },
      async (request) => ({ commands: await commands.list(request.tenantId, request.query.limit ?? 50) }),
    );
    app.get(
      '/v1/commands/:id',
      {
        schema: {
          tags: ['commands'],
          summary: 'Show a command and its invocations',
          description: 'With `wait=S`, answers when the command is done or after S seconds.',
          params: commandIdParams,
          querystring: getCommandQuery,
          response: { 200: commandView, '4xx': errorBody },
        },
      },
      async (request, reply) =>
        request.query.wait ? commands.wait(request.tenantId, request.params.id, request.query.wait * 1000, abortWhenClientGone(reply.raw)) : commands.get(request.tenantId, request.params.id),
    );
    app.post(
      '/v1/commands/:id/cancel',
      { schema: { tags: ['commands'], summary: 'Cancel a command', params: commandIdParams, response: { 200: commandView, '4xx': errorBody } } },
      async (request) => commands.cancel(request.tenantId, request.params.id),
    );
    app.get(
      '/v1/commands/:id/output',
      {
        schema: {
          tags: ['commands'],
          summary: 'Follow a command live',
          description: 'Newline-delimited JSON: `output` events as the hosts print, `status` events, and a final `command` event with the finished command.',
          params: commandIdParams,
        },
      },
      async (request, reply) => {
        const id = request.params.id;
        const first = await commands.get(request.tenantId, id);
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
        const write = (event: unknown) => res.write(`${JSON.stringify(event)}\n`);
        // From here to subscribe() nothing awaits, so no output event can fall between the snapshot
        // and the subscription. (Output that lands between get() and here is in the final event.)
        for (const inv of first.invocations) {
          if (inv.stdout) write({ type: 'output', hostId: inv.hostId, stream: 'stdout', data: inv.stdout });
          if (inv.stderr) write({ type: 'output', hostId: inv.hostId, stream: 'stderr', data: inv.stderr });
        }
        let finished = false;
        const finish = async () => {
          if (finished) return;
          finished = true;
          unsubscribe();
          write({ type: 'command', command: await commands.get(request.tenantId, id) });
          res.end();
        };
        const unsubscribe = commands.follow(id, (event) => {
          if (event.type === 'done') void finish();
          else write(event);
        });
        res.on('close', unsubscribe);
        const now = await commands.get(request.tenantId, id);
        if (now.completedAt) await finish();
      },
    );
    done();
  };
}

/** Images: bake (streamed progress), list, inspect, remove, gc, capture. */
import type { FastifyReply } from 'fastify';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorMessage, isBerthError } from '../../core/errors.js';
import type { BakeEvent } from '../../images/builder.js';
import type { ImageService } from '../../images/image-service.js';
import { errorBody } from './schemas.js';

const usage = z.object({ pools: z.array(z.string()), hosts: z.number() });
const imageView = z.object({
  name: z.string(),
  id: z.string(),
  parent: z.string(),
  parentId: z.string().nullable(),
  base: z.string(),
  layers: z.array(z.string()),
  sizeBytes: z.number(),
  createdAt: z.string(),
  buildMs: z.number().nullable(),
  usedBy: usage,
  manifest: z.record(z.string(), z.unknown()).optional(),
});
const nameParams = z.object({ name: z.string().min(1) });
const errors = { '4xx': errorBody, '5xx': errorBody };
const STREAM_DESCRIPTION =
  'Newline-delimited JSON: `image`, `step` (state running/cached/done/failed, elapsed time, layer id, output tail on failure), `output` and `log` events as the bake goes, then one `result` event with the published images, or one `error` event ({code, message, hint, details}).';

export function imageRoutes(images: ImageService): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.post(
      '/v1/images/builds',
      {
        schema: {
          tags: ['images'],
          summary: 'Bake images from berth.yaml',
          description: `The spec is checked first (errors are 400 with file, line and column); then the response streams. ${STREAM_DESCRIPTION}`,
          body: z.object({
            text: z.string().describe("berth.yaml's content"),
            file: z.string().min(1).describe('Its path, as messages should name it'),
            projectDir: z.string().startsWith('/').describe("Absolute directory on the server's machine that relative paths in the spec are taken from"),
            name: z.string().min(1).optional().describe('Image to bake (with its parents from the same file); default: all'),
          }),
        },
      },
      async (request, reply) => {
        const req = { ...request.body, ...(request.principal ? { builtBy: request.principal.tokenName } : {}) };
        const plan = await images.plan(request.tenantId, req);
        await streamBake(reply, (emit, signal) => images.build(request.tenantId, req, plan, emit, signal));
      },
    );
    app.post(
      '/v1/images/:name/capture',
      {
        schema: {
          tags: ['images'],
          summary: "Capture a running host's changes as a new image over its own",
          description: STREAM_DESCRIPTION,
          params: nameParams,
          body: z.object({ hostId: z.string().min(1) }),
        },
      },
      async (request, reply) => {
        await images.hostForCapture(request.tenantId, request.body.hostId, request.params.name);
        await streamBake(reply, async (emit, signal) => [await images.capture(request.tenantId, request.body.hostId, request.params.name, emit, signal)]);
      },
    );
    app.get('/v1/images', { schema: { tags: ['images'], summary: 'List images (current builds) and what uses them', response: { 200: z.object({ images: z.array(imageView) }), ...errors } } }, async (request) => ({
      images: await images.list(request.tenantId),
    }));
    app.get(
      '/v1/images/:name',
      { schema: { tags: ['images'], summary: 'An image with its manifest: lineage, layers, timings, sizes, digests, checks', params: nameParams, response: { 200: imageView.extend({ builds: z.array(z.object({ id: z.string(), current: z.boolean(), createdAt: z.string() })) }), ...errors } } },
      async (request) => images.inspect(request.tenantId, request.params.name),
    );
    app.delete(
      '/v1/images/:name',
      { schema: { tags: ['images'], summary: 'Remove an image (refused while a pool or a live host uses it)', params: nameParams, response: { 200: z.object({ removed: z.number() }), ...errors } } },
      async (request) => images.remove(request.tenantId, request.params.name),
    );
    app.post(
      '/v1/images/gc',
      { schema: { tags: ['images'], summary: 'Remove old builds no host runs, every layer no image uses and the cached artifacts of fetch steps', response: { 200: z.object({ builds: z.number(), layers: z.number(), artifacts: z.number(), bytes: z.number() }), ...errors } } },
      async (request) => images.gc(request.tenantId),
    );
    done();
  };
}

/** Streams bake events; a client that goes away cancels the bake (its hosts are terminated). */
async function streamBake(reply: FastifyReply, work: (emit: (e: BakeEvent) => void, signal: AbortSignal) => Promise<unknown[]>): Promise<void> {
  const controller = new AbortController();
  reply.hijack();
  const res = reply.raw;
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
  const write = (event: unknown) => {
    if (!res.destroyed) res.write(`${JSON.stringify(event)}\n`);
  };
  try {
    write({ type: 'result', results: await work(write, controller.signal) });
  } catch (err) {
    write({ type: 'error', error: isBerthError(err) ? err.toJSON() : { code: 'internal', message: errorMessage(err), hint: 'See the server log.' } });
  }
  res.end();
}

/** Maps every failure to `{code, message, hint}` with a fitting status; nothing leaks a stack trace. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { BerthError } from '../../core/errors.js';
import { loginPage } from '../../dashboard/routes-dashboard.js';

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof BerthError) {
      // A person opening the dashboard without a (valid) token gets a page to paste one, not JSON.
      if (err.status === 401 && (request.url.split('?')[0] ?? '') === '/dashboard' && request.headers.accept?.includes('text/html')) {
        return reply.status(401).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(loginPage(`${err.message}.`));
      }
      if (err.status >= 500) request.log.error({ err }, err.message);
      const retryAfter = err.details?.['retryAfterS'];
      if (typeof retryAfter === 'number') void reply.header('retry-after', String(Math.max(1, Math.ceil(retryAfter))));
      return reply.status(err.status).send(err.toJSON());
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation.map((v) => `${v.instancePath.replace(/^\//, '').replace(/\//g, '.') || (v.params['issue'] as { path?: PropertyKey[] } | undefined)?.path?.map(String).join('.') || '(body)'}: ${v.message ?? 'invalid'}`);
      return reply.status(400).send({
        code: 'validation_failed',
        message: `invalid ${err.validationContext ?? 'request'}: ${issues.join('; ')}`,
        hint: 'Fix the listed fields; see /docs for the request schema.',
      });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError) {
      return reply.status(400).send({ code: 'bad_request', message: `malformed JSON body: ${err.message}`, hint: 'Send a valid JSON document with Content-Type: application/json.' });
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send({ code: 'bad_request', message: err.message, hint: 'Check the request against /docs.' });
    }
    request.log.error({ err }, 'unhandled error');
    return reply.status(500).send({ code: 'internal', message: 'internal error', hint: 'See the server log; report it if it persists.' });
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({ code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0] ?? ''}`, hint: 'See /docs for the API.' }),
  );
}

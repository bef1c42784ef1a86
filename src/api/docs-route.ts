import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';
import { z } from 'zod';
import { REPORT_NAMES } from '../reports/catalogue.ts';
import { healthSchema, messageSchema, sendEnvelopeSchema, sendRequestSchema, serviceInfoSchema } from './schemas.ts';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string, description: string) => ({ description, content: { 'application/json': { schema: ref(name) } } });

/** The OpenAPI document, generated from the same zod schemas that validate requests. */
const messageParameters = [
  { name: 'id', in: 'path', required: true, schema: { type: 'integer', minimum: 1 } },
  { name: 'key', in: 'query', required: false, description: "The message's key, from the status_url of the send's answer", schema: { type: 'string' } },
];

export function openApiDocument(): Record<string, unknown> {
  const schema = (s: z.ZodType, io: 'input' | 'output') => {
    const { $schema: _ignored, ...rest } = z.toJSONSchema(s, { io, unrepresentable: 'any' });
    return rest;
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'User SMS Sending Service',
      version: '1.0.0',
      description: 'Sends SMS on behalf of enterprises through WebSMS.by, at most 3 per enterprise per rolling minute.',
    },
    paths: {
      '/': { get: { summary: 'Service status', responses: { 200: json('ServiceInfo', 'Running') } } },
      '/send': {
        post: {
          summary: 'Send an SMS on behalf of an enterprise',
          description:
            'Queues the message and waits (bounded) for the result. 202 when it is still waiting for its rate-limit slot; ' +
            'ask its `status_url` (GET /messages/{id}?key=…) later. `?wait=false` or `Prefer: respond-async` answers 202 at once.',
          parameters: [
            { name: 'wait', in: 'query', required: false, schema: { type: 'boolean' } },
            { name: 'Prefer', in: 'header', required: false, description: '`respond-async`: answer 202 at once', schema: { type: 'string' } },
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: false,
              description: 'The same key for the same enterprise (24 h) returns the first answer and sends nothing new; a different body is refused with 422',
              schema: { type: 'string', minLength: 1, maxLength: 255 },
            },
            { name: 'X-Service-Name', in: 'header', required: false, schema: { type: 'string', maxLength: 50 } },
          ],
          requestBody: { required: true, content: { 'application/json': { schema: ref('SendRequest') } } },
          responses: {
            200: json('SendEnvelope', 'Sent, or refused by WebSMS (success:false with its code and description)'),
            202: json('SendEnvelope', 'Accepted and queued; will be sent'),
            400: json('SendEnvelope', 'Invalid phone number or malformed JSON'),
            404: json('SendEnvelope', 'Enterprise not found or has no WebSMS configuration'),
            413: json('SendEnvelope', 'Body too large'),
            415: json('SendEnvelope', 'Not JSON'),
            401: json('SendEnvelope', 'API_TOKENS configured and no valid bearer token'),
            422: json('SendEnvelope', 'Invalid field (named in error), or an Idempotency-Key reused with a different request'),
            429: json('SendEnvelope', 'Request rate or daily cap per enterprise exceeded (Retry-After)'),
            503: json('SendEnvelope', 'Database or queue unavailable'),
          },
        },
      },
      '/messages/{id}': {
        get: {
          summary: 'The stored state of one message',
          description: "With the message's key (its `status_url`), a token allowed its enterprise, or the operator; anyone else gets 404, as for a missing message.",
          parameters: messageParameters,
          responses: { 200: json('Message', 'Found'), 404: json('SendEnvelope', 'No such message'), 429: json('SendEnvelope', 'Too many failed keys or credentials from this client (Retry-After)') },
        },
        delete: {
          summary: 'Cancel a message not yet claimed for sending',
          description: 'Allowed as for GET. 200: cancelled (status `failed`, error_code `cancelled`), nothing is sent. 409: being sent or finished.',
          parameters: messageParameters,
          responses: {
            200: json('Message', 'Cancelled'),
            404: json('SendEnvelope', 'No such message'),
            409: json('SendEnvelope', 'Too late: being sent or finished (its status and the message are in the answer)'),
          },
        },
      },
      '/enterprises/{number}/balance': {
        get: {
          summary: "The enterprise's WebSMS balance (BYN), for operators and tokens allowed the enterprise; `websms_user` only for operators",
          parameters: [{ name: 'number', in: 'path', required: true, schema: { type: 'string', maxLength: 10 } }],
          responses: {
            200: {
              description: 'Balance',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    properties: {
                      enterprise_number: { type: 'string' },
                      enterprise_name: { type: ['string', 'null'] },
                      websms_user: { type: 'string' },
                      sms: { type: 'number' },
                      viber: { type: 'number' },
                      total: { type: 'number' },
                      currency: { type: 'string', const: 'BYN' },
                    },
                  },
                },
              },
            },
            404: json('SendEnvelope', 'Enterprise not found or has no WebSMS configuration'),
            502: json('SendEnvelope', 'WebSMS refused or did not answer'),
          },
        },
      },
      '/reports/{name}': {
        get: {
          summary: 'Operator reports (operators only: HTTP Basic, or a direct local peer when ADMIN_USER is unset)',
          parameters: [
            { name: 'name', in: 'path', required: true, schema: { type: 'string', enum: [...REPORT_NAMES] } },
            { name: 'enterprise', in: 'query', required: false, schema: { type: 'string' } },
            { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1 } },
          ],
          responses: { 200: { description: 'Rows (phones masked)' }, 404: json('SendEnvelope', 'No such report') },
        },
      },
      '/health': { get: { summary: 'Health of the database, Redis, queue and workers', responses: { 200: json('Health', 'Healthy'), 503: json('Health', 'Unhealthy') } } },
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'Only when API_TOKENS is configured' },
        operator: { type: 'http', scheme: 'basic', description: 'ADMIN_USER / ADMIN_PASSWORD, for reports, balance, metrics and the dashboard (unset: a direct local peer only)' },
      },
      schemas: {
        SendRequest: schema(sendRequestSchema, 'input'),
        SendEnvelope: schema(sendEnvelopeSchema, 'output'),
        Message: schema(messageSchema, 'output'),
        Health: schema(healthSchema, 'output'),
        ServiceInfo: schema(serviceInfoSchema, 'output'),
      },
    },
  };
}

export function docsRoute(): Router {
  const router = Router();
  const document = openApiDocument();
  router.get('/openapi.json', (_req, res) => {
    res.json(document);
  });
  router.use('/docs', swaggerUi.serve, swaggerUi.setup(document));
  return router;
}

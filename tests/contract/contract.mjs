// Drive the official elizaOS client (@elizaos/api-client) against a live sessions_admin server.
//
//   BASE_URL=http://127.0.0.1:3110 CLIENT_KEY=... ADMIN_KEY=... node contract.mjs
//
// Prints one line per check ("ok <name>: ..." or "FAIL <name>: ...") and, last, a JSON
// summary line; exits non-zero when a check fails.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

import { ApiError, ElizaClient } from '@elizaos/api-client';

const require = createRequire(import.meta.url);
const clientVersion = require('@elizaos/api-client/package.json').version;

const baseUrl = process.env.BASE_URL;
const clientKey = process.env.CLIENT_KEY;
const adminKey = process.env.ADMIN_KEY;
if (!baseUrl || !clientKey || !adminKey) {
  console.error('BASE_URL, CLIENT_KEY and ADMIN_KEY must be set');
  process.exit(2);
}

const client = ElizaClient.create({ baseUrl, apiKey: clientKey, timeout: 10000 });
const admin = ElizaClient.create({ baseUrl, apiKey: adminKey, timeout: 10000 });
const anonymous = ElizaClient.create({ baseUrl, timeout: 10000 });

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const results = [];

async function check(name, body) {
  try {
    const detail = await body();
    results.push({ name, ok: true });
    console.log(`ok ${name}${detail ? `: ${detail}` : ''}`);
  } catch (error) {
    results.push({ name, ok: false, error: String(error?.stack || error) });
    console.log(`FAIL ${name}: ${error?.stack || error}`);
  }
}

async function expectApiError(promise, status, code) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ApiError, `expected ApiError, got ${error}`);
    assert.equal(error.status, status, `status of ${error.code}: ${error.message}`);
    assert.equal(error.code, code);
    assert.ok(error.message && typeof error.message === 'string');
    return error;
  }
  assert.fail(`expected ApiError ${status} ${code}, but the call succeeded`);
}

const agentId = randomUUID();
const userId = randomUUID();
let sessionId;

await check('checkHealth', async () => {
  const health = await anonymous.sessions.checkHealth();
  assert.equal(health.status, 'healthy');
  assert.equal(typeof health.activeSessions, 'number');
  assert.match(health.timestamp, ISO_MS);
  return `status=${health.status} activeSessions=${health.activeSessions}`;
});

await check('createSession', async () => {
  const created = await client.sessions.createSession({
    agentId,
    userId,
    metadata: { platform: 'contract-test', username: 'ada' },
  });
  assert.match(created.sessionId, /^[0-9a-f-]{36}$/);
  assert.equal(created.agentId, agentId);
  assert.equal(created.userId, userId);
  assert.deepEqual(created.metadata, { platform: 'contract-test', username: 'ada' });
  assert.match(created.createdAt, ISO_MS);
  assert.ok(!Number.isNaN(new Date(created.createdAt).getTime()));
  sessionId = created.sessionId;
  return `sessionId=${sessionId}`;
});

await check('getSession', async () => {
  const info = await client.sessions.getSession(sessionId);
  assert.equal(info.sessionId, sessionId);
  assert.equal(info.agentId, agentId);
  assert.equal(info.userId, userId);
  assert.match(info.lastActivity, ISO_MS);
  assert.match(info.expiresAt, ISO_MS);
  assert.equal(info.timeoutConfig.timeoutMinutes, 30);
  assert.equal(info.isNearExpiration, false);
  assert.ok(info.timeRemaining > 29 * 60000 && info.timeRemaining <= 30 * 60000);
  return `timeRemaining=${info.timeRemaining}ms expiresAt=${info.expiresAt}`;
});

await check('listSessions (admin key)', async () => {
  const listing = await admin.sessions.listSessions();
  assert.ok(Array.isArray(listing.sessions));
  assert.ok(listing.sessions.some((s) => s.sessionId === sessionId));
  assert.ok(listing.total >= 1);
  assert.equal(listing.stats.totalSessions, listing.stats.activeSessions + listing.stats.expiredSessions);
  return `total=${listing.total} stats=${JSON.stringify(listing.stats)}`;
});

await check('listSessions with the client key is ApiError FORBIDDEN 403', async () => {
  const error = await expectApiError(client.sessions.listSessions(), 403, 'FORBIDDEN');
  return error.message;
});

await check('getSession without a key is ApiError UNAUTHORIZED 401', async () => {
  const error = await expectApiError(anonymous.sessions.getSession(sessionId), 401, 'UNAUTHORIZED');
  return error.message;
});

await check('createSession with a bad agentId is ApiError VALIDATION_ERROR 400', async () => {
  const error = await expectApiError(
    client.sessions.createSession({ agentId: 'not-a-uuid', userId }),
    400,
    'VALIDATION_ERROR',
  );
  assert.equal(error.message, "Invalid UUID format for field 'agentId'");
  return error.message;
});

await check('deleteSession', async () => {
  const deleted = await client.sessions.deleteSession(sessionId);
  // The client unwraps {success: true, data: {...}} and returns data.
  assert.deepEqual(deleted, { sessionId });
  return JSON.stringify(deleted);
});

await check('getSession after delete is ApiError SESSION_NOT_FOUND 404', async () => {
  const error = await expectApiError(client.sessions.getSession(sessionId), 404, 'SESSION_NOT_FOUND');
  return error.message;
});

await check('deleteSession again is ApiError SESSION_NOT_FOUND 404', async () => {
  const error = await expectApiError(client.sessions.deleteSession(sessionId), 404, 'SESSION_NOT_FOUND');
  return error.message;
});

const failed = results.filter((r) => !r.ok);
console.log(JSON.stringify({ client: `@elizaos/api-client@${clientVersion}`, passed: results.length - failed.length, failed: failed.length, results }));
process.exit(failed.length ? 1 : 0);

// A real OpenID Provider for pyrogate's single sign-on tests: npm's oidc-provider (OpenID
// Certified) on 127.0.0.1, with its development login form (any login name and any password
// sign in), a `groups` claim, and consent granted without asking (the clients are first-party).
//
//   OIDC_CLIENTS='[{"client_id":"pyrogate","client_secret":"…","redirect_uris":["http://127.0.0.1:4040/auth/oidc/callback"]}]' \
//   node tests/oidc/provider.mjs
//
// Prints one JSON line, {"issuer":"http://127.0.0.1:PORT"}, once it listens; runs until stdin
// closes (the test that started it ended) or it is killed.
//
// Accounts: the login name is the subject. Groups and e-mail follow the name's first word:
//   admin…  → groups ["pyro-admins", "everyone"], e-mail <name>@example.com, verified
//   dev…    → groups ["developers", "everyone"], e-mail <name>@example.com, verified
//   other…  → groups ["everyone"], e-mail <name>@example.com, verified
//   unverified… → groups ["developers"], e-mail <name>@elsewhere.example, NOT verified
// OIDC_GROUPS='{"name":["g1"]}' overrides the groups of given names.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as path from 'node:path';
import { createRequire } from 'node:module';

// oidc-provider is installed outside the source tree (scripts/install-test-deps.sh puts it in
// target/test-deps/oidc); PYROGATE_OIDC_DEPS names that directory.
const deps = process.env.PYROGATE_OIDC_DEPS;
const require = createRequire(path.join(deps ?? path.dirname(new URL(import.meta.url).pathname), 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const clients = JSON.parse(process.env.OIDC_CLIENTS ?? '[]').map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...c,
}));
const overrides = JSON.parse(process.env.OIDC_GROUPS ?? '{}');

function account(id) {
  const unverified = id.startsWith('unverified');
  let groups = ['everyone'];
  if (id.startsWith('admin')) groups = ['pyro-admins', 'everyone'];
  else if (id.startsWith('dev') || unverified) groups = ['developers', 'everyone'];
  if (overrides[id]) groups = overrides[id];
  return {
    sub: id,
    preferred_username: id,
    name: `Test ${id}`,
    email: unverified ? `${id}@elsewhere.example` : `${id}@example.com`,
    email_verified: !unverified,
    groups,
  };
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa = { ...privateKey.export({ format: 'jwk' }), kid: 'rsa-1', use: 'sig', alg: 'RS256' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [rsa] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return account(id); } };
  },
  // First-party clients: grant what they ask for without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
    await grant.save();
    return grant;
  },
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));

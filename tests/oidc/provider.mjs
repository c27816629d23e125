// A real OpenID provider for the test suite: panva/oidc-provider (OpenID Certified), on loopback.
//
//   node provider.mjs --port 4711 --keys keys.json [--redirect-uri http://127.0.0.1:8080/ui/auth/callback]...
//
// Issuer http://127.0.0.1:PORT; signing keys from a JWKS file with private parts (the Python fixture
// writes it, so a test can restart the provider with rotated keys, or start a second issuer with the
// same keys); static clients and accounts below. Access tokens are JWTs (RFC 9068) whenever a resource
// indicator (RFC 8707) names one of RESOURCES: audience = the indicator, plus a `groups` claim from
// the account (authorization code) or the client (client credentials). Prints "ready <issuer>" on
// stdout once it listens. Stops on SIGTERM.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    keys: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
  },
});
const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(args.keys, 'utf8'));

// People who sign in through the console (any password: the provider's development login form).
const ACCOUNTS = {
  alice: { name: 'Alice Risk', groups: ['risk'] },
  bob: { name: 'Bob Publisher', groups: ['ml-publishers'] },
  carol: { name: 'Carol Admin', groups: ['platform-admins'] },
  dave: { name: 'Dave Approver', groups: ['ml-publishers', 'approvers'] },
  mallory: { name: 'Mallory Visitor', groups: ['visitors'] },
};

// Machines that use client credentials (pipelines), with the groups their tokens carry.
const SERVICE_CLIENTS = {
  pipeline: { secret: 'pipeline-secret', groups: ['ml-publishers'] },
  reader: { secret: 'reader-secret', groups: ['risk'] },
  stranger: { secret: 'stranger-secret', groups: ['visitors'] },
  // Its access tokens live one second: the expiry test waits for a provider-signed token to expire.
  brief: { secret: 'brief-secret', groups: ['risk'], ttl: 1 },
};

// Resource servers (RFC 8707): a token for one is not a token for another.
const RESOURCES = {
  'urn:modelport': 'models',
  'urn:other-api': 'other',
};

const clients = [
  ...Object.entries(SERVICE_CLIENTS).map(([id, client]) => ({
    client_id: id,
    client_secret: client.secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  {
    // The console: a confidential web client signing people in with authorization code + PKCE.
    client_id: 'console',
    client_secret: 'console-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: args['redirect-uri'].length ? args['redirect-uri'] : ['http://127.0.0.1/ui/auth/callback'],
    post_logout_redirect_uris: args['redirect-uri'].map((uri) => new URL('/ui/', uri).href),
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    // Another web client with the same redirect URIs: its codes must not sign anyone in to the console.
    client_id: 'elsewhere',
    client_secret: 'elsewhere-secret',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: args['redirect-uri'].length ? args['redirect-uri'] : ['http://127.0.0.1/ui/auth/callback'],
    token_endpoint_auth_method: 'client_secret_post',
  },
];

function groupsOf(token) {
  if (token.accountId) return ACCOUNTS[token.accountId]?.groups ?? [];
  return SERVICE_CLIENTS[token.clientId]?.groups ?? [];
}

const provider = new Provider(issuer, {
  clients,
  jwks,
  cookies: { keys: ['modelport-test-cookie-key'] },
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: account.name, groups: account.groups };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'profile', 'groups', 'models', 'other'],
  pkce: { required: () => true },
  // ID tokens carry the profile and groups claims the scopes grant (the console maps groups from them).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:modelport',
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator, client) {
        const scope = RESOURCES[indicator];
        if (!scope) throw new errors.InvalidTarget();
        return {
          scope,
          audience: indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: SERVICE_CLIENTS[client.clientId]?.ttl ?? 300,
          jwt: { sign: { alg: jwks.keys[0].alg } },
        };
      },
    },
  },
  extraTokenClaims(_ctx, token) {
    return { groups: groupsOf(token) };
  },
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
    AuthorizationCode: 60,
    IdToken: 300,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    RefreshToken: 3600,
  },
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

// OpenID Connect provider on 127.0.0.1 for smtp_magic's OAuth2 tests (node-oidc-provider, certified).
// Device authorization grant, authorization code + PKCE on loopback redirects, refresh tokens
// (rotated for public clients), revocation and introspection are all the library's own code;
// this file only configures it. Login and consent use the library's built-in dev pages
// (any login name, any password), which the tests fill in over HTTP as a user would.
//
// Prints one JSON line {"issuer": ...} once listening; exits when stdin closes (its parent died).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT || 0);
const accessTtl = Number(process.env.OIDC_ACCESS_TTL || 600);
const shortTtl = Number(process.env.OIDC_SHORT_ACCESS_TTL || 2);

const publicClient = (id, name) => ({
  client_id: id,
  client_name: name,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', 'authorization_code'],
  response_types: ['code'],
  // Native clients may use any port on a loopback redirect (RFC 8252 7.3).
  redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
});

const configuration = {
  clients: [
    publicClient('smtp-magic-test', 'smtp_magic tests'),
    publicClient('smtp-magic-short', 'smtp_magic tests (short-lived access tokens)'),
    {
      // Shaped like Google's "installed app" clients: a (not really secret) secret, sent in the body.
      ...publicClient('smtp-magic-installed', 'smtp_magic tests (installed app)'),
      client_secret: 'installed-app-secret',
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      // The SMTP server's own credentials, used only to introspect tokens.
      client_id: 'smtp-server',
      client_secret: 'smtp-server-secret',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  // 'smtp' for the SMTP servers; Microsoft Graph's Mail.Send for the Graph sendMail tests.
  scopes: ['openid', 'offline_access', 'email', 'profile', 'smtp', 'https://graph.microsoft.com/Mail.Send'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
  // The ID token carries the scopes' claims (MSAL reads the account's username from it).
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() { return { sub, email: sub, email_verified: true, preferred_username: sub }; },
    };
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: {
      enabled: true,
      // Only the SMTP server may introspect.
      async allowedPolicy(ctx, client) { return client.clientId === 'smtp-server'; },
    },
  },
  pkce: { required: () => true },
  ttl: {
    AccessToken: (ctx, token, client) => (client.clientId === 'smtp-magic-short' ? shortTtl : accessTtl),
    RefreshToken: 86400,
    DeviceCode: 600,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
    IdToken: 600,
  },
  cookies: { keys: ['smtp-magic-tests-only-cookie-key'] },
  // Refresh tokens are always issued when offline_access is granted, without prompt=consent.
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
};

// HTTPS (OIDC_TLS_CERT/OIDC_TLS_KEY, PEM files) and a path prefix (OIDC_PATH, e.g. "/tenant/v2.0")
// make it look like Microsoft's authorities, which MSAL insists on.
const tls = process.env.OIDC_TLS_CERT
  ? { cert: readFileSync(process.env.OIDC_TLS_CERT), key: readFileSync(process.env.OIDC_TLS_KEY) }
  : null;
const prefix = (process.env.OIDC_PATH || '').replace(/\/$/, '');
const server = await new Promise((resolve) => {
  // Bind first to learn the port, then build the provider with the final issuer URL.
  const s = tls ? createHttpsServer(tls) : createServer();
  s.listen(port, '127.0.0.1', () => resolve(s));
});
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}${prefix}`;
const provider = new Provider(issuer, configuration);
// RFC 8628 lets the server choose the polling interval (5 s when it says nothing); 1 s keeps the
// tests quick. oidc-provider has no setting for it, so it is added to its response here.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.body && ctx.body.device_code) {
    ctx.body = { ...ctx.body, interval: Number(process.env.OIDC_DEVICE_INTERVAL || 1) };
  }
});
provider.on('server_error', (ctx, err) => { console.error('server_error', err); });
const callback = provider.callback();
server.on('request', (req, res) => {
  if (prefix) {
    // Mounted under the prefix, as express's app.use(prefix, ...) would do it.
    if (!req.url.startsWith(prefix)) { res.statusCode = 404; res.end(); return; }
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
  }
  callback(req, res);
});
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));

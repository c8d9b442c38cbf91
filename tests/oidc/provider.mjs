// The OpenID provider the console's sign-in tests talk to: panva's certified oidc-provider, with
// one confidential client and accounts read from a JSON file at every sign-in (so a test can change
// a person's groups between two sign-ins). Started by tests/oidc_provider.py; settings come from
// the environment:
//   PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
//   ACCOUNTS_FILE        {"<login>": {"name": ..., "email": ..., "groups": [...]}}
//   SIGNING_JWKS_FILE    the private keys it signs with ({"keys": [...]})
//   PUBLISHED_JWKS_FILE  optional: publish these keys instead of the signing ones (a forged signature)
//   CLOCK_FILE           optional: when it holds N, the token endpoint runs N seconds in the past
//                        (an ID token that has expired when the gateway reads it)
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const env = process.env;
const port = Number(env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const readJson = (path) => JSON.parse(fs.readFileSync(path, 'utf8'));

const provider = new Provider(issuer, {
  clients: [{
    client_id: env.CLIENT_ID,
    client_secret: env.CLIENT_SECRET,
    redirect_uris: [env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub', 'groups'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false,
  cookies: { keys: ['test-provider-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  jwks: readJson(env.SIGNING_JWKS_FILE),
  async findAccount(ctx, id) {
    const accounts = readJson(env.ACCOUNTS_FILE);
    const person = accounts[id] || {};
    return { accountId: id, async claims() { return { sub: id, email_verified: true, ...person }; } };
  },
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks' && env.PUBLISHED_JWKS_FILE) {
    const published = readJson(env.PUBLISHED_JWKS_FILE).keys.map(({ kty, kid, use, alg, n, e }) => ({ kty, kid, use, alg, n, e }));
    ctx.type = 'application/json';
    ctx.body = { keys: published };
    return;
  }
  const behind = env.CLOCK_FILE && fs.existsSync(env.CLOCK_FILE) ? Number(fs.readFileSync(env.CLOCK_FILE, 'utf8')) : 0;
  if (ctx.path === '/token' && behind > 0) {
    const realNow = Date.now;
    Date.now = () => realNow() - behind * 1000;
    try {
      await next();
    } finally {
      Date.now = realNow;
    }
    return;
  }
  await next();
});

http.createServer(provider.callback()).listen(port, '127.0.0.1', () => {
  console.log(`openid provider listening on ${issuer}`);
});

// A real OpenID Connect provider for MEDCARE Screen's sign-in and browser tests (oidc-provider).
//
// Why a real one: the sign-in code (Authlib's authorization code flow with PKCE, discovery,
// ID token checks, userinfo) is tested against what a hospital's identity provider does, never
// a mock. Loopback only. Usage: node server.mjs PORT REDIRECT_URI [REDIRECT_URI ...]
// (PORT 0: a free port). Prints "OIDC peer ready on http://127.0.0.1:PORT" when it serves.
//
// One confidential client (MEDCARE_OIDC_CLIENT_ID / MEDCARE_OIDC_CLIENT_SECRET from the
// environment, defaults below) with PKCE required; the users below sign in on the provider's
// development login page with any password. Their role is the `medcare_role` claim (scope
// `profile`), given in the ID token and at userinfo.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [portArg, ...redirectUris] = process.argv.slice(2);
if (portArg === undefined || redirectUris.length === 0) {
  console.error('usage: node server.mjs PORT REDIRECT_URI [REDIRECT_URI ...]');
  process.exit(2);
}

const clientId = process.env.MEDCARE_OIDC_CLIENT_ID || 'medcare-screen';
const clientSecret = process.env.MEDCARE_OIDC_CLIENT_SECRET || 'medcare-oidc-test-secret';
const roleClaim = process.env.MEDCARE_OIDC_ROLE_CLAIM || 'medcare_role';

// login -> name and role; `visitor` has a role the service does not know (refused there).
const USERS = {
  coordinator: { name: 'Casey Coordinator', role: 'coordinator' },
  investigator: { name: 'Ines Investigator', role: 'investigator' },
  readonly: { name: 'Robin Reader', role: 'read-only' },
  visitor: { name: 'Victor Visitor', role: 'visitor' },
};

async function findAccount(_ctx, id) {
  const user = USERS[id];
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, name: user.name, email: `${id}@hospital.test`, [roleClaim]: user.role };
    },
  };
}

const server = http.createServer();
server.listen(Number(portArg), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: redirectUris.map((uri) => new URL('/', uri).href),
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    findAccount,
    claims: { openid: ['sub'], profile: ['name', roleClaim], email: ['email'] },
    conformIdTokenClaims: false, // the role in the ID token too, not only at userinfo
    features: { devInteractions: { enabled: true } },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 600, AccessToken: 600, AuthorizationCode: 60 },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc peer: server_error', err));
  server.on('request', provider.callback());
  console.log(`OIDC peer ready on ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

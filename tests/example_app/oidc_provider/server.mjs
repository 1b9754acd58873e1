// node oidc-provider with its CIBA feature (poll and ping), configured like the demo so that
// tests/example_app/test_oidc_provider.py runs the same client checks against both:
//   node server.mjs PORT PING_URL
// Users alice and bob (bob's user code is 4711); every request is approved by its user 0.3 s
// after it is issued, except one whose binding_message is "deny", which is denied (as the demo's
// CIBA_DEMO_AUTO_APPROVE does). Prints "listening" once it serves.
import Provider, { errors } from 'oidc-provider'

const [port, pingUrl] = process.argv.slice(2)
const issuer = `http://127.0.0.1:${port}`
const USERS = { alice: null, bob: '4711' }

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'fapi-poll',
      client_secret: 'fapi-poll-secret',
      grant_types: ['urn:openid:params:grant-type:ciba'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      backchannel_token_delivery_mode: 'poll',
    },
    {
      client_id: 'ping-body',
      client_secret: 'ping-secret',
      grant_types: ['urn:openid:params:grant-type:ciba'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      backchannel_token_delivery_mode: 'ping',
      backchannel_client_notification_endpoint: pingUrl,
    },
  ],
  // oidc-provider refuses special-use addresses (loopback included) on the connected socket, with
  // no setting to allow one: the test's notification endpoint on 127.0.0.1 is let through here,
  // as the demo lets it through with CIBA_NOTIFICATION_INSECURE_HOSTS=127.0.0.1.
  fetch: (url, options) => {
    if (new URL(url).hostname === '127.0.0.1') delete options.dispatcher
    return globalThis.fetch(url, options)
  },
  findAccount: (ctx, id) => (id in USERS ? { accountId: id, claims: () => ({ sub: id }) } : undefined),
  features: {
    devInteractions: { enabled: false },
    ciba: {
      enabled: true,
      deliveryModes: ['poll', 'ping'],
      processLoginHint: (ctx, loginHint) => (loginHint in USERS ? loginHint : undefined),
      processLoginHintToken: () => undefined,
      validateRequestContext: () => {},
      verifyUserCode: (ctx, account, userCode) => {
        const expected = USERS[account.accountId]
        if (userCode !== undefined && userCode !== expected) {
          throw new errors.InvalidUserCode('the user code is wrong')
        }
      },
      triggerAuthenticationDevice: async (ctx, request, account, client) => {
        setTimeout(async () => {
          try {
            if (request.params.binding_message === 'deny') {
              await provider.backchannelResult(request, new errors.AccessDenied('the user denied the request'))
              return
            }
            const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId })
            grant.addOIDCScope(request.params.scope)
            await grant.save()
            await provider.backchannelResult(request, grant, { authTime: Math.floor(Date.now() / 1000) })
          } catch (error) {
            console.error(`backchannelResult failed: ${error}`)
          }
        }, 300)
      },
    },
  },
  ttl: {
    BackchannelAuthenticationRequest: (ctx, request, client) => {
      const asked = ctx?.oidc?.params?.requested_expiry
      return asked ? Math.min(Number(asked), 600) : 120
    },
  },
})
provider.on('server_error', (ctx, error) => console.error(`server_error: ${error}`))

provider.listen(Number(port), '127.0.0.1', () => console.log('listening'))

// The tests' CIBA relying party: openid-client, configured with nothing but an issuer URL and
// a client's credentials, answering one JSON command per line of stdin with one JSON line.
//
//   node client.mjs ISSUER CLIENT_ID CLIENT_SECRET
//
// Commands ({"op": ...}):
//   metadata                      the discovered server metadata
//   initiate {params}             a backchannel authentication request (CIBA Core 7)
//   poll_once {auth_req_id}       one token request with the CIBA grant (CIBA Core 10)
//   poll {response}               openid-client's own polling until tokens or an error; the ID
//                                 token is validated (claims, and its signature against the JWKS)
// Each answer is {"ok": ...} or {"error": {"name", "error", "error_description", "status"}}; for a
// status the library does not take for an OAuth error (5xx) the body's fields are added as read.
import * as client from 'openid-client'
import { createInterface } from 'node:readline'

const [issuer, clientId, clientSecret] = process.argv.slice(2)
if (!issuer || !clientId || clientSecret === undefined) {
  console.error('usage: node client.mjs ISSUER CLIENT_ID CLIENT_SECRET')
  process.exit(2)
}

async function failure(err) {
  const answer = { name: err.constructor?.name ?? 'Error', message: String(err.message) }
  if (err instanceof client.ResponseBodyError) {
    Object.assign(answer, { error: err.error, error_description: err.error_description, status: err.status })
  } else if (err instanceof client.WWWAuthenticateChallengeError) {
    const [challenge] = err.cause
    Object.assign(answer, { status: err.status, scheme: challenge?.scheme, error: challenge?.parameters?.error ?? null })
  }
  if (err.code) answer.code = err.code
  if (err.cause instanceof Response) {
    // A status the library does not read as an OAuth error (a 5xx): what came with it.
    answer.status = err.cause.status
    try {
      Object.assign(answer, await err.cause.json())
    } catch {}
  } else if (err.cause instanceof Error) {
    answer.cause = err.cause.message ?? String(err.cause)
    if (err.cause.code) answer.cause_code = err.cause.code
  }
  return { error: answer }
}

const execute = [client.allowInsecureRequests, client.enableNonRepudiationChecks]
let config
try {
  config = await client.discovery(new URL(issuer), clientId, undefined, client.ClientSecretBasic(clientSecret), {
    execute,
  })
  process.stdout.write(JSON.stringify({ ok: 'discovered' }) + '\n')
} catch (err) {
  process.stdout.write(JSON.stringify(await failure(err)) + '\n')
  process.exit(1)
}

async function run(command) {
  switch (command.op) {
    case 'metadata':
      return config.serverMetadata()
    case 'initiate':
      return await client.initiateBackchannelAuthentication(config, command.params)
    case 'poll_once': {
      const tokens = await client.genericGrantRequest(config, 'urn:openid:params:grant-type:ciba', {
        auth_req_id: command.auth_req_id,
      })
      return { ...tokens, claims: tokens.claims() ?? null }
    }
    case 'poll': {
      const tokens = await client.pollBackchannelAuthenticationGrant(config, command.response)
      return { ...tokens, claims: tokens.claims() ?? null }
    }
    default:
      throw new Error(`unknown op ${command.op}`)
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue
  let answer
  try {
    answer = { ok: await run(JSON.parse(line)) }
  } catch (err) {
    answer = await failure(err)
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}

/**
 * Which configuration values are secret by their name alone, and what is shown in their place:
 * shared by everything that prints config (`berth config show`, host tags in the API) without
 * pulling in the stack machinery that knows a stack's own `secrets:` list.
 */

/** Names whose values are secret: any name that says it is one (a stack's `secrets:` list adds more). */
export const SECRET_NAME_PATTERN = /(SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE_KEY|API_KEY)/i;
export const MASK = '********';

/** The tag that sets variable NAME on a stack host (stacks/modes.ts), whose value may be a secret. */
const ENV_OVERRIDE = 'berth.env.';

/**
 * A host's tags as the API shows them: every variable override (`berth.env.NAME`) has its value
 * masked. Overrides are config, and which config is secret only the stack knows (its `secrets:`
 * list; `DATABASE_URL` says nothing of the password in it): `berth config show --host ID` shows
 * each value with where it came from, masking the secret ones. The host itself, its agent and its
 * services see the real values; only what is printed and sent to API clients changes.
 */
export function maskedTags(tags: Record<string, string>): Record<string, string> {
  let masked: Record<string, string> | undefined;
  for (const [key, value] of Object.entries(tags)) {
    if (key.startsWith(ENV_OVERRIDE) && value !== '') (masked ??= { ...tags })[key] = MASK;
  }
  return masked ?? tags;
}

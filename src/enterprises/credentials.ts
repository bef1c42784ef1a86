import type { WebsmsCredentials } from '../websms/client.ts';

/**
 * `enterprises.custom_domain` holds "<websms user> <api key>". NULL, empty, a single word or more
 * than two words mean "no WebSMS configuration". Surrounding and repeated whitespace is tolerated:
 * values are typed in by hand and a stray space must not silently break an enterprise.
 */
export function parseCustomDomain(customDomain: string | null | undefined): WebsmsCredentials | null {
  if (!customDomain) return null;
  const words = customDomain.trim().split(/\s+/);
  if (words.length !== 2) return null;
  const [user, apiKey] = words as [string, string];
  if (!user || !apiKey) return null;
  return { user, apiKey };
}

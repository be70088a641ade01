/**
 * The token the page speaks with. It comes pasted into the log-in form, or in
 * the address's fragment (`/#token=…`, what `vega dashboard` prints): the
 * fragment never reaches a server, and the page moves it into this tab's
 * sessionStorage and out of the address bar (and so out of the history) at once.
 */
export const TOKEN_KEY = "vega.token"; // GraphiQL's page reads the same key (api/http/graphiql.ts)

/** Takes a token from the fragment, if there is one, and answers the tab's token. */
export function currentToken(): string | null {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string) {
  sessionStorage.setItem(TOKEN_KEY, token.trim().replace(/^Bearer\s+/i, ""));
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

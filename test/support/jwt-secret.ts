/**
 * The signing key of the test servers and of the `vega` processes the tests start. In a module of its
 * own, with no imports, so that a test file can sign tokens without reaching the test database (its
 * tier, test/support/test-tiers.ts, is read from its imports).
 */
export const TEST_JWT_SECRET = "vega-test-secret-that-is-long-enough-for-hs256";

import http from "node:http";
import type { AddressInfo } from "node:net";

/** An HTTP server of the test's on 127.0.0.1, answering with `handler`: an address that is not Vega's API. */
export async function httpServer(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

// A real S3-compatible server (s3rver) for tests, as its own process: `node s3rver-main.cjs DIR BUCKET`
// listens on an ephemeral port of 127.0.0.1 and prints it. Its own process, so that serving a 1 GiB
// upload does not share the test's (or an in-process API's) event loop and memory.
const S3rver = require("s3rver");
const [directory, bucket] = process.argv.slice(2);
const server = new S3rver({ address: "127.0.0.1", port: 0, directory, silent: true, configureBuckets: [{ name: bucket }] });
server.run().then(
  (address) => console.log(`s3rver listening on ${address.port}`),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
process.on("SIGTERM", () => server.close().finally(() => process.exit(0)));

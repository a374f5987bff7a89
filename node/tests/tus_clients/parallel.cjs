// Uploads a file with tus-js-client in PARTS parallel partial uploads that a final upload joins
// (concatenation): node parallel.cjs ENDPOINT FILE TOKEN PARTS
// Prints "final URL" once the client reports success.
const fs = require('fs');
const tus = require('tus-js-client');

const [endpoint, path, token, parts] = process.argv.slice(2);
const data = fs.readFileSync(path);
const upload = new tus.Upload(data, {
  endpoint,
  parallelUploads: Number(parts),
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: 'joined.bin', filetype: 'application/octet-stream' },
  retryDelays: [0, 500, 1000],
  onSuccess: () => {
    console.log(`final ${upload.url}`);
    process.exit(0);
  },
  onError: (e) => {
    console.error(`error ${e}`);
    process.exit(1);
  },
});
upload.start();

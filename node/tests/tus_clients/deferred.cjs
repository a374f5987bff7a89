// Streams a file whose length the client does not know up front (a pipe, say) with
// tus-js-client's `uploadLengthDeferred`: node deferred.cjs ENDPOINT FILE TOKEN
// The upload is created with `Upload-Defer-Length: 1`; the last PATCH declares the length.
// Prints "url UPLOAD_URL" when done.
const fs = require('fs');
const { PassThrough } = require('stream');
const tus = require('tus-js-client');

const [endpoint, path, token] = process.argv.slice(2);
// Through a PassThrough, as from a pipe: tus-js-client reads a plain stream chunk by chunk
// (an fs.ReadStream it would reopen by path, with slice sizes past the end of the file).
const input = fs.createReadStream(path).pipe(new PassThrough());
const upload = new tus.Upload(input, {
  endpoint,
  uploadLengthDeferred: true,
  chunkSize: 1024 * 1024,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: 'streamed.bin', filetype: 'application/octet-stream' },
  onSuccess: () => {
    console.log(`url ${upload.url}`);
    process.exit(0);
  },
  onError: (e) => {
    console.error(`error ${e}`);
    process.exit(1);
  },
});
upload.start();

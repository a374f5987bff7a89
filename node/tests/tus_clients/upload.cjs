// Resumes (or starts) a tus upload with tus-js-client under node: node upload.cjs URL FILE TOKEN
// URL is an existing upload's URL: the client asks it for its offset (HEAD) and sends the rest
// in 5 MiB PATCHes. Prints "progress SENT TOTAL" lines, then "done".
const fs = require('fs');
const tus = require('tus-js-client');

const [url, path, token] = process.argv.slice(2);
const data = fs.readFileSync(path);
const upload = new tus.Upload(data, {
  uploadUrl: url,
  chunkSize: 5 * 1024 * 1024,
  headers: { Authorization: `Bearer ${token}` },
  retryDelays: [0, 500, 1000, 2000],
  onProgress: (sent, total) => console.log(`progress ${sent} ${total}`),
  onSuccess: () => {
    console.log('done');
    process.exit(0);
  },
  onError: (e) => {
    console.error(`error ${e}`);
    process.exit(1);
  },
});
upload.start();

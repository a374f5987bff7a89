// wharf's browser page: sign in with a token, upload through tus with Uppy, list files with
// their scan state, download them, usage against quota, and the live event stream.
import { Uppy, Dashboard, Tus } from '/assets/uppy.min.mjs';

const TOKEN_KEY = 'wharf.token';
const $ = (id) => document.getElementById(id);

function token() {
  return localStorage.getItem(TOKEN_KEY) || '';
}

function auth() {
  return { Authorization: `Bearer ${token()}` };
}

// A link from `wharf token issue --url` carries the token in the fragment (never sent to the
// server, so it is in no log): keep it and take it out of the address bar.
function takeTokenFromLink() {
  const m = location.hash.match(/^#token=(.+)$/);
  if (m) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
}

async function api(path, opts = {}) {
  const resp = await fetch(path, { ...opts, headers: { ...auth(), ...(opts.headers || {}) } });
  if (!resp.ok) {
    let msg = `${resp.status}`;
    try {
      const body = await resp.json();
      msg = `${resp.status} ${body.error.code}: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return resp;
}

function human(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function showUsage(u) {
  const pct = u.quota > 0 ? Math.min(100, (100 * (u.used + u.reserved)) / u.quota) : 0;
  const fill = $('usage-fill');
  fill.style.width = `${pct}%`;
  fill.classList.toggle('full', pct >= 95);
  $('usage-text').textContent =
    `${human(u.used)} used, ${human(u.reserved)} reserved by uploads, of ${human(u.quota)} (${pct.toFixed(1)}%)`;
}

async function refreshUsage() {
  showUsage(await (await api('/v1/usage')).json());
}

async function download(f) {
  const blob = await (await api(`/v1/files/${encodeURIComponent(f.id)}/content`)).blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = f.name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// A function that appends a cell with `text` (and class `cls`) to the row `tr`.
function cellOf(tr) {
  return (text, cls) => {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  };
}

async function refreshFiles() {
  const files = [];
  let cursor = null;
  for (let page = 0; page < 10; page += 1) {
    const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
    const body = await (await api(`/v1/files?limit=100${q}`)).json();
    files.push(...body.files);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  const tbody = $('files').querySelector('tbody');
  tbody.replaceChildren();
  for (const f of files.reverse()) {
    const tr = document.createElement('tr');
    tr.dataset.id = f.id;
    const cell = cellOf(tr);
    cell(f.name, 'name');
    cell(human(f.size), 'size');
    cell(new Date(f.created_at).toLocaleString(), 'date');
    cell(f.scan, `scan scan-${f.scan}`);
    const td = cell('');
    const btn = document.createElement('button');
    btn.textContent = 'Download';
    btn.className = 'download';
    btn.disabled = f.scan === 'infected';
    btn.addEventListener('click', () => download(f).catch((e) => alert(e.message)));
    td.appendChild(btn);
    tbody.appendChild(tr);
  }
  $('files-empty').hidden = files.length > 0;
}

// The user's uploads still open (a reload, a closed tab or a lost connection left them): the
// chunks the node holds, and a way to give one up (which frees its reserved quota).
async function refreshUnfinished() {
  const body = await (await api('/v1/uploads?state=uploading&limit=100')).json();
  const tbody = $('unfinished').querySelector('tbody');
  tbody.replaceChildren();
  for (const u of body.uploads) {
    const tr = document.createElement('tr');
    tr.dataset.id = u.upload_id;
    const cell = cellOf(tr);
    const held = u.received.reduce((n, i) => n + Math.min(u.chunk_size, u.size - i * u.chunk_size), 0);
    cell(u.name, 'name');
    cell(`${human(held)} of ${human(u.size)}`, 'received');
    cell(new Date(u.expires_at).toLocaleString(), 'date');
    const btn = document.createElement('button');
    btn.textContent = 'Abort';
    btn.className = 'abort';
    btn.addEventListener('click', async () => {
      await api(`/v1/uploads/${encodeURIComponent(u.upload_id)}`, { method: 'DELETE' })
        .catch((e) => alert(e.message));
      refreshSoon();
    });
    cell('').appendChild(btn);
    tbody.appendChild(tr);
  }
  $('unfinished').hidden = body.uploads.length === 0;
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refreshFiles().catch(console.error);
    refreshUnfinished().catch(console.error);
    refreshUsage().catch(console.error);
  }, 200);
}

function logEvent(ev) {
  const li = document.createElement('li');
  const d = ev.data;
  const what = d.name || d.file_id || d.upload_id || d.message || '';
  li.textContent = `${ev.id}  ${ev.event}  ${what}`;
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

// GET /v1/events with the token in a header (EventSource cannot send one): frames are parsed
// here, and a broken stream is resumed with Last-Event-ID.
async function followEvents() {
  let last = null;
  for (;;) {
    try {
      const headers = last ? { 'Last-Event-ID': last } : {};
      const resp = await api('/v1/events', { headers });
      $('events-state').textContent = 'live';
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const ev = { id: null, event: 'message', data: '' };
          for (const line of frame.split('\n')) {
            const i = line.indexOf(':');
            if (i <= 0) continue;
            const field = line.slice(0, i);
            const value = line.slice(i + 1).replace(/^ /, '');
            if (field === 'id') ev.id = value;
            else if (field === 'event') ev.event = value;
            else if (field === 'data') ev.data += value;
          }
          if (ev.id === null) continue;
          last = ev.id;
          ev.data = JSON.parse(ev.data);
          logEvent(ev);
          if (ev.data.usage) showUsage(ev.data.usage);
          const listed = ev.event.startsWith('file.') || ev.event.startsWith('upload.');
          if ((listed && ev.event !== 'upload.progress') || ev.event === 'reset') {
            refreshSoon();
          }
        }
      }
    } catch (e) {
      if (e.status === 401) { signOut(e.message); return; }
    }
    $('events-state').textContent = 'reconnecting';
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function startUploader() {
  const uppy = new Uppy({ autoProceed: false })
    .use(Dashboard, {
      inline: true,
      target: '#uploader',
      height: 320,
      width: '100%',
      proudlyDisplayPoweredByUppy: false,
      showProgressDetails: true,
    })
    .use(Tus, {
      endpoint: '/files/',
      headers: () => auth(),
      // PATCHes of 5 MiB: a pause, a lost connection or a reload loses at most one of them.
      chunkSize: 5 * 1024 * 1024,
      limit: 3,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
    });
  uppy.on('progress', (p) => { $('progress').textContent = `${p}%`; });
  uppy.on('upload-success', () => refreshSoon());
  return uppy;
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  if (message) sessionStorage.setItem('wharf.signin.error', message);
  location.reload();
}

function whoAmI() {
  try {
    const claims = JSON.parse(atob(token().split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return `${claims.sub} (${claims.tier})`;
  } catch (_) {
    return '';
  }
}

async function main() {
  takeTokenFromLink();
  $('sign-in-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $('token').value.trim());
    location.reload();
  });
  $('sign-out').addEventListener('click', () => signOut());
  const pending = sessionStorage.getItem('wharf.signin.error');
  if (pending) { $('sign-in-error').textContent = pending; sessionStorage.removeItem('wharf.signin.error'); }
  if (!token()) { $('sign-in').hidden = false; return; }
  try {
    await refreshUsage();
  } catch (e) {
    localStorage.removeItem(TOKEN_KEY);
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = `That token was refused: ${e.message}`;
    return;
  }
  $('app').hidden = false;
  $('sign-out').hidden = false;
  $('who').textContent = whoAmI();
  startUploader();
  await refreshFiles();
  await refreshUnfinished();
  followEvents();
}

main();

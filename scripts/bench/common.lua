-- Shared by the wrk scripts in this folder (loaded with dofile). Gives every thread an id,
-- counts responses that are not 2xx, and prints one machine-readable RESULT line at the end
-- (latencies in microseconds; socket errors as wrk counts them). A script that loads this
-- defines init_args(args), called once per thread, and make_request(unique), which returns the
-- request for a string unique to it ("<tag>-t<thread>-<n>"). The arguments after "--" on the
-- wrk command line: the tag, which keeps names unique across runs, then the script's own.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per thread (each wrk thread has its own Lua state).
function init(args)
  tag = args[1] or "run"
  n = 0
  bad = 0
  init_args(args)
end

function request()
  n = n + 1
  return make_request(string.format("%s-t%d-%d", tag, id, n))
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if bad <= 3 then
      local text = (body or ""):sub(1, 200):gsub("%s+", " ")
      io.stderr:write(string.format("thread %d: HTTP %d %s\n", id, status, text))
    end
  end
end

function done(summary, latency, requests)
  local non2xx = 0
  for _, t in ipairs(threads) do
    non2xx = non2xx + (t:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d"
      .. " connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    non2xx, e.connect, e.read, e.write, e.timeout))
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 4, 1, -1 do
      q[k] = v % 64
      v = math.floor(v / 64)
    end
    out[#out + 1] = alphabet:sub(q[1] + 1, q[1] + 1) .. alphabet:sub(q[2] + 1, q[2] + 1)
      .. (b and alphabet:sub(q[3] + 1, q[3] + 1) or "=")
      .. (c and alphabet:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return table.concat(out)
end

-- wrk: one-request uploads (POST /v1/files?name=...) with unique names and contents, until
-- this thread has had QUOTA answers (env WRK_QUOTA; 0 = until the duration ends). wrk itself
-- runs for its whole duration: a thread that is done stops sending and leaves a file in
-- WRK_DONE_DIR, and the caller interrupts wrk (SIGINT) once every thread's file is there.
-- env: WRK_TOKEN (bearer token), WRK_PREFIX (name prefix), WRK_SIZE (body bytes, default: the
-- name itself, so every file is its own content), WRK_QUOTA.
local counter = 0
local answered = 0
local created = 0
local quota = tonumber(os.getenv("WRK_QUOTA") or "0")
local token = os.getenv("WRK_TOKEN")
local prefix = os.getenv("WRK_PREFIX") or "f"
local size = tonumber(os.getenv("WRK_SIZE") or "0")
local done_dir = os.getenv("WRK_DONE_DIR")
local threads = {}
local id = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  id = wrk.thread:get("id")
end

function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", prefix, id, counter)
  local body = name
  if size > 0 then
    body = (name .. string.rep("x", size)):sub(1, size)
  end
  return wrk.format("POST", "/v1/files?name=" .. name,
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/octet-stream" }, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status == 201 then
    created = created + 1
  else
    -- What the node said, so that a refusal in a long run can be told apart.
    wrk.thread:set("refusal", string.format("%d %s", status, (body or ""):sub(1, 300)))
  end
  wrk.thread:set("created", created)
  wrk.thread:set("answered", answered)
  if quota > 0 and answered == quota then
    if done_dir then
      local f = io.open(string.format("%s/%d", done_dir, id), "w")
      if f then f:close() end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local c, a = 0, 0
  for _, t in ipairs(threads) do
    c = c + (t:get("created") or 0)
    a = a + (t:get("answered") or 0)
    local r = t:get("refusal")
    if r then
      io.write("REFUSED (last of a thread): " .. r .. "\n")
    end
  end
  io.write(string.format("RESULT created=%d answered=%d secs=%.3f p50_ms=%.2f p99_ms=%.2f\n",
    c, a, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

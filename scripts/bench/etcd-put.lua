-- wrk script: etcd v3 put through the JSON gateway (POST /v3/kv/put), a unique key per request.
-- The value is the JSON a wharf create sends, so both sides write about the same bytes.
--   wrk -s scripts/bench/etcd-put.lua http://LEADER_CLIENT_URL -- TAG
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

function init_args(args)
  headers = { ["Content-Type"] = "application/json" }
end

function make_request(unique)
  local key = "bench/" .. unique
  local value = string.format('{"name":"bench-%s","size":1}', unique)
  local body = string.format('{"key":"%s","value":"%s"}', base64(key), base64(value))
  return wrk.format("POST", "/v3/kv/put", headers, body)
end

-- wrk script: POST /v1/uploads (create a 1-byte upload), a unique name per request.
--   wrk -s scripts/bench/wharf-create.lua http://LEADER -- TAG TOKEN
dofile((debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./") .. "common.lua")

function init_args(args)
  headers = {
    ["Authorization"] = "Bearer " .. assert(args[2], "usage: -- TAG TOKEN"),
    ["Content-Type"] = "application/json",
  }
end

function make_request(unique)
  local body = string.format('{"name":"bench-%s","size":1}', unique)
  return wrk.format("POST", "/v1/uploads", headers, body)
end

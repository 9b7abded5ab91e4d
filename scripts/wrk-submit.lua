-- wrk: one tiny task per `POST /v1/tasks`, each with its own input so that none is answered by
-- the result cache. Used by scripts/bench-coordinator-load.
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"wasm_cid":"add.wasm","input":[%d,%d]}', counter, tid)
  return wrk.format(nil, "/v1/tasks", nil, body)
end

-- wrk: tiny tasks, each with its own input so that none is answered by the result cache; one
-- per `POST /v1/tasks`, or with BATCH=N (N > 0) N per `POST /v1/tasks:batch`. Used by
-- scripts/bench-coordinator-load.
local counter = 0
local threads = 0
local size = tonumber(os.getenv("BATCH") or "0")

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function task()
  counter = counter + 1
  return string.format('{"wasm_cid":"add.wasm","input":[%d,%d]}', counter, tid)
end

function request()
  if size <= 0 then
    return wrk.format(nil, "/v1/tasks", nil, task())
  end
  local items = {}
  for i = 1, size do
    items[i] = task()
  end
  return wrk.format(nil, "/v1/tasks:batch", nil, '{"tasks":[' .. table.concat(items, ",") .. ']}')
end

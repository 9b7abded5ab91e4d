-- wrk: `POST /v1/tasks:batch` of BATCH (default 1000) tiny tasks, each with its own input so that
-- none is answered by the result cache. Used by scripts/bench-coordinator-load.
local counter = 0
local threads = 0
local size = tonumber(os.getenv("BATCH") or "1000")

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local items = {}
  for i = 1, size do
    counter = counter + 1
    items[i] = string.format('{"wasm_cid":"add.wasm","input":[%d,%d]}', counter, tid)
  end
  return wrk.format(nil, "/v1/tasks:batch", nil, '{"tasks":[' .. table.concat(items, ",") .. ']}')
end

-- wrk script of the benchmark suite. With BENCH_BODIES set, each request is a POST of the
-- next line of that file (a JSON body), with BENCH_TOKEN as a bearer token; else a GET.
local bodies = {}
local count = 0
local index = 0

local path = os.getenv("BENCH_BODIES")
if path and path ~= "" then
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
  wrk.headers["Content-Type"] = "application/json"
end

function init(args)
  if path and path ~= "" then
    for line in io.lines(path) do
      count = count + 1
      bodies[count] = line
    end
  end
  index = tonumber(os.getenv("BENCH_OFFSET") or "0") or 0
end

function request()
  if count == 0 then
    return wrk.format()
  end
  index = index + 1
  if index > count then
    index = 1
  end
  return wrk.format(nil, nil, nil, bodies[index])
end

-- wrk script of the soak (benchmarks/hardening/soak.py): POSTs to the v3 fail route, one
-- request in SOAK_REAL_EVERY with a ticket issued beforehand (read from SOAK_TICKETS, each
-- thread its own share), the others with a random well-formed ticket the store never issued,
-- so every request costs a store round trip. Each connection waits SOAK_DELAY_MS between
-- requests (the rate). Every answer is checked against the exact expected body.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

function init(args)
  math.randomseed(os.time() * 1000 + id)
  nthreads = tonumber(os.getenv("SOAK_THREADS"))
  every = tonumber(os.getenv("SOAK_REAL_EVERY") or "4")
  delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
  expected = os.getenv("SOAK_EXPECTED")
  path = os.getenv("SOAK_PATH")
  headers = {["Authorization"] = "Bearer " .. os.getenv("SOAK_TOKEN"), ["Content-Type"] = "application/json"}
  tickets = {}
  local file = os.getenv("SOAK_TICKETS")
  if file and file ~= "" then
    local i = 0
    for line in io.lines(file) do
      if i % nthreads == id then table.insert(tickets, line) end
      i = i + 1
    end
  end
  counter = 0
  real_sent = 0
  ok = 0
  bad = 0
  statuses = {}
end

local function random_ticket()
  local chars = {}
  for i = 1, 43 do
    local n = math.random(1, 64)
    chars[i] = alphabet:sub(n, n)
  end
  return table.concat(chars)
end

function delay()
  return delay_ms
end

function request()
  counter = counter + 1
  local ticket
  if counter % every == 0 and real_sent < #tickets then
    real_sent = real_sent + 1
    ticket = tickets[real_sent]
  else
    ticket = random_ticket()
  end
  return wrk.format("POST", path, headers, '{"ticket":"' .. ticket .. '","reason":"ACCESS_DENIED"}')
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 200 and body == expected then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, real_total = 0, 0, 0
  local merged = {}
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    bad_total = bad_total + thread:get("bad")
    real_total = real_total + thread:get("real_sent")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  io.write(string.format(
    'SOAK_RESULT {"requests":%d,"duration_us":%d,"ok":%d,"bad":%d,"real_tickets_sent":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, ok_total, bad_total, real_total,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
end

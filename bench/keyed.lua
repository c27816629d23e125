-- wrk script: POST $WRK_BODY_FILE with `Authorization: Bearer $WRK_KEY` (the cost of a key check).
-- usage: WRK_BODY_FILE=body.json WRK_KEY=mpk_... wrk -t1 -c64 -d10s --latency -s bench/keyed.lua URL
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "r"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.status))
end

-- wrk script of scripts/bench-proxy.sh: the same legacy-Pyroscope push against every proxy.
--
-- Environment: BENCH_BODY (file holding the folded profile), BENCH_KEY (the API key; sent in
-- every mode so the requests are identical), BENCH_TENANT (X-Scope-OrgID, as an agent
-- configured with a tenant sends it). The URL given to wrk carries the path and query.
--
-- No `response` hook on purpose: defining one makes wrk hand every response's headers and body
-- to Lua, which slows the load generator down. wrk counts status >= 400 itself
-- (summary.errors.status); the script checks that it and the socket errors are zero.

local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY not set")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_KEY"), "BENCH_KEY not set")
wrk.headers["X-Scope-OrgID"] = os.getenv("BENCH_TENANT") or "bench"

-- One machine-readable line for the script (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d mean_us=%.1f max_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end

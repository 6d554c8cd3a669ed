-- wrk script: rotates through the paths in $BENCH_PATHS (one per line) with a bearer token.
local token = os.getenv("BENCH_TOKEN")
local file = os.getenv("BENCH_PATHS")
local paths = {}
for line in io.lines(file) do
  if #line > 0 then paths[#paths + 1] = line end
end
local i = 0
request = function()
  i = (i % #paths) + 1
  return wrk.format("GET", paths[i], { ["Authorization"] = "Bearer " .. token })
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end

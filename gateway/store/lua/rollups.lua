-- Read several of one team's per-day rollup hashes in one call: a report's days, a month at a
-- time (ledger/reports.py), instead of one round trip per team and day. KEYS are the hashes, all
-- under the team's tag. ARGV[1] 'each': answers, for each hash that exists, its index in KEYS and
-- its HGETALL. 'sum' (a report not grouped by day): answers {0, the fields summed over the days}.
local mode = ARGV[1]
local found, sums, names = {}, {}, {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  if #fields > 0 and mode == 'each' then
    found[#found + 1] = i
    found[#found + 1] = fields
  end
  if mode == 'sum' then
    for j = 1, #fields, 2 do
      local name = fields[j]
      if sums[name] == nil then
        sums[name] = 0
        names[#names + 1] = name
      end
      sums[name] = sums[name] + tonumber(fields[j + 1])
    end
  end
end
if mode == 'each' then return found end
local summed = {}
for _, name in ipairs(names) do
  summed[#summed + 1] = name
  summed[#summed + 1] = int(sums[name])
end
if #summed == 0 then return {} end
return {0, summed}

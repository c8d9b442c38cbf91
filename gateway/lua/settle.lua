-- Settle one call: spend what was delivered, release the rest of its reservation, and write its
-- usage record and rollups, in one atomic step (so the ledger always agrees with the spend).
-- The charge is computed once, by money.charge_micros, and applied here as given.
-- Exactly once: a request id settled within the last settled_memory_ms is refused as a duplicate
-- (a replay from the spool, a resend by the cluster client). settle.py keeps every spooled
-- settlement's replay inside that window, which is what makes spool replay exactly-once.
local record_key, state_key, reservations_key, deadlines_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local settled_key = KEYS[5]
local spent_day_key, spent_month_key, spent_total_key = KEYS[6], KEYS[7], KEYS[8]
local images_day_key, rollup_key, ledger_key = KEYS[9], KEYS[10], KEYS[11]
local request_id, images, charge = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local model, oldest_kept_ms, settled_memory_ms = ARGV[4], ARGV[5], tonumber(ARGV[6])
local record_json = ARGV[7]  -- the usage record: a JSON list of name, value strings

if redis.call('ZSCORE', settled_key, request_id) then return {'kind', 'duplicate'} end
local now = now_ms()
local held = redis.call('HGET', reservations_key, request_id)
if held then release(state_key, reservations_key, deadlines_key, request_id, held) end
-- Images delivered beyond the reservation are still charged: the upstream billed them.
if charge > 0 then
  redis.call('INCRBY', spent_day_key, int(charge))
  redis.call('INCRBY', spent_month_key, int(charge))
  redis.call('INCRBY', spent_total_key, int(charge))
end
redis.call('EXPIRE', spent_day_key, 3 * 86400)
redis.call('EXPIRE', spent_month_key, 40 * 86400)
if images > 0 then
  redis.call('INCRBY', images_day_key, images)
  redis.call('EXPIRE', images_day_key, 3 * 86400)
end
redis.call('HINCRBY', rollup_key, model .. '|calls', 1)
redis.call('HINCRBY', rollup_key, model .. '|images', images)
redis.call('HINCRBY', rollup_key, model .. '|spend', int(charge))
-- A failed call delivered no image (and was charged nothing); reports show calls - failed as succeeded.
if images == 0 then redis.call('HINCRBY', rollup_key, model .. '|failed', 1) end
redis.call('ZADD', settled_key, now, request_id)
redis.call('ZREMRANGEBYSCORE', settled_key, '-inf', now - settled_memory_ms)

local key = hmget_named(record_key, {'budget_micros', 'budget_period'})
local budget = number_or(key.budget_micros, -1)
local spent_key = period_key(key.budget_period or 'total', spent_day_key, spent_month_key,
  spent_total_key)
local spent = number_or(redis.call('GET', spent_key), 0)
-- A settlement whose reservation had lapsed (its process was cut off from Redis for longer than
-- the reservation's lifetime) was not held against the budget while others spent it: if its
-- charge takes the budget past its limit, that is an overspend, and it is said so, never hidden.
local over_budget = (not held) and charge > 0 and budget >= 0 and spent > budget

-- The record fields only this script knows: whether a reservation was found, and the overspend.
local fields = {'reserved', held and '1' or '0', 'over_budget', over_budget and '1' or '0'}
for _, item in ipairs(cjson.decode(record_json)) do fields[#fields + 1] = item end
redis.call('XADD', ledger_key, 'MINID', '~', oldest_kept_ms, '*', unpack(fields))

return {'kind', 'ok', 'budget_micros', int(budget), 'spent_micros', int(spent),
  'reserved_micros', int(number_or(redis.call('HGET', state_key, 'reserved_micros'), 0)),
  'over_budget', over_budget and 1 or 0}

-- Settle one call: spend what was delivered, release the rest of its reservation, and write its
-- usage record and rollups, in one atomic step (so the ledger always agrees with the spend).
-- KEYS: 1 record, 2 state, 3 reservations, 4 deadlines, 5 settled, 6 spent:day, 7 spent:month,
--       8 spent:total, 9 images:day, 10 rollup:day, 11 ledger
-- ARGV: 1 request id, 2 images delivered, 3 unit price if no reservation is found, 4 model,
--       5 oldest ledger id to keep (ms), 6 the usage record as a JSON list of name, value
--       strings (one argument, not thirty: redis-py packs each argument in Python)
-- A request id that was settled already (a replay from the spool, a resend) changes nothing.
local request_id = ARGV[1]
if redis.call('ZSCORE', KEYS[5], request_id) then return {'duplicate'} end
local now = now_ms()
local images = tonumber(ARGV[2])
local unit_price = tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[3], request_id)
if held then
  local _, _, reserved_price = parse_reservation(held)
  unit_price = reserved_price
  release(KEYS[2], KEYS[3], KEYS[4], request_id, held)
end
-- Images delivered beyond the reservation are still charged: the upstream billed them.
local charge = images * unit_price
if charge > 0 then
  redis.call('INCRBY', KEYS[6], int(charge))
  redis.call('INCRBY', KEYS[7], int(charge))
  redis.call('INCRBY', KEYS[8], int(charge))
end
redis.call('EXPIRE', KEYS[6], 3 * 86400)
redis.call('EXPIRE', KEYS[7], 40 * 86400)
if images > 0 then
  redis.call('INCRBY', KEYS[9], images)
  redis.call('EXPIRE', KEYS[9], 3 * 86400)
end
local model = ARGV[4]
redis.call('HINCRBY', KEYS[10], model .. '|calls', 1)
redis.call('HINCRBY', KEYS[10], model .. '|images', images)
redis.call('HINCRBY', KEYS[10], model .. '|spend', int(charge))
redis.call('ZADD', KEYS[5], now, request_id)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 2 * 86400000)

local fields = {'unit_price_micros', int(unit_price), 'charge_micros', int(charge),
  'reserved', held and '1' or '0'}
for _, item in ipairs(cjson.decode(ARGV[6])) do fields[#fields + 1] = item end
redis.call('XADD', KEYS[11], 'MINID', '~', ARGV[5], '*', unpack(fields))

local rec = redis.call('HMGET', KEYS[1], 'budget_micros', 'budget_period')
local budget = tonumber(rec[1] or '-1')
local spent_key = period_key(rec[2] or 'total', KEYS[6], KEYS[7], KEYS[8])
local spent = tonumber(redis.call('GET', spent_key) or '0')
local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved_micros') or '0')
return {'ok', int(charge), int(unit_price), int(budget), int(spent), int(reserved)}

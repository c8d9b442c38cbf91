-- Authenticate a team key and reserve what one call may cost, in one atomic step.
-- KEYS: 1 record, 2 state, 3 reservations, 4 deadlines, 5 spent:day, 6 spent:month,
--       7 spent:total, 8 images:day  (all under one hash tag: the key_id)
-- ARGV: 1 sha256 of the presented secret, 2 model, 3 request id, 4 most images the call can
--       return, 5 unit price (micro-USD), 6 reservation lifetime (ms)
-- Checks, in the order callers get them: key (unknown, revoked, expired), model allowed, then
-- limits with the one that retrying cannot fix first: budget, images per day, rate, concurrency.
-- Nothing is written unless every check passes.
local rec = redis.call('HMGET', KEYS[1], 'secret_hash', 'prev_secret_hash', 'prev_valid_until',
  'revoked_at', 'expires_at', 'models', 'budget_micros', 'budget_period', 'images_per_day', 'rpm',
  'max_concurrent', 'team', 'name')
if not rec[1] then return {'invalid_key'} end
local now = now_ms()
local presented = ARGV[1]
if presented ~= rec[1] then
  if not (rec[2] and presented == rec[2] and tonumber(rec[3] or '0') > now) then
    return {'invalid_key'}
  end
end
local team, name = rec[12], rec[13]
if tonumber(rec[4] or '0') > 0 then return {'revoked', team, name, rec[4]} end
local expires_at = tonumber(rec[5] or '0')
if expires_at > 0 and now >= expires_at then return {'expired', team, name, rec[5]} end
local models = rec[6] or ''
if models ~= '' and not string.find(models, ',' .. ARGV[2] .. ',', 1, true) then
  return {'model_not_allowed', team, name}
end

local request_id = ARGV[3]
local max_images = tonumber(ARGV[4])
local unit_price = tonumber(ARGV[5])
local amount = max_images * unit_price
local budget = tonumber(rec[7] or '-1')
local period = rec[8] or 'total'
local spent_key = period_key(period, KEYS[5], KEYS[6], KEYS[7])

if redis.call('HEXISTS', KEYS[3], request_id) == 1 then
  -- The same request retried by the cluster client: the reservation already stands.
  local spent = tonumber(redis.call('GET', spent_key) or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved_micros') or '0')
  return {'ok', team, name, int(budget), int(spent), int(reserved), -1, -1, 0, int(amount), period}
end

release_orphans(KEYS[2], KEYS[3], KEYS[4], now)
local st = redis.call('HMGET', KEYS[2], 'reserved_micros', 'reserved_images', 'inflight', 'tat_us')
local reserved = tonumber(st[1] or '0')
local reserved_images = tonumber(st[2] or '0')
local inflight = tonumber(st[3] or '0')

local spent = 0
if budget >= 0 then
  spent = tonumber(redis.call('GET', spent_key) or '0')
  if spent + reserved + amount > budget then
    return {'budget', team, name, int(budget), int(spent), int(reserved), int(amount), period}
  end
end

local images_per_day = tonumber(rec[9] or '-1')
if images_per_day >= 0 then
  local used = tonumber(redis.call('GET', KEYS[8]) or '0')
  if used + reserved_images + max_images > images_per_day then
    return {'images_per_day', team, name, images_per_day, used, reserved_images, max_images}
  end
end

-- Requests per minute as GCRA: a burst of up to rpm, then one every 60/rpm seconds; unlike a
-- fixed minute it never lets 2 x rpm through around a minute boundary.
local rpm = tonumber(rec[10] or '-1')
local new_tat, remaining, reset_ms = nil, -1, 0
if rpm > 0 then
  local now_us = now * 1000
  local interval = math.floor(60000000 / rpm)
  local tat = math.max(tonumber(st[4] or '0'), now_us)
  new_tat = tat + interval
  local allow_at = new_tat - 60000000
  if now_us < allow_at then
    return {'rpm', team, name, rpm, math.ceil((allow_at - now_us) / 1000)}
  end
  remaining = math.floor((60000000 - (new_tat - now_us)) / interval)
  reset_ms = math.ceil((new_tat - now_us) / 1000)
end

local max_concurrent = tonumber(rec[11] or '-1')
if max_concurrent >= 0 and inflight >= max_concurrent then
  return {'concurrency', team, name, max_concurrent}
end

if new_tat then redis.call('HSET', KEYS[2], 'tat_us', int(new_tat)) end
redis.call('HINCRBY', KEYS[2], 'reserved_micros', int(amount))
redis.call('HINCRBY', KEYS[2], 'reserved_images', max_images)
redis.call('HINCRBY', KEYS[2], 'inflight', 1)
redis.call('HSET', KEYS[3], request_id, int(amount) .. ':' .. max_images .. ':' .. int(unit_price))
redis.call('ZADD', KEYS[4], int(now + tonumber(ARGV[6])), request_id)
return {'ok', team, name, int(budget), int(spent), int(reserved + amount), rpm, remaining, reset_ms,
  int(amount), period}

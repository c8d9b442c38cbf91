-- Read one key's budget state after releasing orphaned reservations, so that what the admin API
-- shows is what the next reservation would see.
-- KEYS: 1 record, 2 state, 3 reservations, 4 deadlines, 5 spent:day, 6 spent:month,
--       7 spent:total, 8 images:day
local now = now_ms()
release_orphans(KEYS[2], KEYS[3], KEYS[4], now)
local rec = redis.call('HMGET', KEYS[1], 'budget_micros', 'budget_period')
local period = rec[2] or 'total'
local spent = tonumber(redis.call('GET', period_key(period, KEYS[5], KEYS[6], KEYS[7])) or '0')
local st = redis.call('HMGET', KEYS[2], 'reserved_micros', 'reserved_images', 'inflight')
local images = tonumber(redis.call('GET', KEYS[8]) or '0')
return {int(tonumber(rec[1] or '-1')), period, int(spent), int(tonumber(st[1] or '0')),
  tonumber(st[2] or '0'), tonumber(st[3] or '0'), images}

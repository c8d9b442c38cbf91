-- The upstream channels' rest state, shared by every replica; upstream/rest.py owns this script.
-- KEYS: the rests hash, the failures hash and the channel's probe key, all under one tag.
-- Times are Redis' own clock, answered as 'now' so each process measures a rest on its own clock.
--   read: every rest and every count of failures in a row
--   fail <name> <threshold> <cooldown_ms> <rest_ms> <reason>: one more failure in a row; the channel
--     rests (answers until_ms) when the count reaches threshold, at once for rest_ms > 0 (its key
--     or balance refused, or a 429's Retry-After), or when its rest was over and not yet lifted
--   ok <name>: it answered: failures in a row cleared, and its rest lifted if the rest is over
--   probe <name> <ttl_ms>: claim the one live call testing a channel whose rest is over: probe 1
--     claimed, 0 resting or held by another call, 2 not resting at all
local rests, failures, probe = KEYS[1], KEYS[2], KEYS[3]
local action, name = ARGV[1], ARGV[2]
local now = now_ms()

local function rest_until(value)
  if not value then return nil end
  return tonumber(string.match(value, '^(%d+)'))
end

if action == 'read' then
  return {'now', now, 'rests', redis.call('HGETALL', rests), 'failures', redis.call('HGETALL', failures)}
end

local current = rest_until(redis.call('HGET', rests, name))

if action == 'fail' then
  local threshold, cooldown, rest_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local count = redis.call('HINCRBY', failures, name, 1)
  if rest_ms <= 0 and (count >= threshold or (current and current <= now)) then rest_ms = cooldown end
  if rest_ms <= 0 then return {'now', now, 'until', 0} end
  local until_ms = now + rest_ms
  if current and current > until_ms then until_ms = current end
  redis.call('HSET', rests, name, int(until_ms) .. ':' .. ARGV[6])
  redis.call('HDEL', failures, name)
  redis.call('DEL', probe)
  return {'now', now, 'until', until_ms}
end

if action == 'ok' then
  redis.call('HDEL', failures, name)
  if current and current <= now then
    redis.call('HDEL', rests, name)
    redis.call('DEL', probe)
  end
  return {'now', now}
end

if action == 'probe' then
  if not current then return {'now', now, 'probe', 2} end
  if current > now then return {'now', now, 'probe', 0} end
  if redis.call('SET', probe, '1', 'NX', 'PX', ARGV[3]) then return {'now', now, 'probe', 1} end
  return {'now', now, 'probe', 0}
end

return redis.error_reply('channel_rest: unknown action ' .. tostring(action))

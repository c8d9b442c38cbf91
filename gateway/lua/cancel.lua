-- Cancel a reserve whose caller was told 503 because its command timed out (a Redis stall, or a
-- burst queued behind the connection bound). If the reserve ran, release what it holds; either
-- way leave a mark, so that a reserve still queued reserves nothing when Redis gets to it.
-- Safe to run twice, and in either order with the reserve it cancels.
local state_key, reservations_key, deadlines_key, cancelled_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local request_id, remember_ms = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local value = redis.call('HGET', reservations_key, request_id)
if value then release(state_key, reservations_key, deadlines_key, request_id, value) end
redis.call('ZADD', cancelled_key, now, request_id)
redis.call('ZREMRANGEBYSCORE', cancelled_key, '-inf', now - remember_ms)
redis.call('PEXPIRE', cancelled_key, remember_ms)
return {'released', value and 1 or 0}

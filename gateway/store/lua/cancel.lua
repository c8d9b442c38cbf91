-- Cancel a reserve whose caller was told 503 because its command timed out (a Redis stall, or a
-- burst queued behind the connection bound). If the reserve ran, release what it holds; either
-- way leave a mark, so that a reserve still queued reserves nothing when Redis gets to it.
-- Safe to run twice, and in either order with the reserve it cancels.
local k = {state = KEYS[1], res = KEYS[2]}
local cancelled_key = KEYS[3]
local team = {state = KEYS[4], deadlines = KEYS[5]}
local request_id, remember_ms = ARGV[1], tonumber(ARGV[2])
k.id = ARGV[3]
local now = now_ms()
local value = redis.call('HGET', k.res, request_id)
if value then release(k, team, request_id, value) end
redis.call('ZADD', cancelled_key, now, request_id)
redis.call('ZREMRANGEBYSCORE', cancelled_key, '-inf', now - remember_ms)
redis.call('PEXPIRE', cancelled_key, remember_ms)
return {'released', value and 1 or 0}

-- Claim an Idempotency-Key for one request, or find the result of the request that claimed it.
-- A claim resent by the Redis client after a timeout finds its own pending record and goes
-- ahead, instead of answering its own request "in progress". Answers name, value pairs.
local record_key = KEYS[1]  -- under the team key's hash tag
local body_sha, pending_ms, owner = ARGV[1], ARGV[2], ARGV[3]
local found = hmget_named(record_key, {'body_sha', 'state', 'status', 'headers', 'body', 'owner'})
if not found.body_sha then
  redis.call('HSET', record_key, 'body_sha', body_sha, 'state', 'pending', 'owner', owner)
  redis.call('PEXPIRE', record_key, pending_ms)
  return {'state', 'new'}
end
if found.body_sha ~= body_sha then return {'state', 'conflict'} end
if found.state == 'pending' then
  if owner ~= '' and found.owner == owner then return {'state', 'new'} end
  return {'state', 'pending'}
end
return {'state', found.state, 'status', found.status or '', 'headers', found.headers or '',
  'body', found.body or ''}

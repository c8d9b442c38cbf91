-- Keep the result of a request that claimed an Idempotency-Key. A script rather than a MULTI
-- pipeline: the async cluster client refuses transactions; a script runs the same everywhere.
-- body_sha stays, so a repeat with another body is still a conflict.
local record_key = KEYS[1]
local lifetime_s = ARGV[1]
redis.call('HSET', record_key, unpack(ARGV, 2))  -- field, value pairs
redis.call('EXPIRE', record_key, lifetime_s)
return 1

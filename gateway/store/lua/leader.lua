-- The alert sender's leader lock (alerts/leader.py): renew or release it only if this process
-- still holds it, in one step, so a process that lost the lock never extends or deletes the
-- lock of the one that took it over. KEYS[1]: the lock; ARGV: op ('renew'|'release'), owner
-- token, lifetime in ms. Answers 1 if the caller held the lock, else 0.
local lock_key = KEYS[1]
local op, owner, lifetime_ms = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lock_key) ~= owner then return 0 end
if op == 'release' then
  redis.call('DEL', lock_key)
else
  redis.call('PEXPIRE', lock_key, lifetime_ms)
end
return 1

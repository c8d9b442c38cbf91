-- Shared by every script (prepended by budget.py). Numbers are formatted with %d because Redis
-- would turn a large Lua number into "1e+15", which INCRBY refuses.
local function int(n) return string.format('%d', n) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A reservation is stored as "amount:images:unit_price".
local function parse_reservation(value)
  local amount, images, price = string.match(value, '^(%d+):(%d+):(%d+)$')
  return tonumber(amount), tonumber(images), tonumber(price)
end

-- Give back what one reservation holds: its money, its images and its concurrency slot.
local function release(state, reservations, deadlines, request_id, value)
  local amount, images = parse_reservation(value)
  redis.call('HINCRBY', state, 'reserved_micros', -amount)
  redis.call('HINCRBY', state, 'reserved_images', -images)
  redis.call('HINCRBY', state, 'inflight', -1)
  redis.call('HDEL', reservations, request_id)
  redis.call('ZREM', deadlines, request_id)
end

-- Release reservations whose deadline passed: their process died before it could settle.
local function release_orphans(state, reservations, deadlines, now)
  local orphans = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, 100)
  for _, request_id in ipairs(orphans) do
    local value = redis.call('HGET', reservations, request_id)
    if value then
      release(state, reservations, deadlines, request_id, value)
    else
      redis.call('ZREM', deadlines, request_id)
    end
  end
  return #orphans
end

-- The spent counter that the key's budget period reads.
local function period_key(period, day_key, month_key, total_key)
  if period == 'day' then return day_key end
  if period == 'month' then return month_key end
  return total_key
end

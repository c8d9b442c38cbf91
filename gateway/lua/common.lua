-- Shared by every script. scripts.py prepends it as ONE line, before line 1 of each script, so the
-- line numbers in Redis' error messages are the script file's own. Keep it free of long strings.
-- Numbers are formatted with %d because Redis would turn a large Lua number into "1e+15", which
-- INCRBY refuses.
local function int(n) return string.format('%d', n) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- HMGET by name: a table field -> value (false where the field is missing).
local function hmget_named(key, names)
  local values = redis.call('HMGET', key, unpack(names))
  local found = {}
  for i, name in ipairs(names) do found[name] = values[i] end
  return found
end

local function number_or(value, default)
  if value then return tonumber(value) end
  return default
end

-- A reservation is stored as "amount:images:unit_price".
local function parse_reservation(value)
  local amount, images, price = string.match(value, '^(%d+):(%d+):(%d+)$')
  return tonumber(amount), tonumber(images), tonumber(price)
end

-- HINCRBY by a Lua number, skipping zero: Redis refuses the increment "-0", which string.format
-- gives for a negated zero (a free model's reservation).
local function hincr(key, field, delta)
  if delta ~= 0 then redis.call('HINCRBY', key, field, int(delta)) end
end

-- Give back what one reservation holds: its money, its images and its concurrency slot.
local function release(state_key, reservations_key, deadlines_key, request_id, value)
  local amount, images = parse_reservation(value)
  hincr(state_key, 'reserved_micros', -amount)
  hincr(state_key, 'reserved_images', -images)
  hincr(state_key, 'inflight', -1)
  redis.call('HDEL', reservations_key, request_id)
  redis.call('ZREM', deadlines_key, request_id)
end

-- Release reservations whose deadline passed: their process died before it could settle.
local function release_orphans(state_key, reservations_key, deadlines_key, now)
  local orphans = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, 100)
  for _, request_id in ipairs(orphans) do
    local value = redis.call('HGET', reservations_key, request_id)
    if value then
      release(state_key, reservations_key, deadlines_key, request_id, value)
    else
      redis.call('ZREM', deadlines_key, request_id)
    end
  end
  return #orphans
end

-- The spent counter that a budget period reads.
local function period_key(period, day_key, month_key, total_key)
  if period == 'day' then return day_key end
  if period == 'month' then return month_key end
  return total_key
end

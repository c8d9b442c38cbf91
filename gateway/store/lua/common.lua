-- Shared by every script. store/scripts.py prepends it as ONE line, before line 1 of each script, so the
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

-- A reservation is stored as "amount:images:unit_price:day:model" (the model last: it may hold a
-- colon). One written by the release before (still in Redis at an upgrade) is
-- "amount:images:unit_price" and parses with day and model nil.
local function parse_reservation(value)
  local amount, images, price, day, model = string.match(value, '^(%d+):(%d+):(%d+):([^:]*):(.*)$')
  if not amount then amount, images, price = string.match(value, '^(%d+):(%d+):(%d+)$') end
  return tonumber(amount), tonumber(images), tonumber(price), day, model
end

local function reservation_value(amount, images, price, day, model)
  return int(amount) .. ':' .. int(images) .. ':' .. int(price) .. ':' .. day .. ':' .. model
end

-- HINCRBY by a Lua number, skipping zero: Redis refuses the increment "-0", which string.format
-- gives for a negated zero (a free model's reservation).
local function hincr(key, field, delta)
  if delta ~= 0 then redis.call('HINCRBY', key, field, int(delta)) end
end

-- The names of one key's state under its team's tag: keyspace.KeySpace, mirrored here for the
-- orphan sweep, which meets other keys of the team (same tag, so the same slot); a test checks
-- that the two agree. team: {tag, state, deadlines} (keyspace.TeamSpace).
local function key_names(team, key_id)
  local tag = team.tag .. ':key:' .. key_id
  return {id = key_id, record = tag .. ':record', state = tag .. ':state', res = tag .. ':res',
    ledger = tag .. ':ledger'}
end

-- Give back what one reservation holds: its money and images (the key's and the team's) and the
-- key's concurrency slot; returns the money and images it held. k: key_names(); team: {tag, state,
-- deadlines}.
local function release(k, team, request_id, value)
  local amount, images = parse_reservation(value)
  hincr(k.state, 'reserved_micros', -amount)
  hincr(k.state, 'reserved_images', -images)
  hincr(k.state, 'inflight', -1)
  hincr(team.state, 'reserved_micros', -amount)
  hincr(team.state, 'reserved_images', -images)
  redis.call('HDEL', k.res, request_id)
  redis.call('ZREM', team.deadlines, k.id .. '/' .. request_id)
  return amount, images
end

-- The ledger record of a call whose holder died. sweep.template (orphan_record.TEMPLATE) is every
-- UsageRecord field, in order, with its orphan value; this fills in by name what only the
-- reservation and the key record know. orphan_record.FILLED_BY_SCRIPT lists these names.
local function write_orphan_record(k, sweep, request_id, value, now)
  local _, images, price, day, model = parse_reservation(value)
  local who = hmget_named(k.record, {'team', 'name'})
  local filled = {request_id = request_id, ts_ms = int(now), day = day or sweep.today,
    team = who.team or '', key_id = k.id, key_name = who.name or '', model = model or 'unknown',
    n = int(images), unit_price_micros = int(price)}
  local fields = cjson.decode(sweep.template)
  for i = 1, #fields, 2 do
    if filled[fields[i]] ~= nil then fields[i + 1] = filled[fields[i]] end
  end
  redis.call('XADD', k.ledger, '*', unpack(fields))
end

-- Release the team's reservations whose deadline passed: their process died before it could
-- settle. The sweep covers every key of the team, so a dead key's orphans cannot hold the team's
-- budget. Each gets a ledger record (outcome orphaned, no charge, reconcile 1): the upstream may
-- bill it. The request id is not marked settled, so a late settlement of a process that was only
-- cut off still charges (finance then sees both records; the later one is authoritative).
-- sweep: {today, template}.
local function release_orphans(team, now, sweep)
  local orphans = redis.call('ZRANGEBYSCORE', team.deadlines, '-inf', now, 'LIMIT', 0, 100)
  for _, member in ipairs(orphans) do
    local key_id, request_id = string.match(member, '^([^/]+)/(.*)$')
    local k = key_names(team, key_id or '')
    local value = key_id and redis.call('HGET', k.res, request_id)
    if value then
      write_orphan_record(k, sweep, request_id, value, now)
      release(k, team, request_id, value)
    else
      redis.call('ZREM', team.deadlines, member)
    end
  end
  return #orphans
end

-- Alert thresholds as stored: millionths of the budget, "500000,800000,1000000" (admin/teams.py).
local function thresholds_of(text)
  local found = {}
  for item in string.gmatch(text or '', '%d+') do found[#found + 1] = tonumber(item) end
  return found
end

-- Whether spent has reached ppm millionths of budget, in integers: ppm x budget may pass 2^53,
-- past which a Lua number is not exact. With budget = q x 10^6 + r it is spent - ppm q >= ppm r / 10^6.
local function reached(spent, ppm, budget)
  local q, r = math.floor(budget / 1000000), budget % 1000000
  local ahead = spent - ppm * q
  if ahead < 0 then return false end
  if ahead >= 1000000 then return true end
  return ahead * 1000000 >= ppm * r
end

-- A budget period's id (as in alert ids and marks) and first day, from the UTC day 2026-11-30:
-- d2026-11-30 and 2026-11-30, m2026-11 and 2026-11-01, or total and ''.
local function period_of(period, today)
  if period == 'day' then return 'd' .. today, today end
  if period == 'month' then return 'm' .. string.sub(today, 1, 7), string.sub(today, 1, 7) .. '-01' end
  return 'total', ''
end

-- How long what is remembered about a period (alerted thresholds, a used-up budget) is kept: past
-- its end, with margin; a total budget's for ever (nil).
local function period_ttl(period)
  if period == 'day' then return 3 * 86400 end
  if period == 'month' then return 40 * 86400 end
  return nil
end

-- Queue one budget alert in the team's outbox for alerts/sender.py, once per scope, period and
-- threshold: the alerted set remembers each threshold for the period. Answers 1 if queued.
-- a: scope (team or key), scope_id (team or key:<key_id>), key_id, key_name, team_tag, team_name,
-- outbox, bodies, period, period_id, period_start, ppm, spent, budget, now, and refused: the call
-- the budget could not cover (nil when spend reached the threshold). alerts/message.py reads it.
local function queue_alert(a)
  local alerted = a.team_tag .. ':alerted:' .. a.scope_id .. ':' .. a.period_id
  if redis.call('SADD', alerted, int(a.ppm)) == 0 then return 0 end
  local ttl = period_ttl(a.period)
  if ttl then redis.call('EXPIRE', alerted, ttl) end
  local id = a.scope_id .. ':' .. a.period_id .. ':' .. int(a.ppm)
  local facts = {scope = a.scope, team = a.team_name, key_id = a.key_id, key_name = a.key_name,
    threshold_ppm = int(a.ppm), spent_micros = int(a.spent), budget_micros = int(a.budget),
    period = a.period, period_start = a.period_start, at_ms = int(a.now)}
  if a.refused then facts.refused_micros = int(a.refused) end
  redis.call('HSET', a.bodies, id, cjson.encode(facts))
  redis.call('ZADD', a.outbox, int(a.now), id)
  return 1
end

-- Whether a budget is used up for its period: spent reached it, or it refused a call while what
-- is spent left less than one image (reserve.lua marks that, with the budget it had; a budget
-- raised since is not used up). mark: the mark's value, or false.
local function exhausted(budget, spent, mark)
  if budget < 0 then return false end
  return spent >= budget or (mark and tonumber(mark) >= budget) or false
end

-- The spent counter that a budget period reads.
local function period_key(period, day_key, month_key, total_key)
  if period == 'day' then return day_key end
  if period == 'month' then return month_key end
  return total_key
end

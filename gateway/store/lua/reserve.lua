-- Authenticate a team key and reserve what one call may cost, against the key's limits and its
-- team's, in one atomic step (key and team share a hash tag: one slot).
-- Checks, in the order callers get them: key (unknown, revoked, expired), model allowed, then
-- limits with the one that retrying cannot fix first: the key's budget, the team's budget, the
-- key's and the team's images per day, rate, concurrency.
-- Nothing is written unless every check passes, nor when Redis runs it after the gateway's deadline
-- or after cancel.lua cancelled it (kind 'late'), with one exception: a budget that refuses a call
-- while what is spent leaves less than one image is used up for its period, and that is marked
-- (and alerted at threshold 1, once per period) here, where it is found out.
-- Answers a flat list of name, value pairs whose first pair is 'kind'; money/budget.py decodes
-- it by name.
local k = {record = KEYS[1], state = KEYS[2], res = KEYS[3], ledger = KEYS[4]}
local cancelled_key = KEYS[5]
local spent_day_key, spent_month_key, spent_total_key, images_day_key = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local team = {settings = KEYS[10], state = KEYS[11], deadlines = KEYS[12]}
local team_spent_day, team_spent_month, team_spent_total = KEYS[13], KEYS[14], KEYS[15]
local team_images_day = KEYS[16]
local outbox_key, outbox_bodies_key = KEYS[17], KEYS[18]
local presented_hash, model, request_id = ARGV[1], ARGV[2], ARGV[3]
local max_images, unit_price = tonumber(ARGV[4]), tonumber(ARGV[5])
local lifetime_ms = tonumber(ARGV[6])  -- how long until the reservation is presumed orphaned
local deadline_ms = tonumber(ARGV[7])  -- gateway's clock: past it the caller was told 503
local today, orphan_template = ARGV[8], ARGV[9]  -- the UTC day; orphan_record.TEMPLATE
k.id, team.tag = ARGV[10], ARGV[11]

local now = now_ms()
if redis.call('ZSCORE', cancelled_key, request_id) then
  -- Its caller was told 503 and the gateway cancelled it before Redis got to run it.
  return {'kind', 'late', 'late_ms', 0}
end
if now > deadline_ms then
  -- Queued behind a stall (a paused or overloaded Redis): the gateway gave up on this command and
  -- answered 503, so hold nothing. A reservation this request id got from an earlier send (a
  -- cluster client's resend) goes too: its caller hears 'late' as well.
  local value = redis.call('HGET', k.res, request_id)
  if value then release(k, team, request_id, value) end
  return {'kind', 'late', 'late_ms', int(now - deadline_ms)}
end

-- A previous secret still in its own grace (admin/previous_secrets.py: the format, the other reader).
local function previous_secret_ok(key, presented, now)
  if key.prev_secret_hash == presented and number_or(key.prev_valid_until, 0) > now then
    return true  -- rotated by the release before: one previous secret
  end
  for secret_hash, valid_until in string.gmatch(key.prev_secrets or '', '(%x+):(%d+)') do
    if secret_hash == presented and tonumber(valid_until) > now then return true end
  end
  return false
end

local key = hmget_named(k.record, {'secret_hash', 'prev_secret_hash', 'prev_valid_until',
  'prev_secrets', 'revoked_at', 'expires_at', 'models', 'budget_micros', 'budget_period', 'images_per_day', 'rpm',
  'max_concurrent', 'team', 'name'})
if not key.secret_hash then return {'kind', 'invalid_key'} end
if presented_hash ~= key.secret_hash and not previous_secret_ok(key, presented_hash, now) then
  return {'kind', 'invalid_key'}
end
local who = {'team', key.team, 'key_name', key.name}
local function denied(kind, fields)
  local reply = {'kind', kind, unpack(who)}
  for _, item in ipairs(fields or {}) do reply[#reply + 1] = item end
  return reply
end
if number_or(key.revoked_at, 0) > 0 then return denied('revoked', {'at_ms', key.revoked_at}) end
local expires_at = number_or(key.expires_at, 0)
if expires_at > 0 and now >= expires_at then
  return denied('expired', {'at_ms', key.expires_at})
end
local models = key.models or ''
-- A name with a comma could match two listed names (core/model_names.py forbids it everywhere).
local listed = string.find(models, ',' .. model .. ',', 1, true)
if models ~= '' and (string.find(model, ',', 1, true) or not listed) then
  return denied('model_not_allowed')
end

local amount = max_images * unit_price
local budget = number_or(key.budget_micros, -1)
local period = key.budget_period or 'total'

if redis.call('HEXISTS', k.res, request_id) == 1 then
  -- The same request resent by the cluster client after a timeout: the reservation stands.
  return {'kind', 'ok', 'team', key.team, 'key_name', key.name}
end

release_orphans(team, now, {today = today, template = orphan_template})
local held = hmget_named(k.state, {'reserved_micros', 'reserved_images', 'inflight', 'tat_us'})
local reserved = number_or(held.reserved_micros, 0)
local reserved_images = number_or(held.reserved_images, 0)
local inflight = number_or(held.inflight, 0)

-- A budget whose spend leaves less than one image refused a call: it is used up for the period.
-- The mark keeps the budget it applies to (a budget raised since is not used up: common.lua
-- exhausted); the alert at threshold 1, if the scope has one, goes out once per period.
local function mark_exhausted(scope, budget_micros, budget_period, spent)
  local scope_id = scope == 'team' and 'team' or ('key:' .. k.id)
  local period_id, period_start = period_of(budget_period, today)
  local mark = team.tag .. ':exhausted:' .. scope_id .. ':' .. period_id
  if redis.call('GET', mark) ~= int(budget_micros) then
    redis.call('SET', mark, int(budget_micros))
    local ttl = period_ttl(budget_period)
    if ttl then redis.call('EXPIRE', mark, ttl) end
  end
  if budget_micros <= 0 then return 0 end
  local thresholds = redis.call('HGET', scope == 'team' and team.settings or k.record, 'alert_thresholds')
  for _, ppm in ipairs(thresholds_of(thresholds or '')) do
    if ppm == 1000000 then
      return queue_alert({scope = scope, scope_id = scope_id, key_id = scope == 'team' and '' or k.id,
        key_name = scope == 'team' and '' or (key.name or ''), team_tag = team.tag, team_name = key.team,
        outbox = outbox_key, bodies = outbox_bodies_key, period = budget_period, period_id = period_id,
        period_start = period_start, ppm = ppm, spent = spent, budget = budget_micros, now = now,
        refused = amount})
    end
  end
  return 0
end

local function over_budget(scope, budget_micros, budget_period, spent_keys, reserved_micros)
  if budget_micros < 0 then return nil end
  local spent = number_or(redis.call('GET', period_key(budget_period, unpack(spent_keys))), 0)
  if spent + reserved_micros + amount <= budget_micros then return nil end
  local exhausted_now, queued = spent + unit_price > budget_micros, 0
  if exhausted_now then queued = mark_exhausted(scope, budget_micros, budget_period, spent) end
  return denied('budget', {'scope', scope, 'budget_micros', int(budget_micros), 'spent_micros',
    int(spent), 'reserved_micros', int(reserved_micros), 'amount_micros', int(amount),
    'period', budget_period, 'unit_price_micros', int(unit_price), 'exhausted', exhausted_now and 1 or 0,
    'alerts_queued', queued})
end

local function over_images(scope, cap, counter_key, reserved_images_now)
  if cap < 0 then return nil end
  local used = number_or(redis.call('GET', counter_key), 0)
  if used + reserved_images_now + max_images <= cap then return nil end
  return denied('images_per_day', {'scope', scope, 'cap', cap, 'used', used,
    'reserved_images', reserved_images_now, 'wanted', max_images})
end

local team_cfg = hmget_named(team.settings, {'budget_micros', 'budget_period', 'images_per_day'})
local team_held = hmget_named(team.state, {'reserved_micros', 'reserved_images'})
local refused = over_budget('key', budget, period, {spent_day_key, spent_month_key, spent_total_key},
    reserved)
  or over_budget('team', number_or(team_cfg.budget_micros, -1), team_cfg.budget_period or 'month',
    {team_spent_day, team_spent_month, team_spent_total}, number_or(team_held.reserved_micros, 0))
  or over_images('key', number_or(key.images_per_day, -1), images_day_key, reserved_images)
  or over_images('team', number_or(team_cfg.images_per_day, -1), team_images_day,
    number_or(team_held.reserved_images, 0))
if refused then return refused end

-- Requests per minute as GCRA: a burst of up to rpm, then one every 60/rpm seconds; unlike a
-- fixed minute it never lets 2 x rpm through around a minute boundary.
local rpm = number_or(key.rpm, -1)
local new_tat, remaining, reset_ms = nil, -1, 0
if rpm > 0 then
  local now_us = now * 1000
  local interval = math.floor(60000000 / rpm)
  local tat = math.max(number_or(held.tat_us, 0), now_us)
  new_tat = tat + interval
  local allow_at = new_tat - 60000000
  if now_us < allow_at then
    return denied('rpm', {'rpm', rpm, 'retry_ms', math.ceil((allow_at - now_us) / 1000)})
  end
  remaining = math.floor((60000000 - (new_tat - now_us)) / interval)
  reset_ms = math.ceil((new_tat - now_us) / 1000)
end

local max_concurrent = number_or(key.max_concurrent, -1)
if max_concurrent >= 0 and inflight >= max_concurrent then
  return denied('concurrency', {'max_concurrent', max_concurrent})
end

-- One write per hash, from the values read above: the script is atomic, nothing changed them
-- since (five HINCRBY and an HSET before: a quarter of the script's commands).
local state = {'reserved_micros', int(reserved + amount),
  'reserved_images', int(reserved_images + max_images), 'inflight', int(inflight + 1)}
if new_tat then
  state[#state + 1] = 'tat_us'
  state[#state + 1] = int(new_tat)
end
redis.call('HSET', k.state, unpack(state))
redis.call('HSET', team.state, 'reserved_micros', int(number_or(team_held.reserved_micros, 0) + amount),
  'reserved_images', int(number_or(team_held.reserved_images, 0) + max_images))
redis.call('HSET', k.res, request_id, reservation_value(amount, max_images, unit_price, today, model))
redis.call('ZADD', team.deadlines, int(now + lifetime_ms), k.id .. '/' .. request_id)
return {'kind', 'ok', 'team', key.team, 'key_name', key.name, 'rpm', rpm, 'rpm_remaining', remaining,
  'rpm_reset_ms', reset_ms}

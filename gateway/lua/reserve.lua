-- Authenticate a team key and reserve what one call may cost, in one atomic step.
-- Checks, in the order callers get them: key (unknown, revoked, expired), model allowed, then
-- limits with the one that retrying cannot fix first: budget, images per day, rate, concurrency.
-- Nothing is written unless every check passes, nor when Redis runs it after the gateway's deadline
-- or after cancel.lua cancelled it (kind 'late'). Answers a flat list of name, value pairs whose
-- first pair is 'kind'; budget.py decodes it by name.
local record_key, state_key, reservations_key, deadlines_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local spent_day_key, spent_month_key, spent_total_key = KEYS[5], KEYS[6], KEYS[7]
local images_day_key, ledger_key, cancelled_key = KEYS[8], KEYS[9], KEYS[10]  -- one hash tag: key_id
local presented_hash, model, request_id = ARGV[1], ARGV[2], ARGV[3]
local max_images, unit_price = tonumber(ARGV[4]), tonumber(ARGV[5])
local lifetime_ms = tonumber(ARGV[6])  -- how long until the reservation is presumed orphaned
local deadline_ms = tonumber(ARGV[7])  -- gateway's clock: past it the caller was told 503
local today, orphan_template = ARGV[8], ARGV[9]  -- the UTC day; orphan_record.TEMPLATE

local now = now_ms()
if redis.call('ZSCORE', cancelled_key, request_id) then
  -- Its caller was told 503 and the gateway cancelled it before Redis got to run it.
  return {'kind', 'late', 'late_ms', 0}
end
if now > deadline_ms then
  -- Queued behind a stall (a paused or overloaded Redis): the gateway gave up on this command and
  -- answered 503, so hold nothing. A reservation this request id got from an earlier send (a
  -- cluster client's resend) goes too: its caller hears 'late' as well.
  local value = redis.call('HGET', reservations_key, request_id)
  if value then release(state_key, reservations_key, deadlines_key, request_id, value) end
  return {'kind', 'late', 'late_ms', int(now - deadline_ms)}
end

-- A previous secret still in its own grace (previous_secrets.py: the format, the other reader).
local function previous_secret_ok(key, presented, now)
  if key.prev_secret_hash == presented and number_or(key.prev_valid_until, 0) > now then
    return true  -- rotated by the release before: one previous secret
  end
  for secret_hash, valid_until in string.gmatch(key.prev_secrets or '', '(%x+):(%d+)') do
    if secret_hash == presented and tonumber(valid_until) > now then return true end
  end
  return false
end

local key = hmget_named(record_key, {'secret_hash', 'prev_secret_hash', 'prev_valid_until',
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
-- A name with a comma could match two listed names (model_names.py forbids it everywhere).
local listed = string.find(models, ',' .. model .. ',', 1, true)
if models ~= '' and (string.find(model, ',', 1, true) or not listed) then
  return denied('model_not_allowed')
end

local amount = max_images * unit_price
local budget = number_or(key.budget_micros, -1)
local period = key.budget_period or 'total'
local spent_key = period_key(period, spent_day_key, spent_month_key, spent_total_key)

if redis.call('HEXISTS', reservations_key, request_id) == 1 then
  -- The same request resent by the cluster client after a timeout: the reservation stands.
  return {'kind', 'ok', 'team', key.team, 'key_name', key.name}
end

release_orphans(state_key, reservations_key, deadlines_key, now,
  {record_key = record_key, ledger_key = ledger_key, today = today, template = orphan_template})
local held = hmget_named(state_key, {'reserved_micros', 'reserved_images', 'inflight', 'tat_us'})
local reserved = number_or(held.reserved_micros, 0)
local reserved_images = number_or(held.reserved_images, 0)
local inflight = number_or(held.inflight, 0)

if budget >= 0 then
  local spent = number_or(redis.call('GET', spent_key), 0)
  if spent + reserved + amount > budget then
    return denied('budget', {'budget_micros', int(budget), 'spent_micros', int(spent),
      'reserved_micros', int(reserved), 'amount_micros', int(amount), 'period', period})
  end
end

local images_per_day = number_or(key.images_per_day, -1)
if images_per_day >= 0 then
  local used = number_or(redis.call('GET', images_day_key), 0)
  if used + reserved_images + max_images > images_per_day then
    return denied('images_per_day', {'cap', images_per_day, 'used', used,
      'reserved_images', reserved_images, 'wanted', max_images})
  end
end

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

if new_tat then redis.call('HSET', state_key, 'tat_us', int(new_tat)) end
hincr(state_key, 'reserved_micros', amount)
hincr(state_key, 'reserved_images', max_images)
hincr(state_key, 'inflight', 1)
redis.call('HSET', reservations_key, request_id,
  reservation_value(amount, max_images, unit_price, today, model))
redis.call('ZADD', deadlines_key, int(now + lifetime_ms), request_id)
return {'kind', 'ok', 'team', key.team, 'key_name', key.name, 'rpm', rpm, 'rpm_remaining', remaining,
  'rpm_reset_ms', reset_ms}

-- Settle one call: spend what was delivered (the key's and its team's), release the rest of its
-- reservation, write its usage record and the team's rollups, and queue any budget alert it
-- triggers, in one atomic step (so the ledger, the spend and the alerts always agree).
-- The charge is computed once, by money.charge_micros, and applied here as given.
-- Exactly once: a request id settled within the last settled_memory_ms is refused as a duplicate
-- (a replay from the spool, a resend by the cluster client). settle.py keeps every spooled
-- settlement's replay inside that window, which is what makes spool replay exactly-once.
local k = {record = KEYS[1], state = KEYS[2], res = KEYS[3], ledger = KEYS[4]}
local settled_key = KEYS[5]
local spent_keys = {KEYS[6], KEYS[7], KEYS[8]}  -- day, month, total
local images_day_key = KEYS[9]
local team = {settings = KEYS[10], state = KEYS[11], deadlines = KEYS[12]}
local team_spent_keys = {KEYS[13], KEYS[14], KEYS[15]}
local team_images_day, rollup_key, key_rollup_key, users_key = KEYS[16], KEYS[17], KEYS[18], KEYS[19]
local outbox_key, outbox_bodies_key = KEYS[20], KEYS[21]
local request_id, images, charge = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local model, oldest_kept_ms, settled_memory_ms = ARGV[4], ARGV[5], tonumber(ARGV[6])
k.id, team.tag, team.name = ARGV[7], ARGV[8], ARGV[9]
local user = ARGV[10]  -- '' when the call named no end user
local period_ids = {ARGV[11], ARGV[12], 'total'}  -- 'd2026-11-30', 'm2026-11': the alert periods
local period_starts = {ARGV[13], ARGV[14], ''}  -- their first days
local over_delivered = tonumber(ARGV[15])  -- images delivered beyond the reservation, as ordered
-- '' or a JSON list of the records of the attempts the call moved on from (each a name, value
-- list): another channel was tried after them, they made no image and charge nothing.
local attempts = ARGV[16]
local RECORD_FROM = 17  -- ARGV[17..]: the usage record, name, value, name, value...

-- The call's channel and cost, read from its record by name. A channel's rollup fields carry its
-- name after the model ('<model>\30<channel>'); the default channel's are the fields of before
-- channels, so rollups written before them read as the default channel's.
local channel, cost = 'default', charge
for i = RECORD_FROM, #ARGV - 1, 2 do
  if ARGV[i] == 'channel' then channel = ARGV[i + 1] elseif ARGV[i] == 'cost_micros' then cost = tonumber(ARGV[i + 1]) end
end
local model_field = channel == 'default' and model or (model .. '\30' .. channel)

if redis.call('ZSCORE', settled_key, request_id) then return {'kind', 'duplicate'} end
local now = now_ms()
local held = redis.call('HGET', k.res, request_id)
local held_micros, held_images
if held then held_micros, held_images = release(k, team, request_id, held) end

-- A call is charged at most what its reservation holds (n, or max_images): the budget is a
-- ceiling whatever the upstream does. call/settle.py orders it so; an order that claims more (one
-- spooled by an older release) is capped here against the reservation, and the images beyond it
-- are recorded as over-delivered, to reconcile. Without a reservation (it lapsed) the order stands.
-- The record's fields are copied only then, to be rewritten.
local record, record_from = ARGV, RECORD_FROM
if held and (images > held_images or charge > held_micros) then
  over_delivered = over_delivered + math.max(0, images - held_images)
  local capped = math.min(images, held_images)
  -- The cost was the channel's unit cost times the images: the same unit times those charged.
  if images > 0 then cost = math.floor(cost / images) * capped end
  images, charge = capped, math.min(charge, held_micros)
  record, record_from = {unpack(ARGV, RECORD_FROM)}, 1
  local rewritten = {images = int(images), charge_micros = int(charge), cost_micros = int(cost),
    over_delivered = int(over_delivered), reconcile = '1'}
  for i = 1, #record - 1, 2 do
    if rewritten[record[i]] then record[i + 1] = rewritten[record[i]] end
  end
end

-- A period's counter gets its lifetime when this creates it (the increment is its whole value):
-- an EXPIRE on every call was a third of the script's Redis commands. Counters only grow, and
-- the one other writer (admin/layout_upgrade.py) sets them with their lifetime.
local function add(counter, amount, ttl_s)
  local now_at = redis.call('INCRBY', counter, int(amount))
  if ttl_s and now_at == amount then redis.call('EXPIRE', counter, ttl_s) end
end
local function add_spend(counters, images_key)
  if charge > 0 then
    add(counters[1], charge, 3 * 86400)
    add(counters[2], charge, 40 * 86400)
    add(counters[3], charge, nil)
  end
  if images > 0 then add(images_key, images, 3 * 86400) end
end
add_spend(spent_keys, images_day_key)
add_spend(team_spent_keys, team_images_day)

-- Rollups for reports, per UTC day: the team's per model ('<model>|<what>', what a report by team,
-- model or day reads), per key ('<key_id>|<what>|<model>') and per end user
-- ('<key_id>|<what>|<model>\31<user>'; neither a model name, a channel nor a user holds a control
-- char), <model> followed by its channel's name but for the default channel's.
local function roll(key, prefix, suffix)
  redis.call('HINCRBY', key, prefix .. 'calls' .. suffix, 1)
  redis.call('HINCRBY', key, prefix .. 'images' .. suffix, images)
  redis.call('HINCRBY', key, prefix .. 'spend' .. suffix, int(charge))
  -- A failed call delivered no image (and was charged nothing): reports show calls - failed as succeeded.
  if images == 0 then redis.call('HINCRBY', key, prefix .. 'failed' .. suffix, 1) end
  -- The margin (charge - cost), not the cost: a rollup written before costs existed, or by a call
  -- whose channel has no cost, has none, and its cost reads as its spend.
  if charge ~= cost then redis.call('HINCRBY', key, prefix .. 'margin' .. suffix, int(charge - cost)) end
end
roll(rollup_key, model_field .. '|', '')
roll(key_rollup_key, k.id .. '|', '|' .. model_field)
if user ~= '' then roll(users_key, k.id .. '|', '|' .. model_field .. '\31' .. user) end
redis.call('ZADD', settled_key, now, request_id)
redis.call('ZREMRANGEBYSCORE', settled_key, '-inf', now - settled_memory_ms)

local key = hmget_named(k.record, {'budget_micros', 'budget_period', 'alert_thresholds', 'name'})
local budget = number_or(key.budget_micros, -1)
local period = key.budget_period or 'total'
local spent = number_or(redis.call('GET', period_key(period, unpack(spent_keys))), 0)
local team_cfg = hmget_named(team.settings, {'budget_micros', 'budget_period', 'alert_thresholds'})
local team_budget = number_or(team_cfg.budget_micros, -1)
local team_period = team_cfg.budget_period or 'month'
local team_spent = number_or(redis.call('GET', period_key(team_period, unpack(team_spent_keys))), 0)
-- A settlement whose reservation had lapsed (its process was cut off from Redis for longer than
-- the reservation's lifetime) was not held against the budgets while others spent them: if its
-- charge takes the key's or the team's budget past its limit, that is an overspend, and it is
-- said so, never hidden.
local over_budget = (not held) and charge > 0
  and ((budget >= 0 and spent > budget) or (team_budget >= 0 and team_spent > team_budget))

-- Budget alerts: each threshold a scope's spend has reached in this period is queued once (the
-- alerted set remembers it for the period), in the team's outbox, for alerts/sender.py to POST.
local queued = 0
local function queue_alerts(scope, key_id, budget_micros, budget_period, spent_micros, thresholds)
  if budget_micros <= 0 or thresholds == '' or charge <= 0 then return end
  local which = budget_period == 'day' and 1 or (budget_period == 'month' and 2 or 3)
  for _, threshold in ipairs(thresholds_of(thresholds)) do
    if reached(spent_micros, threshold, budget_micros) then
      queued = queued + queue_alert({scope = scope, scope_id = scope == 'team' and 'team' or ('key:' .. key_id),
        key_id = key_id, key_name = key.name or '', team_tag = team.tag, team_name = team.name,
        outbox = outbox_key, bodies = outbox_bodies_key, period = budget_period,
        period_id = period_ids[which], period_start = period_starts[which], ppm = threshold,
        spent = spent_micros, budget = budget_micros, now = now})
    end
  end
end
queue_alerts('key', k.id, budget, period, spent, key.alert_thresholds or '')
queue_alerts('team', '', team_budget, team_period, team_spent, team_cfg.alert_thresholds or '')

-- The record fields only this script knows: whether a reservation was found, and the overspend.
-- The attempts the call moved on from first, in their order; then the call's own record.
if attempts ~= '' then
  for _, fields in ipairs(cjson.decode(attempts)) do
    redis.call('XADD', k.ledger, 'MINID', '~', oldest_kept_ms, '*', 'reserved', held and '1' or '0',
      'over_budget', '0', unpack(fields))
  end
end
redis.call('XADD', k.ledger, 'MINID', '~', oldest_kept_ms, '*', 'reserved', held and '1' or '0',
  'over_budget', over_budget and '1' or '0', unpack(record, record_from))

return {'kind', 'ok', 'budget_micros', int(budget), 'spent_micros', int(spent),
  'reserved_micros', int(number_or(redis.call('HGET', k.state, 'reserved_micros'), 0)),
  'over_budget', over_budget and 1 or 0, 'alerts_queued', queued,
  'over_delivered', int(over_delivered)}

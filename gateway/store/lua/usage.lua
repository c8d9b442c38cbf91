-- Read one key's budget state after releasing its team's orphaned reservations, so that what the
-- admin API shows is what the next reservation would see. Answers name, value pairs.
local record_key, state_key = KEYS[1], KEYS[2]
local spent_day_key, spent_month_key, spent_total_key, images_day_key = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local team = {state = KEYS[7], deadlines = KEYS[8]}
local today, orphan_template = ARGV[1], ARGV[2]  -- the UTC day; orphan_record.TEMPLATE
team.tag = ARGV[3]
local key_id = ARGV[4]
release_orphans(team, now_ms(), {today = today, template = orphan_template})
local key = hmget_named(record_key, {'budget_micros', 'budget_period'})
local period = key.budget_period or 'total'
local spent_key = period_key(period, spent_day_key, spent_month_key, spent_total_key)
local held = hmget_named(state_key, {'reserved_micros', 'inflight'})
local budget, spent = number_or(key.budget_micros, -1), number_or(redis.call('GET', spent_key), 0)
local mark = redis.call('GET', team.tag .. ':exhausted:key:' .. key_id .. ':' .. period_of(period, today))
return {'budget_micros', int(budget), 'period', period, 'spent_micros', int(spent),
  'exhausted', exhausted(budget, spent, mark) and 1 or 0,
  'reserved_micros', int(number_or(held.reserved_micros, 0)),
  'inflight', int(number_or(held.inflight, 0)),
  'images_today', int(number_or(redis.call('GET', images_day_key), 0))}

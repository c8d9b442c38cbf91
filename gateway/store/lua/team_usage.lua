-- Read one team's budget state after releasing its orphaned reservations: what the next
-- reservation against the team would see. Answers name, value pairs.
local settings_key = KEYS[1]
local team = {state = KEYS[2], deadlines = KEYS[3]}
local spent_day_key, spent_month_key, spent_total_key, images_day_key = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local today, orphan_template = ARGV[1], ARGV[2]  -- the UTC day; orphan_record.TEMPLATE
team.tag = ARGV[3]
release_orphans(team, now_ms(), {today = today, template = orphan_template})
local cfg = hmget_named(settings_key, {'budget_micros', 'budget_period'})
local period = cfg.budget_period or 'month'
local spent_key = period_key(period, spent_day_key, spent_month_key, spent_total_key)
local held = hmget_named(team.state, {'reserved_micros'})
local budget, spent = number_or(cfg.budget_micros, -1), number_or(redis.call('GET', spent_key), 0)
local mark = redis.call('GET', team.tag .. ':exhausted:team:' .. period_of(period, today))
return {'budget_micros', int(budget), 'period', period, 'spent_micros', int(spent),
  'exhausted', exhausted(budget, spent, mark) and 1 or 0,
  'reserved_micros', int(number_or(held.reserved_micros, 0)),
  'inflight', int(redis.call('ZCARD', team.deadlines)),
  'images_today', int(number_or(redis.call('GET', images_day_key), 0))}

-- One tick of a schedule: start its run unless the previous run of the schedule is still running.
-- KEYS[1] schedule hash, KEYS[2] the previous run's hash (as read by the caller), KEYS[3] tick list.
-- ARGV: previous run id as read ('' for none), new run id, tick (ms), now (ms), grace (ms), ticks kept.
-- Replies: fire (start the run), again (this tick already fired: start the same run again, idempotent),
-- skip (previous run still running), stale (the previous run changed since it was read: read again).
local prev = redis.call('HGET', KEYS[1], 'runId') or ''
if prev ~= ARGV[1] then return 'stale' end
if prev ~= '' and prev == ARGV[2] then return 'again' end
local now = tonumber(ARGV[4])
if prev ~= '' and redis.call('HEXISTS', KEYS[2], 'finishedAt') == 0 then
  local firedAt = tonumber(redis.call('HGET', KEYS[1], 'firedAt') or '0')
  -- A run that is not recorded yet was fired moments ago and is being started.
  if redis.call('EXISTS', KEYS[2]) == 1 or now - firedAt < tonumber(ARGV[5]) then
    redis.call('HINCRBY', KEYS[1], 'skipped', 1)
    redis.call('HSET', KEYS[1], 'lastSkippedTick', ARGV[3])
    redis.call('LPUSH', KEYS[3], cjson.encode({ tick = tonumber(ARGV[3]), outcome = 'skipped', runId = prev }))
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
    return 'skip'
  end
end
redis.call('HSET', KEYS[1], 'runId', ARGV[2], 'tick', ARGV[3], 'firedAt', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'fired', 1)
redis.call('LPUSH', KEYS[3], cjson.encode({ tick = tonumber(ARGV[3]), outcome = 'fired', runId = ARGV[2] }))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
return 'fire'

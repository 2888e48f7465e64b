-- A fired tick could not start its run (no manifest under the prefix, a bad manifest): the schedule has
-- no run in flight, and the next tick fires. KEYS[1] schedule hash, KEYS[2] tick list.
-- ARGV: run id of the tick, tick (ms), reason, now (ms), ticks kept. Replies: ok, noop (another tick moved on).
if (redis.call('HGET', KEYS[1], 'runId') or '') ~= ARGV[1] then return 'noop' end
redis.call('HSET', KEYS[1], 'runId', '', 'lastError', ARGV[3], 'lastErrorAt', ARGV[4])
redis.call('LPUSH', KEYS[2], cjson.encode({ tick = tonumber(ARGV[2]), outcome = 'failed', runId = ARGV[1], reason = ARGV[3] }))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return 'ok'

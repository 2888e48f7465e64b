-- The report and summary are written: the run is over. Once only (a late duplicate finalize changes nothing).
-- The counters are set to what the report counted (field, value pairs): after a Redis rollback they may
-- have lost what the rows in S3 show.
-- KEYS[1] run, KEYS[2] active runs. ARGV: runId, state, now, (counter, value)...
if redis.call('HEXISTS', KEYS[1], 'finishedAt') == 1 then return 'already' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finishedAt', ARGV[3])
for i = 4, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SREM', KEYS[2], ARGV[1])
return 'finished'

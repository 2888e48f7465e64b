-- The report and summary are written: the run is over. Once only (a late duplicate finalize changes nothing).
-- KEYS[1] run, KEYS[2] active runs. ARGV: runId, state, now
if redis.call('HEXISTS', KEYS[1], 'finishedAt') == 1 then return 'already' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finishedAt', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 'finished'

-- Records a new run with its policy (endpoint, attempts, deadline, failure threshold, cost cap, price),
-- in one step: a run either exists whole or not at all. Returns 'exists' when the id is taken.
-- Its options (JSON) are a string key of their own: every field of the run hash stays short, so Redis
-- keeps the hash in its compact encoding (a third of the bytes of a run kept until RUN_RETENTION).
-- KEYS[1] run, KEYS[2] runs by creation time, KEYS[3] active runs, KEYS[4] the run's options.
-- ARGV: runId, now, optionsJson, indexMax, field, value, ...
-- The index of runs by creation time keeps the newest `indexMax` (more than `runs` lists): one entry per
-- run ever started would grow for ever with the uploads of a shared drop folder.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], 'runId', ARGV[1], 'state', 'running', 'createdAt', ARGV[2], 'cursor', 0, 'queued', 0,
  'completed', 0, 'failed', 0, 'rejected', 0, 'canceled', 0, 'submits', 0, 'costMicros', 0, 'producerDone', 0)
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[4]) + 1))
redis.call('SADD', KEYS[3], ARGV[1])
return 'created'

-- fal definitely did not accept the submission (429, 5xx, 4xx answer, connection refused): the attempt
-- did not cost anything, so it (and its estimated cost) is taken back and the row waits for its next try.
-- KEYS[1] row, KEYS[2] run. ARGV: attempt, error
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'submitting' or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 'noop' end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempt', tonumber(ARGV[1]) - 1, 'lastError', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'submits', -1)
redis.call('HINCRBY', KEYS[2], 'costMicros', 0 - tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
redis.call('HINCRBY', KEYS[2], 'submittedCostMicros', 0 - tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
return 'ok'

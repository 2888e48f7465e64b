-- The reconciler looked at a request that is still queued or running: when to look again.
-- KEYS[1] row. ARGV: requestId, nextPollAt, falStatus
if redis.call('HGET', KEYS[1], 'state') ~= 'submitted' or redis.call('HGET', KEYS[1], 'requestId') ~= ARGV[1] then return 'noop' end
redis.call('HSET', KEYS[1], 'nextPollAt', ARGV[2], 'falStatus', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'polls', 1)
return 'ok'

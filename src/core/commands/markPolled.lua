-- A poll found a request still queued or running: when to look again, and since when fal runs it
-- (the first time this request is seen IN_PROGRESS: the row deadline counts from then).
-- KEYS[1] row. ARGV: requestId, nextPollAt, falStatus, now
if redis.call('HGET', KEYS[1], 'state') ~= 'submitted' or redis.call('HGET', KEYS[1], 'requestId') ~= ARGV[1] then return 'noop' end
redis.call('HSET', KEYS[1], 'nextPollAt', ARGV[2], 'falStatus', ARGV[3])
if ARGV[3] == 'IN_PROGRESS' and redis.call('HGET', KEYS[1], 'startedFor') ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'startedAt', ARGV[4], 'startedFor', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'polls', 1)
return 'ok'

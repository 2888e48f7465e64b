-- fal accepted a submission: remember request_id -> row, and move submitting -> submitted. When the
-- run was canceled meanwhile, the reply says so: the caller cancels the request at fal and ends the row.
-- A row that knows less than this attempt (gone, or at an earlier attempt: Redis restarted without its
-- last writes) takes the attempt back from this answer ('adopted', see adoptAttempt), so the submit job
-- that Redis restored finds it submitted instead of paying fal again.
-- KEYS[1] row, KEYS[2] request mapping, KEYS[3] run, KEYS[4] done, KEYS[5] active.
-- ARGV: requestId, attempt, now, mappingValue, nextPollAt, line, rowKey, dataJson, costMicros, ordinal
-- Replies: ok | adopted | late (the row moved on) | gone (the row ended and was flushed) | canceled
local adopted = adoptAttempt(KEYS[1], KEYS[3], KEYS[4], KEYS[5], tonumber(ARGV[2]), ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[3]), ARGV[10])
redis.call('SET', KEYS[2], ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('EXPIRE', KEYS[2], MAPPING_TTL)
  return 'gone'
end
redis.call('HSET', KEYS[1], 'req' .. ARGV[2], ARGV[1])
if isTerminal(state) then redis.call('EXPIRE', KEYS[2], MAPPING_TTL) end
if state == 'submitting' and redis.call('HGET', KEYS[1], 'attempt') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'state', 'submitted', 'requestId', ARGV[1], 'submittedAt', ARGV[3], 'nextPollAt', ARGV[5], 'polls', 0)
  if redis.call('HGET', KEYS[3], 'state') == 'canceled' then return 'canceled' end
  if adopted then return 'adopted' end
  return 'ok'
end
-- This very record delivered again (its reply was lost with the connection; ioredis sent it again, or
-- the caller tried again after a timeout): the same answer, so the caller keeps the row's place on fal.
if state == 'submitted' and redis.call('HGET', KEYS[1], 'requestId') == ARGV[1] and redis.call('HGET', KEYS[1], 'attempt') == ARGV[2] then
  if redis.call('HGET', KEYS[3], 'state') == 'canceled' then return 'canceled' end
  return 'ok'
end
return 'late'

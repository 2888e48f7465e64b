-- fal accepted a submission: remember request_id -> row, and move submitting -> submitted. When the
-- run was canceled meanwhile, the reply says so: the caller cancels the request at fal and ends the row.
-- KEYS[1] row, KEYS[2] request mapping, KEYS[3] run. ARGV: requestId, attempt, now, mappingValue, nextPollAt
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
  return 'ok'
end
return 'late'

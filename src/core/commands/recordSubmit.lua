-- fal accepted a submission: remember request_id -> row, and move submitting -> submitted.
-- KEYS[1] row, KEYS[2] request mapping. ARGV: requestId, attempt, now, mappingValue, nextPollAt
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
  return 'ok'
end
return 'late'

-- Before calling fal.queue.submit: decide whether this row may be submitted now, and record the attempt
-- BEFORE the call so no submission can ever happen without being counted.
-- ARGV: line, rowKey, now, deadlineMs, maxAttempts, dataJson, minRows, ratio
local line, rowKey, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local maxAttempts, minRows, ratio = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('GETBIT', KEYS[3], line) == 1 then return {'terminal'} end
local runState = redis.call('HGET', KEYS[2], 'state')
if not runState then return {'norun'} end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'line', line, 'key', rowKey, 'state', 'pending', 'attempt', 0,
    'createdAt', now, 'deadlineAt', now + tonumber(ARGV[4]), 'data', ARGV[6])
  redis.call('SADD', KEYS[4], rowKey)
  state = 'pending'
end
if state ~= 'pending' then
  if state == 'submitting' then return {'inflight', redis.call('HGET', KEYS[1], 'attempt')} end
  return {'already', state}
end
if runState == 'stopped' or runState == 'canceled' then
  local why = redis.call('HGET', KEYS[2], 'stopReason') or ''
  terminate(KEYS[1], KEYS[2], KEYS[3], 'canceled', 'run ' .. runState .. ' before this row was submitted: ' .. why, now, minRows, ratio)
  return {'canceled'}
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')) + 1
if attempt > maxAttempts then
  local last = redis.call('HGET', KEYS[1], 'lastError') or 'unknown'
  terminate(KEYS[1], KEYS[2], KEYS[3], 'failed', string.format('gave up after %d fal requests: %s', maxAttempts, last), now, minRows, ratio)
  return {'failed'}
end
redis.call('HSET', KEYS[1], 'state', 'submitting', 'attempt', attempt, 'claimedAt', now)
redis.call('HINCRBY', KEYS[2], 'submits', 1)
return {'submit', tostring(attempt)}

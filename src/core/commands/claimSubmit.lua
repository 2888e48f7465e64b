-- Before calling fal.queue.submit: decide whether this row may be submitted now, and record the attempt
-- (and its estimated cost) BEFORE the call so no submission can ever happen without being counted. The
-- attempt limit, the deadline, the cost cap and the endpoint are the run's own.
-- A row whose attempt fal has but Redis lost (a webhook's token named it while the row was gone: the
-- adoption note, KEYS[5]) takes that attempt back as submitted instead ('adopted'): never paid twice.
-- A claim is named by its caller (claimId): the same claim delivered again (its reply was lost with the
-- connection and ioredis sent it again, or its caller asked again after a timeout) gets the answer it
-- got the first time, never 'inflight': its caller alone submits it, and it is counted once.
-- KEYS: row, run, done, active, adoption note, request mappings...
-- ARGV: line, rowKey, now, dataJson, costMicros, ordinal (the done bit; '' for a job queued before ordinals: its line), claimId, requestIds...
-- Replies: submit (attempt, endpoint) | adopted (attempt, endpoint) | terminal | norun | canceled | failed
--   | inflight (attempt) | already (state) | stale
local line, rowKey, now, cost = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local ordinal = tonumber(ARGV[6]) or line
local reqs = requestKeys(6)
if not coversRequests(KEYS[1], reqs) then return {'stale'} end
if redis.call('GETBIT', KEYS[3], ordinal) == 1 then return {'terminal'} end
local run = redis.call('HMGET', KEYS[2], 'state', 'maxAttempts', 'deadlineMs', 'maxCostMicros', 'costMicros', 'stopReason', 'endpoint', 'currency')
local runState = run[1]
if not runState then return {'norun'} end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'line', line, 'ordinal', ordinal, 'key', rowKey, 'state', 'pending', 'attempt', 0,
    'createdAt', now, 'deadlineAt', now + tonumber(run[3]), 'data', ARGV[4])
  redis.call('SADD', KEYS[4], rowKey)
  state = 'pending'
end
if state ~= 'pending' then
  if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'claimId') == ARGV[7] then
    local attempt = redis.call('HGET', KEYS[1], 'attempt')
    if state == 'submitting' then return {'submit', attempt, run[7]} end
    if state == 'submitted' then return {'adopted', attempt, run[7]} end
  end
  if state == 'submitting' then return {'inflight', redis.call('HGET', KEYS[1], 'attempt')} end
  return {'already', state}
end
local note = redis.call('HGETALL', KEYS[5])
if #note > 0 then
  redis.call('DEL', KEYS[5])
  local had = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
  local best, bestId = 0, nil
  for i = 1, #note, 2 do
    local a = tonumber(note[i])
    if a and a > had then
      redis.call('HSET', KEYS[1], 'req' .. a, note[i + 1])
      if a > best then best, bestId = a, note[i + 1] end
    end
  end
  if best > 0 then
    redis.call('HSET', KEYS[1], 'cost', cost)
    adoptAttempt(KEYS[1], KEYS[2], KEYS[3], KEYS[4], best, nil, nil, nil, nil, now)
    redis.call('HSET', KEYS[1], 'state', 'submitted', 'requestId', bestId, 'submittedAt', now, 'nextPollAt', now, 'polls', 0, 'claimId', ARGV[7])
    return {'adopted', tostring(best), run[7]}
  end
end
if runState == 'running' and run[4] and run[4] ~= '' and tonumber(run[5] or '0') + cost > tonumber(run[4]) then
  runState = 'stopped'
  redis.call('HSET', KEYS[2], 'state', 'stopped', 'stopReason',
    string.format('cost cap reached: %s %s submitted, the next row would pass the cap of %s %s', money(run[5] or '0'), run[8] or '', money(run[4]), run[8] or ''))
end
if runState == 'stopped' or runState == 'canceled' then
  local why = redis.call('HGET', KEYS[2], 'stopReason') or ''
  terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'canceled', 'run ' .. runState .. ' before this row was submitted: ' .. why, now)
  return {'canceled'}
end
local maxAttempts = tonumber(run[2])
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')) + 1
if attempt > maxAttempts then
  local last = redis.call('HGET', KEYS[1], 'lastError') or 'unknown'
  -- The row fails with the kind of its last attempt's error (falErrors.ts).
  setErrorKind(KEYS[1], redis.call('HGET', KEYS[1], 'lastErrorType') or 'submit_failed', redis.call('HGET', KEYS[1], 'lastErrorCategory') or 'fal_transient')
  terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'failed', string.format('gave up after %d fal requests: %s', maxAttempts, last), now)
  return {'failed'}
end
redis.call('HSET', KEYS[1], 'state', 'submitting', 'attempt', attempt, 'claimedAt', now, 'cost', cost, 'claimId', ARGV[7])
redis.call('HINCRBY', KEYS[2], 'submits', 1)
redis.call('HINCRBY', KEYS[2], 'costMicros', cost)
-- What was submitted, billed or not (costMicros gives back what fal reports it did not bill).
redis.call('HINCRBY', KEYS[2], 'submittedCostMicros', cost)
return {'submit', tostring(attempt), run[7]}

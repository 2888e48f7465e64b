-- The current attempt is given up (fal lost the request, or a submission's fate stayed unknown past
-- the grace period, or fal forgot a request whose result was being stored): back to pending so the row
-- is submitted again, or failed at the run's attempt limit.
-- The attempt's error is kept among the row's attempt errors; errorType/errorCategory name it.
-- From 'storing' only when the result being stored is the current attempt's request (an older
-- attempt's result leaves the current one as it is: 'noop').
-- KEYS: row, run, done, active, request mappings...
-- ARGV: fromState, attempt, requestId or '', reason, now, errorType, errorCategory, forgotten ('1': fal
--   no longer knew the request: counted in the run's resubmittedForgotten), requestIds...
local reqs = requestKeys(5)
if not coversRequests(KEYS[1], reqs) then return 'stale' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[1] or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return 'noop' end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'requestId') ~= ARGV[3] then return 'noop' end
if state == 'storing' and (ARGV[3] == '' or redis.call('HGET', KEYS[1], 'storeRequestId') ~= ARGV[3]) then return 'noop' end
addAttemptError(KEYS[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7], ARGV[4])
if tonumber(ARGV[2]) >= tonumber(redis.call('HGET', KEYS[2], 'maxAttempts')) then
  setErrorKind(KEYS[1], ARGV[6], ARGV[7])
  terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'failed', string.format('%s (gave up after %s fal requests)', ARGV[4], ARGV[2]), tonumber(ARGV[5]))
  return 'failed'
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'lastError', ARGV[4], 'lastErrorType', ARGV[6], 'lastErrorCategory', ARGV[7])
redis.call('HDEL', KEYS[1], 'storeRequestId', 'storingSince')
if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[2], 'resubmittedForgotten', 1) end
return 'resubmit'

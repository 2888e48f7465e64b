-- Ends an open row as failed or canceled, but only from the states the caller owns (and, when given,
-- only for the request it is about), so a stale actor can never overwrite a newer outcome.
-- KEYS: row, run, done, active, request mappings...
-- ARGV: outcome, reason, now, allowedStates (comma list), requestId or '', errorType, errorCategory, requestIds...
local reqs = requestKeys(5)
if not coversRequests(KEYS[1], reqs) then return 'stale' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state or isTerminal(state) then return 'noop' end
if not string.find(',' .. ARGV[4] .. ',', ',' .. state .. ',', 1, true) then return 'noop' end
if ARGV[5] ~= '' then
  local field = 'requestId'
  if state == 'storing' then field = 'storeRequestId' end
  if redis.call('HGET', KEYS[1], field) ~= ARGV[5] then return 'noop' end
end
setErrorKind(KEYS[1], ARGV[6], ARGV[7])
if ARGV[1] == 'failed' then
  addAttemptError(KEYS[1], redis.call('HGET', KEYS[1], 'attempt'), redis.call('HGET', KEYS[1], 'requestId'), ARGV[6], ARGV[7], ARGV[2])
end
terminate(KEYS[1], KEYS[2], KEYS[3], reqs, ARGV[1], ARGV[2], tonumber(ARGV[3]))
return 'ok'

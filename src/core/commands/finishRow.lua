-- Ends an open row as failed or canceled, but only from the states the caller owns (and, when given,
-- only for the request it is about), so a stale actor can never overwrite a newer outcome.
-- KEYS: row, run, done, active, request mappings... ARGV: outcome, reason, now, allowedStates (comma list), requestId or '', requestIds...
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
terminate(KEYS[1], KEYS[2], KEYS[3], reqs, ARGV[1], ARGV[2], tonumber(ARGV[3]))
return 'ok'

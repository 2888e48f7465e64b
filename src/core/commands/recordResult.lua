-- A result for a fal request arrived (webhook or poll). Decides, once, what it means for the row:
-- 'store' (download it), 'failed' (fal's error ended the row), or ignore it ('duplicate', 'ignored',
-- 'unknown'). Results of any attempt of the row are accepted while the row is open: fal charged for it.
-- 'store' comes with the row's fields (HGETALL), so the storer needs no second read.
-- KEYS: row, run, done, active, this request's mapping, request mappings...
-- ARGV: requestId, hintAttempt ('' if none), status OK|ERROR, now, errorText, mappingValue, requestIds...
local requestId, now = ARGV[1], tonumber(ARGV[4])
local reqs = requestKeys(6)
reqs[requestId] = KEYS[5]
if not coversRequests(KEYS[1], reqs) then return 'stale' end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if redis.call('EXISTS', KEYS[5]) == 1 then return 'duplicate' end
  return 'unknown'
end
if isTerminal(state) then return 'duplicate' end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
local which = nil
for i = 1, attempt do
  if redis.call('HGET', KEYS[1], 'req' .. i) == requestId then which = i end
end
if not which and ARGV[2] ~= '' then
  -- The webhook came before the submit call returned: the URL names the attempt.
  local h = tonumber(ARGV[2])
  if h and h >= 1 and h <= attempt and not redis.call('HGET', KEYS[1], 'req' .. h) then
    which = h
    redis.call('HSET', KEYS[1], 'req' .. h, requestId)
    redis.call('SET', KEYS[5], ARGV[6])
  end
end
if not which then return 'unknown' end
if state == 'storing' then
  if redis.call('HGET', KEYS[1], 'storeRequestId') == requestId then return {'store', redis.call('HGETALL', KEYS[1])} end
  return 'duplicate'
end
if ARGV[3] == 'OK' then
  redis.call('HSET', KEYS[1], 'state', 'storing', 'storeRequestId', requestId, 'storingSince', now)
  return {'store', redis.call('HGETALL', KEYS[1])}
end
if which == attempt and state ~= 'pending' then
  terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'failed', ARGV[5], now)
  return 'failed'
end
return 'ignored'

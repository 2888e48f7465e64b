-- A result for a fal request arrived (webhook or poll). Decides, once, what it means for the row:
-- 'store' (download it), 'failed' (fal's error ended the row), or ignore it ('duplicate', 'ignored',
-- 'unknown'). Results of any attempt of the row are accepted while the row is open: fal charged for it.
-- 'store' comes with the row's fields (HGETALL), so the storer needs no second read.
-- KEYS: row, run, done, active, this request's mapping, request mappings...
-- ARGV: requestId, hintAttempt ('' if none), status OK|ERROR, now, errorText, mappingValue, verdictJson, requestIds...
-- verdictJson (ERROR only; '' otherwise): fal's error kind as falErrors.ts judged it,
--   {type, category, retry (a new attempt may help and fal did not bill this one), refund (fal does not bill it)}.
-- Replies also 'retry': the current attempt failed in a way fal does not bill; the row is pending
-- again for a new attempt (the caller queues it after a backoff).
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
-- ---- i18: fal's error kinds (src/core/falErrors.ts) -------------------------------------------
-- What fal does not bill is given back, once per request (an older attempt's too: it was counted).
-- Then, for the current attempt: what one more attempt may fix becomes a new attempt while the run's
-- MAX_ATTEMPTS allows; everything else (model errors, content policy) fails the row now.
local v = {}
if ARGV[7] and ARGV[7] ~= '' then v = cjson.decode(ARGV[7]) end
if v.refund == true and redis.call('HSETNX', KEYS[1], 'refunded:' .. requestId, 1) == 1 then
  redis.call('HINCRBY', KEYS[2], 'costMicros', 0 - tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
end
if which == attempt and state ~= 'pending' then
  local errType, category = v.type or '', v.category or 'other'
  addAttemptError(KEYS[1], attempt, requestId, errType, category, ARGV[5])
  local reason = ARGV[5]
  if v.retry == true then
    if attempt < tonumber(redis.call('HGET', KEYS[2], 'maxAttempts') or '1') then
      redis.call('HSET', KEYS[1], 'state', 'pending', 'lastError', ARGV[5], 'lastErrorType', errType, 'lastErrorCategory', category)
      return 'retry'
    end
    reason = string.format('gave up after %d fal requests: %s', attempt, ARGV[5])
  end
  setErrorKind(KEYS[1], errType, category)
  -- ---- end i18 ------------------------------------------------------------------------------
  terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'failed', reason, now)
  return 'failed'
end
return 'ignored'

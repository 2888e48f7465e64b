-- A result for a fal request arrived (webhook or poll). Decides, once, what it means for the row:
-- 'store' (download it), 'failed' (fal's error ended the row), or ignore it ('duplicate', 'ignored',
-- 'unknown'). Results of any attempt of the row are accepted while the row is open: fal charged for it.
-- 'store' comes with the row's fields (HGETALL), so the storer needs no second read.
-- A webhook's URL token names the row and attempt it was minted for at submit, so its result is placed
-- even when Redis lost that attempt's record (restarted without its last writes): an attempt beyond the
-- row's is adopted (adoptAttempt), a second request for an attempt whose record names another is kept
-- beside it (fal ran and charged both), and for a row that is gone the request is noted (KEYS[6]) for
-- claimSubmit, which then takes the attempt back instead of submitting it again ('unknown': the result
-- job looks again once the row is back).
-- KEYS: row, run, done, active, this request's mapping, adoption note, request mappings...
-- ARGV: requestId, hintAttempt ('' if none), status OK|ERROR, now, errorText, mappingValue, verdictJson, requestIds...
-- verdictJson (ERROR only; '' otherwise): fal's error kind as falErrors.ts judged it,
--   {type, category, retry (a new attempt may help and fal did not bill this one), refund (fal does not bill it)}.
-- Replies also 'retry': the current attempt failed in a way fal does not bill; the row is pending
-- again for a new attempt (the caller queues it after a backoff).
local requestId, now = ARGV[1], tonumber(ARGV[4])
local reqs = requestKeys(7)
reqs[requestId] = KEYS[5]
if not coversRequests(KEYS[1], reqs) then return 'stale' end
local hint = tonumber(ARGV[2])
if hint and hint < 1 then hint = nil end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if redis.call('EXISTS', KEYS[5]) == 1 then return 'duplicate' end
  if hint and redis.call('HEXISTS', KEYS[2], 'state') == 1 and redis.call('HEXISTS', KEYS[2], 'finishedAt') == 0 then
    redis.call('HSET', KEYS[6], hint, requestId)
    redis.call('EXPIRE', KEYS[6], 86400)
  end
  return 'unknown'
end
if isTerminal(state) then return 'duplicate' end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
local which = nil
for i = 1, attempt do
  if redis.call('HGET', KEYS[1], 'req' .. i) == requestId then which = i end
end
if which and hint and redis.call('EXISTS', KEYS[5]) == 0 then redis.call('SET', KEYS[5], ARGV[6]) end
if not which and redis.call('HGET', KEYS[1], 'xreqs') then
  for rid in string.gmatch(redis.call('HGET', KEYS[1], 'xreqs'), '[^\n]+') do
    if rid == requestId then which = 0 end
  end
end
if not which and hint then
  if hint > attempt then
    -- The URL names an attempt the row never recorded: its claim was lost, fal has it.
    if adoptAttempt(KEYS[1], KEYS[2], KEYS[3], KEYS[4], hint, nil, nil, nil, nil, now) then
      redis.call('HSET', KEYS[1], 'req' .. hint, requestId, 'state', 'submitted', 'requestId', requestId, 'submittedAt', now, 'nextPollAt', now, 'polls', 0)
      redis.call('SET', KEYS[5], ARGV[6])
      state, attempt, which = 'submitted', hint, hint
    end
  elseif not redis.call('HGET', KEYS[1], 'req' .. hint) then
    -- The webhook came before the submit call returned: the URL names the attempt.
    which = hint
    redis.call('HSET', KEYS[1], 'req' .. hint, requestId)
    redis.call('SET', KEYS[5], ARGV[6])
  else
    -- The attempt's record names another request: the attempt was claimed and submitted again after its
    -- first record was lost. Both ran and are paid; this one is placed too (0: never the current attempt).
    which = 0
    local x = redis.call('HGET', KEYS[1], 'xreqs')
    redis.call('HSET', KEYS[1], 'xreqs', (x and (x .. '\n') or '') .. requestId)
    redis.call('SET', KEYS[5], ARGV[6], 'EX', MAPPING_TTL * 24)
    redis.call('HINCRBY', KEYS[2], 'submits', 1)
    redis.call('HINCRBY', KEYS[2], 'costMicros', tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
    redis.call('HINCRBY', KEYS[2], 'submittedCostMicros', tonumber(redis.call('HGET', KEYS[1], 'cost') or '0')) -- i18
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
